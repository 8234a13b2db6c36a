"""The follower of a live answer: the pacing decision over a fake clock, and both drivers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from amigo_magic import pacer
from amigo_magic.answer import Answer, AnswerState, ImageAnswer
from amigo_magic.pacer import Pacer, follow, follow_async


def test_first_text_shows_at_once_then_updates_are_throttled() -> None:
    p = Pacer(throttle=0.05)
    p.shown(0.0, 0, "thinking")
    assert not p.due(0.01, 0, "thinking")  # nothing new
    assert p.due(0.01, 5, "streaming")  # the first text: at once
    p.shown(0.01, 5, "streaming")
    assert not p.due(0.03, 9, "streaming")  # 20 ms later: too soon
    assert p.delay(0.03, 9) == pytest.approx(0.03)
    assert p.due(0.061, 9, "streaming")
    assert p.delay(0.061, 9) == 0.0


def test_updates_grow_rarer_as_the_text_grows() -> None:
    p = Pacer(throttle=0.05)
    p.shown(0.0, 1, "streaming")
    assert p.interval(2_000_000) == pytest.approx(2.0)  # 2 MB re-sent costs 2 s between updates
    assert not p.due(1.5, 2_000_000, "streaming")
    assert p.due(2.0, 2_000_000, "streaming")


def test_a_phase_change_shows_at_once_and_the_clock_ticks_while_nothing_comes() -> None:
    p = Pacer(throttle=0.05)
    p.shown(0.0, 0, "thinking")
    assert p.due(0.1, 0, "loading")  # "loading model…" at once
    p.shown(0.1, 0, "loading")
    assert not p.due(0.9, 0, "loading")
    assert p.due(1.1, 0, "loading")  # "thinking… 1 s"
    p.shown(1.1, 5, "streaming")
    assert not p.due(3.0, 5, "streaming")  # text on screen: no tick without new text


def _feed(
    answer: Answer, pieces: list[str], gap: float, after: threading.Event | None = None
) -> threading.Thread:
    def run() -> None:
        if after is not None:
            after.wait(10)
        for piece in pieces:
            time.sleep(gap)
            answer.add_text(piece)
        answer.end()
        answer.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_follow_shows_the_first_text_and_far_fewer_updates_than_pieces() -> None:
    answer = Answer(model="m", chat="c")
    shown: list[AnswerState] = []
    first_shown = threading.Event()

    def show(state: AnswerState) -> None:
        shown.append(state)
        first_shown.set()  # the pieces start once the first display is up, however busy the box

    thread = _feed(answer, ["a"] * 200, 0.001, after=first_shown)
    start = time.perf_counter()
    follow(answer, show, throttle=0.05)
    took = time.perf_counter() - start
    thread.join()
    assert shown[0].phase == "thinking"
    assert any(s.phase == "streaming" and s.text for s in shown)  # text showed while streaming
    # one update per 50 ms of streaming (plus the first and the last), not one per piece
    assert len(shown) <= took / 0.05 + 3
    assert len(shown) < 100  # 200 pieces
    assert answer.phase == "done"
    assert answer.text == "a" * 200


def test_follow_stops_on_interrupt_and_gives_up_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacer, "STOP_GRACE", 0.2)
    answer = Answer(model="m", chat="c")
    stopped: list[bool] = []
    monkeypatch.setattr(answer, "stop", lambda: stopped.append(True))
    calls = 0

    def show(_: AnswerState) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the tick after a second of silence: the user presses ■
            raise KeyboardInterrupt

    follow(answer, show, throttle=0.05)
    assert stopped == [True]
    assert answer.phase == "stopped"  # nothing came back within the grace: shown stopped


def test_follow_async_shows_text_and_abandons_a_stopped_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacer, "STOP_GRACE", 0.1)
    answer = Answer(model="m", chat="c")
    shown: list[AnswerState] = []

    async def scenario() -> None:
        task = asyncio.ensure_future(follow_async(answer, shown.append, throttle=0.02))
        await asyncio.sleep(0.02)
        answer.add_text("hello")
        await asyncio.sleep(0.1)
        import concurrent.futures

        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.cancel()  # the request was cancelled, and nothing will ever record it
        answer.future = future
        await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert any(s.text == "hello" for s in shown)
    assert answer.phase == "stopped"


def test_an_image_answer_ticks_while_drawing() -> None:
    answer = ImageAnswer(model="flux", chat="c", prompt="a fox")
    shown: list[AnswerState] = []

    def finish() -> None:
        time.sleep(1.3)
        answer.end()
        answer.close()

    thread = threading.Thread(target=finish)
    thread.start()
    follow(answer, shown.append)
    thread.join()
    assert [s.phase for s in shown] == ["drawing", "drawing"]  # at once, then the 1 s tick
    assert shown[1].seconds >= 1.0
