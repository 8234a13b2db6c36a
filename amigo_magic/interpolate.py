"""Brace-safe prompt interpolation: ``{name}``, ``{name[3]}``, ``{name.attr}`` from a namespace.

Only a brace pair around a name that exists in the namespace is replaced; every other brace —
code, JSON, set literals, ``{{doubled}}`` — stays exactly as written. Nothing is evaluated:
indexes are integer or quoted-string literals, attributes are plain names. A filled value is
sent as its typed view (:mod:`.context`: a frame's shape, dtypes and a sample, not its rows),
within the token budget; a string as it is.

Secrets never leave through it: a module's attributes are not reached (a pasted
``f"{os.environ}"`` stays as written), and every filled-in value has the secrets the caller
knows scrubbed out of it (``env = os.environ`` then ``{env}``).
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .attach import Picture, picture_of, read_attachment
from .context import (
    DEFAULT_BUDGET,
    Filled,
    Prompt,
    bound,
    estimate_tokens,
    recent_cells,
    summary,
    view,
)
from .errors import ConfigError
from .redact import scrub

__all__ = ["fill", "interpolate", "without_lone_surrogates"]

_FIELD = re.compile(
    r"(?P<escaped>\{\{[^{}\n]*\}\})"  # {{...}} is left alone: the way to write literal braces
    r"|\{(?P<name>[A-Za-z_]\w*)"
    r"(?P<access>(?:\[\s*(?:-?\d+|'[^'\\\n]*'|\"[^\"\\\n]*\")\s*\]|\.[A-Za-z_]\w*)*)\}"
)
_STEP = re.compile(r"\[\s*(-?\d+|'[^'\\\n]*'|\"[^\"\\\n]*\")\s*\]|\.([A-Za-z_]\w*)")


def fill(
    text: str,
    namespace: Mapping[str, Any] | None,
    secrets: Sequence[str],
    budget: int,
    cells: Sequence[Sequence[Any]] = (),
    attach: Sequence[str] = (),
) -> Prompt:
    """The prompt as sent, its pictures, and what context went with it (the status line's
    summary): the ``cells`` (``--cells N``) and the files (``--attach``) before its text, its
    fields filled in (unless ``namespace`` is None) — pictures numbered in that order."""
    pictures: list[Picture] = []
    block, filled = recent_cells(cells, budget, secrets, pictures)
    for path in attach:
        found = read_attachment(path, budget)
        if isinstance(found, Picture):
            pictures.append(found)
            block += f"[picture {len(pictures)}: the file {found.label}, attached]\n\n"
            filled.append(Filled(found.label, "picture", found.tokens))
            continue
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        shown = scrub(bound(found.rstrip(), budget), [s for s in secrets if s])
        block += f"The file {name}:\n```\n{shown}\n```\n\n"
        filled.append(Filled(name, "file", estimate_tokens(shown)))
    if namespace is not None:
        text = interpolate(
            text, namespace, secrets, budget=budget, filled=filled, pictures=pictures
        )
    return Prompt(block + text, tuple(pictures), summary(filled))


def interpolate(
    text: str,
    namespace: Mapping[str, Any],
    secrets: Iterable[str] = (),
    *,
    budget: int = DEFAULT_BUDGET,
    filled: list[Filled] | None = None,
    pictures: list[Picture] | None = None,
) -> str:
    """``text`` with each ``{name…}`` whose name is in ``namespace`` replaced by the value's
    view (``budget`` tokens at most; a string whole), with every one of ``secrets`` scrubbed out
    of it. Each field filled in is appended to ``filled``, when given. With ``pictures``, a
    picture (a figure, an image) is appended there and named in the text (``[picture 1: {fig}]``).

    A name that exists but whose index or attribute does not raises :class:`ConfigError`
    (sending the braces on silently would hide the mistake). An attribute of a module is
    never looked up: that field stays exactly as written.
    """
    known = tuple(s for s in secrets if s)

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None or name not in namespace:
            return match.group(0)
        value = namespace[name]
        for step in _STEP.finditer(match.group("access")):
            index, attr = step.groups()
            if attr is not None and isinstance(value, types.ModuleType):
                return match.group(0)  # {os.environ}: code, not a value to send
            try:
                if attr is not None:
                    if attr.startswith("_"):
                        raise AttributeError(attr)
                    value = getattr(value, attr)
                else:
                    key: Any = int(index) if index.lstrip("-").isdigit() else index[1:-1]
                    value = value[key]
            except Exception as error:  # the user's object failed: one line, not a traceback
                why = scrub(_why(name, error), known)
                raise ConfigError(
                    f"Cannot fill in {match.group(0)}: {why}. Use "
                    "--no-interpolate to send braces as written."
                ) from None
        try:
            picture = None if pictures is None else picture_of(value, match.group(0), budget)
        except ConfigError:
            raise
        except Exception as error:  # the user's figure failed to draw: one line
            raise ConfigError(
                f"Cannot fill in {match.group(0)}: drawing it as a picture failed "
                f"({type(error).__name__}: {' '.join(str(error).split())[:200]})."
            ) from None
        if picture is not None and pictures is not None:
            pictures.append(picture)
            if filled is not None:
                filled.append(Filled(match.group(0), "picture", picture.tokens))
            return f"[picture {len(pictures)}: {match.group(0)}, attached]"
        try:
            shown, kind = view(value, budget)
        except Exception as error:
            raise ConfigError(
                f"Cannot fill in {match.group(0)}: str() failed ({type(error).__name__}). Use "
                "--no-interpolate to send braces as written."
            ) from None
        shown = scrub(shown, known) if known else shown
        if kind != "text" and "\n" in shown:  # a table on lines of its own, not after "Sum up "
            before, after = text[match.start() - 1 : match.start()], text[match.end() :][:1]
            shown = ("\n" if before not in ("", "\n") else "") + shown
            shown += "\n" if after not in ("", "\n") else ""
        if filled is not None:
            filled.append(Filled(match.group(0), kind, estimate_tokens(shown)))
        return shown

    return _FIELD.sub(replace, text)


def _why(name: str, error: Exception) -> str:
    if name == "Err" and isinstance(error, LookupError):
        return f"cell {error.args[0] if error.args else '?'} raised no error"
    if isinstance(error, AttributeError):
        return f"no attribute '{error.args[0] if error.args else '?'}'"
    if isinstance(error, LookupError):
        return f"no item {error.args[0] if error.args else '?'!r}"
    if isinstance(error, TypeError):
        return " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> tuple[str, int]:
    """``text`` with each lone surrogate replaced by U+FFFD, and how many there were.

    A lone surrogate (``'\\ud800'``) is not a character: neither a request nor the history
    database can hold it. Replacing it keeps the rest, which is what the user meant to send;
    a surrogate pair becomes its character.
    """
    if text.isascii() or _LONE_SURROGATE.search(text) is None:
        return text, 0
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed, fixed.count("\ufffd") - text.count("\ufffd")
