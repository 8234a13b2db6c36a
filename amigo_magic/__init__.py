"""amigo_magic: chat and image models inside Jupyter.

``%load_ext amigo_magic`` registers the magics; the HTTP stack and widgets load on first use, so
the public names below are imported lazily (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AmigoError,
    AnswerFormatError,
    AnswerStopped,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AppVersionError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    EmptyAnswerError,
    HistoryBusyError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StreamError,
    UnknownModelError,
)

if TYPE_CHECKING:
    from .batch_item import Failed
    from .many import map
    from .panel import ChatPanel
    from .protocol import Message
    from .provider import AmigoChat, ImageResponse

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmigoChat",
    "AmigoError",
    "AnswerFormatError",
    "AnswerStopped",
    "AppVersionError",
    "AuthenticationError",
    "BadRequestError",
    "ChatPanel",
    "ConfigError",
    "EmptyAnswerError",
    "Failed",
    "HistoryBusyError",
    "ImageResponse",
    "InvalidResponseError",
    "Message",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "UnknownModelError",
    "__version__",
    "load_ipython_extension",
    "map",
    "unload_ipython_extension",
]

_LAZY = {
    "AmigoChat": ".provider",
    "ChatPanel": ".panel",
    "Failed": ".batch_item",
    "ImageResponse": ".provider",
    "Message": ".protocol",
    "map": ".many",
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext amigo_magic``: register the magics (nothing heavy is imported here)."""
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext amigo_magic``: undo everything the load did."""
    from .extension import unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'amigo_magic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
