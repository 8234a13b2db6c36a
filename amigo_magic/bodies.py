"""Reading a successful response's body: a streamed answer (SSE, or a whole JSON reply sent
instead) into typed events, a JSON reply into its value, and which content codings can be read.

The stream is read in one place, :func:`read_events`: every server-sent event — those completed
by a chunk and the one still pending when the body ends — goes through :meth:`_Reading.take`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from .errors import EmptyAnswerError, InvalidResponseError, StreamError
from .protocol import (
    Event,
    Finish,
    StreamWarning,
    error_event_message,
    error_message_from_body,
    in_band_error,
    parse_chunk,
    parse_completion,
)
from .sse import ServerSentEvent, SSEDecoder

__all__ = ["ACCEPT_ENCODING", "read_events", "read_json", "undecodable_coding"]

JSON_BODY_LIMIT = 64 * 1024 * 1024
_DRAIN_LIMIT = 64 * 1024  # bytes read after [DONE] to let the connection be reused
_DRAIN_SECONDS = 0.5

# The content codings httpx can decode here (brotli and zstd only when their packages are
# installed). httpx passes any other coding through undecoded, as if it were plain text, so a
# body in one is refused with a clear line, and Accept-Encoding names only these.
try:
    from httpx._decoders import SUPPORTED_DECODERS as _HTTPX_DECODERS

    _DECODABLE = frozenset(_HTTPX_DECODERS)
except ImportError:  # pragma: no cover - a future httpx that moved it
    _DECODABLE = frozenset({"identity", "gzip", "deflate"})
ACCEPT_ENCODING = ", ".join(sorted(_DECODABLE - {"identity"}))

InBand = Callable[[str | None], StreamError]  # the server's words → the line the user reads
_NOTHING: list[Event] = []


class _Reading:
    """What one stream has shown so far: its end marker, a finish reason, skipped chunks."""

    __slots__ = ("ended", "finished", "in_band", "malformed")

    def __init__(self, in_band: InBand) -> None:
        self.in_band = in_band
        self.ended = False  # [DONE] came
        self.finished = False  # a finish reason came
        self.malformed = 0

    def take(self, sse: ServerSentEvent) -> list[Event] | None:
        """The events one server-sent event carries; None for the end marker."""
        data = sse.data
        if sse.event == "error":  # the server's words, never an answer that ends well
            raise self.in_band(error_event_message(data))
        if data == "[DONE]":
            self.ended = True
            return None
        try:
            payload = json.loads(data)
        except ValueError:
            if data:  # an event with no data (event: ping) is not a broken chunk
                self.malformed += 1
            return _NOTHING
        try:
            events = parse_chunk(payload)
        except StreamError:  # an error event: the server's words, and what to do
            raise self.in_band(in_band_error(payload)) from None
        for event in events:
            if type(event) is Finish:
                self.finished = True
        return events


async def read_events(
    response: httpx.Response, *, service: str, in_band: InBand, redact: Callable[[str], str]
) -> AsyncIterator[Event]:
    """The events of a streamed chat answer, then a :class:`StreamWarning` for skipped chunks.

    An empty body is :class:`EmptyAnswerError`; a body that ends with neither ``[DONE]`` nor a
    finish reason is a :class:`StreamError` (cut off).
    """
    if response.headers.get("content-type", "").startswith("application/json"):
        # Asked for a stream, got a whole answer: read it, don't lose it.
        for event in parse_completion(await read_json(response, service=service, redact=redact)):
            yield event
        return
    decoder = SSEDecoder(source=service)
    reading = _Reading(in_band)
    feed, take = decoder.feed, reading.take  # the loop below runs once per chunk: keep it flat
    empty = True
    chunks = response.aiter_bytes()
    async for chunk in chunks:
        empty = False
        for sse in feed(chunk):
            events = take(sse)
            if events is None:
                break
            for event in events:
                yield event
        if reading.ended:
            break
    if reading.ended:
        await _drain(chunks)
    else:
        for sse in decoder.close():
            for event in take(sse) or _NOTHING:
                yield event
    if reading.malformed:
        count = reading.malformed
        yield StreamWarning(
            f"{count} malformed chunk{'s' if count > 1 else ''} from {service} skipped; the "
            "answer may miss a few words."
        )
    if empty:
        raise EmptyAnswerError(
            f"{service} accepted the request but sent no answer at all. The server may have "
            "failed on it (its log says why); try again or shorten the prompt.",
            service=service,
        )
    if not reading.ended and not reading.finished:
        raise StreamError(
            f"{service} ended the answer without its end marker: it may be cut off. Run the "
            "cell again for a complete answer.",
            service=service,
        )


async def read_json(response: httpx.Response, *, service: str, redact: Callable[[str], str]) -> Any:
    """The parsed JSON body (at most :data:`JSON_BODY_LIMIT` bytes)."""
    body = bytearray()
    async for part in response.aiter_bytes():
        body += part
        if len(body) > JSON_BODY_LIMIT:
            raise InvalidResponseError(
                f"{service} sent a reply over {JSON_BODY_LIMIT >> 20} MB; refusing it.",
                service=service,
            )
    try:
        return json.loads(body)
    except ValueError:
        words, _ = error_message_from_body(bytes(body), response.headers.get("content-type", ""))
        raise InvalidResponseError(
            f"{service} answered {response.status_code} with a body that is not JSON "
            f'("{redact(words)}"). Check the base URL points at the API.',
            service=service,
        ) from None


def undecodable_coding(headers: httpx.Headers) -> str | None:
    """The first content coding of a response that httpx cannot decode here, or None."""
    for value in headers.get_list("content-encoding", split_commas=True):
        coding = value.strip().lower()
        if coding and coding not in _DECODABLE:
            return coding
    return None


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` — normally just the end of the body — so that httpx puts the
    connection back in the pool instead of dropping it (a new TLS handshake per answer). Bounded:
    a server that keeps the body open costs at most ``_DRAIN_SECONDS``, then the connection is
    dropped; the answer is complete either way."""

    async def rest() -> None:
        left = _DRAIN_LIMIT
        async for part in chunks:
            left -= len(part)
            if left < 0:
                return

    with contextlib.suppress(asyncio.TimeoutError, httpx.HTTPError):
        await asyncio.wait_for(rest(), _DRAIN_SECONDS)
