"""The OpenAI-compatible backend against the loopback server in OpenAI mode."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest

from amigo_magic.backends.base import ChatRequest, ImageRequest
from amigo_magic.backends.openai import OpenAIBackend
from amigo_magic.config import Endpoint, RetryPolicy, Secret, Settings
from amigo_magic.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    StreamError,
)
from amigo_magic.protocol import Event, Finish, TextDelta, Usage
from amigo_magic.routing import resolve_target
from tests.amigo_server import AmigoServer, Reply

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[AmigoServer]:
    with AmigoServer(strict_headers=False, success_status=200) as server:
        yield server


@pytest.fixture
def server(openai_server: AmigoServer) -> AmigoServer:
    openai_server.reset()
    return openai_server


def backend_for(server: AmigoServer, key: str | None = None) -> OpenAIBackend:
    endpoint = Endpoint("lab", server.base_url, "LAB_KEY", Secret(key) if key else None)
    return OpenAIBackend(Settings(retry=RetryPolicy(backoff=0.01)), endpoint)


def chat(server: AmigoServer, key: str | None = None, model: str = "llama3.2") -> list[Event]:
    async def go() -> list[Event]:
        backend = backend_for(server, key)
        try:
            async with aclosing(backend.chat(ChatRequest(model, HELLO))) as events:
                return [e async for e in events]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_plain_openai_request(server: AmigoServer) -> None:
    events = chat(server, key="sk-lab")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: hi"
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-lab"
    assert not any(h.startswith("x-device") for h in request.headers)
    body = request.json
    assert "personaId" not in body
    assert "chatId" not in body
    assert (body["model"], body["stream"], body["messages"]) == ("llama3.2", True, HELLO)


def test_no_key_sends_no_authorization(server: AmigoServer) -> None:
    chat(server)
    assert "authorization" not in server.requests[0].headers


def sse(*payloads: str) -> bytes:
    return b"".join(f"data: {p}\n\n".encode() for p in payloads)


@pytest.mark.parametrize(
    ("body", "text", "finish", "usage"),
    [
        (  # Ollama style: finish reason on the last content chunk, usage in a chunk of its own
            sse(
                '{"choices":[{"delta":{"role":"assistant","content":""}}]}',
                '{"choices":[{"delta":{"content":"Hel"}}]}',
                '{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}',
                '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}',
                "[DONE]",
            ),
            "Hello",
            "stop",
            Usage(1, 2, 3),
        ),
        (  # vLLM / OpenAI style: finish reason in an empty delta, no usage
            sse(
                '{"choices":[{"delta":{"role":"assistant"}}]}',
                '{"choices":[{"delta":{"content":"Hi"}}]}',
                '{"choices":[{"delta":{},"finish_reason":"length"}]}',
                "[DONE]",
            ),
            "Hi",
            "length",
            None,
        ),
    ],
)
def test_server_differences(
    server: AmigoServer, body: bytes, text: str, finish: str, usage: Usage | None
) -> None:
    server.enqueue(Reply.raw(body, content_type="text/event-stream"))
    events = chat(server)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert Finish(finish) in events
    assert [e for e in events if isinstance(e, Usage)] == ([usage] if usage else [])


def test_in_band_error_in_a_200_stream(server: AmigoServer) -> None:
    crash = {"message": "model crashed", "type": "server_error"}
    server.enqueue(Reply.stream(chunks=["a"], error_after=1, in_band_error=crash))
    with pytest.raises(StreamError, match="model crashed"):
        chat(server)


def test_error_status_names_the_endpoint(server: AmigoServer) -> None:
    server.enqueue(Reply.error(401, "Invalid API key", shape="openai"))
    with pytest.raises(AuthenticationError) as info:
        chat(server, key="wrong")
    assert str(info.value).startswith(
        "endpoint 'lab' refused the credentials (401 Unauthorized: \"Invalid API key\")"
    )


def test_models_listing_and_images(server: AmigoServer) -> None:
    async def go() -> tuple[list[str], Any]:
        backend = backend_for(server)
        try:
            models = await backend.models()
            server.enqueue(Reply.image(b64=True))
            return models, await backend.image(ImageRequest("dall-e-3", "a cat"))
        finally:
            await backend.aclose()

    models, result = asyncio.run(go())
    assert "gpt-4o-mini" in models
    assert result.images[0].b64_json
    image_request = next(r for r in server.requests if r.path == "/v1/images/generations")
    assert image_request.json == {"model": "dall-e-3", "prompt": "a cat", "n": 1}


def test_down_server_is_a_connection_error() -> None:
    dead = Endpoint("dead", "http://127.0.0.1:9/v1")
    backend = OpenAIBackend(Settings(retry=RetryPolicy(attempts=1)), dead)
    with pytest.raises(APIConnectionError, match="Could not connect to endpoint 'dead'"):
        asyncio.run(backend.models())
    asyncio.run(backend.aclose())


def test_routing() -> None:
    settings = Settings(endpoints=(Endpoint("ollama", "http://127.0.0.1:11434/v1"),))
    target = resolve_target("ollama:llama3.2", settings)
    assert (target.backend, target.model, target.label) == ("openai", "llama3.2", "ollama:llama3.2")
    assert resolve_target("local", settings).backend == "local"
    assert resolve_target("claude", settings).model == "claude-3-5-sonnet-20241022"
    with pytest.raises(Exception, match="No endpoint named 'vllm'"):
        resolve_target("vllm:x", settings)


def test_empty_stream_is_asked_again_without_streaming(server: AmigoServer) -> None:
    server.enqueue(
        Reply.raw(b"", content_type="text/event-stream"),
        Reply.error(400, "This model's maximum context length is 512 tokens. However, you "
                    "requested 4931 tokens", shape="openai"),
    )  # fmt: skip
    with pytest.raises(BadRequestError, match="longer than the model's context window"):
        chat(server)
    first, second = (r.json for r in server.requests)
    assert (first["stream"], second["stream"]) == (True, False)
