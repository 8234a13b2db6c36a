"""``%amigo <verb>``: the line magic's commands, each a small function over the magics' session.

Each handler parses its own arguments (unknown ones are a usage line), asks the session, and
returns a display object from :mod:`.render` — it never opens the store or the network itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .errors import ConfigError

if TYPE_CHECKING:
    from .magics import AmigoMagics
    from .render import Rich

__all__ = ["VERBS", "run_verb"]

Handler = Callable[["AmigoMagics", list[str]], Any]
VERBS: dict[str, Handler] = {}


def _verb(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        VERBS[name] = handler
        return handler

    return register


def run_verb(magics: AmigoMagics, words: list[str]) -> Any:
    verb = words[0] if words else "help"
    handler = VERBS.get(verb)
    if handler is None:
        raise UsageError(
            f"Unknown %amigo command '{verb}'. Commands: {', '.join(sorted(VERBS))}. "
            "A prompt goes in a cell: %%amigo on the first line, the question below."
        )
    return handler(magics, words[1:])


HELP = [
    ("%%amigo [options]", "ask; the cell body is the prompt (%%amigo? lists options)"),
    ("%amigo_image PROMPT", "draw a picture inline (-m flux | dalle | recraft …)"),
    ("%amigo_panel [-c CHAT] [-m MODEL] [--side]", "the chat panel (--side: beside the notebook)"),
    ("%amigo models", "every model and alias; * marks the default"),
    ("%amigo use MODEL", "make MODEL this notebook's default (local, NAME:MODEL, …)"),
    ("%amigo endpoint add NAME URL [--key-env VAR]", "an OpenAI-compatible server"),
    ("%amigo endpoint list | remove NAME", "the named endpoints"),
    ("%amigo history [-c CHAT] [-n N]", "the conversation so far"),
    ("%amigo chats", "this notebook's named chats"),
    ("%amigo reset [-c CHAT | --all]", "forget a chat (or all of this notebook's)"),
    ("%amigo session [NAME]", "show or set this notebook's history name"),
    ("%amigo export PATH [--format md|json] [-c CHAT] [--force]", "save a chat"),
    ("%amigo usage [--chat NAME] [--all]", "requests, tokens and cost per model (and day)"),
    ("%amigo fix [--apply]", "explain the last error; --apply: the fix as a diff and a new cell"),
    ("%amigo map ITEMS TEMPLATE [-m MODEL] [-j N] [-o NAME]", "one answer per item, N at once"),
    ("%amigo wait", "block until every %%amigo --bg answer is done"),
    ("%amigo keep N", "keep answer N of the last %%amigo -m a,b cell as the turn"),
    ("%amigo config", "effective settings (the key is never shown)"),
    ("%amigo key", "enter an API key without echo; kept in memory only"),
    ("%amigo version", "versions of amigo_magic and its stack"),
    ("%config AmigoMagics", "settings you can change, with help"),
]


@_verb("help")
def _help(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import help_table

    return help_table(HELP)


@_verb("models")
def _models(magics: AmigoMagics, argv: list[str]) -> Any:
    from IPython.display import display

    from . import catalog
    from .render import endpoint_models_table, models_table

    _no_args("models", argv)
    settings = magics.session.settings()
    default = settings.model or catalog.DEFAULT_MODEL
    display(models_table(catalog.MODELS, catalog.ALIASES, default=default))
    return endpoint_models_table(magics.session.list_models(settings), default=default)


@_verb("endpoint")
def _endpoint(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .config import Preferences, display_url, is_variable_name
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
        rows = []
        for e in magics.session.endpoints():
            key = f"${e.key_env} ({'set' if e.key else 'not set'})" if e.key_env else "none"
            if e.key_env and not is_variable_name(e.key_env):  # perhaps a key: never shown
                key = "*** (not a variable name: set key_env to the variable's name)"
            kept = "this kernel (AmigoMagics.endpoints)" if e.name in magics.endpoints else "saved"
            rows.append((e.name, display_url(e.url), key, kept))
        if not rows:
            return notice("No endpoints yet: %amigo endpoint add NAME URL [--key-env VAR]")
        return config_table(rows, headers=("endpoint", "url", "key", "kept in"))
    if args.verb == "remove":
        in_trait = args.name in magics.endpoints
        if in_trait:
            magics.endpoints = {k: v for k, v in magics.endpoints.items() if k != args.name}
        if not magics.session.forget_endpoint(args.name) and not in_trait:
            names = ", ".join(e.name for e in magics.session.endpoints()) or "none"
            raise ConfigError(f"No endpoint named '{args.name}' (endpoints: {names}).")
        return notice(f"Removed endpoint '{args.name}'.")
    if not args.name.isidentifier():
        raise ConfigError("An endpoint name is one word of letters, digits and _ (e.g. ollama).")
    spec = {"url": args.url, **({"key_env": args.key_env} if args.key_env else {})}
    import os

    Preferences(endpoints={args.name: spec}).settings(os.environ)  # validates the URL and key
    where = magics.session.save_endpoint(args.name, spec)  # name, URL, key variable: no key
    if args.name in magics.endpoints:  # the trait wins over the file: this one is meant now
        magics.endpoints = {**magics.endpoints, args.name: spec}
    return notice(
        f"Endpoint '{args.name}' saved in {where} (its URL and key variable, never a key): "
        f"use --model {args.name}:MODEL, in this kernel and the next."
    )


@_verb("use")
def _use(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import notice

    if len(argv) != 1:
        raise UsageError("usage: %amigo use MODEL   (e.g. %amigo use claude)")
    target = magics.session.resolve(argv[0])
    if target.kind == "image":
        raise ConfigError(f"'{target.label}' draws pictures: set AmigoMagics.image_model instead.")
    magics.notebook_model = argv[0] if target.backend != "amigo" else target.model
    return notice(f"This notebook now asks {target.label}.")


@_verb("history")
def _history(magics: AmigoMagics, argv: list[str]) -> Rich:
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
    return transcript(magics.session.history(args.chat, limit=args.n), chat=args.chat)


@_verb("chats")
def _chats(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import chats_table

    _no_args("chats", argv)
    return chats_table(magics.session.chats())


@_verb("reset")
def _reset(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import notice

    parser = _parser("%amigo reset")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-c", "--chat", default="default")
    group.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    chat = None if args.all else args.chat
    removed = magics.session.reset(chat)
    which = "every chat of this notebook" if chat is None else f"chat '{chat}'"
    return notice(f"Removed {_plural(removed, 'turn')} from {which}.")


@_verb("session")
def _session(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import notice

    if len(argv) > 1:
        raise UsageError("usage: %amigo session [NAME]   (shows, or sets, this notebook's name)")
    if argv:
        chats = magics.session.attach(argv[0])
        found = _plural(len(chats), "chat") if chats else "no chats yet"
        return notice(f"This notebook's history is now '{argv[0]}' ({found}).")
    return notice(
        f"This notebook's history is '{magics.session.notebook}'. After renaming the "
        "notebook, `%amigo session OLD-NAME` re-attaches its chats."
    )


@_verb("export")
def _export(magics: AmigoMagics, argv: list[str]) -> Rich:
    from .render import notice

    parser = _parser("%amigo export")
    parser.add_argument("path")
    parser.add_argument("--format", choices=("md", "json"), default=None)
    parser.add_argument("-c", "--chat", default="default")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    if not args.path.strip():
        raise UsageError("Give a file to export to, e.g. %amigo export chat.md")
    report = magics.session.export(args.path, chat=args.chat, fmt=args.format, force=args.force)
    pictures = f" with {_plural(report.pictures, 'picture')}." if report.pictures else "."
    return notice(f"Exported {report.turns} turns of chat '{args.chat}' to {report.path}{pictures}")


@_verb("fix")
def _fix(magics: AmigoMagics, argv: list[str]) -> None:
    parser = _parser("%amigo fix")
    parser.add_argument("--apply", action="store_true", help="the fixed code into a new cell")
    args = parser.parse_args(argv)
    if magics.recorder.last is None:
        raise ConfigError("No cell has failed yet: %amigo fix explains the last error.")
    source, trace = (magics.session.scrub(part) for part in magics.recorder.last)  # as --cells
    then = (
        "then the whole corrected cell as one fenced python code block"
        if args.apply
        else "then give the corrected code"
    )
    prompt = magics.session.prompt(
        f"This notebook cell failed. Explain the error in two or three sentences, {then}."
        f"\n\nThe cell:\n```python\n{source}\n```\n\nThe error:\n```\n{trace}\n```"
    )
    text = magics.ask(prompt, magics.session.options(use_history=False), "markdown")
    if args.apply:
        _apply(magics, source, text)


def _apply(magics: AmigoMagics, source: str, answer: str) -> None:
    """The answer's code as a diff against the failed cell, and in a new cell below."""
    from IPython.display import display

    from .render import code_block, diff_bundle, notice

    code, _ = code_block(answer)  # without a fence it is the whole text: not a fix then
    if not code.strip() or ("```" not in answer and "~~~" not in answer):
        raise ConfigError("The answer holds no code block to apply; nothing was changed.")
    data, metadata = diff_bundle(source, code, caption="The fix, against the failed cell:")
    display(data, metadata=metadata, raw=True)
    magics.shell.set_next_input(code, replace=False)
    display(notice("↓ The fixed code is in a new cell below, ready to run."))


