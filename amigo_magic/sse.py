"""An incremental Server-Sent Events decoder that works on bytes, as the WHATWG spec frames them.

Pure: no HTTP, no JSON. Feed it network chunks as they arrive; it returns the events completed by
each chunk. Lines end in CR, LF or CRLF only — never U+2028, which models emit inside JSON
strings — and a CRLF or a UTF-8 character split across chunks is handled, because lines are
split on bytes and decoded only once whole.

The work is linear in the input: a line still open when a chunk ends is kept as a growing
buffer, and each later chunk is searched only for its own line break (joining the open line to
every chunk had made one long line cost the square of its length). One event is bounded:
its data lines plus the open line may hold at most ``max_event_bytes`` (16 MB by default),
past which :meth:`SSEDecoder.feed` raises :class:`~amigo_magic.errors.StreamError` instead of
buffering without end.

One deliberate leniency: :meth:`SSEDecoder.close` dispatches an event still pending when the
stream ends without its blank line, where the spec would drop it. Losing the last chunk of an
answer to a sloppy server is worse than accepting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StreamError

__all__ = ["MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent"]

#: The default bound on one event (its data lines and any line still open), in bytes. A long
#: real answer streams as many small events; one event this large is a broken server or proxy.
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` is None for the default type ("message")."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` objects, chunk by chunk.

    ``source`` names the sender in the error raised for an event over ``max_event_bytes``.
    """

    __slots__ = (
        "_data",
        "_event",
        "_id",
        "_limit",
        "_partial",
        "_retry",
        "_size",
        "_skip_lf",
        "_source",
        "comments",
    )

    def __init__(
        self, *, max_event_bytes: int = MAX_EVENT_BYTES, source: str = "The server"
    ) -> None:
        self._partial = bytearray()  # bytes of a line not yet terminated
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._size = 0  # bytes of the pending event's data lines
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._limit = max_event_bytes
        self._source = source
        self.comments = 0  # ":" lines seen (keep-alives)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete, in order.

        Raises :class:`~amigo_magic.errors.StreamError` when one event grows past the bound.
        """
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if self._partial:
            return self._continue_line(chunk)
        if (
            chunk[:6] == b"data: "
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1:] == b"\n"
            and chunk.find(b"\r") < 0
            and not self._data
            and len(chunk) <= self._limit
        ):
            # The hot path: a server that frames each event as its own chunk,
            # b"data: <json>\n\n" — one event, no need to split lines.
            self._data.append(chunk[6:-2].decode("utf-8", "replace"))
            event = self._dispatch()
            return [event] if event is not None else []
        return self._lines(chunk)

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: finish a pending line and dispatch a pending event."""
        events: list[ServerSentEvent] = []
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _continue_line(self, chunk: bytes) -> list[ServerSentEvent]:
        """A line is open. Without a line break in ``chunk`` it only grows (amortised, never
        re-joined); with one, the open line is joined to the chunk once, at its end."""
        if b"\n" not in chunk and b"\r" not in chunk:
            self._partial += chunk
            self._check(len(self._partial))
            return []
        self._partial += chunk
        whole = bytes(self._partial)
        self._partial.clear()
        return self._lines(whole)

    def _lines(self, chunk: bytes) -> list[ServerSentEvent]:
        """Every line of ``chunk`` (no line is open before it); keep its unterminated tail."""
        if b"\r" in chunk:
            # bytes.splitlines breaks on \n, \r and \r\n only (unlike str.splitlines).
            lines = chunk.splitlines(keepends=True)
            last = lines[-1]
            if last[-1:] not in (b"\n", b"\r"):
                self._partial += lines.pop()
            elif last[-1:] == b"\r":
                self._skip_lf = True
            lines = [line.rstrip(b"\r\n") for line in lines]
        else:  # the usual case: LF only; the piece after the last LF is the partial line
            lines = chunk.split(b"\n")
            self._partial += lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            # The hot path, one per chunk of an answer: "data: <json>" and the blank line.
            if line[:5] == b"data:":
                self._size += len(line)
                if self._size > self._limit:
                    self._check(0)
                self._data.append(
                    (line[6:] if line[5:6] == b" " else line[5:]).decode("utf-8", "replace")
                )
            elif line:
                self._line(line)
            else:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
        if self._partial:
            self._check(len(self._partial))
        return events

    def _check(self, open_line: int) -> None:
        """Raise when the pending event and the open line together pass the bound."""
        if self._size + open_line > self._limit:
            limit = self._limit
            size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} bytes"
            self._partial = bytearray()
            self._data = []
            self._size = 0
            raise StreamError(
                f"{self._source} sent a single event larger than {size} (a real answer streams "
                "as many small ones), so it was not read to its end; the text so far is kept. "
                "The server or a proxy in between is misbehaving: run the cell again.",
                service=self._source,
            )

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            self.comments += 1
            return None
        line = raw.decode("utf-8", errors="replace")
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._size += len(raw)
            self._check(0)
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data = self._data
        if not data and self._event is None and self._retry is None:
            return None
        event = _new_event(ServerSentEvent)
        _set_data(event, data[0] if len(data) == 1 else "\n".join(data))
        _set_event(event, self._event)
        _set_id(event, self._id)
        _set_retry(event, self._retry)
        # the last event id persists across events, as the spec says; the rest resets
        self._data = []
        self._size = 0
        self._event = None
        self._retry = None
        return event


# Building the frozen dataclass through its __init__ costs four object.__setattr__ calls; on the
# hot path (one event per chunk of an answer) the slot descriptors set the fields directly.
_new_event = object.__new__
_set_data = ServerSentEvent.__dict__["data"].__set__
_set_event = ServerSentEvent.__dict__["event"].__set__
_set_id = ServerSentEvent.__dict__["id"].__set__
_set_retry = ServerSentEvent.__dict__["retry"].__set__
