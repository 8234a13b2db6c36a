"""``map``: many items through the session against the loopback server — every result in input
order, a failed item as a value, a 429 storm with Retry-After honoured by every worker, a stop
that keeps what finished, nothing in history; and ``amigo_magic.map`` in a shell."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import amigo_magic
from amigo_magic.batch_item import Failed
from amigo_magic.config import Preferences
from amigo_magic.errors import ConfigError
from amigo_magic.runner import Runner
from amigo_magic.session import ChatSession
from amigo_magic.store import SQLiteStore
from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell


@pytest.fixture
def session(server: AmigoServer, tmp_path: Path) -> Iterator[ChatSession]:
    runner = Runner()
    store = SQLiteStore(tmp_path / "history.db")
    env = {"AMIGO_BASE_URL": server.base_url, "AMIGO_HOME": str(tmp_path)}
    session = ChatSession(store=store, notebook="batch.ipynb", runner=runner, env=env)
    yield session
    runner.close()
    store.close()


def run(session: ChatSession, template: str, items: Any, concurrency: int = 8) -> Any:
    batch = session.map(
        template, items, session.options(use_history=False), concurrency=concurrency
    )
    assert batch.wait(60), "the batch never ended"
    return batch


def chat_requests(server: AmigoServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


class Peak:
    """The most streams the server wrote at once, sampled every millisecond."""

    def __init__(self, server: AmigoServer) -> None:
        self.server, self.most, self._stop = server, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self.server.active_streams)
            time.sleep(0.001)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_every_result_comes_back_in_input_order_with_bounded_concurrency(
    session: ChatSession, server: AmigoServer
) -> None:
    items = [f"item {i}" for i in range(200)]
    # Later items answer sooner at first, so finishing order differs from input order.
    server.enqueue(*(Reply.stream(stall_before=0.03 if i % 3 else 0.0) for i in range(200)))
    with Peak(server) as peak:
        batch = run(session, "Repeat: {item}", items, concurrency=16)
    results = batch.values()
    assert results == [f"Echo: Repeat: item {i}" for i in range(200)]
    assert len(chat_requests(server)) == 200
    assert 1 < peak.most <= 16  # many at once, never more than asked
    assert (results.summary.answered, results.summary.failed) == (200, 0)
    assert "200 of 200 answered" in str(results.summary)
    assert session.history() == []  # each item its own conversation: nothing kept
    sent = chat_requests(server)[0].json["messages"]
    assert [m["role"] for m in sent] == ["user"]


def test_a_failed_item_is_an_error_value_and_the_batch_goes_on(
    session: ChatSession, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(), Reply.error(400, "prompt too long"), Reply.stream())
    batch = run(session, "Say {item}", ["a", "b", "c"], concurrency=1)
    results = batch.values()
    assert (results[0], results[2]) == ("Echo: Say a", "Echo: Say c")
    failed = results[1]
    assert isinstance(failed, Failed)
    assert not failed
    assert "prompt too long" in failed.error
    assert "\n" not in failed.error
    assert failed.kind == "BadRequestError"
    assert [r for r in results if r] == ["Echo: Say a", "Echo: Say c"]
    summary = results.summary
    assert (summary.answered, summary.failed) == (2, 1)
    assert "1 failed (" in str(summary)
    assert "prompt too long" in str(summary)
    assert str(summary).endswith(" [1])")


def test_a_429_storm_pauses_every_worker_and_loses_no_item(
    session: ChatSession, server: AmigoServer
) -> None:
    items = list(range(60))
    rejected = 6
    server.enqueue(
        *(Reply.stream(stall_before=0.01) for _ in range(20)),
        *(Reply.error(429, "slow down", retry_after="1") for _ in range(rejected)),
    )
    batch = session.map("Number {item}", items, session.options(), concurrency=8)
    lines = []
    while not batch.wait(0.05):
        lines.append(batch.snapshot().line())
    results = batch.values()
    assert results == [f"Echo: Number {i}" for i in items]  # none lost, none failed
    assert any("⏸ rate limited: resuming in 1 s" in line for line in lines), lines[-5:]
    requests = chat_requests(server)
    assert len(requests) == len(items) + rejected
    # Every 429 went out at once (no stall): its request's arrival is when the gate closed.
    # While the gate was shut no worker sent anything — beyond a moment for the 429 to arrive.
    by_time = sorted(r.received for r in requests)
    storm = by_time[20 : 20 + rejected]
    for closed in storm[:1]:
        during = [t for t in by_time if closed + 0.15 < t < closed + 0.95]
        assert during == [], f"{len(during)} requests were sent while Retry-After held"
    assert by_time[-1] - storm[0] >= 1.0  # the wait was honoured


def test_a_stop_keeps_what_finished(session: ChatSession, server: AmigoServer) -> None:
    server.enqueue(*(Reply.stream(stall_before=0.05) for _ in range(100)))
    batch = session.map("Say {item}", range(100), session.options(), concurrency=4)
    deadline = time.monotonic() + 10
    while batch.done_count < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    batch.stop()
    assert batch.wait(5)
    results = batch.values()
    answered = [i for i, r in enumerate(results) if r is not None]
    assert len(answered) >= 10
    assert len(results) == 100
    assert all(results[i] == f"Echo: Say {i}" for i in answered)
    assert results.summary.stopped
    assert results.summary.unanswered == 100 - len(answered)
    assert "■ stopped" in str(results.summary)
    assert len(chat_requests(server)) < 100


def test_mappings_fill_their_fields_and_a_frame_comes_back_on_its_index(
    session: ChatSession, server: AmigoServer
) -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(
        {"name": ["Ada", "Alan"], "year": [1815, 1912]}, index=pandas.Index(["x", "y"])
    )
    batch = run(session, "When was {name} born? ({year}) {{braces}} stay", frame)
    series = batch.values()
    assert list(series.index) == ["x", "y"]
    assert series["x"] == "Echo: When was Ada born? (1815) {{braces}} stay"
    assert series.attrs["amigo"].answered == 2
    rows = [{"name": "Grace"}, {"name": "Edsger"}]
    assert run(session, "Hi {name}", rows).values() == ["Echo: Hi Grace", "Echo: Hi Edsger"]
    # A generator has no length: results grow as items are read.
    assert run(session, "#{item}", (i for i in range(3))).values() == [
        "Echo: #0",
        "Echo: #1",
        "Echo: #2",
    ]


def test_bad_input_is_one_line_before_anything_is_sent(
    session: ChatSession, server: AmigoServer
) -> None:
    options = session.options()
    with pytest.raises(ConfigError, match=r"write \{item\}"):
        session.map("Classify this review", ["good", "bad"], options)
    with pytest.raises(ConfigError, match="concurrency must be 1 to 100"):
        session.map("{item}", [1], options, concurrency=0)
    with pytest.raises(ConfigError, match="got str"):
        session.map("{item}", "abc", options)
    with pytest.raises(ConfigError, match=r"(?i)unknown model"):
        session.map("{item}", [1], session.options(model="no-such-model"))
    assert chat_requests(server) == []
    assert run(session, "{item}", []).values() == []


def test_amigo_magic_map_in_a_shell_shows_progress_and_returns_results(
    ip: TestingShell, server: AmigoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell("import amigo_magic")
    ip.run_cell("answers = amigo_magic.map('Shout {item}', ['a', 'b', 'c'], concurrency=2)")
    assert ip.user_ns["answers"] == ["Echo: Shout a", "Echo: Shout b", "Echo: Shout c"]
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "100%" in err
    assert "items/s" in err
    ip.run_cell("%amigo history")
    assert len(chat_requests(server)) == 3
    assert amigo_magic.Failed is Failed


@pytest.fixture
def cached(server: AmigoServer, tmp_path: Path) -> Iterator[ChatSession]:
    """A session with AmigoMagics.cache = 'auto': answers are recorded and reused."""
    runner = Runner()
    store = SQLiteStore(tmp_path / "history.db")
    env = {"AMIGO_BASE_URL": server.base_url, "AMIGO_HOME": str(tmp_path)}
    session = ChatSession(
        store=store,
        notebook="batch.ipynb",
        runner=runner,
        env=env,
        preferences=lambda: Preferences(cache="auto"),
    )
    yield session
    runner.close()
    store.close()


def test_a_stopped_batch_run_again_with_the_cache_sends_only_the_rest(
    cached: ChatSession, server: AmigoServer
) -> None:
    items = [f"ticket {i}" for i in range(60)]
    server.enqueue(*(Reply.stream(stall_before=0.05) for _ in range(60)))
    batch = cached.map("Summarise {item}", items, cached.options(), concurrency=4)
    deadline = time.monotonic() + 10
    while batch.done_count < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    batch.stop()
    assert batch.wait(5)
    first = batch.values()
    answered = sum(r is not None for r in first)
    assert 12 <= answered < 60
    server.reset()
    again = run(cached, "Summarise {item}", items, concurrency=4).values()
    assert again == [f"Echo: Summarise ticket {i}" for i in range(60)]
    assert len(chat_requests(server)) == 60 - answered  # counted on the wire
    sent = {r.json["messages"][-1]["content"] for r in chat_requests(server)}
    assert sent == {f"Summarise {items[i]}" for i, r in enumerate(first) if r is None}
    assert again.summary.recorded == answered
    assert f"{answered} from recordings (not sent)" in str(again.summary)
    server.reset()
    assert run(cached, "Summarise {item}", items).values() == again  # all recorded now
    assert chat_requests(server) == []


def test_a_schema_gives_typed_results_and_repairs_a_bad_answer_once(
    session: ChatSession, server: AmigoServer
) -> None:
    server.enqueue(
        Reply.stream('{"label": "positive", "stars": 5}'),
        Reply.stream("I think it is negative."),
        Reply.stream('{"label": "negative", "stars": 1}'),
    )
    options = session.options()
    batch = session.map(
        "Rate: {item}", ["great", "awful"], options, concurrency=1, schema="label, stars int"
    )
    assert batch.wait(10)
    assert batch.values() == [
        {"label": "positive", "stars": 5},
        {"label": "negative", "stars": 1},
    ]
    first, _, repair = (r.json["messages"] for r in chat_requests(server))
    assert "JSON schema" in first[0]["content"]  # the instruction, as --schema sends it
    assert repair[-2] == {"role": "assistant", "content": "I think it is negative."}
    assert "Reply again" in repair[-1]["content"]
