"""Settings, resolved once into a frozen object and passed down; nothing below reads os.environ.

Precedence is flag > trait > environment > default: front ends start from :meth:`Settings.from_env`
and apply their traits and flags with :meth:`Settings.replace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DEVICE_VERSION",
    "SITE_URL",
    "Endpoint",
    "RetryPolicy",
    "Secret",
    "Settings",
    "Timeouts",
]

DEFAULT_BASE_URL = "https://api.amigochat.io/v1"
SITE_URL = "https://amigochat.io/chat/"
DEFAULT_DEVICE_VERSION = "1.0.45"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


class Secret:
    """An API key that never prints: ``repr``/``str`` show a mask, :meth:`reveal` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself — for the Authorization header, nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # never pickle a key into a file by accident
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``read`` is the longest silence allowed before the first byte and between
    chunks — a slow drip never times out while data flows; ``image`` bounds a whole image call."""

    connect: float = 10.0
    read: float = 60.0
    write: float = 30.0
    image: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of retryable failures only, before any content reached the caller."""

    attempts: int = 3
    backoff: float = 0.5  # first delay; doubles each attempt, with jitter
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is reported, not waited for


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A named OpenAI-compatible server (Ollama, vLLM, LM Studio, llama.cpp, OpenAI, …).

    ``key`` is read from the environment variable ``key_env`` each time settings are resolved:
    it is never kept in configuration or shown.
    """

    name: str
    url: str
    key_env: str | None = None
    key: Secret | None = field(default=None, repr=False, compare=True)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a backend needs to talk to its server."""

    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = field(default=None, repr=False)
    model: str = ""
    device_version: str = DEFAULT_DEVICE_VERSION
    site_url: str = SITE_URL
    user_agent: str = USER_AGENT
    proxy: str | None = None
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    endpoints: tuple[Endpoint, ...] = ()
    local_model: str | None = None  # a GGUF file; None: the SmolLM2 of the [local] extra

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Defaults, then ``AMIGO_*`` variables from ``env``, then ``overrides``."""
        values: dict[str, Any] = {}
        if env.get("AMIGO_BASE_URL"):
            values["base_url"] = env["AMIGO_BASE_URL"]
        if env.get("AMIGO_API_KEY"):
            values["api_key"] = Secret(env["AMIGO_API_KEY"])
        if env.get("AMIGO_MODEL"):
            values["model"] = env["AMIGO_MODEL"]
        if env.get("AMIGO_DEVICE_VERSION"):
            values["device_version"] = env["AMIGO_DEVICE_VERSION"]
        if env.get("AMIGO_LOCAL_MODEL"):
            values["local_model"] = env["AMIGO_LOCAL_MODEL"]
        values.update(overrides)
        return cls(**values).validated()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, validated."""
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> Settings:
        """Self, or a :class:`ConfigError` saying which setting is wrong and how to fix it."""
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The base URL '{self.base_url}' must start with http:// or https:// "
                "(set AMIGO_BASE_URL, e.g. http://127.0.0.1:8000/v1)."
            )
        if isinstance(self.api_key, str):  # a plain string slipped in: wrap it
            object.__setattr__(self, "api_key", Secret(self.api_key))
        for endpoint in self.endpoints:
            if not endpoint.url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"Endpoint '{endpoint.name}' has the URL '{endpoint.url}': it must start with "
                    "http:// or https:// (e.g. http://127.0.0.1:11434/v1)."
                )
        if self.retry.attempts < 1:
            raise ConfigError("retry attempts must be at least 1.")
        for name in ("connect", "read", "write", "image"):
            if getattr(self.timeouts, name) <= 0:
                raise ConfigError(f"the {name} timeout must be a positive number of seconds.")
        return self
