"""One item of a ``map``: its request without history or display, answered from the recordings
when the replay cache has it (``auto``, ``replay``: nothing sent), else by the model — and then
recorded, so a stopped batch run again sends only the items that have no answer yet. With a
schema the answer is checked, and repaired once, as ``--schema`` does in a cell.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends import Backend, ChatRequest
from .context import build_messages
from .errors import AmigoError, AnswerFormatError
from .protocol import Finish, TextDelta, Usage
from .redact import scrub

if TYPE_CHECKING:
    from .config import Settings
    from .replay import CachePlan
    from .routing import Target
    from .schema import Spec
    from .session import AskOptions, ChatSession
    from .usage import Spent

__all__ = ["Failed", "ItemAsker", "Outcome", "ask_once"]

log = logging.getLogger("amigo_magic.batch")
_NOTHING = object()


@dataclass(frozen=True, slots=True)
class Failed:
    """The result of an item whose request failed: its one-line error (falsy, so
    ``[r for r in results if r]`` keeps the answers)."""

    error: str
    kind: str = "AmigoError"

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"✖ {self.error}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one item brought back: its text (and typed value), token counts, or its error."""

    text: str
    usage: Usage | None = None
    error: BaseException | None = None
    pieces: int = 0
    finish: str | None = None
    cached: bool = False  # answered from a recording: nothing was sent
    value: Any = _NOTHING  # with a schema: the checked object

    @property
    def tokens(self) -> int:
        if self.usage is not None and self.usage.completion_tokens is not None:
            return self.usage.completion_tokens
        return self.pieces

    @property
    def answered(self) -> bool:
        """The server answered something (text, a finish, usage), so the request cost."""
        return self.error is None or bool(self.pieces or self.finish) or self.usage is not None

    @property
    def result(self) -> Any:
        return self.text if self.value is _NOTHING else self.value


async def ask_once(
    backend: Backend, request: ChatRequest, secrets: tuple[str, ...] = ()
) -> Outcome:
    """One request, no history, no display: its whole text, or the error it ended with (a
    cancellation is not caught — a stopped batch stops here)."""
    parts: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    error: Exception | None = None
    try:
        async with aclosing(backend.chat(request)) as events:
            async for event in events:
                kind = type(event)
                if kind is TextDelta:
                    parts.append(event.text)  # type: ignore[union-attr]
                elif kind is Usage:
                    usage = event  # type: ignore[assignment]
                elif kind is Finish:
                    finish = event.reason  # type: ignore[union-attr]
    except Exception as failure:
        error = failure
    text = "".join(parts)
    return Outcome(scrub(text, secrets) if secrets else text, usage, error, len(parts), finish)


class ItemAsker:
    """Asks one item's prompt the way the batch's options say; made once per batch."""

    def __init__(
        self,
        session: ChatSession,
        target: Target,
        settings: Settings,
        options: AskOptions,
        spec: Spec | None,
        spent: Spent | None = None,
    ) -> None:
        self.target, self.options, self.spec = target, options, spec
        prefs = session.preferences()
        self.caps = (prefs.budget_tokens, prefs.budget_usd)
        self.spent = spent  # this notebook's spending so far, when it has a cap
        self.notebook = session.notebook
        self.backend = session._backend(target, settings)
        self.secrets = tuple(settings.known_secrets())
        self.cache = session.cache  # each answered item is charged to the budget
        self.mode = session.cache.mode()
        self.recordings = session.cache.recordings() if self.mode != "off" else None
        self.format = spec.response_format() if spec and target.backend != "amigo" else None

    def request(self, prompt: str) -> ChatRequest:
        messages = build_messages(prompt, [], self.options)
        params = self.options.params
        return ChatRequest(self.target.model, messages, params, response_format=self.format)

    async def __call__(self, prompt: str) -> Outcome:
        request = self.request(prompt)
        plan: CachePlan | None = None
        if self.mode != "off":
            from .replay import CachePlan, chat_parts

            parts = chat_parts(self.target, request, self.options.fmt)
            try:
                plan = CachePlan(
                    self.mode, self.recordings, parts, notebook=self.notebook,
                    fresh=self.options.fresh,
                )  # fmt: skip
            except AmigoError as error:  # replay mode, nothing recorded for this item
                return Outcome("", error=error)
            found = plan.found
            if found is not None:
                usage = Usage(found.prompt_tokens, found.completion_tokens)
                kept = Outcome(found.text, usage, finish=found.finish, cached=True)
                return self._checked(kept, repairable=False)[0]
        outcome = await self._ask(request)
        if self.spec is not None and outcome.error is None:
            outcome, errors = self._checked(outcome, repairable=True)
            if errors:  # one repair round-trip, as --schema does in a cell
                repair = [
                    *request.messages,
                    {"role": "assistant", "content": outcome.text},
                    {"role": "user", "content": self.spec.repair(errors)},
                ]
                again = ChatRequest(
                    request.model, repair, request.params, response_format=self.format
                )
                outcome = self._checked(await self._ask(again), False)[0]
        if plan is not None and outcome.error is None and not outcome.cached:
            self._record(plan, outcome)
        return outcome

    async def _ask(self, request: ChatRequest) -> Outcome:
        """One request to the model, charged to this notebook's usage and budget — not sent
        once the budget is reached (the history's total at the map's start, and the map's)."""
        if self.spent is not None:
            from .usage import check_budget

            try:
                check_budget(self.spent, *self.caps)
            except AmigoError as error:
                return Outcome("", error=error)
        outcome = await ask_once(self.backend, request, self.secrets)
        if outcome.answered:  # a refused request (401, no connection) cost nothing
            use = self.cache.charge(self.target, request.messages, outcome.usage, outcome.text)
            if self.spent is not None:
                from .usage import Spent

                self.spent += Spent.of([use])
        return outcome

    def _checked(self, outcome: Outcome, repairable: bool) -> tuple[Outcome, tuple[str, ...]]:
        """``outcome`` with its typed value; or its errors (repairable), or failed."""
        spec = self.spec
        if spec is None or outcome.error is not None:
            return outcome, ()
        checked = spec.check(outcome.text)
        if checked.ok:
            return _with(outcome, value=checked.value), ()
        if repairable:
            return outcome, checked.errors
        error = AnswerFormatError(f"The answer is not {spec.label}: {checked.errors[0]}")
        return _with(outcome, error=error), ()

    def _record(self, plan: CachePlan, outcome: Outcome) -> None:
        from .cache import Recording

        usage = outcome.usage
        try:
            plan.recordings.record(  # type: ignore[union-attr]
                Recording(
                    key=plan.key,
                    request=plan.parts,
                    text=outcome.text,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    estimated=usage is None,
                    finish=outcome.finish,
                    notebook=self.notebook,
                )
            )
        except Exception as error:  # the answer stands; it is just not kept for a re-run
            log.warning("could not record a map item: %s", error)


def _with(outcome: Outcome, **changes: Any) -> Outcome:
    from dataclasses import replace

    return replace(outcome, **changes)
