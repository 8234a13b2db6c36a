"""Which backend answers a model name: ``local``, ``ENDPOINT:MODEL``, or the AmigoChat catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import catalog
from .config import Endpoint, Settings
from .errors import ConfigError

__all__ = ["LOCAL", "Target", "resolve_target"]

LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved model: who answers, what they are asked for, what the user sees."""

    backend: Literal["amigo", "openai", "local"]
    model: str  # the name the backend is sent
    label: str  # shown in status lines and kept in history
    kind: Literal["chat", "image", "any"]  # "any": the server's own model, kind unknown
    endpoint: Endpoint | None = None
    sees_pictures: bool | None = None  # takes image parts; None: unknown (the server decides)


def resolve_target(name: str | None, settings: Settings) -> Target:
    """``name`` (or the settings' default model) → its :class:`Target`.

    ``local`` is the embedded model; ``NAME:MODEL`` a model of a named endpoint; anything else
    goes through the catalogue's rule (alias before id, close matches on a miss).
    """
    name = (name or settings.model or "").strip()
    if name == LOCAL:
        return Target("local", settings.local_model or "", LOCAL, "chat", sees_pictures=False)
    if ":" in name:
        prefix, _, model = name.partition(":")
        for endpoint in settings.endpoints:
            if endpoint.name == prefix:
                if not model:
                    raise ConfigError(
                        f"Say which model of endpoint '{prefix}': --model {prefix}:MODEL "
                        "(`%amigo models` lists them)."
                    )
                return Target("openai", model, name, "any", endpoint)
        known = ", ".join(e.name for e in settings.endpoints) or "none yet"
        raise ConfigError(
            f"No endpoint named '{prefix}' (endpoints: {known}). Add it with "
            f"`%amigo endpoint add {prefix} URL [--key-env VAR]`."
        )
    entry = catalog.resolve(name)
    return Target("amigo", entry.id, entry.id, entry.kind, sees_pictures=entry.sees_pictures)
