"""Live answers: the state one request builds up, written by the loop thread, read by any thread.

An :class:`Answer` (text) or :class:`ImageAnswer` (pictures) is changed only through its methods:
the session's stream calls :meth:`Answer.add_text`, :meth:`~Answer.progress`, :meth:`~Answer.end`…
on the loop thread; a front end reads :meth:`~Live.snapshot` and may :meth:`~Live.stop` it, or
:meth:`~Live.abandon` it when a stopped request never came back. Appending a piece is all the
per-token work; rendering belongs to the front end, throttled by :mod:`.pacer`.

Pure of IPython, widgets and the network; :meth:`Live.turn` is what history keeps of one.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .context import CHARS_PER_TOKEN
from .errors import AmigoError
from .history import Turn
from .redact import scrub

if TYPE_CHECKING:
    from .history import Status, StoredImage
    from .protocol import ToolCallDelta, Usage

__all__ = ["Answer", "AnswerState", "ImageAnswer", "Live", "ModelSource", "Phase", "one_line"]

Phase = Literal["thinking", "loading", "drawing", "streaming", "done", "stopped", "error"]
LIVE_PHASES: frozenset[str] = frozenset({"thinking", "loading", "drawing", "streaming"})
PACK = 512  # streamed pieces joined into one string at a time
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # a local reasoning model's thinking, first


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(text.split())


def error_line(error: BaseException | None) -> str | None:
    """The one line shown for ``error``: an AmigoError's message, else ``Type: message``."""
    if error is None:
        return None
    if isinstance(error, AmigoError):
        return one_line(str(error))
    return one_line(f"{type(error).__name__}: {error}")


@dataclass(frozen=True, slots=True)
class AnswerState:
    """Everything shown for one answer at one moment: its text so far and its status."""

    text: str
    model: str
    chat: str
    phase: Phase
    seconds: float
    tokens: int | None = None
    error: str | None = None
    warning: str | None = None
    context: str | None = None  # what the prompt's {fields} sent: "context: 1 object · ~512 tokens"
    tokens_estimated: bool = False  # ``tokens`` is an estimate: the server has not said (yet)
    reasoning: str = ""  # a thinking model's reasoning so far: shown apart, never in ``text``


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Models a backend offers right now: an endpoint's live list, or the local model."""

    name: str
    where: str
    models: tuple[str, ...] = ()
    error: str | None = None


