"""The AmigoChat backend: the reference's headers and bodies over the shared HTTP client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import httpx

from .. import catalog
from ..client import HTTPClient
from ..config import Settings
from ..errors import ConfigError
from ..protocol import (
    Event,
    ImageResult,
    chat_body,
    image_body,
    parse_completion,
    parse_image_reply,
)
from .base import ChatRequest, ImageRequest

__all__ = ["AmigoBackend"]


class AmigoBackend:
    """Talks to an AmigoChat server; owns its HTTP client until :meth:`aclose`."""

    name = "amigo"

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = HTTPClient(settings, service="AmigoChat", transport=transport)
        base = settings.base_url.rstrip("/")
        self.chat_url = f"{base}/chat/completions"
        self.image_url = f"{base}/images/generations"

    def headers(self) -> dict[str, str]:
        """The web app's headers, with a fresh device uuid: call once per HTTP request."""
        key = self.settings.api_key
        return {
            "accept": "*/*",
            "accept-language": "en-US,en;q=0.9",
            "authorization": f"Bearer {key.reveal()}" if key else "Bearer",
            "cache-control": "no-cache",
            "content-type": "application/json",
            "origin": self.settings.site_url,
            "pragma": "no-cache",
            "referer": self.settings.site_url,
            "user-agent": self.settings.user_agent,
            "x-device-language": "en-US",
            "x-device-platform": "web",
            "x-device-uuid": str(uuid.uuid4()),
            "x-device-version": self.settings.device_version,
        }

    async def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """The answer's events; each retry is a new request with a fresh chatId and device."""
        model = catalog.resolve(request.model)
        if model.kind != "chat":
            raise ConfigError(
                f"'{model.id}' is an image model: use %amigo_image, or pick a chat model."
            )

        def build() -> httpx.Request:
            body = chat_body(
                model,
                request.messages,
                request.params,
                chat_id=str(uuid.uuid4()),
                stream=request.stream,
            )
            if request.tools:  # AmigoChat's bodies are OpenAI's; a schema goes as an instruction
                body["tools"] = [dict(tool) for tool in request.tools]
            return self._http.build(self.chat_url, body, self.headers())

        if request.stream:
            async for event in self._http.stream_events(build):
                yield event
        else:
            for event in parse_completion(await self._http.request_json(build)):
                yield event

    async def image(self, request: ImageRequest) -> ImageResult:
        """Generate pictures; the call has its own long timeout."""
        model = catalog.resolve(request.model)
        if model.kind != "image":
            raise ConfigError(
                f"'{model.id}' is a chat model: use %%amigo, or pick an image model "
                "(flux, dalle, recraft, …)."
            )

        def build() -> httpx.Request:
            return self._http.build(
                self.image_url,
                image_body(model, request.prompt),
                self.headers(),
                timeout=self.settings.timeouts.image,
            )

        payload = await self._http.request_json(build)
        return parse_image_reply(payload, prompt=request.prompt, model=model.id)

    async def aclose(self) -> None:
        await self._http.aclose()
