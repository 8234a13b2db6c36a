"""The SSE decoder against the style guide's checklist, fed as the network would feed it."""

from __future__ import annotations

import json

import pytest

from amigo_magic.errors import StreamError
from amigo_magic.sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_basic() -> None:
    assert decode(b'event: completion\ndata: {"foo":true}\n\n') == [
        ServerSentEvent('{"foo":true}', "completion")
    ]


def test_data_missing_event() -> None:
    assert decode(b'data: {"foo":true}\n\n') == [ServerSentEvent('{"foo":true}')]


def test_event_missing_data() -> None:
    assert decode(b"event: ping\n\n") == [ServerSentEvent("", "ping")]


def test_multiple_events() -> None:
    events = decode(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n")
    assert [(e.event, e.data) for e in events] == [("a", "1"), ("b", "2")]


def test_multiple_data_lines_join_with_newline() -> None:
    assert decode(b'data: {\ndata: "foo":\ndata: true}\n\n')[0].data == '{\n"foo":\ntrue}'


def test_json_escaped_double_newline() -> None:
    payload = json.dumps({"content": "line one\n\nline two"}).encode()
    (event,) = decode(b"data: " + payload + b"\n\n")
    assert json.loads(event.data)["content"] == "line one\n\nline two"


def test_u2028_inside_json_is_not_a_line_break() -> None:
    text = "before\u2028after\u2029end\x85"
    payload = json.dumps({"content": text}, ensure_ascii=False).encode()
    (event,) = decode(*bytewise(b"data: " + payload + b"\n\n"))
    assert json.loads(event.data)["content"] == text


def test_multibyte_character_split_across_chunks() -> None:
    data = 'data: {"content": "привет 🌍"}\n\n'.encode()
    split = data.index("🌍".encode()) + 2  # in the middle of the 4-byte emoji
    (event,) = decode(data[:split], data[split:])
    assert json.loads(event.data)["content"] == "привет 🌍"


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(ending: bytes) -> None:
    raw = ending.join([b"data: one", b"", b"data: two", b"", b""])
    assert [e.data for e in decode(raw)] == ["one", "two"]
    assert [e.data for e in decode(*bytewise(raw))] == ["one", "two"]


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    # b"data: a\r" | b"\n\r\ndata: b\r\n\r\n": the LF after a chunk-final CR must not end an event
    events = decode(b"data: a\r", b"\n\r\ndata: b\r", b"\n\r", b"\n")
    assert [e.data for e in events] == ["a", "b"]


def test_cr_then_data_in_next_chunk() -> None:
    assert [e.data for e in decode(b"data: a\r", b"\rdata: b\r\r")] == ["a", "b"]


def test_comments_are_ignored_and_counted() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b": keep-alive\n\n: ping\ndata: x\n\n")
    assert [e.data for e in events] == ["x"]
    assert decoder.comments == 2


def test_one_space_after_colon_is_stripped_only() -> None:
    assert decode(b"data:  two spaces\n\ndata:none\n\n")[0].data == " two spaces"
    assert decode(b"data:none\n\n")[0].data == "none"


def test_field_without_colon_and_unknown_fields() -> None:
    events = decode(b"data\nfoo: bar\n\n")
    assert events == [ServerSentEvent("")]


def test_id_persists_and_retry_parsed() -> None:
    events = decode(b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\n")
    assert (events[0].id, events[0].retry, events[1].id, events[1].retry) == ("7", 1500, "7", None)


def test_missing_trailing_blank_line_still_dispatches_at_close() -> None:
    assert [e.data for e in decode(b"data: a\n\ndata: [DONE]")] == ["a", "[DONE]"]
    assert [e.data for e in decode(b"data: last\n")] == ["last"]


def test_nothing_is_dispatched_before_the_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("a")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (event,) = decode(b'data: {"c": "ok \xff\xfe"}\n\n')
    assert event.data == '{"c": "ok \ufffd\ufffd"}'


def feed_all(decoder: SSEDecoder, data: bytes, size: int, fed: list[int]) -> None:
    """Feed ``data`` in ``size``-byte chunks, counting the bytes handed over in ``fed``."""
    for i in range(0, len(data), size):
        fed[0] = i + size
        decoder.feed(data[i : i + size])


def test_long_line_in_many_small_chunks_hits_the_event_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=256 * 1024)
    fed = [0]
    with pytest.raises(StreamError) as info:
        feed_all(decoder, b"data: " + b"x" * (300 * 1024), 1000, fed)
    message = str(info.value)
    assert message.startswith("The server sent a single event larger than 262144 bytes")
    assert "\n" not in message
    assert 256 * 1024 <= fed[0] <= 258 * 1024  # stopped as soon as it passed the bound


def test_default_bound_is_16_mb_and_named_in_the_message() -> None:
    decoder = SSEDecoder(source="AmigoChat")
    fed = [0]
    with pytest.raises(StreamError, match=r"^AmigoChat sent a single event larger than 16 MB"):
        feed_all(decoder, b"data: " + b"x" * (17 << 20), 65536, fed)
    assert fed[0] <= (16 << 20) + 65536


def test_many_data_lines_of_one_event_count_toward_the_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=10_000)
    fed = [0]
    with pytest.raises(StreamError, match="larger than 10000 bytes"):
        feed_all(decoder, (b"data: " + b"y" * 90 + b"\n") * 200, 97, fed)


def test_the_bound_is_per_event_not_per_stream() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    event = b"data: " + b"z" * 900 + b"\n\n"
    events = [e for _ in range(100) for e in decoder.feed(event[:500]) + decoder.feed(event[500:])]
    assert len(events) == 100
    assert all(e.data == "z" * 900 for e in events)


def test_a_line_just_under_the_bound_in_tiny_chunks_is_whole() -> None:
    decoder = SSEDecoder(max_event_bytes=50_000)
    line = b"data: " + "é".encode() * 24_000 + b"\r\n\r\n"
    events = [e for i in range(0, len(line), 7) for e in decoder.feed(line[i : i + 7])]
    assert events == [ServerSentEvent("é" * 24_000)]
