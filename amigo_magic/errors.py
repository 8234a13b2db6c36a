"""The error tree: every failure a user can act on, as one readable line.

::

    AmigoError                      base; renders as one line in IPython, never a traceback
    ├── ConfigError                 bad settings or arguments
    │   ├── UnknownModelError       also a ValueError, as the seed's get_personaId promised
    │   ├── ReplayMissError         cache = 'replay' and no recording (cache.py); nothing sent
    │   └── BudgetExceededError     the notebook's budget is reached (usage.py); nothing sent
    ├── AnswerFormatError           the answer is not in the format asked for (-f json)
    ├── AnswerStopped               the user stopped an answer (a KeyboardInterrupt too)
    ├── HistoryBusyError            the history could not be changed now; nothing was
    └── APIError                    talking to a model server failed
        ├── APIStatusError          the server answered with an error status
        │   ├── BadRequestError         400, 413, 422
        │   ├── AuthenticationError     401
        │   ├── PermissionDeniedError   403 (``blocked`` when Cloudflare answered)
        │   ├── NotFoundError           404
        │   ├── AppVersionError         406: the server gates on x-device-version
        │   ├── RateLimitError          429 (``retry_after`` seconds when the server said)
        │   ├── QuotaExceededError      "your balance is not enough" in any status
        │   └── ServerError             5xx
        ├── APIConnectionError      could not reach the server
        │   └── APITimeoutError         connect, first byte or between chunks took too long
        ├── InvalidResponseError    a success status with a body we cannot read
        └── StreamError             the answer broke off mid-way or carried an error event
            └── EmptyAnswerError        a success status with an empty stream

Messages are built here, once: what failed, the status, the server's own words, what to do.
Nothing in this module knows a key; callers redact before the server's words reach it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import TypeVar

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmigoError",
    "AnswerFormatError",
    "AnswerStopped",
    "AppVersionError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "EmptyAnswerError",
    "HistoryBusyError",
    "InvalidResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "UnknownModelError",
    "error_for_status",
    "wait_words",
]

_E = TypeVar("_E", bound="APIStatusError")

_QUOTA_MARKERS = ("balance is not enough", "upgrade your plan", "quota")


class AmigoError(Exception):
    """Base of every error amigo_magic raises on purpose; ``str()`` is one readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        # IPython prints these lines instead of a traceback: the user sees the message only.
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self.message}"]


class ConfigError(AmigoError):
    """Settings or arguments that cannot work: fix the call, not the network."""


class UnknownModelError(ConfigError, ValueError):
    """A model name that is neither an alias nor an id; names up to three close matches."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = (
            "did you mean " + ", ".join(f"'{s}'" for s in self.suggestions) + "?"
            if self.suggestions
            else "no close match."
        )
        super().__init__(
            f"Unknown model '{name}': {hint} `%amigo models` lists every model and alias."
        )


class AnswerFormatError(AmigoError):
    """The answer arrived but is not in the format asked for (``-f json`` that does not parse);
    it is shown as text, and the message says where it stopped being that format."""


class AnswerStopped(AmigoError, KeyboardInterrupt):
    """The user stopped an answer: the cell ends as interrupted (so Run All stops), in one
    line, without a traceback; the partial answer is kept. ``shown``: the cell's own status
    line already says so, so nothing more is printed."""

    shown = False


class HistoryBusyError(AmigoError):
    """The history could not be changed now (another program holds it); nothing was changed."""


class APIError(AmigoError):
    """A request to a model server failed. ``attempts`` lists every try, oldest first."""

    def __init__(self, message: str, *, service: str = "AmigoChat", short: str = "") -> None:
        super().__init__(message)
        self.service = service
        self._short = short
        self.attempts: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """A few words for the list of attempts."""
        return self._short or self.message

    def with_attempts(self, attempts: Sequence[str]) -> APIError:
        """Record every attempt's failure in the message when there was more than one."""
        self.attempts = tuple(attempts)
        count = len(self.attempts)
        if count > 1:
            if len(set(self.attempts)) == 1:
                listed = f"all: {self.attempts[0]}"
            else:
                listed = "; ".join(f"{i}: {a}" for i, a in enumerate(self.attempts, 1))
            self.message = f"{self.message} [{count} attempts — {listed}]"
            self.args = (self.message,)
        return self


class APIStatusError(APIError):
    """The server answered with an error status; ``retry_after`` is the wait in seconds its
    ``Retry-After`` header asked for (any status), or None."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        server_message: str = "",
        service: str = "AmigoChat",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service)
        self.status = status
        self.server_message = server_message
        self.retry_after = retry_after

    @property
    def short(self) -> str:
        """The status and the server's words, for the list of attempts."""
        return _status_words(self.status, self.server_message)


class BadRequestError(APIStatusError):
    """400, 413, 422: the server will not accept this request as it is."""


class AuthenticationError(APIStatusError):
    """401: no key, or a wrong one."""


class PermissionDeniedError(APIStatusError):
    """403: refused; ``blocked`` when the answer was Cloudflare's challenge page."""

    blocked: bool = False


