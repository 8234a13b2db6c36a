"""Record and replay at the event source: a :class:`CachePlan` decides, before anything is
written or sent, whether a request is answered from a recording (``AmigoMagics.cache`` =
``auto`` with a hit, or ``replay``) or by the model (recorded when it completes). A replayed
answer is fed through the same :class:`~.answer.Answer` (its text in pieces, its usage, its
finish reason) or :class:`~.answer.ImageAnswer` as a live one, so every front end shows it the
same way; its status line says it was replayed and when it was recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .cache import (
    CACHE_MODES,
    Recording,
    Recordings,
    ReplayMissError,
    explain_miss,
    fingerprint,
    request_parts,
)
from .errors import ConfigError
from .protocol import Event, Finish, ReasoningDelta, TextDelta, Usage
from .redact import scrub

if TYPE_CHECKING:
    from .answer import Answer, ImageAnswer, Live
    from .backends import ChatRequest
    from .config import Preferences
    from .history import HistoryStore, StoredImage
    from .routing import Target
    from .usage import Spent, TurnUsage, UsageReport

__all__ = ["CachePlan", "SessionCache", "cache_mode", "chat_parts", "image_parts"]

PIECES = 40  # a replayed text arrives in at most this many pieces
REPLAY_SECONDS = 0.2  # …spread over about this long: it streams, quickly
_WORDS = re.compile(r"\S+\s*|\s+")


def cache_mode(setting: str, env: Mapping[str, str]) -> str:
    """``AmigoMagics.cache``, else ``$AMIGO_CACHE``, else ``off``; a value that is none of the
    modes is one line that names them."""
    mode = (setting or env.get("AMIGO_CACHE", "") or "off").strip().lower()
    if mode not in CACHE_MODES:
        raise ConfigError(
            f"AMIGO_CACHE is {mode!r}: it must be one of {', '.join(CACHE_MODES)} "
            "(off: always call; auto: reuse a recorded answer, else call and record; replay: "
            "never call)."
        )
    return mode


def chat_parts(target: Target, request: ChatRequest, fmt: str) -> dict[str, Any]:
    """A chat request's parts: everything the backend is sent that shapes the answer."""
    params: dict[str, Any] = {
        name: getattr(request.params, name)
        for name in ("temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")
    }
    params.update(getattr(request.params, "extra", None) or {})
    for name in ("response_format", "tools"):  # a --schema, tools (when the request has them)
        value = getattr(request, name, None)
        if value:
            params[name] = value if isinstance(value, Mapping) else [dict(v) for v in value]
    return request_parts(
        kind="chat",
        backend=target.backend,
        endpoint=target.endpoint.name if target.endpoint else None,
        model=target.model or target.label,
        messages=request.messages,
        params=params,
        fmt=fmt,
    )


def image_parts(target: Target, prompt: str) -> dict[str, Any]:
    return request_parts(
        kind="image",
        backend=target.backend,
        endpoint=target.endpoint.name if target.endpoint else None,
        model=target.model or target.label,
        prompt=prompt,
    )


