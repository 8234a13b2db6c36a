"""Backends: each turns a request into a stream of typed events behind one interface."""

from .base import Backend, ChatRequest, ImageRequest

__all__ = ["Backend", "ChatRequest", "ImageRequest"]