class NotFoundError(APIStatusError):
    """404: the base URL or the endpoint is wrong."""


class AppVersionError(APIStatusError):
    """406: the server refuses this app version (the x-device-version header)."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it said."""


class QuotaExceededError(APIStatusError):
    """The account's balance or quota is used up."""


class ServerError(APIStatusError):
    """5xx: the server failed; usually worth trying again later."""


class APIConnectionError(APIError):
    """The server could not be reached: refused, DNS, TLS, reset before an answer."""


class APITimeoutError(APIConnectionError):
    """A connect, first-byte or between-chunks timeout ran out."""


class InvalidResponseError(APIError):
    """A success status whose body is not what the protocol says."""


class StreamError(APIError):
    """The answer broke off after it started, or the server sent an error inside the stream.

    ``partial`` is the text the caller had already received: it is kept, never re-sent.
    """

    def __init__(self, message: str, *, partial: str = "", service: str = "AmigoChat") -> None:
        super().__init__(message, service=service)
        self.partial = partial


class EmptyAnswerError(StreamError):
    """A success status whose stream held nothing at all (llama.cpp's server answers a request
    it cannot serve this way)."""


def wait_words(seconds: float) -> str:
    """A wait for a message: whole seconds, rounded up (an HTTP-date gives fractions)."""
    if seconds < 1:
        return f"{seconds:.1g} s"
    return f"{math.ceil(min(seconds, 1e9)):d} s"


def _status_words(status: int, server_message: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    words = f"{status} {phrase}"
    if server_message and server_message.lower() != phrase.lower():
        words += f': "{server_message}"'
    return words


def error_for_status(
    status: int,
    server_message: str,
    *,
    service: str = "AmigoChat",
    endpoint: str = "",
    retry_after: float | None = None,
    cloudflare: bool = False,
    device_version: str = "",
) -> APIStatusError:
    """The one status → error mapping: pick the class and write the line the user reads."""
    words = _status_words(status, server_message)
    lowered = server_message.lower()

    def make(cls: type[_E], message: str) -> _E:
        return cls(
            message,
            status=status,
            server_message=server_message,
            service=service,
            retry_after=retry_after,
        )

    if any(marker in lowered for marker in _QUOTA_MARKERS):
        return make(
            QuotaExceededError,
            f"{service} says the quota is used up ({words}). Wait for it to renew, upgrade the "
            "plan, or pick another model or backend.",
        )
    if status == 401:
        return make(
            AuthenticationError,
            f"{service} refused the credentials ({words}). Set a valid key in AMIGO_API_KEY "
            "(or with `%amigo key` in a notebook).",
        )
    if status == 403:
        if cloudflare:
            denied = make(
                PermissionDeniedError,
                f"{service} is behind a Cloudflare block that refused this request "
                f"({status} Forbidden, a challenge page). Try again later, from another network, "
                "or use another backend.",
            )
            denied.blocked = True
            return denied
        return make(
            PermissionDeniedError,
            f"{service} denied access ({words}). Check that the key may use this model, or pick "
            "another model.",
        )
    if status == 404:
        where = f" at {endpoint}" if endpoint else ""
        return make(
            NotFoundError,
            f"{service} has no such endpoint{where} ({words}). Check "
            + (
                "its URL (%amigo endpoint list)."
                if service.startswith("endpoint ")
                else "the base URL (AMIGO_BASE_URL)."
            ),
        )
    if status == 406:
        version = f" {device_version}" if device_version else ""
        return make(
            AppVersionError,
            f"{service} refused the app version{version} ({words}). Set AMIGO_DEVICE_VERSION "
            "to the web app's current version.",
        )
    if "context" in lowered and any(w in lowered for w in ("exceed", "too long", "length")):
        return make(
            BadRequestError,
            f"{service} says the conversation is longer than the model's context window "
            f"({words}). Shorten the prompt, send less history (`--no-history`, `%amigo reset`) "
            "or lower --max-tokens.",
        )
    if status == 413:
        return make(
            BadRequestError,
            f"{service} says the request is too large ({words}). Shorten the prompt or send "
            "less history (`--no-history`, `%amigo reset`).",
        )
    if status == 429:
        wait = (
            f"wait {wait_words(retry_after)} and run it again"
            if retry_after is not None
            else "wait a minute and run it again"
        )
        return make(RateLimitError, f"{service} is rate limiting requests ({words}): {wait}.")
    if status >= 500:
        if retry_after is not None:
            return make(
                ServerError,
                f"{service} had a server error ({words}) and asks to be retried in "
                f"{wait_words(retry_after)}: wait that long and run it again.",
            )
        return make(
            ServerError,
            f"{service} had a server error ({words}). Try again in a minute; if it persists, "
            "the service is down.",
        )
    if status == 408:
        return make(ServerError, f"{service} timed out reading the request ({words}). Try again.")
    return make(
        BadRequestError,
        f"{service} rejected the request ({words}). Check the model and the parameters.",
    )
