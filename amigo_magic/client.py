"""HTTP plumbing shared by the HTTP backends: one pooled ``httpx.AsyncClient``, the retry policy,
the status → error mapping; every response is closed, its body read by :mod:`.bodies`.

Retries happen only for failures that can succeed on a second try — connect errors, timeouts
and dropped connections before any content, 408/429/5xx — and never once an event has been
handed to the caller: a stream that fails half-way raises, it is not sent again.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import httpx

from .bodies import ACCEPT_ENCODING, read_events, read_json, undecodable_coding
from .config import Secret, Settings
from .errors import (
    AmigoError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    InvalidResponseError,
    StreamError,
    error_for_status,
)
from .protocol import (
    Event,
    error_message_from_body,
)
from .ratelimit import RateGate
from .redact import scrub

__all__ = ["Download", "HTTPClient"]

log = logging.getLogger("amigo_magic.http")

T = TypeVar("T")
E = TypeVar("E", bound=AmigoError)
Consume = Callable[[httpx.Response], AsyncIterator[T]]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_ERROR_BODY_LIMIT = 64 * 1024

# What h11 accepts as a header value (no CR, LF, NUL or other control character, no space at
# either end), in the ASCII httpx encodes str values with.
_HEADER_VALUE = re.compile(r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?")
_HEADER_BYTES = re.compile(rb"(?:[!-~\x80-\xff]+(?:[ \t]+[!-~\x80-\xff]+)*)?")
_HEADER_SETTING = {
    "authorization": "The API key for {service}",
    "x-device-version": "The device version (AMIGO_DEVICE_VERSION)",
    "user-agent": "The user agent setting",
    "origin": "The site URL setting",
    "referer": "The site URL setting",
}


class _UnsendableHeader(Exception):
    """A header value the transport would refuse; carries the header's name, never its value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Download(NamedTuple):
    """What a bounded GET read: the status, the headers, at most ``limit + 1`` chunks' bytes."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class HTTPClient:
    """Owns one ``httpx.AsyncClient`` for its life; :meth:`aclose` releases it."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        transport: httpx.AsyncBaseTransport | None = None,
        secret: Secret | None = None,
        url_hint: str = "the base URL (AMIGO_BASE_URL)",
    ) -> None:
        self.settings = settings
        self.service = service
        self.url_hint = url_hint  # where the user fixes the address: said in connection errors
        # The key this client sends, and every other key the settings hold: scrubbed from every
        # error it raises, in every form a server echoes them (see redact.py).
        sent = secret if secret is not None else settings.api_key
        self._secrets = tuple(
            dict.fromkeys([*([sent.reveal()] if sent else []), *settings.known_secrets()])
        )
        t = settings.timeouts
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.connect),
            proxy=settings.proxy,
            transport=transport,
            headers={"accept-encoding": ACCEPT_ENCODING},
            verify=default_ssl_context(),
            follow_redirects=False,  # an API that redirects a POST is misconfigured: say so
        )
        self.gate = RateGate()  # a Retry-After pauses every request of this client

    async def aclose(self) -> None:
        await self._client.aclose()

    def build(
        self,
        url: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        *,
        timeout: float | None = None,
    ) -> httpx.Request:
        """A POST of ``body`` as JSON (a GET when ``body`` is None); ``timeout`` replaces the
        read timeout (image calls, model lists)."""
        extensions = {}
        if timeout is not None:
            t = self.settings.timeouts
            extensions["timeout"] = httpx.Timeout(
                connect=min(t.connect, timeout), read=timeout, write=t.write, pool=t.connect
            ).as_dict()
        method = "GET" if body is None else "POST"
        content = None if body is None else json.dumps(body).encode()
        for name, value in headers.items():
            if not _HEADER_VALUE.fullmatch(value):
                raise _UnsendableHeader(name.lower())
        try:
            request = self._client.build_request(
                method, url, content=content, headers=headers, extensions=extensions
            )
        except UnicodeEncodeError:
            raise _UnsendableHeader("") from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s headers=%s", method, url, self._redact(dict(request.headers)))
        return request

    def stream_events(self, build: Callable[[], httpx.Request]) -> AsyncIterator[Event]:
        """Events of a streamed chat answer (SSE, or a whole JSON reply if the server sent one).

        The retry loop's own generator, not a wrapper around it: every layer of ``async for``
        costs each chunk of the answer a resumption.
        """
        return self._attempts(build, self._read_events)

    async def request_json(self, build: Callable[[], httpx.Request]) -> Any:
        """The parsed JSON body of a successful request."""
        async for payload in self._attempts(build, self._read_json):
            return payload
        raise InvalidResponseError(f"{self.service} sent an empty reply.", service=self.service)

    async def get(self, url: str, *, limit: int, timeout: float) -> Download:
        """A bounded GET (no retries, no redirects): the caller checks status and type."""
        request = self._client.build_request("GET", url, timeout=timeout)
        host = request.url.netloc.decode()
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = bytearray()
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > limit:
                        break
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise self._scrub(
                APITimeoutError(
                    f"Could not download from {self.service} at {host}: nothing arrived for "
                    f"{timeout:g} s. Run the cell again.",
                    service=self.service,
                    short=f"no answer within {timeout:g} s",
                )
            ) from exc
        except httpx.HTTPError as exc:
            raise self._scrub(
                APIConnectionError(
                    f"Could not download from {self.service} at {host}: {_reason(exc)}. Links "
                    "expire quickly: run the cell again.",
                    service=self.service,
                    short=_reason(exc),
                )
            ) from exc
        return Download(response.status_code, response.headers, bytes(body))

    # -- the retry loop -------------------------------------------------------------------

    async def _attempts(
        self, build: Callable[[], httpx.Request], consume: Consume[T]
    ) -> AsyncIterator[T]:
        policy = self.settings.retry
        failures: list[str] = []
        for attempt in range(1, policy.attempts + 1):
            # A header value the transport refuses (a key ending in CR, a non-ASCII character)
            # fails the same way on every try: say so once, naming the header but never its
            # value, and raise outside the handler so no chained traceback keeps the frames
            # that held it.
            refused: str | None = None
            try:
                request = build()
            except _UnsendableHeader as unsendable:
                refused = unsendable.name
            if refused is not None:
                raise self._scrub(self._unsendable(refused))
            delivered = False
            retryable = False
            wait: float | None = None
            await self.gate.wait()
            try:
                response = await self._client.send(request, stream=True)
            except httpx.LocalProtocolError:
                refused = _refused_header(request.headers)  # h11 would not write it
            except httpx.HTTPError as exc:
                error: APIError = self._transport_error(exc, request, started=False)
                retryable = not isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL))
            else:
                try:
                    if response.status_code in (200, 201):
                        coding = undecodable_coding(response.headers)
                        if coding is not None:
                            raise self._unreadable(coding)
                        async for item in consume(response):
                            delivered = True
                            yield item
                        return
                    error = await self._status_error(response)
                    retryable = response.status_code in RETRYABLE_STATUSES
                    if retryable:  # Retry-After on any of them: 503 as well as 429 (RFC 9110)
                        wait = error.retry_after
                        if wait is not None and wait <= policy.max_retry_after:
                            self.gate.pause(wait)  # every other request waits too
                except httpx.DecodingError:
                    raise self._scrub(self._unreadable("", delivered=delivered)) from None
                except httpx.HTTPError as exc:
                    error = self._transport_error(exc, request, started=True)
                    if delivered:
                        raise self._scrub(error.with_attempts([*failures, error.short])) from exc
                    retryable = True
                except AmigoError as spoken:  # in-band errors, unreadable replies: no retry
                    raise self._scrub(spoken) from None
                finally:
                    await response.aclose()
            if refused is not None:
                del request  # held the refused header
                raise self._scrub(self._unsendable(refused))
            failures.append(error.short)
            if not retryable or attempt == policy.attempts:
                raise self._scrub(error.with_attempts(failures))
            if wait is not None and wait > policy.max_retry_after:
                raise self._scrub(error.with_attempts(failures))  # the message names the wait
            delay = (
                wait if wait is not None else _backoff(policy.backoff, policy.max_backoff, attempt)
            )
            log.info(
                "%s attempt %d failed (%s); retrying in %.2f s",
                self.service,
                attempt,
                failures[-1],
                delay,
            )
            await asyncio.sleep(delay)

    # -- reading success bodies -------------------------------------------------------------

    def _read_events(self, response: httpx.Response) -> AsyncIterator[Event]:
        return read_events(
            response, service=self.service, in_band=self._in_band, redact=self._redact_text
        )

    async def _read_json(self, response: httpx.Response) -> AsyncIterator[Any]:
        yield await read_json(response, service=self.service, redact=self._redact_text)

    # -- errors ------------------------------------------------------------------------------

    async def _status_error(self, response: httpx.Response) -> APIStatusError:
        body = bytearray()
        if undecodable_coding(response.headers) is None:  # else its words would be noise
            async for part in response.aiter_bytes():
                body += part
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        words, cloudflare = error_message_from_body(
            bytes(body), response.headers.get("content-type", "")
        )
        words = self._redact_text(words)
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            url = response.request.url
            try:
                loop = url.join(location) == url
            except httpx.InvalidURL:
                loop = False
            if loop:
                message = (
                    f"{self.service} redirects {url} to itself ({status}): a redirect loop, so "
                    f"no API answers there. Check {self.url_hint}; if it is right, "
                    "the service is misconfigured: try again later."
                )
            else:
                message = (
                    f"{self.service} redirected the request ({status}) to {location}. Set the "
                    "base URL to the address the API really answers at."
                )
            return APIStatusError(
                message, status=status, server_message=words, service=self.service
            )
        return error_for_status(
            status,
            words,
            service=self.service,
            endpoint=str(response.request.url),
            retry_after=_retry_after(response.headers.get("retry-after")),
            cloudflare=cloudflare,
            device_version=self.settings.device_version,
        )

    def _transport_error(
        self, exc: httpx.HTTPError, request: httpx.Request, *, started: bool
    ) -> APIError:
        where = f"{request.url.scheme}://{request.url.netloc.decode()}"
        t = self.settings.timeouts
        service = self.service
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return APIConnectionError(
                f"The URL {request.url} cannot be used ({exc}). Fix the base URL.", service=service
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return APITimeoutError(
                f"{service} at {where} did not accept a connection within {t.connect:g} s. "
                "Check the network and the base URL.",
                service=service,
                short="connect timeout",
            )
        if isinstance(exc, (httpx.ReadTimeout, httpx.PoolTimeout, httpx.WriteTimeout)):
            if started:
                return StreamError(
                    f"{service} stopped sending in the middle of the answer (no data for "
                    f"{t.read:g} s); the text so far is kept. Run the cell again.",
                    service=service,
                )
            return APITimeoutError(
                f"{service} at {where} sent nothing for {t.read:g} s. The server may be "
                "overloaded; try again, or raise the read timeout.",
                service=service,
                short=f"no answer within {t.read:g} s",
            )
        if started:
            return StreamError(
                f"The connection to {service} broke in the middle of the answer "
                f"({_reason(exc)}); the text so far is kept. Run the cell again.",
                service=service,
            )
        return APIConnectionError(
            f"Could not connect to {service} at {where}: {_reason(exc)}. Check "
            f"{self.url_hint}, the proxy and the network.",
            service=service,
            short=_reason(exc),
        )

    def _in_band(self, message: str | None) -> StreamError:
        """An error event inside a stream, as one line that says what to do."""
        words = " ".join((message or "no details").split()).rstrip(".")
        return StreamError(
            f"{self.service} sent an error in the middle of the answer: "
            f"{self._redact_text(words)[:300]}. Any text so far is kept; run the cell again, or "
            "pick another model if it keeps happening.",
            service=self.service,
        )

    def _unsendable(self, header: str) -> ConfigError:
        """A header the transport refused, named by the setting it comes from (never shown)."""
        what = _HEADER_SETTING.get(header, f"The {header} header" if header else "A header")
        return ConfigError(
            f"{what.format(service=self.service)} contains a character that cannot be sent in "
            "an HTTP header (a line break, a carriage return from a .env file with Windows line "
            "ends, a control or non-ASCII character, or a space at either end): set it again "
            "without it. Nothing was sent."
        )

    def _unreadable(self, coding: str, *, delivered: bool = False) -> APIError:
        """A body in a content coding this client cannot decode (or a corrupt one)."""
        what = (
            f"a body compressed as {' '.join(coding.split())[:40]!r}, which this client cannot read"
            if coding
            else "a compressed body that could not be decompressed"
        )
        fix = (
            "A proxy between you and the server is the usual cause (it changed or ignored the "
            "request's Accept-Encoding): bypass it (NO_PROXY) or ask for the API to pass "
            "through unchanged."
        )
        if delivered:
            return StreamError(
                f"{self.service} sent {what} in the middle of the answer; the text so far is "
                f"kept. {fix}",
                service=self.service,
            )
        return InvalidResponseError(f"{self.service} sent {what}. {fix}", service=self.service)

    def _redact(self, headers: dict[str, str]) -> dict[str, str]:
        return {
            k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers.items()
        }

    def _redact_text(self, text: str) -> str:
        return scrub(text, self._secrets) if self._secrets else text

    def _scrub(self, error: E) -> E:
        """``error`` with the key taken out of everything it says (servers echo keys)."""
        error.message = self._redact_text(error.message)
        error.args = (error.message,)
        if isinstance(error, APIError):
            error._short = self._redact_text(error._short)
            error.attempts = tuple(self._redact_text(a) for a in error.attempts)
        if isinstance(error, APIStatusError):
            error.server_message = self._redact_text(error.server_message)
        return error


def default_ssl_context() -> ssl.SSLContext:
    """httpx's own verifying context (``verify=True``), built once per CA setting and shared.

    Building one reads the whole CA bundle (~20 ms); every HTTPClient used to pay that again.
    """
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads the same two variables


def _refused_header(headers: httpx.Headers) -> str:
    """The name of the first header whose value h11 does not allow ("" if none is found)."""
    for name, value in headers.raw:
        if not _HEADER_BYTES.fullmatch(value):
            return name.decode("ascii", "replace").lower()
    return ""


def _reason(exc: httpx.HTTPError) -> str:
    """A few words for a transport failure, from the deepest cause that says something."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for error in reversed(chain):
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return "the host name could not be resolved (DNS)"
    text = " ".join(str(e) for e in chain).lower()
    if "connection refused" in text or "errno 111" in text:
        return "connection refused"
    if "name or service not known" in text or "name resolution" in text:
        return "the host name could not be resolved (DNS)"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection"
    return " ".join((str(exc) or type(exc).__name__).split())[:160]


def _backoff(base: float, cap: float, attempt: int) -> float:
    return min(cap, base * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.replace(".", "", 1).isdigit():
        return min(float(value), 1e9)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds)
