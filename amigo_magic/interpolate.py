"""Brace-safe prompt interpolation: ``{name}``, ``{name[3]}``, ``{name.attr}`` from a namespace.

Only a brace pair around a name that exists in the namespace is replaced; every other brace —
code, JSON, set literals, ``{{doubled}}`` — stays exactly as written. Nothing is evaluated:
indexes are integer or quoted-string literals, attributes are plain names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["interpolate"]

_FIELD = re.compile(
    r"(?P<escaped>\{\{[^{}\n]*\}\})"  # {{...}} is left alone: the way to write literal braces
    r"|\{(?P<name>[A-Za-z_]\w*)"
    r"(?P<access>(?:\[\s*(?:-?\d+|'[^'\\\n]*'|\"[^\"\\\n]*\")\s*\]|\.[A-Za-z_]\w*)*)\}"
)
_STEP = re.compile(r"\[\s*(-?\d+|'[^'\\\n]*'|\"[^\"\\\n]*\")\s*\]|\.([A-Za-z_]\w*)")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """``text`` with each ``{name…}`` whose name is in ``namespace`` replaced by ``str(value)``.

    A name that exists but whose index or attribute does not raises :class:`ConfigError`
    (sending the braces on silently would hide the mistake).
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None or name not in namespace:
            return match.group(0)
        value = namespace[name]
        for step in _STEP.finditer(match.group("access")):
            index, attr = step.groups()
            try:
                if attr is not None:
                    if attr.startswith("_"):
                        raise AttributeError(attr)
                    value = getattr(value, attr)
                else:
                    key: Any = int(index) if index.lstrip("-").isdigit() else index[1:-1]
                    value = value[key]
            except (AttributeError, LookupError, TypeError) as error:
                raise ConfigError(
                    f"Cannot fill in {match.group(0)}: {_why(name, error)}. Use "
                    "--no-interpolate to send braces as written."
                ) from None
        return str(value)

    return _FIELD.sub(replace, text)


def _why(name: str, error: Exception) -> str:
    if name == "Err" and isinstance(error, LookupError):
        return f"cell {error.args[0] if error.args else '?'} raised no error"
    if isinstance(error, AttributeError):
        return f"no attribute '{error.args[0] if error.args else '?'}'"
    if isinstance(error, LookupError):
        return f"no item {error.args[0] if error.args else '?'!r}"
    return str(error)