def scrubbed(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (JSON-like) with every key in ``secrets`` masked in each of its strings."""
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {k: scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(v, secrets) for v in value]
    return value


class CachePlan:
    """One request's way through the cache: ``found`` is the recording it is answered from
    (None: the model is called, and what it answers recorded unless the mode is ``off``).

    Raises :class:`~.cache.ReplayMissError` in ``replay`` mode when nothing was recorded for
    the request — at construction, before anything is written or sent."""

    def __init__(
        self,
        mode: str,
        recordings: Recordings | None,
        parts: dict[str, Any],
        *,
        notebook: str,
        fresh: bool = False,
    ) -> None:
        self.mode = mode
        self.recordings = recordings
        self.parts = parts
        self.notebook = notebook
        self.key = fingerprint(parts)
        self.found: Recording | None = None
        if mode == "off" or recordings is None:
            return
        if fresh and mode == "replay":
            raise ConfigError(
                "--fresh calls the model, which AmigoMagics.cache = 'replay' never does: set "
                "it to 'auto' to call and record again."
            )
        if not fresh:
            self.found = recordings.lookup(self.key)
        if self.found is None and mode == "replay":
            closest = recordings.closest(parts, notebook)
            where, damaged = recordings.where, recordings.damaged
            raise ReplayMissError(explain_miss(parts, closest, where, damaged))

    def mark(self, live: Live) -> None:
        """Say on ``live`` (its status line, its turn) that it is a replay."""
        if self.found is None:
            return
        note = f"replayed · recorded {self.found.when} · no cost"
        live.context = f"{note} · {live.context}" if live.context else note
        live.meta["replayed"] = self.found.created

    async def events(self) -> AsyncGenerator[Event, None]:
        """The recorded answer as a stream: its text in pieces, its usage, its finish."""
        found = self.found
        assert found is not None
        words = _WORDS.findall(found.text)
        size = max(1, -(-len(words) // PIECES))
        pieces = ["".join(words[i : i + size]) for i in range(0, len(words), size)]
        pause = REPLAY_SECONDS / max(len(pieces), 1)
        if found.reasoning:
            yield ReasoningDelta(found.reasoning)
        for piece in pieces:
            yield TextDelta(piece)
            await asyncio.sleep(pause)
        if found.prompt_tokens is not None or found.completion_tokens is not None:
            yield Usage(found.prompt_tokens, found.completion_tokens)
        if found.finish:
            yield Finish(found.finish)

    def keep_answer(self, answer: Answer) -> None:
        """Record ``answer``, which completed (auto and replay modes; never a replay itself)."""
        if self.mode == "off" or self.recordings is None or self.found is not None:
            return
        prompt_tokens, completion_tokens, estimated = answer.token_counts()
        self.recordings.record(
            Recording(
                key=self.key,
                request=scrubbed(self.parts, answer.secrets),  # a file meant to be committed
                text=answer.text,
                reasoning=getattr(answer, "reasoning", ""),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                estimated=estimated,
                finish=answer.finish_reason,
                notebook=self.notebook,
            )
        )

    def keep_pictures(self, answer: ImageAnswer) -> None:
        if self.mode == "off" or self.recordings is None or self.found is not None:
            return
        if answer.images:
            self.recordings.record(
                Recording(
                    key=self.key,
                    request=self.parts,
                    images=tuple(answer.images),
                    notebook=self.notebook,
                )
            )


class SessionCache:
    """The session's step before a request: the budget, the local model's parameters, and the
    cache plan — everything that can refuse a request before anything is written or sent —
    then the notes an answer carries (its backend, model id, parameters, estimated prompt)."""

    def __init__(self, session: Any) -> None:
        self._session = session  # a ChatSession: preferences, preview, store, notebook, env
        self._recordings: tuple[str, Recordings] | None = None
        self._plans: weakref.WeakKeyDictionary[Live, CachePlan] = weakref.WeakKeyDictionary()
        self._charged: list[tuple[object, Any]] = []  # requests that keep no turn: (owner, use)
        self._totals: dict[tuple[object, ...], Any] = {}  # map items: one use per model and day

    @property
    def _prefs(self) -> Preferences:
        return self._session.preferences()  # type: ignore[no-any-return]

    def recordings(self) -> Recordings:
        """The store of recordings the settings name now (the cache file, else the history
        database); ``lookup(fingerprint(parts))`` / ``record(recording)`` are its API."""
        from .cache import open_recordings

        env = self._session._env
        path = self._prefs.cache_file or env.get("AMIGO_CACHE_FILE", "")
        if self._recordings is None or self._recordings[0] != path:
            if self._recordings is not None:
                self._recordings[1].close()
            store = self._session.store
            history = str(getattr(store, "path", ":memory:"))
            self._recordings = (path, open_recordings(path, history))
        return self._recordings[1]

    def extra(self, items: Sequence[str], effort: str | None) -> dict[str, Any]:
        """A request's extra body fields: ``AmigoMagics.params``, ``-p`` items, ``--effort``."""
        from .model_params import request_params

        return request_params(self._prefs.params, items, effort)

    def describe(self) -> str:
        """The cache as ``%amigo config`` shows it: its mode, and where recordings live."""
        mode = self.mode()
        if mode == "off":
            return "off"
        return f"{mode}, recordings in {self.recordings().where}"

    def mode(self) -> str:
        return cache_mode(self._prefs.cache, self._session._env)

    def before_chat(self, prompt: Any, options: Any, target: Target) -> CachePlan | None:
        """Refuse now (raise) or return the request's plan (None: caching off)."""
        from .backends import ChatRequest

        if target.backend == "local":
            from .model_params import check_local

            check_local(options.params.extra)
        mode = self.mode()
        if mode != "off" and getattr(options, "toolbox", None) is not None:
            if mode == "replay":  # a replay would have to run the notebook's functions again
                raise ConfigError(
                    "Answers that call -T tools are not recorded, so AmigoMagics.cache = "
                    "'replay' cannot answer this cell: set it to 'auto'."
                )
            mode = "off"  # typed answers (--schema) are: their final, valid text
        plan = None
        if mode != "off":
            preview = self._session.preview(prompt, options)
            request = ChatRequest(target.model, preview.messages, options.params)
            parts = chat_parts(target, request, options.fmt)
            plan = CachePlan(
                mode, self.recordings(), parts, notebook=self._session.notebook,
                fresh=options.fresh,
            )  # fmt: skip
        if plan is None or plan.found is None:
            self.check_budget()
        return plan

    def before_image(self, prompt: str, options: Any, target: Target) -> CachePlan | None:
        mode = self.mode()
        plan = None
        if mode != "off":
            parts = image_parts(target, prompt)
            plan = CachePlan(
                mode, self.recordings(), parts, notebook=self._session.notebook,
                fresh=getattr(options, "fresh", False),
            )  # fmt: skip
        if plan is None or plan.found is None:
            self.check_budget()
        return plan

    def start(
        self,
        plan: CachePlan | None,
        live: Live,
        target: Target,
        messages: Any = (),
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """What the answer's turn keeps about its request, and a replay's note."""
        from .usage import estimate_prompt_tokens

        live.meta.update(backend=target.backend, model_id=target.model or target.label)
        if hasattr(live, "images"):
            live.meta["kind"] = "image"
        if params:  # kept in history: never a key the request was sent with
            live.meta["params"] = scrubbed(dict(params), getattr(live, "secrets", ()))
        if messages and hasattr(live, "prompt_estimate"):
            live.prompt_estimate = estimate_prompt_tokens(messages)
        if plan is not None:
            plan.mark(live)
            self._plans[live] = plan

    def replay(self, live: Live) -> AsyncGenerator[Event, None] | None:
        """The recorded events that answer ``live``, or None: the model is asked."""
        plan = self._plans.get(live)
        return plan.events() if plan is not None and plan.found is not None else None

    def completed(self, live: Live) -> None:
        """``live`` completed — every round of it (a typed answer's repair included): record
        its final text, or its pictures, under its plan (none: caching is off)."""
        plan = self._plans.pop(live, None)
        if plan is None:
            return
        if hasattr(live, "images"):
            plan.keep_pictures(live)  # type: ignore[arg-type]
        else:
            plan.keep_answer(live)  # type: ignore[arg-type]

    def pictures(self, live: ImageAnswer) -> tuple[StoredImage, ...] | None:
        """The recorded pictures that answer ``live``, or None: the model is asked."""
        plan = self._plans.get(live)
        return plan.found.images if plan is not None and plan.found is not None else None

    def check_budget(self) -> Spent | None:
        """A :class:`~.usage.BudgetExceededError` once this notebook reached its cap; else what
        it spent so far (None: no cap, nothing added up)."""
        prefs = self._prefs
        if not (prefs.budget_tokens or prefs.budget_usd):
            return None
        from .usage import Spent, check_budget

        spent = Spent.of(self.uses())
        check_budget(spent, prefs.budget_tokens, prefs.budget_usd)
        return spent

    def charge(
        self,
        target: Target,
        messages: Any,
        usage: Usage | None,
        text: str = "",
        owner: object = None,
    ) -> TurnUsage:
        """Count a request that keeps no turn (an ``amigo_magic.map`` item, a side-by-side
        answer not kept) toward this notebook's usage and budget, for this kernel: the server's
        counts, else estimates. ``owner`` names it for :meth:`discharge`. Returns what this
        one request used."""
        from .usage import TurnUsage, estimate_prompt_tokens

        prompt = usage.prompt_tokens if usage is not None else None
        completion = usage.completion_tokens if usage is not None else None
        use = TurnUsage(
            model=target.label,
            backend=target.backend,
            model_id=target.model or target.label,
            prompt_tokens=prompt if prompt is not None else estimate_prompt_tokens(messages),
            completion_tokens=completion if completion is not None else -(-len(text) // 4),
            estimated=prompt is None or completion is None,
            replayed=False,
            created=time.time(),
            chat="(not kept)",
            notebook=self._session.notebook,
        )
        if owner is None:  # a map item: folded into its model's and day's total, so a batch's
            # memory stays flat in its items
            key = (use.model, use.backend, use.model_id, use.estimated, int(use.created // 86400))
            held = self._totals.get(key)
            total = use
            if held is not None:
                total = dataclasses.replace(
                    use,
                    prompt_tokens=held.prompt_tokens + use.prompt_tokens,
                    completion_tokens=held.completion_tokens + use.completion_tokens,
                    requests=held.requests + 1,
                )
            self._totals[key] = total
            return use
        self._charged.append((owner, use))
        return use

    def discharge(self, owner: object) -> None:
        """``owner``'s request now keeps its turn (a kept side-by-side answer): the turn counts."""
        self._charged = [(o, use) for o, use in self._charged if o is not owner]

    def uses(self, chat: str | None = None) -> list[Any]:
        """This notebook's answered requests (one chat's with ``chat``; without, the map items
        this kernel counted too)."""
        from .usage import turn_usage

        store: HistoryStore = self._session.store
        notebook = self._session.notebook
        chats = [chat] if chat else [c.name for c in store.chats(notebook)]
        found = [] if chat else [use for _, use in self._charged] + list(self._totals.values())
        for name in chats:
            for turn in store.load(notebook, name):
                use = turn_usage(turn, chat=name, notebook=notebook)
                if use is not None:
                    found.append(use)
        return found

    def usage(self, chat: str | None = None, everything: bool = False) -> UsageReport:
        """``%amigo usage``: this notebook's (or one chat's) requests, tokens and cost per
        model; with ``everything``, every notebook's in the history file, per day and model."""
        from .usage import report, usage_from_file

        if everything:
            path = str(getattr(self._session.store, "path", ":memory:"))
            uses = usage_from_file(path) if path != ":memory:" else self.uses()
            return report(uses, by_day=True, title="Every notebook: ")
        title = f"Chat '{chat}': " if chat else "This notebook: "
        return report(self.uses(chat), title=title)

    def notices(self) -> list[str]:
        if self._recordings is None:
            return []
        found = self._recordings[1].notices
        taken = list(found)
        found.clear()
        return taken
