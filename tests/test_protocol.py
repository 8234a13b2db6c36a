"""Request bodies and reply parsing, on dicts and bytes."""

from __future__ import annotations

import pytest

from amigo_magic import catalog
from amigo_magic.errors import (
    ConfigError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    StreamError,
    error_for_status,
)
from amigo_magic.protocol import (
    ChatParams,
    Finish,
    Image,
    TextDelta,
    Usage,
    chat_body,
    error_event_message,
    error_message_from_body,
    image_body,
    image_prompt,
    parse_chunk,
    parse_completion,
    parse_image_reply,
)


def test_chat_body_has_exactly_the_reference_fields() -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = chat_body(catalog.resolve("claude"), messages, ChatParams(), chat_id="c", stream=True)
    assert body == {
        "chatId": "c",
        "frequency_penalty": 0.0,
        "max_tokens": 4000,
        "messages": messages,
        "model": "claude-3-5-sonnet-20241022",
        "personaId": "clude-claude-3-5-sonnet-20241022",
        "presence_penalty": 0.0,
        "stream": True,
        "temperature": 0.5,
        "top_p": 0.95,
    }


def test_image_prompt_is_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "a lighthouse"}]},
    ]
    assert image_prompt(messages) == "a lighthouse"
    assert image_body(catalog.resolve("flux"), "x") == {
        "prompt": "x",
        "model": "flux-pro/v1.1",
        "personaId": "flux-1-1-pro",
    }
    with pytest.raises(ConfigError, match="needs a prompt"):
        image_prompt([{"role": "system", "content": "s"}])


def test_chunk_shapes() -> None:
    assert parse_chunk({"choices": [{"delta": {"role": "assistant", "content": ""}}]}) == []
    assert parse_chunk({"choices": [{"delta": {"content": "Hi"}}]}) == [TextDelta("Hi")]
    assert parse_chunk({"choices": [{"text": "legacy"}]}) == [TextDelta("legacy")]
    assert parse_chunk({"choices": [{"delta": {}, "finish_reason": "stop"}]}) == [Finish("stop")]
    assert parse_chunk(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    ) == [Usage(3, 5, 8)]


def test_in_band_error_raises() -> None:
    with pytest.raises(StreamError, match="overloaded"):
        parse_chunk({"error": {"message": "overloaded", "type": "server_error"}})


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": [{"message": {"role": "assistant", "content": "whole"}}]},
        {"message": {"choices": [{"message": {"content": "whole"}}]}},
    ],
)
def test_both_json_reply_shapes(payload: dict[str, object]) -> None:
    assert parse_completion(payload)[0] == TextDelta("whole")


def test_json_reply_without_answer_is_an_error_not_empty() -> None:
    with pytest.raises(InvalidResponseError, match="no answer"):
        parse_completion({"id": "x"})
    with pytest.raises(InvalidResponseError, match="quota"):
        parse_completion({"error": "quota"})


def test_image_reply_url_and_b64() -> None:
    result = parse_image_reply(
        {"data": [{"url": "http://x/a.png", "revised_prompt": "r"}, {"b64_json": "AAAA"}]},
        prompt="p",
        model="flux-pro/v1.1",
    )
    assert result.images == (Image("http://x/a.png", None, "r"), Image(None, "AAAA", None))
    with pytest.raises(InvalidResponseError, match="neither a url nor b64_json"):
        parse_image_reply({"data": [{"revised_prompt": "r"}]}, prompt="p", model="m")


@pytest.mark.parametrize(
    ("body", "words", "cloudflare"),
    [
        (b'{"message": "Forbidden", "statusCode": 403}', "Forbidden", False),
        (b'{"error": "bad thing"}', "bad thing", False),
        (b'{"error": {"message": "nested"}}', "nested", False),
        (
            b'{"message":"not implemented","error":"Not Acceptable","statusCode":406}',
            "not implemented",
            False,
        ),
        (
            b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title>",
            "Attention Required! | Cloudflare",
            True,
        ),
        (b"plain\ntext   error", "plain text error", False),
        (b"", "", False),
    ],
)
def test_error_message_from_body(body: bytes, words: str, cloudflare: bool) -> None:
    assert error_message_from_body(body) == (words, cloudflare)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"error": {"message": "model overloaded", "type": "server_error"}}', "model overloaded"),
        ('{"error": "model overloaded"}', "model overloaded"),
        ('{"message": "model overloaded"}', "model overloaded"),
        ('{"detail": "model overloaded"}', "model overloaded"),
        ('"model overloaded"', "model overloaded"),
        ("model overloaded.", "model overloaded"),
        ("model\n  overloaded", "model overloaded"),
        ("", "no details"),
        ('{"code": 17}', '{"code": 17}'),
        ("x" * 1000, "x" * 299 + "…"),
    ],
)
def test_error_event_message(data: str, message: str) -> None:
    assert error_event_message(data) == message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_retry_after_is_kept_and_named_on_server_errors(status: int) -> None:
    error = error_for_status(status, "maintenance", retry_after=599.2)
    assert isinstance(error, ServerError)
    assert error.retry_after == 599.2
    assert "asks to be retried in 600 s" in error.message


def test_retry_after_words_round_up_and_keep_short_waits() -> None:
    assert "wait 3 s" in error_for_status(429, "slow", retry_after=2.01).message
    assert "wait 0.5 s" in error_for_status(429, "slow", retry_after=0.5).message
    limited = error_for_status(429, "slow", retry_after=1e300)
    assert isinstance(limited, RateLimitError)
    assert "wait 1000000000 s" in limited.message
    assert error_for_status(503, "down").retry_after is None