class Live:
    """What every live request shares: its phase, its clock, its ending, and how to stop it."""

    def __init__(self, *, model: str, chat: str, phase: Phase) -> None:
        self.model = model
        self.chat = chat
        self._phase: Phase = phase
        self.started = time.monotonic()
        self.finished: float | None = None
        self.error: BaseException | None = None
        self.warnings: list[str] = []
        self.changed = threading.Event()  # set on every change; a follower clears it
        self.done = threading.Event()
        self.future: concurrent.futures.Future[None] | None = None
        self.length = 0  # characters of text so far (0 for pictures)
        self.context: str | None = None
        self.meta: dict[str, Any] = {}  # kept in the turn's meta: parameters, replay, usage notes
        self._errands: list[Callable[[], None]] = []  # for the follower's thread (tool approval)

    # -- read side (any thread) ----------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def status(self) -> Status:
        """How the turn is recorded: complete, stopped or error."""
        if self._phase == "stopped":
            return "stopped"
        return "error" if self._phase == "error" else "complete"

    @property
    def stop_requested(self) -> bool:
        return self.future is not None and self.future.cancelled()

    def stop(self) -> None:
        """Cancel the request; whatever arrived stays, marked stopped."""
        if self.future is not None:
            self.future.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def abandon(self) -> None:
        """A follower gave up waiting for a stopped request to record itself: show it stopped."""
        if not self.done.is_set():
            self._phase = "stopped"
            self.finished = self.finished or time.monotonic()

    def snapshot(self) -> AnswerState:
        """What is shown for the request at this moment."""
        return AnswerState(
            text=self.text,
            model=self.model,
            chat=self.chat,
            phase=self.phase,
            seconds=self.seconds,
            tokens=self.shown_tokens,
            error=error_line(self.error),
            warning="; ".join(self.warnings) or None,
            context=self.context,
            tokens_estimated=self.tokens_estimated,
            reasoning=self.reasoning,
        )

    @property
    def tokens_estimated(self) -> bool:
        return False

    @property
    def reasoning(self) -> str:
        return ""

    @property
    def text(self) -> str:  # pragma: no cover - each kind says what it shows
        raise NotImplementedError

    @property
    def shown_tokens(self) -> int | None:
        """The token count the status line shows (None: none to show)."""
        return None

    def turn(self, cell_id: str | None) -> Turn:  # pragma: no cover - each kind keeps its own
        """The assistant turn history keeps of this answer."""
        raise NotImplementedError

    # -- write side (the loop thread) ------------------------------------------------------------

    def running(self, future: concurrent.futures.Future[None]) -> None:
        """The request's task on the loop: what :meth:`stop` cancels."""
        self.future = future

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def errand(self, work: Callable[[], None]) -> None:
        """Have the follower run ``work`` on its own thread (a cell's tool approval and call run
        on the kernel's main thread, where input() and the user's functions belong)."""
        self._errands.append(work)
        self.changed.set()

    def take_errands(self) -> list[Callable[[], None]]:
        found, self._errands[:] = list(self._errands), []
        return found

    def progress(self, phase: Phase) -> None:
        """A phase before the first text (``loading`` a model): shown at once."""
        if not self.length:
            self._phase = phase
            self.changed.set()

    def end(self) -> None:
        self._phase = "done"

    def cancelled(self) -> None:
        self._phase = "stopped"

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._phase = "error"

    def settle(self) -> None:
        """The request is over, however it ended: its clock stops (before it is recorded)."""
        self.finished = self.finished or time.monotonic()

    def close(self) -> None:
        """Recorded: readers wake and see the final state."""
        self.settle()
        self.done.set()
        self.changed.set()


