"""The AmigoChat model catalogue: ids, personas, kinds, aliases, and name resolution.

The ids and persona ids are the server's own spellings (``clude-…``, the v0.1 persona of a v0.3
model, the trailing ``-`` of the retired o1 ids): they are not typos to fix.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Literal

from .errors import UnknownModelError

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "MODELS",
    "Alias",
    "Model",
    "chat_models",
    "image_models",
    "resolve",
]

Kind = Literal["chat", "image"]


@dataclass(frozen=True, slots=True)
class Model:
    """One model the service offers."""

    id: str
    persona_id: str
    kind: Kind
    description: str
    retired: bool = False  # out of quota upstream in the final table; kept, but flagged
    sees_pictures: bool = False  # takes image parts in a user message (set from _SEES below)


@dataclass(frozen=True, slots=True)
class Alias:
    """A short name for a model id; ``upstream`` aliases come from the original provider."""

    name: str
    target: str
    description: str
    upstream: bool = False


DEFAULT_MODEL = "gpt-4o-mini"

_RETIRED = "retired upstream (out of quota)"

MODELS: tuple[Model, ...] = (
    Model("gpt-4o-2024-11-20", "gpt", "chat", "OpenAI GPT-4o, November 2024 snapshot"),
    Model("gpt-4o", "summarizer", "chat", "OpenAI GPT-4o as the service's summarizer persona"),
    Model("gpt-4o-mini", "amigo", "chat", "OpenAI GPT-4o mini: fast and cheap (the default)"),
    Model("o1-preview-", "openai-o-one", "chat", f"OpenAI o1-preview; {_RETIRED}", True),
    Model(
        "o1-preview-2024-09-12-", "orion", "chat", f"OpenAI o1-preview 2024-09-12; {_RETIRED}", True
    ),
    Model("o1-mini-", "openai-o-one-mini", "chat", f"OpenAI o1-mini; {_RETIRED}", True),
    Model(
        "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        "llama-three-point-one",
        "chat",
        "Meta Llama 3.1 405B Instruct",
    ),
    Model(
        "meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo",
        "llama-3-2",
        "chat",
        "Meta Llama 3.2 90B Vision Instruct",
    ),
    Model(
        "codellama/CodeLlama-34b-Instruct-hf",
        "codellama-CodeLlama-34b-Instruct-hf",
        "chat",
        "Meta Code Llama 34B Instruct",
    ),
    Model("gemini-1.5-pro", "gemini-1-5-pro", "chat", "Google Gemini 1.5 Pro"),
    Model("gemini-1.5-flash", "gemini-1.5-flash", "chat", "Google Gemini 1.5 Flash"),
    Model(
        "claude-3-5-sonnet-20240620", "claude", "chat", "Anthropic Claude 3.5 Sonnet (June 2024)"
    ),
    Model(
        "claude-3-5-sonnet-20241022",
        "clude-claude-3-5-sonnet-20241022",
        "chat",
        "Anthropic Claude 3.5 Sonnet (October 2024)",
    ),
    Model("claude-3-5-haiku-latest", "3-5-haiku", "chat", "Anthropic Claude 3.5 Haiku"),
    Model("Qwen/Qwen2.5-72B-Instruct-Turbo", "qwen-2-5", "chat", "Alibaba Qwen 2.5 72B Instruct"),
    Model("google/gemma-2b-it", "google-gemma-2b-it", "chat", "Google Gemma 2B instruct"),
    Model("google/gemma-7b", "google-gemma-7b", "chat", "Google Gemma 7B"),
    Model("Gryphe/MythoMax-L2-13b", "Gryphe-MythoMax-L2-13b", "chat", "MythoMax L2 13B"),
    Model(
        "mistralai/Mistral-7B-Instruct-v0.3",
        "mistralai-Mistral-7B-Instruct-v0.1",
        "chat",
        "Mistral 7B Instruct v0.3",
    ),
    Model("mistralai/mistral-tiny", "mistralai-mistral-tiny", "chat", "Mistral Tiny"),
    Model("mistralai/mistral-nemo", "mistralai-mistral-nemo", "chat", "Mistral NeMo 12B"),
    Model(
        "deepseek-ai/deepseek-llm-67b-chat",
        "deepseek-ai-deepseek-llm-67b-chat",
        "chat",
        "DeepSeek LLM 67B chat",
    ),
    Model(
        "databricks/dbrx-instruct", "databricks-dbrx-instruct", "chat", "Databricks DBRX Instruct"
    ),
    Model(
        "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO",
        "NousResearch-Nous-Hermes-2-Mixtral-8x7B-DPO",
        "chat",
        "Nous Hermes 2 Mixtral 8x7B DPO",
    ),
    Model("x-ai/grok-beta", "x-ai-grok-beta", "chat", "xAI Grok beta"),
    Model(
        "anthracite-org/magnum-v4-72b",
        "anthracite-org-magnum-v4-72b",
        "chat",
        "Anthracite Magnum v4 72B",
    ),
    Model("cohere/command-r-plus", "cohere-command-r-plus", "chat", "Cohere Command R+"),
    Model("ai21/jamba-1-5-mini", "ai21-jamba-1-5-mini", "chat", "AI21 Jamba 1.5 Mini"),
    Model("zero-one-ai/Yi-34B", "zero-one-ai-Yi-34B", "chat", "01.AI Yi 34B"),
    Model("flux-pro/v1.1", "flux-1-1-pro", "image", "Black Forest Labs FLUX1.1 [pro]"),
    Model("flux-realism", "flux-realism", "image", "FLUX realism"),
    Model("flux-pro", "flux-pro", "image", "Black Forest Labs FLUX.1 [pro]"),
    Model("flux-pro/v1.1-ultra", "flux-pro-v1.1-ultra", "image", "FLUX1.1 [pro] ultra"),
    Model(
        "flux-pro/v1.1-ultra-raw", "flux-pro-v1.1-ultra-raw", "image", "FLUX1.1 [pro] ultra, raw"
    ),
    Model("flux/dev", "flux-dev", "image", "FLUX.1 [dev]"),
    Model("dall-e-3", "dalle-three", "image", "OpenAI DALL·E 3"),
    Model("recraft-v3", "recraft", "image", "Recraft V3"),
)

# The chat models that take pictures (image parts) as input, as their makers documented them in
# December 2024: GPT-4o and 4o mini, Llama 3.2 Vision, Gemini 1.5, Claude 3.5 Sonnet. The
# others (o1, Claude 3.5 Haiku at the time, Llama 3.1, Qwen 2.5, Mistral, …) read text only.
_SEES = frozenset(
    {
        "gpt-4o-2024-11-20",
        "gpt-4o",
        "gpt-4o-mini",
        "meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo",
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "claude-3-5-sonnet-20240620",
        "claude-3-5-sonnet-20241022",
    }
)
MODELS = tuple(replace(m, sees_pictures=True) if m.id in _SEES else m for m in MODELS)

_UPSTREAM: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "gpt-4o-2024-11-20"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("llama-3.1-405b", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"),
    ("llama-3.2-90b", "meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo"),
    ("codellama-34b", "codellama/CodeLlama-34b-Instruct-hf"),
    ("gemini-flash", "gemini-1.5-flash"),
    ("claude-3.5-sonnet", "claude-3-5-sonnet-20241022"),
    ("claude-3.5-haiku", "claude-3-5-haiku-latest"),
    ("qwen-2.5-72b", "Qwen/Qwen2.5-72B-Instruct-Turbo"),
    ("gemma-2b", "google/gemma-2b-it"),
    ("mythomax-13b", "Gryphe/MythoMax-L2-13b"),
    ("mixtral-7b", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("mistral-nemo", "mistralai/mistral-nemo"),
    ("deepseek-chat", "deepseek-ai/deepseek-llm-67b-chat"),
    ("dbrx-instruct", "databricks/dbrx-instruct"),
    ("mixtral-8x7b-dpo", "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO"),
    ("grok-beta", "x-ai/grok-beta"),
    ("magnum-72b", "anthracite-org/magnum-v4-72b"),
    ("command-r-plus", "cohere/command-r-plus"),
    ("jamba-mini", "ai21/jamba-1-5-mini"),
    ("flux-dev", "flux/dev"),
)

# Short names notebook users type. Each must be new: none may shadow a model id.
_SHORT: tuple[tuple[str, str], ...] = (
    ("gpt", "gpt-4o-2024-11-20"),
    ("mini", "gpt-4o-mini"),
    ("o1", "o1-preview-"),
    ("o1-mini", "o1-mini-"),
    ("claude", "claude-3-5-sonnet-20241022"),
    ("sonnet", "claude-3-5-sonnet-20241022"),
    ("haiku", "claude-3-5-haiku-latest"),
    ("gemini", "gemini-1.5-pro"),
    ("gemini-pro", "gemini-1.5-pro"),
    ("llama", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"),
    ("llama-vision", "meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo"),
    ("codellama", "codellama/CodeLlama-34b-Instruct-hf"),
    ("qwen", "Qwen/Qwen2.5-72B-Instruct-Turbo"),
    ("gemma", "google/gemma-2b-it"),
    ("gemma-7b", "google/gemma-7b"),
    ("mythomax", "Gryphe/MythoMax-L2-13b"),
    ("mistral", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("mistral-tiny", "mistralai/mistral-tiny"),
    ("nemo", "mistralai/mistral-nemo"),
    ("deepseek", "deepseek-ai/deepseek-llm-67b-chat"),
    ("dbrx", "databricks/dbrx-instruct"),
    ("hermes", "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO"),
    ("grok", "x-ai/grok-beta"),
    ("magnum", "anthracite-org/magnum-v4-72b"),
    ("command-r", "cohere/command-r-plus"),
    ("jamba", "ai21/jamba-1-5-mini"),
    ("yi", "zero-one-ai/Yi-34B"),
    ("flux", "flux-pro/v1.1"),
    ("flux-ultra", "flux-pro/v1.1-ultra"),
    ("flux-raw", "flux-pro/v1.1-ultra-raw"),
    ("dalle", "dall-e-3"),
    ("dall-e", "dall-e-3"),
    ("recraft", "recraft-v3"),
)

_BY_ID: dict[str, Model] = {m.id: m for m in MODELS}


def _alias(name: str, target: str, upstream: bool) -> Alias:
    return Alias(name, target, f"→ {target}: {_BY_ID[target].description}", upstream)


ALIASES: dict[str, Alias] = {
    **{name: _alias(name, target, True) for name, target in _UPSTREAM},
    **{name: _alias(name, target, False) for name, target in _SHORT},
}


def chat_models() -> list[str]:
    """Ids of the chat models, in the table's order."""
    return [m.id for m in MODELS if m.kind == "chat"]


def image_models() -> list[str]:
    """Ids of the image models, in the table's order."""
    return [m.id for m in MODELS if m.kind == "image"]


def resolve(name: str | None) -> Model:
    """Map a name to its model: empty → the default, an alias before an id, then a
    case-insensitive match; anything else raises :class:`UnknownModelError`."""
    name = (name or "").strip()
    if not name:
        return _BY_ID[DEFAULT_MODEL]
    if name in ALIASES:
        return _BY_ID[ALIASES[name].target]
    if name in _BY_ID:
        return _BY_ID[name]
    folded = name.casefold()
    for alias in ALIASES.values():
        if alias.name.casefold() == folded:
            return _BY_ID[alias.target]
    for model in MODELS:
        if model.id.casefold() == folded:
            return model
    raise UnknownModelError(name, suggest(name))


def suggest(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` known names close to ``name``, best first."""
    names = list(ALIASES) + [m.id for m in MODELS]
    by_fold = {candidate.casefold(): candidate for candidate in reversed(names)}
    matches = difflib.get_close_matches(name.casefold(), list(by_fold), n=n, cutoff=0.5)
    return [by_fold[m] for m in matches]
