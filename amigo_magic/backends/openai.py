"""Any OpenAI-compatible server: ``/chat/completions``, ``/images/generations``, ``/models``.

Plain OpenAI requests — no personaId, chatId or device headers. The servers' differences
(role-only first chunks, usage chunks with empty ``choices``, the finish reason on the last
content chunk or in an empty delta, errors as a status or in-band in a 200 stream) are handled by
the shared chunk parser and HTTP client.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from ..client import HTTPClient
from ..config import Endpoint, Settings
from ..errors import EmptyAnswerError, InvalidResponseError
from ..protocol import Event, ImageResult, parse_completion, parse_image_reply
from .base import ChatRequest, ImageRequest

__all__ = ["OpenAIBackend"]

MODELS_TIMEOUT = 5.0  # a listing must not hold up `%amigo models` for long


class OpenAIBackend:
    """Talks to one named endpoint; owns its HTTP client until :meth:`aclose`."""

    name = "openai"

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._http = HTTPClient(  # the endpoint's key: the one it sends, and scrubs
            settings,
            service=f"endpoint '{endpoint.name}'",
            transport=transport,
            secret=endpoint.key,
            url_hint="its URL (%amigo endpoint list)",
        )
        self._base = endpoint.url.rstrip("/")

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.endpoint.key is not None:
            headers["authorization"] = f"Bearer {self.endpoint.key.reveal()}"
        return headers

    async def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        params = request.params
        body: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.messages),
            "stream": request.stream,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
            **params.extra,  # -p KEY=VALUE, AmigoMagics.params
        }
        if request.response_format is not None:
            body["response_format"] = dict(request.response_format)
        if request.tools:
            body["tools"] = [dict(tool) for tool in request.tools]
        url = f"{self._base}/chat/completions"

        def build() -> httpx.Request:
            return self._http.build(url, body, self.headers())

        if request.stream:
            try:
                async for event in self._http.stream_events(build):
                    yield event
                return
            except EmptyAnswerError:
                # llama.cpp's server answers a stream it cannot serve (e.g. a prompt longer than
                # its context) with an empty 200. Nothing reached the caller, so asking once
                # without streaming is safe, and gets the server's real answer or error.
                body["stream"] = False
        for event in parse_completion(await self._http.request_json(build)):
            yield event

    async def image(self, request: ImageRequest) -> ImageResult:
        url = f"{self._base}/images/generations"
        body = {"model": request.model, "prompt": request.prompt, "n": 1}

        def build() -> httpx.Request:
            timeout = self.settings.timeouts.image
            return self._http.build(url, body, self.headers(), timeout=timeout)

        payload = await self._http.request_json(build)
        return parse_image_reply(payload, prompt=request.prompt, model=request.model)

    async def models(self) -> list[str]:
        """The server's model ids, from ``GET /models``."""
        url = f"{self._base}/models"

        def build() -> httpx.Request:
            return self._http.build(url, None, self.headers(), timeout=MODELS_TIMEOUT)

        payload = await self._http.request_json(build)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise InvalidResponseError(
                f"Endpoint '{self.endpoint.name}' answered /models without a list of models.",
                service=self.endpoint.name,
            )
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]

    async def aclose(self) -> None:
        await self._http.aclose()
