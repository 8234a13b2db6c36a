"""IPython magics: ``%%amigo`` streams an answer into its cell, ``%amigo_image`` draws inline,
``%amigo`` manages models, chats, keys and settings.

Thin by design: parse, call the session, hand the answer to render. The HTTP stack and the
renderer are imported on first use, so ``%load_ext amigo_magic`` stays fast.
"""

from __future__ import annotations

import argparse
import builtins
import keyword
import os
import re
import shlex
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Dict, Enum, Float, Int, Unicode

from .errors import AmigoError, ConfigError

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .config import Endpoint, Secret, Settings
    from .history import HistoryStore
    from .render import Rich
    from .session import Answer, ChatSession

__all__ = ["AmigoMagics", "AnswerStopped", "current", "load", "unload"]

FORMATS = ("markdown", "text", "code", "html", "json")
_FORMAT_HINTS = {
    "code": "Reply with one fenced code block and nothing else.",
    "json": "Reply with valid JSON only: no prose, no code fence.",
    "html": "Reply with an HTML fragment (no <html> or <body>).",
}


class AnswerStopped(AmigoError, KeyboardInterrupt):
    """The user interrupted an answer: the cell ends as interrupted, without a traceback."""


@magics_class
class AmigoMagics(Magics):
    """Chat and image models in the notebook. ``%config AmigoMagics`` lists the settings."""

    default_model = Unicode(
        "",
        help="Model for %%amigo without -m (alias or id). Empty: $AMIGO_MODEL, else gpt-4o-mini.",
    ).tag(config=True)
    image_model = Unicode("flux", help="Model for %amigo_image without -m.").tag(config=True)
    base_url = Unicode(
        "", help="API base URL. Empty: $AMIGO_BASE_URL, else https://api.amigochat.io/v1."
    ).tag(config=True)
    device_version = Unicode(
        "", help="x-device-version sent to AmigoChat. Empty: $AMIGO_DEVICE_VERSION, else 1.0.45."
    ).tag(config=True)
    max_history = Int(
        20, help="Earlier messages sent with each prompt (user and assistant each count one)."
    ).tag(config=True)
    default_format = Enum(FORMATS, "markdown", help="Output format without -f.").tag(config=True)
    max_tokens = Int(4000, help="Longest answer, in tokens, without --max-tokens.").tag(config=True)
    system_prompt = Unicode("", help="System message sent with every %%amigo prompt.").tag(
        config=True
    )
    connect_timeout = Float(10.0, help="Seconds to wait for a connection.").tag(config=True)
    read_timeout = Float(
        60.0, help="Seconds of silence allowed before the first token and between tokens."
    ).tag(config=True)
    image_timeout = Float(300.0, help="Seconds one image request may take.").tag(config=True)
    throttle = Float(
        0.05, help="Least seconds between display updates while an answer streams."
    ).tag(config=True)
    endpoints = Dict(
        {},
        help="Named OpenAI-compatible servers, used as --model NAME:MODEL, e.g. "
        "{'ollama': {'url': 'http://127.0.0.1:11434/v1'}, "
        "'openai': {'url': 'https://api.openai.com/v1', 'key_env': 'OPENAI_API_KEY'}}. "
        "Keys are read from the named environment variable at each call, never stored.",
    ).tag(config=True)
    local_model_path = Unicode(
        "", help="GGUF file for --model local. Empty: $AMIGO_LOCAL_MODEL, else SmolLM2-135M."
    ).tag(config=True)

    shell: InteractiveShell  # always given: load() passes it

    def __init__(self, shell: InteractiveShell, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.errors: dict[int, str] = {}  # Err[n]: the traceback text of cell n
        self._last_error: tuple[str, str] | None = None  # (cell source, traceback)
        self._notebook_model: str | None = None  # %amigo use
        self._key: Secret | None = None  # %amigo key: memory only
        self._session: ChatSession | None = None
        self._notices: list[str] = []  # warnings to show at the next magic (e.g. history moved)

    # -- %%amigo ---------------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="model alias or id (`%%amigo models` lists them)")
    @argument("-c", "--chat", default="default", help="named conversation of this notebook")
    @argument("-s", "--system", help="system message for this prompt")
    @argument("-f", "--format", choices=FORMATS, help="markdown (default), text, code, html, json")
    @argument("-t", "--temperature", type=float, help="sampling temperature, 0 to 2")
    @argument("--top-p", type=float, help="nucleus sampling, 0 to 1")
    @argument("--max-tokens", type=int, help="longest answer, in tokens")
    @argument("--no-history", action="store_true", help="send this prompt alone")
    @argument("--no-interpolate", action="store_true", help="send {braces} as written")
    @argument("-o", "--out", help="also store the answer text in this variable")
    @line_cell_magic
    def amigo(self, line: str, cell: str | None = None) -> Any:
        """Ask a chat model; the answer streams into the cell.

        As a cell magic the cell body is the prompt. ``{name}``, ``{name[3]}`` and
        ``{name.attr}`` are filled in from your variables (``In``, ``Out`` and ``Err`` too:
        ``{Err[7]}`` is the traceback of cell 7); every other brace is sent as written.
        Each cell continues the notebook's conversation (or the ``--chat`` one).

        Examples::

            %%amigo
            Explain this traceback: {Err[7]}

            %%amigo --model claude --chat review -t 0.2
            Review this function for bugs:
            {In[3]}

            %%amigo -f code -o snippet
            Write a pandas one-liner that counts rows per country.

        As a line magic it manages things: ``%amigo models | use MODEL | history | chats |
        reset | fix | config | key | help | version`` (``%amigo help`` says more).
        """
        if cell is None:
            return self._subcommand(line)
        args = self._parse(self.amigo, line, "%%amigo")
        if args.out is not None:
            _check_out_name(args.out, self.shell)  # before any request
        prompt = cell if args.no_interpolate else self._interpolate(cell)
        prompt = prompt.rstrip().lstrip("\r\n")  # blank lines around it are noise; indents are not
        if not prompt:
            raise ConfigError("The cell is empty: write your question below the %%amigo line.")
        fmt = args.format or self.default_format
        text = self._ask(prompt, args, fmt)
        if args.out:
            self.shell.user_ns[args.out] = text
        return None

    def _ask(self, prompt: str, args: argparse.Namespace, fmt: str) -> str:
        from .protocol import ChatParams
        from .session import AskOptions

        params = ChatParams(
            temperature=_bounded(args.temperature, 0.5, 0, 2, "--temperature"),
            top_p=_bounded(args.top_p, 0.95, 0, 1, "--top-p"),
            max_tokens=int(
                _bounded(args.max_tokens, self.max_tokens, 1, 1_000_000, "--max-tokens")
            ),
        )
        prompt = _valid_unicode(prompt, "prompt")
        system = "\n\n".join(
            part for part in (args.system or self.system_prompt, _FORMAT_HINTS.get(fmt)) if part
        )
        system = _valid_unicode(system, "system message")
        options = AskOptions(
            chat=args.chat,
            model=args.model,
            system=system or None,
            params=params,
            use_history=not args.no_history,
            max_history=self.max_history,
            cell_id=self._cell_id(),
        )
        answer = self.session.ask(prompt, options, self.settings())
        self._show_notices()
        self._show(answer, fmt)
        return answer.text

    def _show(self, answer: Answer, fmt: str) -> None:
        """Stream ``answer`` into one display, throttled; block until it ends or is stopped."""
        from IPython.display import clear_output, display

        from .render import answer_bundle

        def bundle(final: bool) -> tuple[dict[str, Any], dict[str, Any]]:
            state = answer.snapshot()
            try:
                return answer_bundle(state, fmt=fmt if final else "markdown")  # type: ignore[arg-type]
            except ValueError as error:  # --format json that does not parse
                failures.append(str(error))
                return answer_bundle(state, fmt="markdown")

        failures: list[str] = []
        phase = answer.phase  # on screen while no text has come; read before rendering, so a
        data, metadata = bundle(False)  # change during the (slow) first display is not missed
        handle = display(data, metadata=metadata, raw=True, display_id=True)
        shown = 0  # characters on screen
        last = time.monotonic()
        try:
            while not answer.done.is_set():
                answer.changed.wait(0.25)
                answer.changed.clear()
                if answer.done.is_set():
                    break
                now, length = time.monotonic(), answer.length
                # Each update re-sends the whole answer, so updates grow rarer as it grows.
                interval = max(self.throttle, length / 1_000_000)
                if length != shown and (not shown or now - last >= interval):
                    _update(handle, bundle(False))
                    shown, last = length, now
                elif not length and (answer.phase != phase or now - last >= 1.0):
                    _update(handle, bundle(False))  # "loading model…" at once; the clock ticks
                    phase, last = answer.phase, now
                elif length != shown:
                    answer.done.wait(last + interval - now)
        except KeyboardInterrupt:
            answer.stop()
            if not answer.wait(5.0):
                answer.phase = "stopped"
        if answer.phase == "error" and not answer.text:
            clear_output()
        else:
            _update(handle, bundle(True))
        if answer.phase == "stopped":
            raise AnswerStopped(
                f"Stopped after {answer.seconds:.1f} s; the partial answer is kept in the chat "
                "history, marked as stopped."
            )
        if answer.error is not None:
            raise answer.error
        if failures:
            raise ConfigError(failures[0])
        if fmt == "code":
            self._code_below(answer.text)

    def _code_below(self, text: str) -> None:
        from IPython.display import display

        from .render import notice
        from .sanitize import extract_code

        code, language = extract_code(text)
        if code:
            self.shell.set_next_input(code, replace=False)
            display(notice(f"↓ The {language or 'code'} block is in a new cell below."))

    # -- %amigo_image ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="image model (flux, dalle, recraft, …)")
    @argument("-c", "--chat", default="default", help="named conversation of this notebook")
    @argument("prompt", nargs="*", help="what to draw")
    @line_cell_magic
    def amigo_image(self, line: str, cell: str | None = None) -> None:
        """Draw a picture; it is shown inline and kept in the notebook as image bytes.

        Examples::

            %amigo_image a lighthouse at dusk
            %amigo_image -m dalle a watercolour fox

            %%amigo_image -m recraft
            A poster of {title}, flat colours
        """
        from IPython.display import display

        from .render import image_bundle, progress
        from .session import AskOptions

        args = self._parse(self.amigo_image, line, "%amigo_image")
        prompt = cell if cell is not None else " ".join(args.prompt)
        prompt = _valid_unicode(self._interpolate(prompt).strip(), "prompt")
        model = args.model or self.image_model
        options = AskOptions(chat=args.chat, model=model, cell_id=self._cell_id())
        answer = self.session.image(prompt, options, self.settings())
        self._show_notices()
        handle = display(progress(f"drawing with {answer.model}…"), display_id=True)
        try:
            while not answer.done.wait(1.0):
                elapsed = time.monotonic() - answer.started
                handle.update(progress(f"drawing with {answer.model}… {elapsed:.0f} s"))
        except KeyboardInterrupt:
            answer.stop()
            answer.done.wait(5.0)
            handle.update(progress("■ stopped"))
            raise AnswerStopped("Stopped; no picture was drawn.") from None
        if answer.error is not None and not answer.images:
            handle.update(progress(f"✖ {answer.model}: no picture"))
            raise answer.error
        for index, image in enumerate(answer.images):
            data, metadata = image_bundle(
                image.data, alt=image.alt, mime=image.mime, model=answer.model, chat=answer.chat
            )
            if index == 0:
                handle.update(data, metadata=metadata, raw=True)
            else:
                display(data, metadata=metadata, raw=True)
        if answer.skipped:
            from .render import notice
            from .session import MAX_PICTURES

            listed = MAX_PICTURES + answer.skipped
            display(
                notice(
                    f"⚠ The reply listed {listed} pictures: {answer.skipped} skipped, at most "
                    f"{MAX_PICTURES} are fetched and kept per reply."
                )
            )
        if answer.error is not None:
            raise answer.error

    # -- %amigo_panel ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("-c", "--chat", default="default", help="the chat to open")
    @argument("-m", "--model", help="model selected in the picker")
    @line_magic
    def amigo_panel(self, line: str) -> Any:
        """Open the chat panel: a model picker, the chat's transcript, Send, Stop, Clear, Export.

        It shares this notebook's chats with %%amigo cells; sending never blocks the kernel.

        Examples::

            %amigo_panel
            %amigo_panel --chat review -m claude
        """
        from .panel import ChatPanel

        args = self._parse(self.amigo_panel, line, "%amigo_panel")
        return ChatPanel(
            session=self.session, settings=self.settings, chat=args.chat, model=args.model
        )

    # -- %amigo subcommands --------------------------------------------------------------------

    def _subcommand(self, line: str) -> Any:
        words = _split(line)
        verb = words[0] if words else "help"
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_handle_{verb}", None)
        if handler is None:
            raise UsageError(
                f"Unknown %amigo command '{verb}'. Commands: {', '.join(self._verbs())}. "
                "A prompt goes in a cell: %%amigo on the first line, the question below."
            )
        return handler(words[1:])

    def _verbs(self) -> list[str]:
        return [name.removeprefix("_handle_") for name in dir(self) if name.startswith("_handle_")]

    def _handle_help(self, argv: list[str]) -> Rich:
        from .render import help_table

        return help_table(
            [
                ("%%amigo [options]", "ask; the cell body is the prompt (%%amigo? lists options)"),
                ("%amigo_image PROMPT", "draw a picture inline (-m flux | dalle | recraft …)"),
                ("%amigo models", "every model and alias; * marks the default"),
                ("%amigo use MODEL", "make MODEL this notebook's default (local, NAME:MODEL, …)"),
                ("%amigo endpoint add NAME URL [--key-env VAR]", "an OpenAI-compatible server"),
                ("%amigo endpoint list | remove NAME", "the named endpoints"),
                ("%amigo history [-c CHAT] [-n N]", "the conversation so far"),
                ("%amigo chats", "this notebook's named chats"),
                ("%amigo reset [-c CHAT | --all]", "forget a chat (or all of this notebook's)"),
                ("%amigo session [NAME]", "show or set this notebook's history name"),
                ("%amigo export PATH [--format md|json] [-c CHAT] [--force]", "save a chat"),
                ("%amigo fix", "ask the model to explain the last error and fix it"),
                ("%amigo config", "effective settings (the key is never shown)"),
                ("%amigo key", "enter an API key without echo; kept in memory only"),
                ("%amigo version", "versions of amigo_magic and its stack"),
                ("%config AmigoMagics", "settings you can change, with help"),
            ]
        )

    def _handle_models(self, argv: list[str]) -> Any:
        from IPython.display import display

        from . import catalog
        from .render import endpoint_models_table, models_table

        _no_args("models", argv)
        settings = self.settings()
        default = settings.model or catalog.DEFAULT_MODEL
        display(models_table(catalog.MODELS, catalog.ALIASES, default=default))
        listing = self.session.list_models(settings)
        return endpoint_models_table(listing, default=default)

    def _handle_endpoint(self, argv: list[str]) -> Rich:
        from .config import Settings, display_url
        from .render import config_table, notice

        parser = _parser("%amigo endpoint")
        verbs = parser.add_subparsers(dest="verb", required=True)
        add = verbs.add_parser("add", add_help=False)
        add.add_argument("name")
        add.add_argument("url")
        add.add_argument("--key-env", help="environment variable holding the key")
        remove = verbs.add_parser("remove", add_help=False)
        remove.add_argument("name")
        verbs.add_parser("list", add_help=False)
        args = parser.parse_args(argv)
        if args.verb == "list":
            if not self.endpoints:
                return notice("No endpoints yet: %amigo endpoint add NAME URL [--key-env VAR]")
            rows = []
            for e in _endpoints(self.endpoints):
                key = f"${e.key_env} ({'set' if e.key else 'not set'})" if e.key_env else "none"
                rows.append((e.name, display_url(e.url), key))
            return config_table(rows, headers=("endpoint", "url", "key"))
        if args.verb == "remove":
            if args.name not in self.endpoints:
                raise ConfigError(f"No endpoint named '{args.name}'.")
            self.endpoints = {k: v for k, v in self.endpoints.items() if k != args.name}
            return notice(f"Removed endpoint '{args.name}'.")
        if not args.name.isidentifier():
            raise ConfigError(
                "An endpoint name is one word of letters, digits and _ (e.g. ollama)."
            )
        spec = {"url": args.url, **({"key_env": args.key_env} if args.key_env else {})}
        Settings(endpoints=tuple(_endpoints({args.name: spec}))).validated()  # URL and key
        self.endpoints = {**self.endpoints, args.name: spec}
        return notice(
            f"Endpoint '{args.name}' added for this kernel: use --model {args.name}:MODEL. "
            f"To keep it, put c.AmigoMagics.endpoints = {{{args.name!r}: {spec!r}}} in "
            "ipython_config.py."
        )

    def _handle_use(self, argv: list[str]) -> Rich:
        from .render import notice
        from .routing import resolve_target

        if len(argv) != 1:
            raise UsageError("usage: %amigo use MODEL   (e.g. %amigo use claude)")
        target = resolve_target(argv[0], self.settings())
        if target.kind == "image":
            raise ConfigError(
                f"'{target.label}' draws pictures: set AmigoMagics.image_model instead."
            )
        self._notebook_model = argv[0] if target.backend != "amigo" else target.model
        return notice(f"This notebook now asks {target.label}.")

    def _handle_history(self, argv: list[str]) -> Rich:
        from .render import transcript

        parser = _parser("%amigo history")
        parser.add_argument("-c", "--chat", default="default")
        parser.add_argument("-n", type=int, default=None, help="only the last N turns")
        args = parser.parse_args(argv)
        if args.n is not None and args.n < 1:
            raise UsageError(
                f"%amigo history -n counts the last turns to show: give 1 or more (got {args.n}),"
                " e.g. %amigo history -n 10."
            )
        turns = self.session.store.load(self.session.notebook, args.chat, limit=args.n)
        return transcript(turns, chat=args.chat)

    def _handle_chats(self, argv: list[str]) -> Rich:
        from .render import chats_table

        _no_args("chats", argv)
        return chats_table(self.session.store.chats(self.session.notebook))

    def _handle_reset(self, argv: list[str]) -> Rich:
        from .render import notice

        parser = _parser("%amigo reset")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("-c", "--chat", default="default")
        group.add_argument("--all", action="store_true")
        args = parser.parse_args(argv)
        chat = None if args.all else args.chat
        removed = self.session.store.reset(self.session.notebook, chat)
        which = "every chat of this notebook" if chat is None else f"chat '{chat}'"
        return notice(f"Removed {removed} turn{'s' if removed != 1 else ''} from {which}.")

    def _handle_session(self, argv: list[str]) -> Rich:
        from .render import notice

        if len(argv) > 1:
            raise UsageError(
                "usage: %amigo session [NAME]   (shows, or sets, this notebook's name)"
            )
        if argv:
            self.session.notebook = argv[0]
            chats = self.session.store.chats(argv[0])
            found = (
                f"{len(chats)} chat{'s' if len(chats) != 1 else ''}" if chats else "no chats yet"
            )
            return notice(f"This notebook's history is now '{argv[0]}' ({found}).")
        return notice(
            f"This notebook's history is '{self.session.notebook}'. After renaming the "
            "notebook, `%amigo session OLD-NAME` re-attaches its chats."
        )

    def _handle_export(self, argv: list[str]) -> Rich:
        from pathlib import Path

        from .export import to_json, to_markdown
        from .render import notice

        parser = _parser("%amigo export")
        parser.add_argument("path")
        parser.add_argument("--format", choices=("md", "json"), default=None)
        parser.add_argument("-c", "--chat", default="default")
        parser.add_argument("--force", action="store_true", help="overwrite existing files")
        args = parser.parse_args(argv)
        if not args.path.strip():
            raise UsageError("Give a file to export to, e.g. %amigo export chat.md")
        path = Path(args.path).expanduser()
        fmt = args.format or ("json" if path.suffix.lower() == ".json" else "md")
        turns = self.session.store.load(self.session.notebook, args.chat)
        if not turns:
            raise ConfigError(f"Chat '{args.chat}' is empty: nothing to export.")
        if fmt == "json":
            text = to_json(turns, notebook=self.session.notebook, chat=args.chat)
            files = {path: text.encode()}
        else:
            files = to_markdown(turns, chat=args.chat, path=path)
        _write_export(files, force=args.force)
        pictures = sum(len(t.images) for t in turns)
        return notice(
            f"Exported {len(turns)} turns of chat '{args.chat}' to {path}"
            + (f" with {pictures} picture{'s' if pictures != 1 else ''}." if pictures else ".")
        )

    def _handle_fix(self, argv: list[str]) -> None:
        _no_args("fix", argv)
        if self._last_error is None:
            raise ConfigError("No cell has failed yet: %amigo fix explains the last error.")
        source, trace = self._last_error
        prompt = (
            "This notebook cell failed. Explain the error in two or three sentences, then give "
            f"the corrected code.\n\nThe cell:\n```python\n{source}\n```\n\nThe error:\n"
            f"```\n{trace}\n```"
        )
        args = argparse.Namespace(
            model=None, chat="default", system=None, temperature=None, top_p=None,
            max_tokens=None, no_history=True,
        )  # fmt: skip
        self._ask(prompt, args, "markdown")

    def _handle_config(self, argv: list[str]) -> Rich:
        from .render import config_table

        _no_args("config", argv)
        settings = self.settings()
        key_source = (
            "set with %amigo key" if self._key else "from AMIGO_API_KEY" if settings.api_key else ""
        )
        rows = [
            ("model", settings.model or "gpt-4o-mini"),
            ("image_model", self.image_model),
            ("base_url", settings.base_url),
            ("api key", f"set ({key_source})" if key_source else "not set"),
            ("device_version", settings.device_version),
            ("max_history", str(self.max_history)),
            ("max_tokens", str(self.max_tokens)),
            ("default_format", self.default_format),
            ("system_prompt", self.system_prompt or "(none)"),
            ("timeouts", f"connect {self.connect_timeout:g} s, read {self.read_timeout:g} s, "
                         f"image {self.image_timeout:g} s"),
            ("throttle", f"{self.throttle:g} s"),
            ("notebook", self.session.notebook),
        ]  # fmt: skip
        return config_table(rows)

    def _handle_key(self, argv: list[str]) -> Rich:
        from .config import Secret
        from .render import notice

        _no_args("key", argv)
        try:
            entered = _getpass()
        except Exception as error:  # no stdin in this front end (e.g. jupyter execute)
            raise ConfigError(
                "This front end cannot prompt for a key; set AMIGO_API_KEY in the environment."
            ) from error
        if not entered.strip():
            raise ConfigError("No key entered; nothing changed.")
        self._key = Secret(entered.strip())
        return notice("Key set for this kernel (kept in memory only, never saved or shown).")

    def _handle_version(self, argv: list[str]) -> Rich:
        import httpx
        import IPython

        from . import __version__
        from .render import config_table

        _no_args("version", argv)
        return config_table(
            [
                ("amigo_magic", __version__),
                ("python", sys.version.split()[0]),
                ("ipython", IPython.__version__),
                ("httpx", httpx.__version__),
            ]
        )

    # -- shared plumbing -----------------------------------------------------------------------

    @property
    def session(self) -> ChatSession:
        if self._session is None:
            from .runner import get_runner
            from .session import ChatSession

            self._session = ChatSession(
                store=self._open_store(),
                notebook=notebook_identity(self.shell),
                runner=get_runner(),
            )
        return self._session

    def _open_store(self) -> HistoryStore:
        """The history database; if it cannot be opened, memory, with a warning shown once."""
        import sqlite3

        from .store import DB_NAME, SQLiteStore, default_home

        path = default_home(os.environ) / DB_NAME
        try:
            store = SQLiteStore(path)
        except (OSError, sqlite3.Error) as error:
            self._notices.append(
                f"⚠ History cannot be saved to {path} ({error}); this kernel keeps it in memory "
                "only. Set AMIGO_HOME to a writable folder."
            )
            return SQLiteStore(":memory:")
        if store.notice:
            self._notices.append(f"⚠ {store.notice}")
        return store

    def _show_notices(self) -> None:
        from IPython.display import display

        from .render import notice

        if self._session is not None:  # the store's news: a file deleted under it, turns held
            self._notices += self._session.store.take_notices()
        while self._notices:
            display(notice(self._notices.pop(0)))

    def settings(self) -> Settings:
        """Flag > %amigo use > trait > environment > default, resolved once per call."""
        from .config import Settings, Timeouts

        changes: dict[str, Any] = {
            "timeouts": Timeouts(
                connect=self.connect_timeout, read=self.read_timeout, image=self.image_timeout
            )
        }
        if self.base_url:
            changes["base_url"] = self.base_url
        if self.device_version:
            changes["device_version"] = self.device_version
        if self.default_model:
            changes["model"] = self.default_model
        if self._notebook_model:
            changes["model"] = self._notebook_model
        if self._key is not None:
            changes["api_key"] = self._key
        if self.local_model_path:
            changes["local_model"] = self.local_model_path
        changes["endpoints"] = tuple(_endpoints(self.endpoints))
        return Settings.from_env(os.environ, **changes)

    def _parse(self, func: Callable[..., Any], line: str, name: str) -> argparse.Namespace:
        """Options parsed shlex-style (quotes group words); errors end with a usage line."""
        parser = func.parser  # type: ignore[attr-defined]  # set by @magic_arguments
        try:
            return parser.parse_args(_split(line))
        except UsageError as error:
            usage = " ".join(parser.format_usage().replace("::", " ").split())
            usage = usage.replace(f"%{func.__name__}", name, 1)
            raise UsageError(f"{name}: {error}\nusage: {usage}") from None

    def _interpolate(self, text: str) -> str:
        from .interpolate import interpolate

        namespace = self.shell.user_ns
        if "Err" not in namespace:
            namespace = {**namespace, "Err": self.errors}
        # Every key the session knows, read without validating (a bad key is refused later, at
        # settings time, with its own message): none may leave inside a filled-in value.
        variables = ["AMIGO_API_KEY"]
        for spec in self.endpoints.values():
            if isinstance(spec, dict) and spec.get("key_env"):
                variables.append(str(spec["key_env"]))
        secrets = [os.environ.get(v, "") for v in variables]
        if self._key is not None:
            secrets.append(self._key.reveal())
        return interpolate(text, namespace, [s for s in secrets if s.strip()])

    def _cell_id(self) -> str | None:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return None
        try:
            parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else {}
        except Exception:
            parent = getattr(kernel, "_parent_header", {})
        cell_id = (parent or {}).get("metadata", {}).get("cellId")
        return cell_id if isinstance(cell_id, str) and cell_id else None

    def post_run_cell(self, result: Any) -> None:
        """Keep each failed cell's traceback as ``Err[n]`` (and for ``%amigo fix``)."""
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if error is None or isinstance(error, AnswerStopped):
            return
        tb = error.__traceback__
        while tb is not None and _is_ipython_frame(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next  # the user's traceback starts at their cell, not IPython's run_code
        trace = "".join(traceback.format_exception(type(error), error, tb))
        count = getattr(result, "execution_count", None)
        if count is not None:
            self.errors[count] = trace
        info = getattr(result, "info", None)
        self._last_error = (getattr(info, "raw_cell", "") or "", trace)


def _write_export(files: dict[Any, bytes], *, force: bool) -> None:
    """Write an export's files; a path that cannot be written is one line saying which and why."""
    try:
        for target in files:
            if target.is_dir():
                raise ConfigError(
                    f"{target} is a folder: give a file name, e.g. {target / 'chat.md'}"
                )
        existing = [str(p) for p in files if p.exists()]
        if existing and not force:
            raise ConfigError(f"{existing[0]} already exists; add --force to overwrite it.")
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except OSError as error:
        where = error.filename or next(iter(files))
        reason = error.strerror or type(error).__name__
        if isinstance(error, FileExistsError | NotADirectoryError):
            reason = "a file is in the way of a folder on that path"
        raise ConfigError(
            f"Cannot export to {where}: {reason}. Pick a path in a folder you can write to."
        ) from None


def _is_ipython_frame(filename: str) -> bool:
    return f"{os.sep}IPython{os.sep}" in filename


def notebook_identity(shell: Any) -> str:
    """The notebook's path as Jupyter passes it, else a per-kernel id."""
    namespace = getattr(shell, "user_ns", {})
    for candidate in (
        os.environ.get("JPY_SESSION_NAME"),
        namespace.get("__session__"),
        namespace.get("__vsc_ipynb_file__"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return f"kernel-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _endpoints(configured: dict[str, Any]) -> list[Endpoint]:
    """The ``endpoints`` trait as Endpoints, each key read from its variable now."""
    from .config import Endpoint, Secret

    found = []
    for name, spec in configured.items():
        spec = {"url": spec} if isinstance(spec, str) else dict(spec)
        if "url" not in spec:
            raise ConfigError(f"AmigoMagics.endpoints['{name}'] needs a 'url'.")
        key_env = spec.get("key_env") or None
        key = os.environ.get(key_env, "").strip() if key_env else ""
        secret = Secret(key, f"${key_env} (endpoint '{name}')") if key else None
        found.append(Endpoint(name, str(spec["url"]), key_env, secret))
    return found


def _update(handle: Any, bundle: tuple[dict[str, Any], dict[str, Any]]) -> None:
    data, metadata = bundle
    handle.update(data, metadata=metadata, raw=True)


def _getpass() -> str:
    import getpass

    return getpass.getpass("AmigoChat API key (hidden): ")


def _bounded(value: float | None, default: float, low: float, high: float, flag: str) -> float:
    if value is None:
        return default
    if not low <= value <= high:
        raise ConfigError(f"{flag} must be between {low:g} and {high:g}; got {value:g}.")
    return value


# -- inputs: -o names and text that is not valid Unicode --------------------------------------

# IPython's own names in the user namespace: replacing one breaks the shell (get_ipython, In)
# or silently corrupts its state (Out, Err, the _ / _i history variables).
_IPYTHON_NAMES = frozenset(
    {"In", "Out", "Err", "get_ipython", "exit", "quit", "_", "__", "___", "_oh", "_ih", "_dh"}
)
_IPYTHON_HISTORY_NAME = re.compile(r"_i+\d*|_\d+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_out_name(name: str, shell: Any) -> None:
    """``-o NAME`` must be a plain variable of the user's: a UsageError saying why otherwise."""
    example = "pick another name, e.g. -o answer"
    if not name.isidentifier():
        raise UsageError(
            f"-o {name!r} is not a Python variable name (letters, digits and _, not starting "
            f"with a digit): {example}."
        )
    if keyword.iskeyword(name):
        raise UsageError(f"-o {name!r} is a Python keyword: {example}.")
    hidden = getattr(shell, "user_ns_hidden", {})
    if (
        name in _IPYTHON_NAMES
        or name in hidden
        or _IPYTHON_HISTORY_NAME.fullmatch(name)
        or (name.startswith("__") and name.endswith("__"))
    ):
        raise UsageError(f"-o {name!r} would replace one of IPython's own names: {example}.")
    if hasattr(builtins, name):
        raise UsageError(f"-o {name!r} would hide Python's built-in {name}: {example}.")


def _valid_unicode(text: str, what: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, and a one-line notice saying so.

    A lone surrogate (``'\\ud800'``) is not a character: it cannot be encoded as UTF-8, so
    neither the request nor the history database can hold it. Replacing it keeps the rest of
    the prompt, which is what the user meant to send; a surrogate pair becomes its character.
    """
    if text.isascii() or _LONE_SURROGATE.search(text) is None:
        return text
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    count = fixed.count("\ufffd") - text.count("\ufffd")
    if count:
        from IPython.display import display

        from .render import notice

        display(
            notice(
                f"⚠ The {what} held {count} lone surrogate{'s' if count != 1 else ''} "
                "(e.g. '\\ud800', not valid Unicode); sent as \ufffd (U+FFFD) instead."
            )
        )
    return fixed


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as error:
        raise UsageError(f"Cannot read the options ({error}): check the quotes.") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def _parser(prog: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, add_help=False)


def _no_args(verb: str, argv: list[str]) -> None:
    if argv:
        raise UsageError(f"%amigo {verb} takes no arguments (got: {' '.join(argv)}).")


_loaded: dict[int, AmigoMagics] = {}


def current(shell: InteractiveShell | None = None) -> AmigoMagics:
    """The loaded extension's magics for ``shell`` (default: the running IPython), loading the
    extension first if needed — how ``ChatPanel()`` finds the notebook's session."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise ConfigError("ChatPanel needs IPython or Jupyter: run it in a notebook.")
    if id(shell) not in _loaded:
        load(shell)
    return _loaded[id(shell)]


def load(shell: InteractiveShell) -> None:
    """Register the magics and the error recorder (``%load_ext amigo_magic``)."""
    if id(shell) in _loaded:
        return
    magics = AmigoMagics(shell=shell)
    shell.register_magics(magics)
    shell.events.register("post_run_cell", magics.post_run_cell)
    shell.user_ns.setdefault("Err", magics.errors)
    _loaded[id(shell)] = magics


def unload(shell: InteractiveShell) -> None:
    """Undo everything :func:`load` did and stop the background loop."""
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    shell.events.unregister("post_run_cell", magics.post_run_cell)
    manager = shell.magics_manager
    for kind, names in AmigoMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
    configurables: list[Any] = shell.configurables
    if magics in configurables:
        configurables.remove(magics)
    if shell.user_ns.get("Err") is magics.errors:
        del shell.user_ns["Err"]
    if magics._session is not None:
        magics._session.store.close()
    from .runner import close_runner

    close_runner()
