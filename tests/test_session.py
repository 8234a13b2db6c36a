"""The session layer alone, on a scripted fake backend (no HTTP server), as llm's tests enqueue
answers: a streamed answer, a stop, an error after partial text, pictures — and what history
holds after each, and what the next request is sent."""

from __future__ import annotations

import asyncio
import base64
import io
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from amigo_magic.backends import ChatRequest, ImageRequest
from amigo_magic.config import Preferences, Settings
from amigo_magic.errors import StreamError
from amigo_magic.history import CUT_OFF_NOTE
from amigo_magic.protocol import Event, Finish, Image, ImageResult, TextDelta, Usage
from amigo_magic.routing import Target
from amigo_magic.runner import Runner
from amigo_magic.session import ChatSession
from amigo_magic.store import SQLiteStore

NOTEBOOK = "fake.ipynb"
SETTINGS = Settings()

# One step of a script: an event to yield, a pause (seconds) before the next, or an error.
Step = Event | float | BaseException


class ScriptedBackend:
    """Answers from a queue of scripts; keeps every request it was given."""

    name = "scripted"

    def __init__(self) -> None:
        self.scripts: deque[list[Step]] = deque()
        self.pictures: deque[ImageResult | BaseException] = deque()
        self.requests: list[ChatRequest] = []
        self.image_requests: list[ImageRequest] = []
        self.closed = False
        self.made = 0  # times the session's factory made it

    def enqueue(self, *steps: Step) -> None:
        self.scripts.append(list(steps))

    def say(self, *words: str) -> None:
        """A well-formed answer of these pieces, with usage and a finish reason."""
        self.enqueue(*(TextDelta(w) for w in words), Usage(3, len(words)), Finish("stop"))

    async def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        self.requests.append(request)
        for step in self.scripts.popleft():
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            yield step

    async def image(self, request: ImageRequest) -> ImageResult:
        self.image_requests.append(request)
        result = self.pictures.popleft()
        if isinstance(result, BaseException):
            raise result
        return result

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def session(tmp_path: Path, backend: ScriptedBackend) -> Iterator[ChatSession]:
    runner = Runner()
    store = SQLiteStore(tmp_path / "history.db")

    def factory(target: Target, settings: Settings) -> ScriptedBackend:
        backend.made += 1
        return backend

    session = ChatSession(store=store, notebook=NOTEBOOK, runner=runner, backend_factory=factory)
    yield session
    runner.close()
    if backend.made:
        assert backend.closed  # the runner's close closed the pooled backend
    store.close()


def history(session: ChatSession, chat: str = "default") -> list[tuple[str, str, str]]:
    return [(t.role, t.content, t.status) for t in session.history(chat)]


def ask(session: ChatSession, prompt: str, **options: Any) -> Any:
    answer = session.ask(prompt, session.options(**options), SETTINGS)
    assert answer.wait(10), "the answer never ended"
    return answer


