"""The AmigoChat backend against the loopback server: what goes on the wire, what comes back."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re
import time
from collections.abc import Coroutine, Iterator
from contextlib import aclosing, contextmanager
from http import HTTPStatus
from typing import Any, TypeVar

import httpx
import pytest

from amigo_magic.backends.amigo import AmigoBackend
from amigo_magic.backends.base import ChatRequest, ImageRequest
from amigo_magic.client import HTTPClient
from amigo_magic.config import RetryPolicy, Settings, Timeouts
from amigo_magic.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AppVersionError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    EmptyAnswerError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StreamError,
)
from amigo_magic.protocol import Event, Finish, ImageResult, StreamWarning, TextDelta, Usage
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell

T = TypeVar("T")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
HELLO = [{"role": "user", "content": "hello there"}]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_for(server: AmigoServer, **changes: Any) -> Settings:
    return Settings(base_url=server.base_url, retry=FAST).replace(**changes)


async def collect(settings: Settings, request: ChatRequest) -> list[Event]:
    backend = AmigoBackend(settings)
    try:
        async with aclosing(backend.chat(request)) as events:
            return [event async for event in events]
    finally:
        await backend.aclose()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def chat(server: AmigoServer, model: str = "gpt-4o-mini", **changes: Any) -> list[Event]:
    return run(collect(settings_for(server, **changes), ChatRequest(model, HELLO)))


def test_headers_and_body_on_the_wire(server: AmigoServer) -> None:
    chat(server, "claude")
    chat(server, "claude")
    first, second = server.requests
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    h = first.headers
    assert h["accept"] == "*/*"
    assert h["accept-language"] == "en-US,en;q=0.9"
    assert h["cache-control"] == h["pragma"] == "no-cache"
    assert h["content-type"] == "application/json"
    assert h["origin"] == h["referer"] == "https://amigochat.io/chat/"
    assert "Chrome/" in h["user-agent"]
    assert h["x-device-platform"] == "web"
    assert h["x-device-language"] == "en-US"
    assert h["x-device-version"] == "1.0.45"
    assert h["authorization"] == "Bearer"  # anonymous, as the web app
    assert UUID4.match(h["x-device-uuid"])
    assert second.headers["x-device-uuid"] != h["x-device-uuid"]
    body = first.json
    assert sorted(body) == [
        "chatId", "frequency_penalty", "max_tokens", "messages", "model", "personaId",
        "presence_penalty", "stream", "temperature", "top_p",
    ]  # fmt: skip
    assert body["model"] == "claude-3-5-sonnet-20241022"
    assert body["personaId"] == "clude-claude-3-5-sonnet-20241022"
    assert body["messages"] == HELLO
    assert body["stream"] is True
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.5, 0.95, 4000)
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0, 0)
    assert UUID4.match(body["chatId"])
    assert second.json["chatId"] != body["chatId"]


def test_key_and_device_version_are_configurable() -> None:
    with AmigoServer(api_key="sk-test-123", min_device_version="2.0.0") as server:
        events = chat(server, api_key="sk-test-123", device_version="2.1.0")
        assert text_of(events) == "Echo: hello there"
        assert server.requests[0].headers["authorization"] == "Bearer sk-test-123"
        assert server.requests[0].headers["x-device-version"] == "2.1.0"


def test_streams_token_by_token(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["one ", "two ", "three"], delay=0.3))

    async def timed() -> list[tuple[float, Event]]:
        backend = AmigoBackend(settings_for(server))
        start = time.monotonic()
        try:
            async with aclosing(backend.chat(ChatRequest("gpt", HELLO))) as events:
                return [(time.monotonic() - start, e) async for e in events]
        finally:
            await backend.aclose()

    arrivals = run(timed())
    texts = [(t, e.text) for t, e in arrivals if isinstance(e, TextDelta)]
    assert [text for _, text in texts] == ["one ", "two ", "three"]
    # each piece arrives when the server sends it, not all at the end
    assert texts[1][0] - texts[0][0] > 0.2
    assert texts[2][0] - texts[1][0] > 0.2
    assert Finish("stop") in [e for _, e in arrivals]
    assert any(isinstance(e, Usage) and e.completion_tokens == 3 for _, e in arrivals)


@pytest.mark.parametrize("status", [200, 201])
def test_success_is_200_or_201(server: AmigoServer, status: int) -> None:
    server.enqueue(Reply.stream("fine", status=status))
    assert text_of(chat(server)) == "fine"


@pytest.mark.parametrize("wrapped", [False, True])
def test_both_json_reply_shapes(server: AmigoServer, wrapped: bool) -> None:
    server.enqueue(Reply.completion("a whole answer", wrapped=wrapped))
    request = ChatRequest("gpt-4o-mini", HELLO, stream=False)
    events = run(collect(settings_for(server), request))
    assert text_of(events) == "a whole answer"
    assert server.requests[0].json["stream"] is False


def test_json_reply_to_a_stream_request_is_not_lost(server: AmigoServer) -> None:
    server.enqueue(Reply.completion("json anyway"))
    assert text_of(chat(server)) == "json anyway"


@pytest.mark.parametrize(
    "options",
    [
        {"split": 1, "line_ending": "\r\n"},
        {"split": 3, "line_ending": "\r"},
        {"keepalive_every": 1},
        {"text_field": "text"},
        {"batch": 7},
    ],
)
def test_framing_variants_give_the_same_text(server: AmigoServer, options: dict[str, Any]) -> None:
    text = "Привет, мир 🌍 — line\u2028separator and\nnewlines."
    server.enqueue(Reply.stream(text, **options))
    assert text_of(chat(server)) == text


def draw(server: AmigoServer, model: str, prompt: str) -> ImageResult:
    async def go() -> ImageResult:
        backend = AmigoBackend(settings_for(server))
        try:
            return await backend.image(ImageRequest(model, prompt))
        finally:
            await backend.aclose()

    return run(go())


def test_images_by_url(server: AmigoServer) -> None:
    server.enqueue(Reply.image(n=2))
    result = draw(server, "flux", "a lighthouse at dusk")
    assert result.prompt == "a lighthouse at dusk"
    assert result.model == "flux-pro/v1.1"
    assert len(result.images) == 2
    assert all(image.url and image.url.startswith(server.origin) for image in result.images)
    body = server.requests[0].json
    assert body == {"prompt": "a lighthouse at dusk", "model": "flux-pro/v1.1",
                    "personaId": "flux-1-1-pro"}  # fmt: skip
    assert server.requests[0].path == "/v1/images/generations"


def test_images_by_b64(server: AmigoServer) -> None:
    server.enqueue(Reply.image(b64=True))
    (image,) = draw(server, "dalle", "a cat").images
    assert image.url is None
    assert base64.b64decode(image.b64_json or "").startswith(b"\x89PNG")


def test_wrong_kind_of_model_is_a_config_error(server: AmigoServer) -> None:
    with pytest.raises(APIError.__mro__[1], match="image model"):  # AmigoError
        chat(server, "flux")
    assert server.requests == []


ERROR_CASES = [
    (Reply.error(400, "bad messages"), BadRequestError, 'rejected the request (400 Bad Request: "bad messages")'),
    (Reply.error(401, "Unauthorized"), AuthenticationError, "AMIGO_API_KEY"),
    (Reply.error(403, "Forbidden"), PermissionDeniedError, "denied access (403 Forbidden)"),
    (Reply.cloudflare(), PermissionDeniedError, "Cloudflare"),
    (Reply.error(404, "Cannot POST"), NotFoundError, "AMIGO_BASE_URL"),
    (Reply.error(406, "not implemented"), AppVersionError, "AMIGO_DEVICE_VERSION"),
    (Reply.error(413, "too big"), BadRequestError, "too large"),
    (Reply.error(429, "slow down", retry_after="600"), RateLimitError, "wait 600 s"),
    (Reply.error(403, "Amigo, your balance is not enough to make the request, wait until 12 UTC or upgrade your plan"), QuotaExceededError, "quota is used up"),
    (Reply.error(400, "x", shape="error"), BadRequestError, '"x"'),
    (Reply.error(422, "nested message", shape="openai"), BadRequestError, "nested message"),
    (Reply.raw(b"<html>oops</html>", content_type="text/html"), InvalidResponseError, "not JSON"),
    (Reply.redirect("http://127.0.0.1:9/elsewhere"), APIError, "redirected the request (302)"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind", "words"), ERROR_CASES)
def test_error_classes_are_one_readable_line(
    server: AmigoServer, reply: Reply, kind: type[Exception], words: str
) -> None:
    server.enqueue(reply)
    with pytest.raises(kind) as info:
        run(collect(settings_for(server), ChatRequest("gpt", HELLO, stream=False)))
    message = str(info.value)
    assert words in message
    assert "\n" not in message
    assert len(server.requests) == 1  # none of these is retried
    assert info.value._render_traceback_()[0].endswith(message)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_and_every_attempt_is_listed(
    server: AmigoServer, status: int
) -> None:
    server.enqueue(*[Reply.error(status, f"down {i}") for i in range(3)])
    with pytest.raises(ServerError) as info:
        chat(server)
    assert len(server.requests) == 3
    message = str(info.value)
    phrase = HTTPStatus(status).phrase
    assert (
        f'[3 attempts — 1: {status} {phrase}: "down 0"; 2: {status} {phrase}: "down 1"' in message
    )
    assert all(f'"down {i}"' in message for i in range(3))


def test_503_then_success(server: AmigoServer) -> None:
    server.enqueue(Reply.error(503, "busy"), Reply.error(503, "busy"))
    assert text_of(chat(server)) == "Echo: hello there"
    assert len(server.requests) == 3
    chat_ids = {r.json["chatId"] for r in server.requests}
    assert len(chat_ids) == 3  # each attempt is a fresh request


def test_429_retry_after_is_honoured(server: AmigoServer) -> None:
    server.enqueue(Reply.error(429, "slow down", retry_after="1"))
    start = time.monotonic()
    assert text_of(chat(server)) == "Echo: hello there"
    assert time.monotonic() - start >= 0.95
    assert len(server.requests) == 2


def test_429_without_retry_after_backs_off_then_succeeds(server: AmigoServer) -> None:
    server.enqueue(Reply.error(429, "slow down"))
    assert text_of(chat(server)) == "Echo: hello there"
    assert len(server.requests) == 2


def test_401_is_not_retried() -> None:
    with AmigoServer(api_key="right") as server:
        with pytest.raises(AuthenticationError, match="401 Unauthorized"):
            chat(server, api_key="wrong-key-XYZ")
        assert len(server.requests) == 1


def test_server_words_never_echo_the_key(server: AmigoServer) -> None:
    server.enqueue(Reply.error(401, "token sk-secret-999 is invalid"))
    with pytest.raises(AuthenticationError) as info:
        chat(server, api_key="sk-secret-999")
    assert "sk-secret-999" not in str(info.value)
    assert "token *** is invalid" in str(info.value)


def test_failure_after_first_text_is_not_resent_or_duplicated(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a ", "b ", "c ", "d ", "e"], fail_after=2))
    seen: list[str] = []

    async def go() -> None:
        backend = AmigoBackend(settings_for(server))
        try:
            async with aclosing(backend.chat(ChatRequest("gpt", HELLO))) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        seen.append(event.text)
        finally:
            await backend.aclose()

    with pytest.raises(StreamError, match="broke in the middle of the answer"):
        run(go())
    assert seen == ["a ", "b "]
    assert len(server.requests) == 1


def test_cut_before_any_text_is_retried(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["x"], fail_after=0))
    assert text_of(chat(server)) == "Echo: hello there"
    assert len(server.requests) == 2


def test_in_band_error_is_an_error(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a ", "b"], error_after=1,
                                in_band_error={"message": "model overloaded"}))  # fmt: skip
    with pytest.raises(StreamError, match="model overloaded"):
        chat(server)
    assert len(server.requests) == 1


def test_truncated_stream_without_end_is_an_error(server: AmigoServer) -> None:
    server.enqueue(Reply.stream("partial text", done=False, finish_reason=None, usage=False))
    with pytest.raises(StreamError, match="without its end marker"):
        chat(server)


def test_missing_done_after_finish_reason_is_fine(server: AmigoServer) -> None:
    server.enqueue(Reply.stream("complete", done=False))
    assert text_of(chat(server)) == "complete"


def test_malformed_chunk_is_skipped_and_reported(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a ", "b ", "c"], malformed_after=1))
    events = chat(server)
    assert text_of(events) == "a b c"
    (warning,) = [e for e in events if isinstance(e, StreamWarning)]
    assert warning.message.startswith("1 malformed chunk from AmigoChat skipped")


def test_connection_refused_lists_attempts() -> None:
    settings = Settings(base_url="http://127.0.0.1:9/v1", retry=FAST)
    with pytest.raises(APIConnectionError) as info:
        run(collect(settings, ChatRequest("gpt", HELLO)))
    message = str(info.value)
    assert message.startswith(
        "Could not connect to AmigoChat at http://127.0.0.1:9: connection refused"
    )
    assert message.endswith("[3 attempts — all: connection refused]")


def test_stall_before_first_byte_times_out_and_retries(server: AmigoServer) -> None:
    server.enqueue(Reply.stream("late", stall_before=1.0))
    events = chat(server, timeouts=Timeouts(read=0.3))
    assert text_of(events) == "Echo: hello there"  # the retry got the default answer
    assert len(server.requests) == 2


def test_stall_every_attempt_is_a_timeout_error(server: AmigoServer) -> None:
    server.enqueue(*[Reply.stream("late", stall_before=1.0) for _ in range(2)])
    with pytest.raises(APITimeoutError, match=r"sent nothing for 0\.3 s"):
        chat(server, timeouts=Timeouts(read=0.3), retry=RetryPolicy(attempts=2, backoff=0.01))


def test_stall_mid_stream_keeps_what_arrived(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a ", "b ", "c"], stall_after=(1, 2.0)))
    with pytest.raises(StreamError, match="stopped sending in the middle"):
        chat(server, timeouts=Timeouts(read=0.3))
    assert len(server.requests) == 1


def test_slow_drip_does_not_time_out(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["drip"], drip=0.002, usage=False))
    # every byte comes 2 ms after the last: the whole answer takes far longer than...
    events = chat(server, timeouts=Timeouts(read=0.25))
    assert text_of(events) == "drip"


def test_consumer_stopping_early_closes_the_connection(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(200)], delay=0.02))

    async def go() -> None:
        backend = AmigoBackend(settings_for(server))
        try:
            async with aclosing(backend.chat(ChatRequest("gpt", HELLO))) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        break
            assert server.active_streams <= 1
        finally:
            await backend.aclose()

    run(go())
    deadline = time.monotonic() + 3
    while (server.active_streams or not server.client_disconnects) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.active_streams == 0
    assert server.client_disconnects == 1


def test_empty_stream_says_so(server: AmigoServer) -> None:
    server.enqueue(Reply.raw(b"", content_type="text/event-stream"))
    with pytest.raises(EmptyAnswerError, match="accepted the request but sent no answer at all"):
        chat(server)


def test_in_band_error_never_echoes_the_key(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a"], error_after=0,
                                in_band_error={"message": "bad token sk-echo-42"}))  # fmt: skip
    with pytest.raises(StreamError) as info:
        chat(server, api_key="sk-echo-42")
    assert "sk-echo-42" not in str(info.value)
    assert "bad token ***" in str(info.value)


def test_answers_reuse_one_connection(server: AmigoServer) -> None:
    async def three() -> None:
        backend = AmigoBackend(settings_for(server))
        try:
            for _ in range(3):
                async with aclosing(backend.chat(ChatRequest("gpt", HELLO))) as events:
                    assert [e async for e in events]
        finally:
            await backend.aclose()

    run(three())
    ports = {r.client_port for r in server.requests}
    assert len(server.requests) == 3
    assert len(ports) == 1  # read to the body's end after [DONE]: the connection was pooled


@pytest.mark.parametrize("how", ["setting", "environment"])
def test_proxies_as_httpx_users_expect(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The loopback server stands in for a forward proxy: it receives the absolute-form target.
    # amigo.invalid is never resolved here; only the proxy would.
    settings = Settings(base_url="http://amigo.invalid/v1", retry=RetryPolicy(attempts=1))
    if how == "setting":
        settings = settings.replace(proxy=server.origin)
    else:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.origin)
    events = run(collect(settings, ChatRequest("gpt", HELLO)))
    assert text_of(events) == "Echo: hello there"
    (request,) = server.requests
    assert request.path == "http://amigo.invalid/v1/chat/completions"
    assert request.headers["host"] == "amigo.invalid"


# -- issue 11: stream errors, undecodable bodies, Retry-After, refused headers -------------------


def collect_seen(server: AmigoServer, seen: list[str], **changes: Any) -> None:
    """Stream an answer, appending each text piece to ``seen`` as it arrives."""

    async def go() -> None:
        backend = AmigoBackend(settings_for(server, **changes))
        try:
            async with aclosing(backend.chat(ChatRequest("gpt", HELLO))) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        seen.append(event.text)
        finally:
            await backend.aclose()

    run(go())


@pytest.mark.parametrize(
    "data",
    [
        '{"error": {"message": "model overloaded", "type": "server_error"}}',
        '{"error": "model overloaded"}',
        '{"message": "model overloaded"}',
        "model overloaded",
        "model\noverloaded",  # two data lines of plain text
    ],
)
def test_sse_error_event_is_a_stream_error_with_its_message(server: AmigoServer, data: str) -> None:
    server.enqueue(Reply.stream(chunks=["kept ", "never sent"], error_after=1, error_event=data))
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        collect_seen(server, seen)
    message = str(info.value)
    assert "model overloaded" in message
    assert message.startswith("AmigoChat sent an error in the middle of the answer")
    assert "\n" not in message
    assert seen == ["kept "]  # the text so far reached the caller; nothing was invented
    assert len(server.requests) == 1


def test_sse_error_event_before_any_text_says_so(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["x"], error_event=""))
    with pytest.raises(StreamError, match="in the middle of the answer: no details"):
        chat(server)


def test_sse_error_event_never_echoes_the_key(server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["a"], error_event="bad token sk-event-77"))
    with pytest.raises(StreamError) as info:
        chat(server, api_key="sk-event-77")
    assert "sk-event-77" not in str(info.value)


def test_event_without_data_is_not_a_malformed_chunk(server: AmigoServer) -> None:
    body = (
        b"event: ping\n\n"
        b'data: {"choices":[{"delta":{"content":"fine"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    server.enqueue(Reply.raw(body, content_type="text/event-stream"))
    events = chat(server)
    assert text_of(events) == "fine"
    assert not [e for e in events if isinstance(e, StreamWarning)]


@pytest.mark.parametrize("coding", ["br", "x-squeeze", "gzip, br"])
def test_undecodable_content_encoding_is_one_clear_line(server: AmigoServer, coding: str) -> None:
    server.enqueue(Reply.stream("the first words matter", content_encoding=coding))
    with pytest.raises(InvalidResponseError) as info:
        chat(server)
    message = str(info.value)
    assert message.startswith("AmigoChat sent a body compressed as '")
    assert "which this client cannot read" in message
    assert "proxy" in message
    assert "\n" not in message
    assert len(server.requests) == 1  # the same body would come back: not retried


def test_corrupt_gzip_body_is_one_clear_line_not_a_broken_connection(server: AmigoServer) -> None:
    server.enqueue(
        Reply.raw(b"data: not gzip at all\n\n", content_type="text/event-stream",
                  headers={"content-encoding": "gzip"})
    )  # fmt: skip
    with pytest.raises(InvalidResponseError, match=r"could not be decompressed.*proxy"):
        chat(server)
    assert len(server.requests) == 1


def test_gzip_stream_is_read(server: AmigoServer) -> None:
    server.enqueue(Reply.stream("compressed and fine", content_encoding="gzip"))
    assert text_of(chat(server)) == "compressed and fine"


def test_accept_encoding_names_only_codings_httpx_decodes_here(server: AmigoServer) -> None:
    import httpx._decoders

    chat(server)
    sent = server.requests[0].headers["accept-encoding"]
    codings = {c.strip() for c in sent.split(",")}
    assert codings <= set(httpx._decoders.SUPPORTED_DECODERS)
    assert "gzip" in codings


def test_one_event_over_16_mb_is_a_clear_error(server: AmigoServer) -> None:
    server.enqueue(Reply.raw(b"data: " + b"x" * (17 << 20), content_type="text/event-stream"))
    with pytest.raises(StreamError, match=r"a single event larger than 16 MB") as info:
        chat(server)
    assert "\n" not in str(info.value)
    assert len(server.requests) == 1


def test_503_retry_after_seconds_is_honoured(server: AmigoServer) -> None:
    server.enqueue(Reply.error(503, "busy", retry_after="1"))
    assert text_of(chat(server)) == "Echo: hello there"
    first, second = server.requests
    assert second.received - first.received >= 0.9  # waited as asked, not the 0.01 s backoff


def test_503_retry_after_http_date_is_honoured(server: AmigoServer) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s away
    server.enqueue(Reply.error(503, "busy", retry_after=when))
    assert text_of(chat(server)) == "Echo: hello there"
    first, second = server.requests
    assert second.received - first.received >= 0.9


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_retry_after_past_the_policy_is_reported_at_once(server: AmigoServer, status: int) -> None:
    server.enqueue(Reply.error(status, "maintenance", retry_after="600"))
    start = time.monotonic()
    with pytest.raises(ServerError) as info:
        chat(server)
    assert time.monotonic() - start < 5
    assert len(server.requests) == 1
    message = str(info.value)
    assert "asks to be retried in 600 s" in message
    assert '"maintenance"' in message


def http_client(server: AmigoServer) -> HTTPClient:
    return HTTPClient(settings_for(server), service="AmigoChat")


@pytest.mark.parametrize(
    ("header", "value", "named"),
    [
        ("authorization", "Bearer sk-live-KEY123\r", "The API key for AmigoChat"),
        ("authorization", "Bearer sk-live-KEY123\r\n", "The API key for AmigoChat"),
        ("authorization", "Bearer sk-live-KÉY123", "The API key for AmigoChat"),
        ("authorization", "Bearer sk-live-KEY123\x00", "The API key for AmigoChat"),
        (
            "x-device-version",
            "1.0.45\r\nx-evil: sk-live-KEY123",
            "The device version (AMIGO_DEVICE_VERSION)",
        ),
        ("x-custom", "sk-live-KEY123 ", "The x-custom header"),
    ],
)
def test_header_the_transport_refuses_is_one_line_not_retried_never_shown(
    server: AmigoServer, header: str, value: str, named: str
) -> None:
    client = http_client(server)
    url = f"{server.base_url}/chat/completions"

    async def go() -> None:
        try:
            build = lambda: client.build(url, {"stream": True}, {header: value})  # noqa: E731
            async for _ in client.stream_events(build):
                pass
        finally:
            await client.aclose()

    with pytest.raises(ConfigError) as info:
        run(go())
    error = info.value
    message = str(error)
    assert message.startswith(f"{named} contains a character that cannot be sent in an HTTP header")
    assert "sk-live-KEY123" not in message
    assert "KÉY" not in message
    assert "\n" not in message
    assert server.requests == []  # nothing sent, nothing retried
    assert error.__cause__ is None
    assert error.__context__ is None
    # no frame of ours in the traceback (what %xmode Verbose or %debug shows) holds the value
    tb = error.__traceback__
    frames = 0
    while tb is not None:
        if "amigo_magic" not in tb.tb_frame.f_code.co_filename:
            tb = tb.tb_next
            continue
        frames += 1
        for local in tb.tb_frame.f_locals.values():
            assert not isinstance(local, httpx.Request)
            if isinstance(local, str | dict):
                assert "sk-live-KEY123" not in repr(local)
        tb = tb.tb_next
    assert frames  # the client's own frames were looked at


def test_refused_header_in_a_cell_is_one_line(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amigo_magic.backends import amigo

    real = amigo.AmigoBackend.headers

    def with_cr(self: AmigoBackend) -> dict[str, str]:
        return {**real(self), "authorization": "Bearer sk-cell-KEY9\r"}

    monkeypatch.setattr(amigo.AmigoBackend, "headers", with_cr)
    with magic_shell(server, monkeypatch) as ip:
        result = ip.run_cell_quietly("%%amigo\nhello")
        error = result.error_in_exec
        assert isinstance(error, ConfigError)
        (line,) = error._render_traceback_()
        assert "The API key for AmigoChat contains a character" in line
        assert "sk-cell-KEY9" not in line
    assert [r for r in server.requests if r.path.endswith("/chat/completions")] == []


@contextmanager
def magic_shell(server: AmigoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestingShell]:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    shell = TestingShell.instance()
    shell.display_pub = Recorder()
    shell.run_cell("%load_ext amigo_magic")
    shell.run_cell("%config AmigoMagics.throttle = 0.05")
    try:
        yield shell
    finally:
        shell.run_cell("%unload_ext amigo_magic")


def test_sse_error_event_in_a_cell_keeps_the_text_and_says_why(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.enqueue(
        Reply.stream(chunks=["kept ", "text ", "never"], error_after=2,
                     error_event='{"message": "upstream model crashed"}')
    )  # fmt: skip
    with magic_shell(server, monkeypatch) as ip:
        result = ip.run_cell_quietly("%%amigo\nhello")
        error = result.error_in_exec
        assert isinstance(error, StreamError)
        (line,) = error._render_traceback_()
        assert "upstream model crashed" in line
        pub = ip.display_pub
        assert isinstance(pub, Recorder)
        final = pub.final()["text/plain"]
        assert final.startswith("kept text")
        assert "✖" in final  # not marked complete
        magics = ip.magics_manager.registry["AmigoMagics"]
        (_, answer) = magics.session.store.load(magics.session.notebook, "default")
        assert answer.status == "error"  # not "done": the turn is kept as a failed answer
        assert answer.content.startswith("kept text")


def test_header_refused_only_by_h11_is_still_one_line_not_retried(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amigo_magic.client

    # Defence in depth: were the client's own check to miss a value, h11's refusal at send
    # time must give the same line, not a retried "could not connect" that shows the value.
    monkeypatch.setattr(amigo_magic.client, "_HEADER_VALUE", re.compile(".*", re.DOTALL))
    client = http_client(server)
    url = f"{server.base_url}/chat/completions"

    async def go() -> None:
        try:
            build = lambda: client.build(url, {}, {"authorization": "Bearer sk-h11-KEY5\r"})  # noqa: E731
            async for _ in client.stream_events(build):
                pass
        finally:
            await client.aclose()

    with pytest.raises(ConfigError) as info:
        run(go())
    message = str(info.value)
    assert message.startswith("The API key for AmigoChat contains a character that cannot be sent")
    assert "sk-h11-KEY5" not in message
    assert info.value.__context__ is None
    assert server.requests == []
