"""The seed's public face: ``AmigoChat.create_async_generator(model=..., messages=...)``.

A facade over the same backend the magics use, not a second implementation. Unlike the seed's
provider it streams by default, retries only what can succeed, and never repeats text.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from . import catalog
from .backends.amigo import AmigoBackend
from .backends.base import ChatRequest, ImageRequest
from .config import (
    DEFAULT_BASE_URL,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    SITE_URL,
    Settings,
    Timeouts,
)
from .errors import UnknownModelError
from .protocol import (
    ChatParams,
    ImageResult,
    Message,
    TextDelta,
    image_prompt,
)

__all__ = ["AmigoChat", "ImageResponse"]


class ImageResponse:
    """Generated pictures: their URLs (``data:`` URLs for base64 replies) and the prompt as alt."""

    def __init__(self, images: Sequence[str], alt: str) -> None:
        self.images = list(images)
        self.alt = alt

    @classmethod
    def from_result(cls, result: ImageResult) -> ImageResponse:
        urls = [
            image.url if image.url else f"data:image/png;base64,{image.b64_json}"
            for image in result.images
        ]
        return cls(urls, result.prompt)

    def __str__(self) -> str:
        alt = self.alt.replace("[", "(").replace("]", ")").replace("\n", " ")
        return "\n".join(f"![{alt}]({url})" for url in self.images)

    def __repr__(self) -> str:
        return f"ImageResponse(images={self.images!r}, alt={self.alt!r})"


class AmigoChat:
    """The AmigoChat provider, as the seed describes it."""

    url: ClassVar[str] = SITE_URL
    chat_api_endpoint: ClassVar[str] = f"{DEFAULT_BASE_URL}/chat/completions"
    image_api_endpoint: ClassVar[str] = f"{DEFAULT_BASE_URL}/images/generations"
    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    default_model: ClassVar[str] = catalog.DEFAULT_MODEL
    chat_models: ClassVar[list[str]] = catalog.chat_models()
    image_models: ClassVar[list[str]] = catalog.image_models()
    models: ClassVar[list[str]] = chat_models + image_models
    model_aliases: ClassVar[dict[str, str]] = {
        name: alias.target for name, alias in catalog.ALIASES.items()
    }

    @classmethod
    def get_model(cls, model: str) -> str:
        """The model id for a name or alias; the default for an empty name."""
        return catalog.resolve(model).id

    @classmethod
    def get_personaId(cls, model: str) -> str:
        """The persona id of a model id; ``ValueError`` (an UnknownModelError) if unknown."""
        for entry in catalog.MODELS:
            if entry.id == model:
                return entry.persona_id
        raise UnknownModelError(model, catalog.suggest(model))

    @staticmethod
    def generate_chat_id() -> str:
        """A fresh chat id: uuid4, 8-4-4-4-12 lower-case hex."""
        return str(uuid.uuid4())

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Sequence[Message] | Sequence[dict[str, Any]],
        proxy: str | None = None,
        stream: bool = True,
        timeout: float = 300,
        frequency_penalty: float = 0,
        presence_penalty: float = 0,
        max_tokens: int = 4000,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        api_key: str | None = None,
    ) -> AsyncIterator[str | ImageResponse]:
        """Yield the answer's text chunks as they arrive, or one :class:`ImageResponse`.

        The server is ``AMIGO_BASE_URL`` (default the public API) with ``AMIGO_API_KEY``;
        ``timeout`` bounds the wait for each chunk and a whole image call.
        """
        overrides: dict[str, Any] = {
            "proxy": proxy,
            "timeouts": Timeouts(read=timeout, image=timeout),
        }
        if api_key:
            overrides["api_key"] = api_key
        settings = Settings.from_env(os.environ, **overrides)
        resolved = catalog.resolve(model)
        backend = AmigoBackend(settings)
        try:
            if resolved.kind == "image":
                request = ImageRequest(resolved.id, image_prompt(messages))
                yield ImageResponse.from_result(await backend.image(request))
                return
            params = ChatParams(
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
            )
            chat = backend.chat(ChatRequest(resolved.id, messages, params, stream))
            async with aclosing(chat) as events:
                async for event in events:
                    if type(event) is TextDelta:
                        yield event.text
        finally:
            await backend.aclose()
