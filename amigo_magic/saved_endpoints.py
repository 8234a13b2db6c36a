"""Endpoints that last: ``%amigo endpoint add`` keeps a named OpenAI-compatible server in
``$AMIGO_HOME/endpoints.json`` — its name, its URL and the *name* of the environment variable
holding its key, never a key — for every later kernel; ``endpoint remove`` forgets it.

:func:`with_saved` wraps a front end's preferences so that each request sees the saved
endpoints under the configured ones: ``AmigoMagics.endpoints`` (the trait, ``ipython_config.py``)
wins over the file for the same name. A damaged file reads as no endpoints; the file is only
ever replaced whole (written beside it, then renamed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import Preferences
from .errors import ConfigError

__all__ = ["FILE_NAME", "forget", "load", "path", "save", "with_saved"]

FILE_NAME = "endpoints.json"
_FIELDS = ("url", "key_env")
_cache: dict[Path, tuple[float, dict[str, dict[str, str]]]] = {}


def path(env: Mapping[str, str]) -> Path:
    from .store import default_home

    return default_home(env) / FILE_NAME


def load(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The saved endpoints, ``{name: {"url": …, "key_env": …}}`` (read again when it changes)."""
    file = path(env)
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        return {}
    cached = _cache.get(file)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    found = {
        str(name): {k: str(v) for k, v in spec.items() if k in _FIELDS and v}
        for name, spec in (raw.items() if isinstance(raw, dict) else ())
        if isinstance(spec, dict) and spec.get("url")
    }
    _cache[file] = (mtime, found)
    return found


def _write(env: Mapping[str, str], endpoints: Mapping[str, Mapping[str, str]]) -> Path:
    file = path(env)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f".{FILE_NAME}.{os.getpid()}")
        partial.write_text(json.dumps(endpoints, indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(partial, file)
    except OSError as error:
        raise ConfigError(
            f"Cannot save the endpoint in {file} ({error.strerror or error}): set AMIGO_HOME to a "
            "writable folder, or put it in c.AmigoMagics.endpoints in ipython_config.py."
        ) from None
    return file


def save(env: Mapping[str, str], name: str, spec: Mapping[str, Any]) -> Path:
    """Keep endpoint ``name`` (its URL and key variable only); the file's path."""
    kept = {k: str(spec[k]) for k in _FIELDS if spec.get(k)}
    return _write(env, {**load(env), name: kept})


def forget(env: Mapping[str, str], name: str) -> bool:
    """Forget endpoint ``name``; False if it was not saved."""
    saved = load(env)
    if name not in saved:
        return False
    _write(env, {k: v for k, v in saved.items() if k != name})
    return True


def with_saved(
    preferences: Callable[[], Preferences], env: Mapping[str, str]
) -> Callable[[], Preferences]:
    """``preferences`` with the saved endpoints added under the configured ones."""

    def merged() -> Preferences:
        prefs = preferences()
        saved = load(env)
        if not saved:
            return prefs
        return dataclasses.replace(prefs, endpoints={**saved, **prefs.endpoints})

    return merged
