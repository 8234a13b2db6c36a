"""Tab completion for the magics through IPython's own completer (Jupyter's ``complete_request``).

One matcher (IPython's matcher API v2, in ``Completer.custom_matchers``) reads the line the
cursor is on and, when it is an amigo magic's, offers what fits there — and only that (it
suppresses the other matchers, which offered ``%more`` for ``%amigo mo``):

- ``%amigo <verb>``: the commands; ``%amigo use`` a model; ``%amigo endpoint`` its verbs and the
  endpoint names;
- ``%%amigo`` (its first line), ``%amigo_image``, ``%amigo_panel``: option names; after
  ``-m``/``--model`` the aliases, ids, ``local`` and ``ENDPOINT:`` — after ``ENDPOINT:`` that
  endpoint's live models (asked once a minute at most, waited for 2 s at most); after ``-c``/
  ``--chat`` this notebook's chats; after ``-f``/``--format`` the formats.

:func:`close_option` is the "did you mean --model?" of a mistyped option.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.completer import CompletionContext, SimpleMatcherResult

    from .magics import AmigoMagics

__all__ = ["Completer", "close_option", "install", "uninstall"]

LIVE_WAIT = 2.0  # seconds a completion may wait for an endpoint's model list
LIVE_FOR = 60.0  # seconds a fetched model list is reused
_OPTION_VALUES = {
    "-m": "model",
    "--model": "model",
    "-c": "chat",
    "--chat": "chat",
    "-f": "format",
    "--format": "format",
}
_MAGICS = ("%%amigo_image", "%%amigo", "%amigo_image", "%amigo_panel", "%amigo")


def close_option(parser: Any, message: str) -> str:
    """`` (did you mean --model?)`` for an argparse "unrecognized arguments" ``message``."""
    found = re.search(r"unrecognized arguments?: (.+)", message)
    if not found:
        return ""
    options = {o.lstrip("-"): o for a in parser._actions for o in a.option_strings if len(o) > 2}
    hints = []
    for word in found.group(1).split():
        if word.startswith("-"):
            bare = word.split("=")[0].lstrip("-")
            close = difflib.get_close_matches(bare, list(options), n=1, cutoff=0.7)
            hints += [(word, options[close[0]])] if close else []
    if len(hints) == 1:
        return f" (did you mean {hints[0][1]}?)"
    return f" (did you mean {', '.join(f'{o} for {w}' for w, o in hints)}?)" if hints else ""


class Completer:
    """The matcher for one loaded extension's magics."""

    def __init__(self, magics: AmigoMagics) -> None:
        self.magics = magics
        self._live: dict[str, tuple[float, list[str]]] = {}  # endpoint → (when, its models)
        self.matcher = self._make_matcher()

    def _make_matcher(self) -> Callable[[CompletionContext], SimpleMatcherResult]:
        from IPython.core.completer import context_matcher

        @context_matcher()  # type: ignore[untyped-decorator]
        def amigo_matcher(context: CompletionContext) -> SimpleMatcherResult:
            try:
                found = self.complete(context)
            except Exception:  # a completion never raises into the user's Tab
                found = None
            return found or _result([], "", suppress=False)

        return amigo_matcher  # type: ignore[no-any-return]

    # -- the matcher ---------------------------------------------------------------------------

    def complete(self, context: CompletionContext) -> SimpleMatcherResult | None:
        line = context.text_until_cursor
        if context.cursor_line != 0 and not line.lstrip().startswith("%amigo"):
            return None  # a cell's body is the prompt: nothing to complete there
        magic = next((m for m in _MAGICS if line.lstrip().startswith(m + " ")), None)
        if magic is None:
            return None
        words = line.lstrip()[len(magic) :].split()
        current = "" if line.endswith((" ", "\t")) else (words.pop() if words else "")
        candidates = self._candidates(magic, words, current)
        if candidates is None:
            return None
        fragment = (
            current.split("=", 1)[1] if current.startswith("--") and "=" in current else current
        )
        return _result(candidates, fragment)

    def _candidates(self, magic: str, words: list[str], current: str) -> list[str] | None:
        if magic == "%amigo" and not any(w.startswith("-") for w in words[:1]):
            return self._verb_candidates(words, current)
        previous = words[-1] if words else ""
        if current.startswith("--") and "=" in current:
            previous, current = current.split("=", 1)
        kind = _OPTION_VALUES.get(previous)
        if kind == "model":
            return self.models(current, images=magic.endswith("image"))
        if kind == "chat":
            return [c.name for c in self.magics.session.chats()]
        if kind == "format":
            from .config import FORMATS

            return list(FORMATS)
        if current.startswith("-"):
            return self.options(magic)
        return None

    def _verb_candidates(self, words: list[str], current: str) -> list[str] | None:
        from .verbs import VERBS

        if not words:
            return sorted(VERBS)
        if words == ["use"]:
            return self.models(current)
        if words == ["endpoint"]:
            return ["add", "list", "remove"]
        if words == ["endpoint", "remove"]:
            return [e.name for e in self.magics.session.endpoints()]
        return None

    # -- what it offers ------------------------------------------------------------------------

    def options(self, magic: str) -> list[str]:
        name = magic.lstrip("%")
        parser = getattr(getattr(self.magics, name), "parser", None)
        if parser is None:
            return []
        return sorted({o for a in parser._actions for o in a.option_strings if o != "-h"})

    def models(self, current: str, *, images: bool = False) -> list[str]:
        from . import catalog

        endpoint, colon, _ = current.partition(":")
        if colon:
            prefix = f"{endpoint}:"
            live = self.live_models(endpoint)  # listed as ENDPOINT:MODEL, ready to use
            return [m if m.startswith(prefix) else prefix + m for m in live]
        kind = "image" if images else "chat"
        names = [a.name for a in catalog.ALIASES.values() if catalog.resolve(a.name).kind == kind]
        names += [m.id for m in catalog.MODELS if m.kind == kind and not m.retired]
        if not images:
            names += ["local", *(f"{e.name}:" for e in self.magics.session.endpoints())]
        return list(dict.fromkeys(names))

    def live_models(self, endpoint: str) -> list[str]:
        """An endpoint's models as its server lists them (cached a minute; [] if it is slow)."""
        cached = self._live.get(endpoint)
        if cached and time.monotonic() - cached[0] < LIVE_FOR:
            return cached[1]
        session = self.magics.session
        if endpoint not in {e.name for e in session.endpoints()}:
            return []
        done = threading.Event()
        found: dict[str, list[str]] = {}

        def deliver(sources: Iterable[Any]) -> None:
            for source in sources:
                if not source.error:
                    found[source.name] = list(source.models)
            done.set()

        session.list_models_later(session.settings(), deliver, lambda error: done.set())
        done.wait(LIVE_WAIT)
        now = time.monotonic()
        for name, models in found.items():
            self._live[name] = (now, models)
        return found.get(endpoint, [])


def _result(
    candidates: Iterable[str], fragment: str, *, suppress: bool = True
) -> SimpleMatcherResult:
    from IPython.core.completer import SimpleCompletion

    matches = sorted((c for c in candidates if c.startswith(fragment)), key=len)  # "claude" first
    result: Any = {
        "completions": [SimpleCompletion(text=m, type="amigo") for m in matches],
        "matched_fragment": fragment,
        "suppress": suppress,
        "ordered": True,
    }
    return result  # type: ignore[no-any-return]


def install(magics: AmigoMagics) -> Completer | None:
    """Add the matcher to the shell's completer (``%load_ext``); None if it has none."""
    completer = getattr(magics.shell, "Completer", None)
    if completer is None or not hasattr(completer, "custom_matchers"):
        return None
    ours = Completer(magics)
    completer.custom_matchers.append(ours.matcher)
    return ours


def uninstall(magics: AmigoMagics, ours: Completer | None) -> None:
    completer = getattr(magics.shell, "Completer", None)
    if ours is not None and completer is not None and ours.matcher in completer.custom_matchers:
        completer.custom_matchers.remove(ours.matcher)
