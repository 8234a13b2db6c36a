"""Settings, resolved once into a frozen object and passed down; nothing below reads os.environ.

Precedence is flag > trait > environment > default: a front end's traits become one frozen
:class:`Preferences`, which the session resolves with the environment into :class:`Settings`
(:meth:`Preferences.settings`); flags are applied per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DEVICE_VERSION",
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "FORMATS",
    "SITE_URL",
    "Endpoint",
    "Preferences",
    "RetryPolicy",
    "Secret",
    "Settings",
    "Timeouts",
    "display_url",
    "endpoints_from",
]

DEFAULT_BASE_URL = "https://api.amigochat.io/v1"
SITE_URL = "https://amigochat.io/chat/"
DEFAULT_DEVICE_VERSION = "1.0.45"
DEFAULT_IMAGE_MODEL = "flux"
DEFAULT_TEMPERATURE = 0.5  # the reference's sampling defaults, for every front end
DEFAULT_TOP_P = 0.95
FORMATS = ("markdown", "text", "code", "html", "json")  # what an answer can be shown as
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


class Secret:
    """An API key that never prints: ``repr``/``str`` show a mask, :meth:`reveal` the value.

    Surrounding whitespace is never part of a key (a ``.env`` file with CRLF line ends leaves a
    ``\\r``): it is dropped. ``source`` names where the key came from, for messages.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "the api_key setting") -> None:
        self._value = value.strip()
        self.source = source

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
        if env.get("AMIGO_BASE_URL", "").strip():
            values["base_url"] = env["AMIGO_BASE_URL"].strip()
        if env.get("AMIGO_API_KEY", "").strip():
            values["api_key"] = Secret(env["AMIGO_API_KEY"], "AMIGO_API_KEY")
        if env.get("AMIGO_MODEL"):
            values["model"] = env["AMIGO_MODEL"]
        if env.get("AMIGO_DEVICE_VERSION", "").strip():
            values["device_version"] = env["AMIGO_DEVICE_VERSION"].strip()
        if env.get("AMIGO_LOCAL_MODEL"):
            values["local_model"] = env["AMIGO_LOCAL_MODEL"]
        values.update(overrides)
        return cls(**values).validated()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, validated."""
        return dataclasses.replace(self, **changes).validated()

    def known_secrets(self) -> tuple[str, ...]:
        """Every key these settings hold (the API key, each endpoint's), for the scrubber."""
        keys = [self.api_key, *(e.key for e in self.endpoints)]
        return tuple(k.reveal() for k in keys if isinstance(k, Secret) and k.reveal())

    def validated(self) -> Settings:
        """Self, or a :class:`ConfigError` saying which setting is wrong and how to fix it."""
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The base URL '{display_url(self.base_url)}' must start with http:// or "
                "https:// (set AMIGO_BASE_URL, e.g. http://127.0.0.1:8000/v1)."
            )
        _check_url(self.base_url, "The base URL (AMIGO_BASE_URL)", "AMIGO_API_KEY")
        if isinstance(self.api_key, str):  # a plain string slipped in: wrap it
            object.__setattr__(self, "api_key", Secret(self.api_key))
        if self.api_key is not None:
            _check_key(self.api_key)
        for endpoint in self.endpoints:
            if not endpoint.url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"Endpoint '{endpoint.name}' has the URL '{display_url(endpoint.url)}': it "
                    "must start with http:// or https:// (e.g. http://127.0.0.1:11434/v1)."
                )
            _check_url(
                endpoint.url,
                f"The URL of endpoint '{endpoint.name}'",
                "--key-env VAR (the key in that environment variable)",
            )
            if endpoint.key_env is not None and not is_variable_name(endpoint.key_env):
                raise ConfigError(
                    f"The key variable of endpoint '{endpoint.name}' (--key-env, 'key_env') must "
                    "be the name of an environment variable that holds the key (e.g. "
                    f"OPENAI_API_KEY), not the key itself (%amigo endpoint remove {endpoint.name}, "
                    "then add it again with --key-env VAR)."
                )
            if endpoint.key is not None:
                _check_key(endpoint.key)
        _check_header_value(self.device_version, "device_version (AMIGO_DEVICE_VERSION)")
        if self.retry.attempts < 1:
            raise ConfigError("retry attempts must be at least 1.")
        for name in ("connect", "read", "write", "image"):
            if getattr(self.timeouts, name) <= 0:
                raise ConfigError(f"the {name} timeout must be a positive number of seconds.")
        return self


def display_url(url: str) -> str:
    """``url`` as it may be shown: a user name and password in it are replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme (refused anyway): "alice:pw@host/v1" must not show "pw" either
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    path, mark, query = path.partition("?")
    if query:  # a key in the query string shows as ***
        query = "&".join(
            f"{k}=***" if k.strip().lower().replace("-", "_") in _KEY_PARAMETERS else f"{k}{eq}{v}"
            for k, eq, v in (part.partition("=") for part in query.split("&"))
        )
    if "@" in authority:
        authority = f"***@{authority.rpartition('@')[2]}"
    return f"{scheme}{sep}{authority}{slash}{path}{mark}{query}"


def _check_url(url: str, what: str, instead: str) -> None:
    """Refuse credentials in a URL (they would be shown and stored) and characters that cannot
    be sent in a request line — in one line that does not show the password."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ConfigError(
            f"{what} contains a space, line break or control character "
            f"({display_url(url)!r}); remove it."
        )
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:
        has_credentials = False
    if has_credentials or "@" in url.partition("://")[2].partition("/")[0]:
        raise ConfigError(
            f"{what} holds a user name or password ({display_url(url)}): they would be shown "
            f"and saved. Remove them from the URL and pass the key with {instead}."
        )
    query = url.partition("?")[2].partition("#")[0]
    named = {part.partition("=")[0].strip().lower().replace("-", "_") for part in query.split("&")}
    if named & _KEY_PARAMETERS:
        raise ConfigError(
            f"{what} carries a key in its query string ({display_url(url)}): it would be shown "
            f"and saved. Remove it from the URL and pass the key with {instead}."
        )