class Answer(Live):
    """One text answer as it arrives. ``secrets`` are the keys the request was sent with: a
    model (or a proxy) that echoes one in its answer never gets it shown or kept."""

    def __init__(
        self, *, model: str, chat: str, secrets: Sequence[str] = (), context: str | None = None
    ) -> None:
        super().__init__(model=model, chat=chat, phase="thinking")
        self.context = context
        self.secrets = tuple(s for s in secrets if s)
        self.parts: list[str] = []
        self._packed = 0  # parts[:_packed] are blocks of PACK pieces joined
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.chunks = 0
        self.prompt_estimate: int | None = None  # the messages' tokens, estimated when sent
        self.requests = 1  # the requests it took: a --schema repair, each -T round, one more
        self._before: tuple[int, int, bool] = (0, 0, False)  # the earlier requests' counts
        self._round_start = 0  # the text's length when this request began
        self.tool_deltas: list[ToolCallDelta] = []  # the model's tool calls, in pieces (-T)
        self.value: Any = None  # --schema: the validated object
        self.thoughts: list[str] = []  # reasoning deltas, and a leading <think>…</think>
        self._opening: str | None = ""  # the text's start while it may open <think> (None: no)
        self._thinking = False  # inside a leading <think>

    @property
    def text(self) -> str:
        text = "".join(self.parts)
        return scrub(text, self.secrets) if self.secrets else text

    @property
    def tokens(self) -> int:
        """Completion tokens of all its requests as the server counted them, else estimated
        from the text's length (~4 characters a token; :attr:`tokens_estimated` says which)."""
        if self.usage is not None and self.usage.completion_tokens is not None:
            return self._before[1] + self.usage.completion_tokens
        written = self.length - self._round_start
        return self._before[1] + (written + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN

    @property
    def tokens_estimated(self) -> bool:
        return self.usage is None or self.usage.completion_tokens is None or self._before[2]

    @property
    def unanswered(self) -> bool:
        """It failed before the server answered anything (a refused key, no connection): no
        text, reasoning, finish or usage came back, so the request cost nothing."""
        heard = self.usage is not None or self.finish_reason is not None or self.thoughts
        return self.error is not None and not heard and self.length == self._round_start

    def token_counts(self) -> tuple[int | None, int | None, bool]:
        """(prompt, completion) tokens of all its requests as the server said, else estimated;
        and whether any is an estimate. A request that got no answer counts nothing."""
        usage = self.usage
        prompt = usage.prompt_tokens if usage is not None else None
        completion = usage.completion_tokens if usage is not None else None
        estimated = False
        if prompt is None and self.prompt_estimate is not None and not self.unanswered:
            prompt, estimated = self.prompt_estimate, True
        if completion is None and self.length > self._round_start:
            completion, estimated = self.tokens - self._before[1], True
        if self.requests == 1:
            return prompt, completion, estimated
        before_prompt, before_completion, before_estimated = self._before
        return (
            before_prompt + (prompt or 0),
            before_completion + (completion or 0),
            estimated or before_estimated,
        )

    def another_request(self, prompt_estimate: int | None) -> None:
        """One more request for this answer (a -T round, a --schema repair): what the last one
        used is kept, and the next one is counted on top of it."""
        prompt, completion, estimated = self.token_counts()
        self._before = (prompt or 0, completion or 0, estimated)
        self.requests += 1
        self.usage = self.finish_reason = None
        self.prompt_estimate = prompt_estimate
        self._round_start = self.length

    @property
    def shown_tokens(self) -> int | None:
        return self.tokens if self.chunks else None

    def add_text(self, piece: str) -> None:
        """One streamed piece: an append and a counter (the per-token path; keep it short)."""
        if self._opening is not None:  # the first pieces: a leading <think> goes apart
            piece = self._open(piece)
            if not piece:
                return
        parts = self.parts
        parts.append(piece)
        self.length += len(piece)
        self.chunks += 1
        if len(parts) - self._packed >= PACK:
            # A few characters per piece cost ~14x their size as separate strings; one slice
            # assignment packs the newest PACK into one, atomically for a reader's "".join.
            parts[self._packed :] = ["".join(parts[self._packed :])]
            self._packed += 1
        if self.chunks == 1:
            self._phase = "streaming"
        self.changed.set()

    def turn(self, cell_id: str | None) -> Turn:
        prompt, completion, estimated = self.token_counts()
        meta = dict(self.meta)
        if estimated:
            meta["tokens_estimated"] = True  # the server did not count them
        if self.thoughts:
            meta["reasoning"] = self.reasoning  # kept, never sent back or shown as the answer
        return Turn(
            "assistant",
            self.text,
            model=self.model,
            status=self.status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            seconds=round(self.seconds, 3),
            cell_id=cell_id,
            error=str(self.error) if self.error is not None else None,
            meta=meta,
        )

    def add_tool_delta(self, delta: ToolCallDelta) -> None:
        """A piece of a tool call (the session's tool loop assembles and runs them)."""
        self.tool_deltas.append(delta)

    def take_tool_deltas(self) -> list[ToolCallDelta]:
        found, self.tool_deltas = self.tool_deltas, []
        return found

    def set_value(self, value: Any) -> None:
        """The typed object an answer's text was validated into (``--schema``)."""
        self.value = value

    def restart(self, note: str) -> None:
        """Another round replaces the text so far (a repair): the note says why."""
        self.parts[:] = []
        self._packed = self.length = self.chunks = self._round_start = 0
        self._phase = "thinking"
        self.warn(note)
        self.changed.set()

    def set_usage(self, usage: Usage) -> None:
        self.usage = usage

    @property
    def reasoning(self) -> str:
        """The reasoning so far (keys the request was sent with masked), never the answer."""
        text = "".join(self.thoughts).strip()
        return scrub(text, self.secrets) if self.secrets else text

    def add_reasoning(self, piece: str) -> None:
        self.thoughts.append(piece)
        self.changed.set()

    def add_event(self, event: object) -> None:
        """An event the stream loop does not handle itself: reasoning, a tool call's piece."""
        text = getattr(event, "text", None)
        if type(event).__name__ == "ReasoningDelta" and isinstance(text, str):
            self.add_reasoning(text)
        elif type(event).__name__ == "ToolCallDelta":
            self.add_tool_delta(event)  # type: ignore[arg-type]

    def _open(self, piece: str) -> str:
        """The text a piece adds to the answer while its start may still open ``<think>``:
        reasoning up to ``</think>`` goes to :attr:`thoughts`; held text comes out once it
        cannot be a tag (at most ``len("</think>")`` characters are held)."""
        held = (self._opening or "") + piece
        if not self._thinking:
            start = held.lstrip()
            if len(start) < len(THINK_OPEN) and THINK_OPEN.startswith(start):
                self._opening = held  # "<thi…": not yet known
                return ""
            if not start.startswith(THINK_OPEN):
                self._opening = None
                return held
            self._thinking, held = True, start[len(THINK_OPEN) :]
        end = held.find(THINK_CLOSE)
        if end >= 0:
            self.add_reasoning(held[:end])
            self._opening, self._thinking = None, False
            return held[end + len(THINK_CLOSE) :].lstrip("\r\n")
        keep = len(THINK_CLOSE) - 1  # a "</thi" split across pieces
        if len(held) > keep:
            self.add_reasoning(held[:-keep])
            held = held[-keep:]
        self._opening = held
        return ""

    def set_finish(self, reason: str | None) -> None:
        self.finish_reason = reason

    def end(self) -> None:
        if self.finish_reason == "length":
            self.warn("cut at the token limit: raise --max-tokens for more")
        super().end()

    def settle(self) -> None:
        # One string from now on: every later ``.text`` returns this object, not a copy.
        if self._opening:  # the stream ended inside (or at the start of) a <think>
            held, self._opening = self._opening, None
            if self._thinking:
                self.add_reasoning(held)
            else:  # a short answer that only looked like the start of a tag
                self.parts.append(held)
                self.length += len(held)
        self.parts[:] = ["".join(self.parts)] if self.parts else []
        super().settle()


class ImageAnswer(Live):
    """The pictures of one image request, fetched to bytes."""

    def __init__(self, *, model: str, chat: str, prompt: str) -> None:
        super().__init__(model=model, chat=chat, phase="drawing")
        self.prompt = prompt
        self.images: list[StoredImage] = []
        self.skipped = 0  # pictures the reply offered beyond the per-reply cap

    def turn(self, cell_id: str | None) -> Turn:
        return Turn(
            "assistant",
            self.text,
            model=self.model,
            status=self.status,
            seconds=round(self.seconds, 3),
            cell_id=cell_id,
            images=tuple(self.images),
            error=str(self.error) if self.error is not None else None,
            meta=dict(self.meta),
        )

    def skip(self, listed: int, kept: int) -> None:
        """The reply listed ``listed`` pictures; only the first ``kept`` are fetched."""
        self.skipped = max(0, listed - kept)
        if self.skipped:
            self.warn(
                f"The reply listed {listed} pictures: {self.skipped} skipped, at most {kept} are "
                "fetched and kept per reply."
            )

    def add_images(self, images: Sequence[StoredImage]) -> None:
        self.images.extend(images)
        self.changed.set()

    @property
    def text(self) -> str:
        """What history keeps as the turn's text: ``[2 pictures of: …]``."""
        count = len(self.images)
        if not count:
            return ""
        return f"[{count} picture{'s' if count != 1 else ''} of: {self.prompt}]"