@_verb("wait")
def _wait(magics: AmigoMagics, argv: list[str]) -> Any:
    from .many_cells import wait

    _no_args("wait", argv)
    return wait(magics)


@_verb("keep")
def _keep(magics: AmigoMagics, argv: list[str]) -> Any:
    from .many_cells import keep

    if len(argv) != 1 or not argv[0].isdigit():
        raise UsageError("usage: %amigo keep N   (the column of the last %%amigo -m a,b cell)")
    return keep(magics, int(argv[0]))


@_verb("map")
def _map(magics: AmigoMagics, argv: list[str]) -> Any:
    from .many import map_verb

    return map_verb(magics, argv)


@_verb("config")
def _config(magics: AmigoMagics, argv: list[str]) -> Rich:
    from . import catalog
    from .render import config_table

    _no_args("config", argv)
    settings = magics.session.settings()
    key_source = (
        "set with %amigo key" if magics.key else "from AMIGO_API_KEY" if settings.api_key else ""
    )
    m = magics
    rows = [
        ("model", settings.model or catalog.DEFAULT_MODEL),
        ("image_model", m.image_model),
        ("base_url", settings.base_url),
        ("api key", f"set ({key_source})" if key_source else "not set"),
        ("device_version", settings.device_version),
        ("max_history", str(m.max_history)),
        ("max_tokens", str(m.max_tokens)),
        ("default_format", m.default_format),
        ("system_prompt", m.system_prompt or "(none)"),
        ("timeouts", f"connect {m.connect_timeout:g} s, read {m.read_timeout:g} s, "
                     f"image {m.image_timeout:g} s"),
        ("throttle", f"{m.throttle:g} s"),
        ("cache", m.session.cache.describe()),
        ("budget", f"{m.budget_tokens or 'no'} token cap, "
                   + (f"${m.budget_usd:g}" if m.budget_usd else "no") + " cost cap"),
        ("notebook", m.session.notebook),
    ]  # fmt: skip
    from .config import display_url

    for e in m.session.endpoints():  # NAME:MODEL servers, kept or configured (never a key)
        key = f", key ${e.key_env} ({'set' if e.key else 'not set'})" if e.key_env else ""
        rows.append((f"endpoint {e.name}", f"{display_url(e.url)}{key}"))
    return config_table(rows)


