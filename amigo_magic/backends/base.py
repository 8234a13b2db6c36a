"""The interface every backend implements, and the requests it takes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol import ChatParams, Event, ImageResult

__all__ = ["Backend", "ChatRequest", "ImageRequest"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat call: the model name as the backend knows it, and the whole conversation."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    params: ChatParams = field(default_factory=ChatParams)
    stream: bool = True
    response_format: Mapping[str, Any] | None = None  # OpenAI's, e.g. a json_schema (--schema)
    tools: Sequence[Mapping[str, Any]] = ()  # OpenAI function tools (-T NAME)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """An image call."""

    model: str
    prompt: str


class Backend(Protocol):
    """What the session layer needs of a backend; the front ends never see which one runs.

    ``chat`` is an async generator: callers wrap it in ``contextlib.aclosing`` so that stopping
    early closes the response at once.
    """

    name: str

    def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]: ...

    async def image(self, request: ImageRequest) -> ImageResult: ...

    async def aclose(self) -> None: ...
