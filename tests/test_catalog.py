"""The model catalogue: the full upstream table, aliases, and resolution."""

from __future__ import annotations

import pytest

from amigo_magic import catalog
from amigo_magic.errors import UnknownModelError


def test_table_sizes_and_kinds() -> None:
    assert len(catalog.chat_models()) == 29
    assert len(catalog.image_models()) == 8
    assert len({m.id for m in catalog.MODELS}) == 37


@pytest.mark.parametrize(
    ("model_id", "persona"),
    [
        ("gpt-4o", "summarizer"),
        ("claude-3-5-sonnet-20241022", "clude-claude-3-5-sonnet-20241022"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai-Mistral-7B-Instruct-v0.1"),
        ("o1-preview-", "openai-o-one"),
        ("flux-pro/v1.1", "flux-1-1-pro"),
        ("dall-e-3", "dalle-three"),
    ],
)
def test_server_spellings_are_kept(model_id: str, persona: str) -> None:
    table = {m.id: m.persona_id for m in catalog.MODELS}
    assert table[model_id] == persona


def test_empty_name_is_the_default() -> None:
    assert catalog.resolve("").id == "gpt-4o-mini"
    assert catalog.resolve(None).id == catalog.DEFAULT_MODEL


def test_alias_before_id() -> None:
    # "gpt-4o" is both an id and an upstream alias; the alias wins, as upstream did
    assert catalog.resolve("gpt-4o").id == "gpt-4o-2024-11-20"


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("claude", "claude-3-5-sonnet-20241022"),
        ("gpt", "gpt-4o-2024-11-20"),
        ("gemini", "gemini-1.5-pro"),
        ("llama", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"),
        ("qwen", "Qwen/Qwen2.5-72B-Instruct-Turbo"),
        ("mistral", "mistralai/Mistral-7B-Instruct-v0.3"),
        ("deepseek", "deepseek-ai/deepseek-llm-67b-chat"),
        ("grok", "x-ai/grok-beta"),
        ("flux", "flux-pro/v1.1"),
        ("dalle", "dall-e-3"),
        ("recraft", "recraft-v3"),
        ("flux-dev", "flux/dev"),
        ("mixtral-7b", "mistralai/Mistral-7B-Instruct-v0.3"),
        ("Claude", "claude-3-5-sonnet-20241022"),
    ],
)
def test_aliases(name: str, model_id: str) -> None:
    assert catalog.resolve(name).id == model_id


def test_short_aliases_never_shadow_an_id() -> None:
    ids = {m.id for m in catalog.MODELS}
    shadowing = {a.name for a in catalog.ALIASES.values() if not a.upstream and a.name in ids}
    assert shadowing == set()


def test_every_alias_points_at_a_model_and_is_described() -> None:
    for alias in catalog.ALIASES.values():
        assert catalog.resolve(alias.target).id == alias.target
        assert alias.description.startswith("→ ")


def test_kind_comes_from_the_catalogue() -> None:
    assert catalog.resolve("flux").kind == "image"
    assert catalog.resolve("claude").kind == "chat"


def test_unknown_model_names_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.resolve("claud")
    assert "claude" in info.value.suggestions
    assert len(info.value.suggestions) <= 3
    assert str(info.value).startswith("Unknown model 'claud': did you mean 'claude'")
    assert isinstance(info.value, ValueError)


def test_unknown_model_without_matches() -> None:
    with pytest.raises(UnknownModelError, match="no close match"):
        catalog.resolve("zzzzzzzzzzzz")