_KEY_PARAMETERS = {"key", "api_key", "apikey", "token", "access_token", "password", "secret"}


def is_variable_name(name: str) -> bool:
    """Whether ``name`` can be an environment variable's name (letters, digits, _)."""
    return (
        bool(name) and name.replace("_", "a").isalnum() and name.isascii() and not name[0].isdigit()
    )


def _check_key(key: Secret) -> None:
    """A key that cannot be an HTTP header value is refused here, once, without showing it (no
    local of this frame, which the error's traceback keeps, holds the key itself)."""
    problem = _unsendable(key.reveal())
    if problem is not None:
        position, length, kind = problem
        raise ConfigError(
            f"The key from {key.source} has {kind} inside it (character {position} of "
            f"{length}), so it cannot be sent in an HTTP header. Copy the key again without it."
        ) from None


def _unsendable(value: str) -> tuple[int, int, str] | None:
    """Where ``value`` stops being a valid header value (1-based), its length, and why."""
    for position, char in enumerate(value, 1):
        if not (0x20 <= ord(char) < 0x7F):
            kind = "a non-ASCII character" if ord(char) > 0x7F else "a control character"
            return position, len(value), kind
    return None


def _check_header_value(value: str, what: str) -> None:
    if _unsendable(value) is not None:
        raise ConfigError(
            f"The {what} {value!r} contains a line break, control or non-ASCII character, "
            "so it cannot be sent in an HTTP header; set it to a version such as "
            f"{DEFAULT_DEVICE_VERSION}."
        ) from None


# -- what a front end's settings say, before the environment -------------------------------------


@dataclass(frozen=True)
class Preferences:
    """The front end's settings (``AmigoMagics`` traits, ``%amigo use``, ``%amigo key``), as one
    frozen value: :meth:`settings` resolves the connection with the environment; the session
    builds every request's options from the rest, for the cell and the panel alike."""

    model: str = ""
    image_model: str = DEFAULT_IMAGE_MODEL
    base_url: str = ""
    device_version: str = ""
    api_key: Secret | None = field(default=None, repr=False)
    local_model: str = ""
    endpoints: Mapping[str, Any] = field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    max_history: int = 20
    max_tokens: int = 4000
    system_prompt: str = ""
    default_format: str = "markdown"
    throttle: float = 0.05
    context_budget: int = 2000  # tokens each {name} field may fill (amigo_magic.context)
    approve_tools: str = "ask"  # -T: ask | always | never (a run that cannot ask denies)
    max_tool_rounds: int = 8  # -T: rounds of tool calls in one answer
    cache: str = ""  # off | auto | replay (amigo_magic.replay); empty: $AMIGO_CACHE, else off
    cache_file: str = ""  # portable recordings; empty: $AMIGO_CACHE_FILE, else the history db
    params: Mapping[str, Any] = field(default_factory=dict)  # sent with every chat request
    budget_tokens: int = 0  # this notebook's cap (amigo_magic.usage); 0: none
    budget_usd: float = 0.0

    def settings(self, env: Mapping[str, str]) -> Settings:
        """Flag-free settings: these preferences over ``AMIGO_*`` variables over defaults."""
        changes: dict[str, Any] = {
            "timeouts": self.timeouts,
            "endpoints": tuple(endpoints_from(self.endpoints, env)),
        }
        for name in ("base_url", "device_version", "model", "local_model"):
            if getattr(self, name):
                changes[name] = getattr(self, name)
        if self.api_key is not None:
            changes["api_key"] = self.api_key
        return Settings.from_env(env, **changes)

    def secrets(self, env: Mapping[str, str]) -> list[str]:
        """Every key these preferences know of, read without validating (a bad key is refused
        later, with its own message): none may leave inside a filled-in prompt."""
        variables = ["AMIGO_API_KEY"]
        for spec in self.endpoints.values():
            if isinstance(spec, Mapping) and spec.get("key_env"):
                variables.append(str(spec["key_env"]))
        found = [env.get(name, "") for name in variables]
        if self.api_key is not None:
            found.append(self.api_key.reveal())
        return [s for s in found if s.strip()]


def endpoints_from(configured: Mapping[str, Any], env: Mapping[str, str]) -> list[Endpoint]:
    """The ``endpoints`` setting as :class:`Endpoint` values, each key read from its variable."""
    found = []
    for name, spec in configured.items():
        spec = {"url": spec} if isinstance(spec, str) else dict(spec)
        if "url" not in spec:
            raise ConfigError(f"AmigoMagics.endpoints['{name}'] needs a 'url'.")
        key_env = spec.get("key_env") or None
        key = env.get(key_env, "").strip() if key_env else ""
        secret = Secret(key, f"${key_env} (endpoint '{name}')") if key else None
        found.append(Endpoint(name, str(spec["url"]), key_env, secret))
    return found
