"""A head start for the first answer of a kernel: :func:`warm_up` does ahead of time what that
answer would otherwise wait for. The extension runs it on a daemon thread of its own once the cell
that ran ``%load_ext`` has finished, so ``%load_ext`` stays light and no cell waits for it; the
session layer exports it. Whatever it did not get to, the first answer does."""

from __future__ import annotations

import os

__all__ = ["warm_up"]


def warm_up() -> None:
    """Import the HTTP stack, the store, the renderer and its markdown and sanitiser, and what
    every answer's request reads (its parameters, saved endpoints, usage — not genai-prices,
    which only a cost needs); start the loop thread and build on it the TLS context, a
    transport (httpcore, h11) and anyio's asyncio backend; import the local model's library
    when ``AMIGO_MODEL`` is ``local`` (only then: it is large). Nothing is sent anywhere."""
    from . import (  # noqa: F401
        interpolate,
        live_markdown,
        model_params,
        render,
        sanitize,
        saved_endpoints,
        store,
        usage,
    )
    from .backends import amigo, openai  # noqa: F401
    from .client import default_ssl_context
    from .runner import get_runner

    async def on_the_loop() -> None:
        import anyio.lowlevel
        import httpx

        await httpx.AsyncHTTPTransport(verify=default_ssl_context()).aclose()
        await anyio.lowlevel.checkpoint()  # loads anyio's asyncio backend (httpcore's sockets)

    get_runner().call(on_the_loop(), 30)
    if os.environ.get("AMIGO_MODEL", "").strip() == "local":
        from .backends.local import import_binding

        import_binding()
