"""The SSE decoder against the style guide's checklist, fed as the network would feed it."""

from __future__ import annotations

import json

import pytest

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
