"""Properties of the SSE decoder: however the network cuts a byte stream, the events are the same.

Streams are generated as the spec frames them — data (several lines per event), event names,
ids, retry fields, comments, every line ending (LF, CR, CRLF, mixed) and any text, multi-byte
UTF-8 and U+2028 included — then cut anywhere, with cuts favoured where they hurt: right after a
CR (a CRLF split in two) and inside a multi-byte character.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amigo_magic.sse import ServerSentEvent, SSEDecoder

# Any character but a line break (and lone surrogates, which UTF-8 cannot encode).
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
_NAME = _TEXT.map(lambda s: s[:6])
_ENDING = st.sampled_from(["\n", "\r", "\r\n"])


@dataclass(frozen=True)
class _Event:
    data: tuple[str, ...]
    event: str | None
    id: str | None
    retry: int | None
    comment: str | None


_EVENTS = st.builds(
    _Event,
    data=st.lists(_TEXT, min_size=1, max_size=3).map(tuple),
    event=st.none() | _NAME,
    id=st.none() | _NAME.filter(lambda s: "\0" not in s),
    retry=st.none() | st.integers(0, 10**6),
    comment=st.none() | _TEXT,
)


def _lines(event: _Event) -> list[str]:
    lines = [f": {event.comment}"] if event.comment is not None else []
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    lines += [f"data: {line}" for line in event.data]
    return [*lines, ""]  # the blank line dispatches


def _expected(events: list[_Event]) -> list[ServerSentEvent]:
    out: list[ServerSentEvent] = []
    last_id: str | None = None
    for e in events:
        last_id = e.id if e.id is not None else last_id
        out.append(ServerSentEvent("\n".join(e.data), e.event, last_id, e.retry))
    return out


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def _cut(data: bytes, cuts: set[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _hurtful_cuts(data: bytes) -> list[int]:
    """Right after each CR, and inside each multi-byte character."""
    return [i + 1 for i, b in enumerate(data) if b == 0x0D or 0x80 <= b < 0xC0 or b >= 0xC0]


@st.composite
def _chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    hurtful = _hurtful_cuts(data)
    cuts: set[int] = set()
    if hurtful:
        cuts |= set(draw(st.lists(st.sampled_from(hurtful), max_size=12)))
    if data:
        cuts |= set(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return _cut(data, cuts)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[_Event], bytes]:
    """A stream with one line ending throughout (so its events are known), and its bytes."""
    events = draw(st.lists(_EVENTS, max_size=6))
    ending = draw(_ENDING)
    text = "".join(line + ending for e in events for line in _lines(e))
    return events, text.encode()


@st.composite
def _mixed_streams(draw: st.DrawFn) -> bytes:
    """Lines ending in any mix of LF, CR and CRLF (a CR then an LF-ended line reads as one
    CRLF: the meaning differs from the parts, so only chunking invariance is asserted)."""
    events = draw(st.lists(_EVENTS, max_size=6))
    lines = [line for e in events for line in _lines(e)]
    endings = draw(st.lists(_ENDING, min_size=len(lines), max_size=len(lines)))
    tail = draw(st.sampled_from(["", "data: no blank line at the end", "data: half"]))
    return ("".join(a + b for a, b in zip(lines, endings, strict=True)) + tail).encode()


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.data())
def test_any_chunking_yields_the_events_the_stream_holds(data: st.DataObject) -> None:
    events, raw = data.draw(_streams())
    chunks = data.draw(_chunkings(raw))
    assert b"".join(chunks) == raw
    assert decode([raw]) == _expected(events)
    assert decode(chunks) == _expected(events)


@_FAST
@given(st.data())
def test_any_chunking_of_mixed_line_endings_is_one_chunk(data: st.DataObject) -> None:
    raw = data.draw(_mixed_streams())
    chunks = data.draw(_chunkings(raw))
    assert decode(chunks) == decode([raw])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_any_chunking_of_any_bytes_is_one_chunk(raw: bytes, data: st.DataObject) -> None:
    # Arbitrary bytes (invalid UTF-8, stray CRs, NULs): never an exception, never a difference.
    raw = raw.replace(b"x", b"\r").replace(b"y", b"\n")  # more line breaks than chance gives
    assert decode(data.draw(_chunkings(raw))) == decode([raw])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_byte_by_byte_is_one_chunk(data: st.DataObject) -> None:
    raw = data.draw(_mixed_streams())
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == decode([raw])