@_verb("usage")
def _usage(magics: AmigoMagics, argv: list[str]) -> Any:
    from IPython.display import display

    from .render import config_table, notice

    parser = _parser("%amigo usage")
    parser.add_argument("-c", "--chat", default=None)
    parser.add_argument("--all", action="store_true", help="every notebook, per day")
    args = parser.parse_args(argv)
    found = magics.session.cache.usage(args.chat, everything=args.all)
    if found.rows:
        display(config_table(found.rows, headers=found.headers))
    return notice(found.summary)


@_verb("key")
def _key(magics: AmigoMagics, argv: list[str]) -> Rich:
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
    key = Secret(entered, "%amigo key")
    magics.key = key
    try:
        magics.session.settings()  # a key that cannot be sent is refused now, not at the next cell
    except ConfigError:
        magics.key = None
        raise
    return notice("Key set for this kernel (kept in memory only, never saved or shown).")


@_verb("version")
def _version(magics: AmigoMagics, argv: list[str]) -> Rich:
    import httpx
    import IPython

    from ._version import __version__
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


def _getpass() -> str:
    import getpass

    return getpass.getpass("AmigoChat API key (hidden): ")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def _parser(prog: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, add_help=False)


def _no_args(verb: str, argv: list[str]) -> None:
    if argv:
        raise UsageError(f"%amigo {verb} takes no arguments (got: {' '.join(argv)}).")
