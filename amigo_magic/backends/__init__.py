"""Backends: each turns a request into a stream of typed events behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, ChatRequest, ImageRequest

if TYPE_CHECKING:
    from ..config import Settings
    from ..routing import Target

__all__ = ["Backend", "ChatRequest", "ImageRequest", "make_backend"]


def make_backend(target: Target, settings: Settings) -> Backend:
    """A new backend for ``target`` (each imported only when first needed)."""
    if target.backend == "openai":
        from .openai import OpenAIBackend

        assert target.endpoint is not None
        return OpenAIBackend(settings, target.endpoint)
    if target.backend == "local":
        from .local import LocalBackend

        return LocalBackend(target.model or None)
    from .amigo import AmigoBackend

    return AmigoBackend(settings)
