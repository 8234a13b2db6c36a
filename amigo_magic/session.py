"""The service layer both front ends call: every operation a ``%%amigo`` cell or the chat panel
needs, written once — resolve the model, build the request from the preferences and history,
run it on the loop thread, follow the live answer, record the turn however it ends; and the
chats, history, exports and model lists around it.

A front end parses, calls one method here, and hands what comes back to :mod:`.render`; it never
opens the store, reads the environment, builds request options or follows an answer itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .answer import Answer, AnswerState, ImageAnswer, Live
from .backends import Backend, ChatRequest, ImageRequest, make_backend
from .config import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    Endpoint,
    Preferences,
    Settings,
    endpoints_from,
)
from .context import Preview, Prompt, build_messages
from .errors import ConfigError
from .history import HistoryStore, Turn
from .pacer import follow, follow_async
from .pictures import MAX_PICTURES, PictureFetcher
from .protocol import ChatParams, Finish, Progress, StreamWarning, TextDelta, Usage
from .replay import SessionCache
from .routing import Target, resolve_target
from .runner import Runner
from .session_library import ExportReport, Library
from .warmup import warm_up as warm_up  # the extension's head start for the first answer

__all__ = ["FORMAT_HINTS", "AskOptions", "ChatSession", "ExportReport", "stop_background"]

log = logging.getLogger("amigo_magic.session")

FORMAT_HINTS = {
    "code": "Reply with one fenced code block and nothing else.",
    "json": "Reply with valid JSON only: no prose, no code fence.",
    "html": "Reply with an HTML fragment (no <html> or <body>).",
}


@dataclass(frozen=True, slots=True)
class AskOptions:
    """How to ask: which chat and model, what to send along. Build it with
    :meth:`ChatSession.options`, which fills in the preferences."""

    chat: str = "default"
    model: str | None = None
    system: str | None = None
    params: ChatParams = field(default_factory=ChatParams)
    use_history: bool = True
    max_history: int = 20
    cell_id: str | None = None
    schema: Any = None  # --schema: a schema.Spec (ChatSession.equip)
    toolbox: Any = None  # -T NAME: a tools.Toolbox (ChatSession.equip)
    fmt: str = "markdown"  # part of the replay key
    fresh: bool = False  # --fresh: call even when a recording answers (cache = auto)


class ChatSession(Library):
    """One notebook's conversations, on one store, through pooled backends.

    ``preferences`` is called whenever settings or options are built, so a ``%config`` change
    applies to the next request of every front end; ``env`` is the only environment it reads.
    """

    def __init__(
        self,
        *,
        store: HistoryStore,
        notebook: str,
        runner: Runner,
        backend_factory: Callable[[Target, Settings], Backend] | None = None,
        preferences: Callable[[], Preferences] = Preferences,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.store = store
        self.notebook = notebook
        self.preferences = preferences
        self._env = env
        self._runner = runner
        self._factory = backend_factory or make_backend
        self._backends: dict[object, Backend] = {}
        self._pictures = PictureFetcher()
        self._asked: dict[Live, tuple[str, Turn]] = {}  # live answer → (notebook, its prompt)
        self._notices: list[str] = []
        self.cache = SessionCache(self)  # budget, cache plan, recordings: before any request
        runner.on_close(self.aclose)

    @classmethod
    def open(
        cls,
        *,
        notebook: str,
        preferences: Callable[[], Preferences] = Preferences,
        env: Mapping[str, str] = os.environ,
    ) -> ChatSession:
        """The session of a kernel: the history database of ``$AMIGO_HOME`` (memory, with a
        notice, when it cannot be opened) on the kernel's runner."""
        from .runner import get_runner
        from .saved_endpoints import with_saved
        from .store import open_store

        store, notices = open_store(env)
        preferences = with_saved(preferences, env)  # %amigo endpoint add: under the trait's
        session = cls(
            store=store, notebook=notebook, runner=get_runner(), preferences=preferences, env=env
        )
        session._notices += notices
        return session

    def close(self) -> None:
        """Close the store and stop the loop thread (the extension's unload)."""
        self.store.close()
        stop_background()

    # -- what the front ends build requests from -------------------------------------------------

    def settings(self) -> Settings:
        """The preferences over the environment over the defaults, resolved now."""
        return self.preferences().settings(self._env)

    def endpoints(self) -> list[Endpoint]:
        """The named endpoints as configured, each key read from its variable — unvalidated,
        so a list can show (masked) what is wrong with one."""
        return endpoints_from(self.preferences().endpoints, self._env)

    def options(
        self,
        *,
        chat: str = "default",
        model: str | None = None,
        system: str | None = None,
        fmt: str = "markdown",
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        use_history: bool = True,
        cell_id: str | None = None,
        params: Sequence[str] = (),
        effort: str | None = None,
        fresh: bool = False,
    ) -> AskOptions:
        """The one builder of a chat request's options: what the caller says (``params``: -p
        items), else the preferences (``max_tokens``, ``system_prompt``…), else the defaults."""
        prefs = self.preferences()
        sampling = ChatParams(
            temperature=_bounded(temperature, DEFAULT_TEMPERATURE, 0, 2, "--temperature"),
            top_p=_bounded(top_p, DEFAULT_TOP_P, 0, 1, "--top-p"),
            max_tokens=int(_bounded(max_tokens, prefs.max_tokens, 1, 1_000_000, "--max-tokens")),
            extra=self.cache.extra(params, effort),
        )
        parts = (system or prefs.system_prompt, FORMAT_HINTS.get(fmt))
        system_text = self.clean("\n\n".join(part for part in parts if part), "system message")
        return AskOptions(
            chat=chat,
            model=model,
            system=system_text or None,
            params=sampling,
            use_history=use_history,
            max_history=prefs.max_history,
            cell_id=cell_id,
            fmt=fmt,
            fresh=fresh,
        )

    def prompt(
        self,
        text: str,
        namespace: Mapping[str, Any] | None = None,
        cells: Sequence[Any] = (),
        attach: Sequence[str] = (),
    ) -> Prompt:
        """``text`` as it is sent, for :meth:`ask` or :meth:`preview`: ``{name}`` fields
        filled from ``namespace`` (when given), the ``cells`` (``--cells N``) and ``attach``
        files before it, each as its view within the context budget (a figure or an image as
        a picture), never with a secret the session knows, and made valid Unicode."""
        from .interpolate import fill

        prefs = self.preferences()
        secrets, budget = prefs.secrets(self._env), prefs.context_budget
        found = fill(text, namespace, secrets, budget, cells, attach)
        return dataclasses.replace(found, text=self.clean(found.text, "prompt"))

    def scrub(self, text: str) -> str:
        """``text`` with every key the session knows masked: for text sent as written."""
        from .redact import scrub

        return scrub(text, self.preferences().secrets(self._env))

    def clean(self, text: str, what: str) -> str:
        """``text`` made valid Unicode (each lone surrogate as U+FFFD), with a notice if not."""
        from .interpolate import without_lone_surrogates

        fixed, count = without_lone_surrogates(text)
        if count:
            self._notices.append(
                f"⚠ The {what} held {count} lone surrogate{'s' if count != 1 else ''} "
                "(e.g. '\\ud800', not valid Unicode); sent as \ufffd (U+FFFD) instead."
            )
        return fixed

    def resolve(self, model: str | None, settings: Settings | None = None) -> Target:
        """Which backend and model ``model`` names (``.kind`` is chat, image or any)."""
        return resolve_target(model, settings or self.settings())

    def take_notices(self) -> list[str]:
        """What the user should be told since the last call: the store's news, fixed input."""
        found, self._notices = self._notices, []
        return found + self.store.take_notices() + self.cache.notices()

    # -- chat ----------------------------------------------------------------------------------

    def ask(
        self, prompt: Prompt | str, options: AskOptions, settings: Settings | None = None
    ) -> Answer:
        """Send ``prompt`` (from :meth:`prompt`; a string goes as it is) and return its live
        :class:`Answer` at once. Its pictures are kept with the prompt's turn.

        Raises at once (before any request) for an unknown model, an image model, or
        pictures for a model that reads only text.
        """
        settings = settings or self.settings()
        prompt = Prompt(prompt) if isinstance(prompt, str) else prompt
        target = self._chat_target(options, settings, prompt)
        plan = self.cache.before_chat(prompt, options, target)  # may refuse: nothing written
        window_size = options.max_history * 2 + 2  # room for exchanges window() leaves out
        notebook = self.notebook
        asked = Turn(
            "user",
            prompt.text,
            model=target.label,
            images=tuple(picture.stored() for picture in prompt.pictures),
            cell_id=options.cell_id,
            no_history=not options.use_history,  # sent alone, and never resent as context
        )
        if options.cell_id:  # a re-run cell: its earlier exchange must not be sent as context
            unsaved = self.store.add(notebook, options.chat, asked, replace_cell=True)
            earlier = self.store.load(notebook, options.chat, limit=window_size)
            earlier = [turn for turn in earlier if turn.uid != asked.uid]
        else:
            earlier = self.store.load(notebook, options.chat, limit=window_size)
            unsaved = self.store.add(notebook, options.chat, asked)
        messages = build_messages(prompt.text, earlier, options, prompt.pictures)
        answer = Answer(
            model=target.label,
            chat=options.chat,
            secrets=settings.known_secrets(),
            context=prompt.context,
        )
        if unsaved:
            answer.warn(unsaved)
        self._asked[answer] = (notebook, asked)
        request = ChatRequest(target.model, messages, options.params)
        self.cache.start(plan, answer, target, messages, options.params.extra)
        stream = partial(self._stream, answer, request, target, settings)
        if options.schema is not None or options.toolbox is not None:  # rounds: rounds.py
            from .rounds import rounds

            work = partial(self._stream, answer, target=target, settings=settings)
            stream = partial(rounds, answer, request, work, target.backend, options)
        answer.running(self._runner.submit(self._run(answer, stream, options.cell_id)))
        return answer

    def equip(
        self,
        options: AskOptions,
        namespace: Mapping[str, Any] | None,
        *,
        schema: str | None = None,
        many: bool = False,
        frame: bool = False,
        tools: Sequence[str] = (),
        ask: Callable[[Any], str | None] | None = None,
        gate: Callable[[Any, Live], None] | None = None,
    ) -> AskOptions:
        """``options`` asking for a typed answer (``--schema``, ``--many``, ``--frame``) and
        offering notebook functions (``-T``), approved through ``ask`` on the follower's thread
        (a cell) or by ``gate`` (the panel); :mod:`.rounds` has the rules."""
        from .rounds import equip

        prefs, spec = self.preferences(), (schema, many, frame)
        secrets = prefs.secrets(self._env)  # none may leave inside a tool's result
        return equip(options, namespace or {}, prefs, spec, tools, ask, gate, secrets)

    def preview(self, prompt: Prompt | str, options: AskOptions) -> Preview:
        """The messages :meth:`ask` would send now, nothing sent or written (``--dry-run``)."""
        prompt = Prompt(prompt) if isinstance(prompt, str) else prompt
        target = self._chat_target(options, self.settings(), prompt)
        earlier = self.store.load(self.notebook, options.chat, limit=options.max_history * 2 + 2)
        if options.cell_id:  # a re-run cell replaces its earlier exchange
            earlier = [turn for turn in earlier if turn.cell_id != options.cell_id]
        messages = build_messages(prompt.text, earlier, options, prompt.pictures)
        return Preview(target.label, tuple(messages), prompt.context, prompt.pictures)

    def _chat_target(
        self, options: AskOptions, settings: Settings, prompt: Prompt | None = None
    ) -> Target:
        target = resolve_target(options.model, settings)
        if target.kind == "image":
            raise ConfigError(
                f"'{target.label}' is an image model: use %amigo_image for pictures, or pick a "
                "chat model (`%amigo models` lists them)."
            )
        if prompt is not None:
            prompt.check(target.label, target.sees_pictures)
        return target

    async def _stream(
        self, answer: Answer, request: ChatRequest, target: Target, settings: Settings
    ) -> None:
        source = self.cache.replay(answer) or self._backend(target, settings).chat(request)
        add_text = answer.add_text  # the per-token path: one bound call
        async with aclosing(source) as events:
            async for event in events:
                kind = type(event)
                if kind is TextDelta:
                    add_text(event.text)  # type: ignore[union-attr]
                elif kind is Usage:
                    answer.set_usage(event)  # type: ignore[arg-type]
                elif kind is Finish:
                    answer.set_finish(event.reason)  # type: ignore[union-attr]
                elif kind is StreamWarning:
                    answer.warn(event.message)  # type: ignore[union-attr]
                elif kind is Progress:
                    answer.progress(event.phase)  # type: ignore[union-attr, arg-type]
                else:  # reasoning, shown apart from the answer
                    answer.add_event(event)

    async def _run(
        self, live: Live, work: Callable[[], Awaitable[None]], cell_id: str | None
    ) -> None:
        """Do ``work`` for ``live`` on the loop; however it ends — done, stopped, failed — the
        turn is recorded (paired with its prompt) before any reader sees the end."""
        try:
            await work()
            self.cache.completed(live)  # recorded (cache auto or replay), never a replay itself
            live.end()
        except asyncio.CancelledError:
            live.cancelled()
            raise
        except BaseException as error:
            live.fail(error)
            if not isinstance(error, Exception):
                raise
        finally:
            live.settle()  # its clock stops and its text is one string, before it is kept
            self._record(live, live.turn(cell_id))
            live.close()

    def _record(self, live: Live, turn: Turn) -> None:
        """Keep an answer's turn, paired with its prompt; a problem is said on the answer."""
        notebook, asked = self._asked.pop(live, (self.notebook, None))
        if asked is not None:  # not kept if its prompt went (a reset while it streamed)
            turn = dataclasses.replace(turn, reply_to=asked.uid, no_history=asked.no_history)
        try:
            unsaved = self.store.add(notebook, live.chat, turn)
        except Exception as error:  # the answer is on screen; say it could not be kept
            log.warning("could not save the answer: %s", error)
            unsaved = f"not saved to history ({error})"
        if unsaved and unsaved not in live.warnings:
            live.warn(unsaved)

    def follow(self, live: Live, show: Callable[[AnswerState], None]) -> None:
        """Block until ``live`` ends, showing it as it changes; an interrupt stops it."""
        follow(live, show, throttle=self.preferences().throttle)

    def watch(
        self,
        live: Live,
        show: Callable[[AnswerState], None],
        *,
        finish: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Follow ``live`` on the loop thread without blocking anyone; ``finish`` runs at the
        end, whatever happens."""

        async def run() -> None:
            try:
                await follow_async(live, show)
            finally:
                finish()

        self._runner.submit(run(), on_error=on_error)

    def map(
        self, template: str, items: Any, options: AskOptions, *, concurrency: int = 8,
        schema: Any = None,
    ) -> Any:  # fmt: skip
        """``template`` over ``items``, each its own request with no history; the live
        :class:`~.batch.Batch` at once (:mod:`.batch` has the rules)."""
        from .batch import start

        return start(self, template, items, options, concurrency=concurrency, schema=schema)

    def compare(self, prompt: Prompt | str, options: AskOptions, models: Sequence[str]) -> Any:
        """The same messages to each of ``models`` at once, nothing recorded until one is kept:
        the live :class:`~.compare.Comparison` at once (``-m claude,gpt-4o``)."""
        from .compare import start

        return start(self, Prompt(prompt) if isinstance(prompt, str) else prompt, options, models)

    # -- images --------------------------------------------------------------------------------

    def image(
        self, prompt: Prompt | str, options: AskOptions, settings: Settings | None = None
    ) -> ImageAnswer:
        """Generate pictures for ``prompt``; fetch them to bytes; record the turn."""
        prompt = prompt.text_only() if isinstance(prompt, Prompt) else prompt
        settings = settings or self.settings()
        target = resolve_target(options.model or self.preferences().image_model, settings)
        if target.kind == "chat":
            raise ConfigError(
                f"'{target.label}' is a chat model: use %%amigo for text, or pick an image model "
                "(flux, dalle, recraft, …)."
            )
        if not prompt.strip():
            raise ConfigError("Say what to draw: %amigo_image a lighthouse at dusk")
        plan = self.cache.before_image(prompt, options, target)  # may refuse: nothing written
        asked = Turn("user", prompt, model=target.label, cell_id=options.cell_id)
        unsaved = self.store.add(
            self.notebook, options.chat, asked, replace_cell=bool(options.cell_id)
        )
        answer = ImageAnswer(model=target.label, chat=options.chat, prompt=prompt)
        if unsaved:
            answer.warn(unsaved)
        self._asked[answer] = (self.notebook, asked)
        self.cache.start(plan, answer, target)
        draw = partial(self._draw, answer, target, settings)
        answer.running(self._runner.submit(self._run(answer, draw, options.cell_id)))
        return answer

    async def _draw(self, answer: ImageAnswer, target: Target, settings: Settings) -> None:
        if (recorded := self.cache.pictures(answer)) is not None:  # a replay: no request
            return answer.add_images(recorded)
        backend = self._backend(target, settings)
        result = await backend.image(ImageRequest(target.model, answer.prompt))
        answer.skip(len(result.images), MAX_PICTURES)  # a reply may list any number
        for image in result.images[:MAX_PICTURES]:
            answer.add_images([await self._pictures.fetch(image, answer.prompt, settings)])

    # -- lifetime ------------------------------------------------------------------------------

    def _backend(self, target: Target, settings: Settings) -> Backend:
        """The pooled backend for ``target``; the local model is one per kernel, whatever the
        other settings, so it loads once."""
        key: object = (target.backend, target.endpoint, settings)
        if target.backend == "local":
            key = ("local", target.model)
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = self._factory(target, settings)
        return backend

    async def aclose(self) -> None:
        """Close every pooled client (on the loop thread)."""
        backends, self._backends = self._backends, {}
        for backend in backends.values():
            await backend.aclose()
        await self._pictures.aclose()


def stop_background() -> None:
    """Stop the kernel's loop thread, if one was started; pooled clients close with it."""
    from .runner import close_runner

    close_runner()


def _bounded(value: float | None, default: float, low: float, high: float, flag: str) -> float:
    if value is None:
        return default
    if not low <= value <= high:
        raise ConfigError(f"{flag} must be between {low:g} and {high:g}; got {value:g}.")
    return value
