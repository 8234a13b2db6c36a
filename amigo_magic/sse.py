"""An incremental Server-Sent Events decoder that works on bytes, as the WHATWG spec frames them.

Pure: no HTTP, no JSON. Feed it network chunks as they arrive; it returns the events completed by
each chunk. Lines end in CR, LF or CRLF only — never U+2028, which models emit inside JSON
strings — and a CRLF or a UTF-8 character split across chunks is handled, because lines are
split on bytes and decoded only once whole.

One deliberate leniency: :meth:`SSEDecoder.close` dispatches an event still pending when the
stream ends without its blank line, where the spec would drop it. Losing the last chunk of an
answer to a sloppy server is worse than accepting it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` is None for the default type ("message")."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` objects, chunk by chunk."""

    __slots__ = ("_data", "_event", "_id", "_partial", "_retry", "_skip_lf", "comments")

    def __init__(self) -> None:
        self._partial = b""  # bytes of a line not yet terminated
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self.comments = 0  # ":" lines seen (keep-alives)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete, in order."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if self._partial:
            chunk = self._partial + chunk
            self._partial = b""
        elif (
            chunk[:6] == b"data: "
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1:] == b"\n"
            and chunk.find(b"\r") < 0
        ):
            # The hot path: a server that frames each event as its own chunk,
            # b"data: <json>\n\n" — one event, no need to split lines.
            self._data.append(chunk[6:-2].decode("utf-8", "replace"))
            event = self._dispatch()
            return [event] if event is not None else []
        if b"\r" in chunk:
            # bytes.splitlines breaks on \n, \r and \r\n only (unlike str.splitlines).
            lines = chunk.splitlines(keepends=True)
            last = lines[-1]
            if last[-1:] not in (b"\n", b"\r"):
                self._partial = lines.pop()
            elif last[-1:] == b"\r":
                self._skip_lf = True
            lines = [line.rstrip(b"\r\n") for line in lines]
        else:  # the usual case: LF only; the piece after the last LF is the partial line
            lines = chunk.split(b"\n")
            self._partial = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            # The hot path, one per chunk of an answer: "data: <json>" and the blank line.
            if line[:5] == b"data:":
                self._data.append(
                    (line[6:] if line[5:6] == b" " else line[5:]).decode("utf-8", "replace")
                )
            elif line:
                self._line(line)
            else:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: finish a pending line and dispatch a pending event."""
        events: list[ServerSentEvent] = []
        if self._partial:
            line, self._partial = self._partial, b""
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

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