def png() -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 3), (10, 200, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- a streamed answer -------------------------------------------------------------------------


def test_a_streamed_answer_is_shown_whole_and_kept(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.say("Hello", ", ", "world")
    answer = ask(session, "greet me")
    state = answer.snapshot()
    assert (state.text, state.phase, state.tokens) == ("Hello, world", "done", 3)
    assert history(session) == [
        ("user", "greet me", "complete"),
        ("assistant", "Hello, world", "complete"),
    ]
    (stored,) = [t for t in session.history() if t.role == "assistant"]
    assert stored.completion_tokens == 3
    assert stored.reply_to == session.history()[0].uid  # paired with its own question


def test_the_next_request_carries_the_conversation_and_the_preferences(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    session.preferences = lambda: Preferences(system_prompt="Be brief.", max_tokens=77)
    backend.say("one")
    backend.say("two")
    ask(session, "first")
    ask(session, "second", temperature=0.3)
    request = backend.requests[-1]
    assert [(m["role"], m["content"]) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
    ]
    assert (request.params.max_tokens, request.params.temperature) == (77, 0.3)


def test_max_history_is_the_number_of_earlier_messages_sent(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    for n in range(5):
        backend.say(f"a{n}")
        ask(session, f"q{n}")
    session.preferences = lambda: Preferences(max_history=2)
    backend.say("last")
    ask(session, "now")
    assert [m["content"] for m in backend.requests[-1].messages] == ["q4", "a4", "now"]
    session.preferences = lambda: Preferences(max_history=0)
    backend.say("alone")
    ask(session, "alone?")
    assert [m["content"] for m in backend.requests[-1].messages] == ["alone?"]


def test_a_no_history_prompt_is_sent_alone_and_never_again(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.say("kept")
    ask(session, "context")
    backend.say("aside")
    ask(session, "a one-off", use_history=False)
    assert [m["content"] for m in backend.requests[-1].messages] == ["a one-off"]
    backend.say("next")
    ask(session, "and then?")
    assert [m["content"] for m in backend.requests[-1].messages] == [
        "context",
        "kept",
        "and then?",
    ]


def test_a_rerun_cell_replaces_its_exchange(session: ChatSession, backend: ScriptedBackend) -> None:
    backend.say("first try")
    ask(session, "v1", cell_id="cell-1")
    backend.say("second try")
    ask(session, "v2", cell_id="cell-1")
    assert [m["content"] for m in backend.requests[-1].messages] == ["v2"]  # not its old self
    assert history(session) == [
        ("user", "v2", "complete"),
        ("assistant", "second try", "complete"),
    ]


# -- a stop ------------------------------------------------------------------------------------


def test_a_stopped_answer_keeps_its_text_marked_stopped(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.enqueue(TextDelta("partial "), TextDelta("text"), 30.0, TextDelta("never"))
    answer = session.ask("long one", session.options(), SETTINGS)
    while answer.length < len("partial text"):
        answer.changed.wait(1)
    answer.stop()
    assert answer.wait(5)
    assert answer.snapshot().phase == "stopped"
    assert answer.text == "partial text"
    assert history(session)[-1] == ("assistant", "partial text", "stopped")
    backend.say("ok")
    ask(session, "go on")
    sent = backend.requests[-1].messages
    assert sent[1] == {"role": "assistant", "content": "partial text" + CUT_OFF_NOTE}


# -- an error after partial text ---------------------------------------------------------------


def test_an_error_after_partial_text_keeps_the_text_and_the_error(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.enqueue(TextDelta("Half an"), StreamError("the server broke off mid-way"))
    answer = ask(session, "explain")
    state = answer.snapshot()
    assert (state.phase, state.text) == ("error", "Half an")
    assert state.error == "the server broke off mid-way"
    (stored,) = [t for t in session.history() if t.role == "assistant"]
    assert (stored.content, stored.status, stored.error) == (
        "Half an",
        "error",
        "the server broke off mid-way",
    )
    backend.say("whole")
    ask(session, "again")
    sent = backend.requests[-1].messages
    # the partial answer goes back marked as cut off, so the model never takes it for whole
    assert sent[1] == {"role": "assistant", "content": "Half an" + CUT_OFF_NOTE}


def test_an_error_before_any_text_is_kept_but_never_sent_back(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.enqueue(StreamError("refused"))
    answer = ask(session, "doomed")
    assert (answer.snapshot().phase, answer.text) == ("error", "")
    assert history(session) == [("user", "doomed", "complete"), ("assistant", "", "error")]
    backend.say("fine")
    ask(session, "retry")
    assert [m["content"] for m in backend.requests[-1].messages] == ["retry"]


def test_a_bug_in_a_backend_is_an_error_line_not_a_lost_turn(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.enqueue(TextDelta("so far"), ZeroDivisionError("division by zero"))
    answer = ask(session, "buggy")
    assert answer.snapshot().error == "ZeroDivisionError: division by zero"
    assert history(session)[-1] == ("assistant", "so far", "error")


# -- pictures ----------------------------------------------------------------------------------


def test_pictures_are_fetched_to_bytes_and_kept_with_their_turn(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.pictures.append(ImageResult((Image(b64_json=png()), Image(b64_json=png())), "", ""))
    answer = session.image("a fox", session.options(model="flux"), SETTINGS)
    assert answer.wait(10)
    assert answer.snapshot().phase == "done"
    assert [i.mime for i in answer.images] == ["image/png", "image/png"]
    turns = session.history()
    assert [(t.role, t.content) for t in turns] == [
        ("user", "a fox"),
        ("assistant", "[2 pictures of: a fox]"),
    ]
    assert turns[1].images == tuple(answer.images)
    assert backend.image_requests[0].model == "flux-pro/v1.1"


def test_a_rerun_image_cell_replaces_its_pictures(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    for _ in range(2):
        backend.pictures.append(ImageResult((Image(b64_json=png()),), "", ""))
        answer = session.image("a fox", session.options(cell_id="img-1"), SETTINGS)
        assert answer.wait(10)
    assert [(t.role, len(t.images)) for t in session.history()] == [("user", 0), ("assistant", 1)]


def test_a_failed_picture_keeps_the_prompt_and_says_why(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.pictures.append(ImageResult((Image(b64_json="not base64!"),), "", ""))
    answer = session.image("a fox", session.options(), SETTINGS)
    assert answer.wait(10)
    assert answer.snapshot().error == "The picture's base64 data is corrupt."
    assert history(session) == [("user", "a fox", "complete"), ("assistant", "", "error")]


def test_the_image_model_comes_from_the_preferences(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    session.preferences = lambda: Preferences(image_model="dalle")
    backend.pictures.append(ImageResult((Image(b64_json=png()),), "", ""))
    assert session.image("a cat", session.options(), SETTINGS).wait(10)
    assert backend.image_requests[0].model == "dall-e-3"


# -- the rest of the surface -------------------------------------------------------------------


def test_chats_reset_attach_and_export(
    session: ChatSession, backend: ScriptedBackend, tmp_path: Path
) -> None:
    backend.say("a")
    ask(session, "q", chat="one")
    backend.say("b")
    ask(session, "q", chat="two")
    assert [c.name for c in session.chats()] == ["two", "one"]
    assert session.turn_count("one") == 2
    report = session.export(tmp_path / "out.json", chat="one")
    assert (report.turns, report.pictures) == (2, 0)
    assert '"content": "a"' in (tmp_path / "out.json").read_text()
    assert session.reset("one") == 2
    assert [c.name for c in session.chats()] == ["two"]
    assert session.attach("renamed.ipynb") == []
    assert session.notebook == "renamed.ipynb"


def test_a_lone_surrogate_becomes_a_replacement_character_with_a_notice(
    session: ChatSession,
) -> None:
    assert session.prompt("a \ud800 b").text == "a \ufffd b"
    (notice,) = session.take_notices()
    assert "1 lone surrogate" in notice


def test_one_backend_is_pooled_for_every_request_to_one_target(
    session: ChatSession, backend: ScriptedBackend
) -> None:
    backend.say("a")
    backend.say("b")
    ask(session, "one")
    ask(session, "two")
    assert backend.made == 1
