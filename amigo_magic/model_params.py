"""Any model parameter: ``-p KEY=VALUE`` (repeatable) and ``AmigoMagics.params``, read into the
``extra`` fields of a request body.

A value is JSON when it parses as JSON (``seed=7`` → ``7``, ``stop='["\\n\\n"]'`` → a list,
``response_format='{"type": "json_object"}'`` → an object), else the string as written. The
fields amigo_magic itself builds (``model``, ``messages``, ``stream``…) cannot be replaced. The
local model (llama.cpp) takes only the parameters its server knows: any other is one line naming
them, before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = [
    "EFFORTS",
    "LLAMA_CPP_PARAMS",
    "check_local",
    "merge_params",
    "parse_params",
    "request_params",
]

EFFORTS = ("low", "medium", "high")  # --effort → reasoning_effort
RESERVED = frozenset({"model", "messages", "stream", "chatId", "personaId", "prompt"})

# What llama.cpp's server reads from a chat completion body (tools/server/README.md, "POST
# /completion" options and the OpenAI-compatible extras), beyond the messages themselves.
LLAMA_CPP_PARAMS = frozenset(
    {
        "temperature", "top_p", "top_k", "min_p", "max_tokens", "n_predict", "n_keep", "stop",
        "seed", "frequency_penalty", "presence_penalty", "repeat_penalty", "repeat_last_n",
        "penalty_last_n", "typical_p", "tfs_z", "mirostat", "mirostat_tau", "mirostat_eta",
        "dynatemp_range", "dynatemp_exponent", "xtc_probability", "xtc_threshold",
        "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n",
        "dry_sequence_breakers", "top_n_sigma", "samplers", "grammar", "json_schema",
        "response_format", "logit_bias", "n_probs", "logprobs", "top_logprobs", "ignore_eos",
        "cache_prompt", "t_max_predict_ms", "id_slot", "n_indent", "post_sampling_probs",
        "return_tokens", "timings_per_token", "reasoning_format", "chat_template_kwargs",
        "tools", "tool_choice", "parallel_tool_calls", "n", "stream_options",
    }
)  # fmt: skip


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["seed=7", "stop=[\\"\\\\n\\"]"]`` → ``{"seed": 7, "stop": ["\\n"]}``; the last of a
    repeated key wins. A malformed item is a :class:`ConfigError` that shows the form."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"-p {item!r} is not KEY=VALUE: write e.g. -p seed=7 or -p stop='[\"\\n\\n\"]' "
                "(the value is JSON when it parses, else a string)."
            )
        found[key] = _value(value)
    return merge_params(found)


def merge_params(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers over earlier ones (defaults, then a cell's), each key checked."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in RESERVED:
                raise ConfigError(
                    f"-p {key}=… would replace what amigo_magic builds itself; use "
                    + ("--model" if key == "model" else "the cell and its options")
                    + " instead."
                )
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"The parameter {key} is {type(value).__name__} {value!r:.60}, which a "
                    "request body (JSON) cannot hold: give a number, a string, true/false, "
                    "null, a list or an object."
                ) from None
            merged[str(key)] = value
    return merged


def check_local(extra: Mapping[str, Any]) -> None:
    """The local model takes llama.cpp's parameters only: others are named in one line."""
    unknown = sorted(key for key in extra if key not in LLAMA_CPP_PARAMS)
    if unknown:
        names = ", ".join(unknown)
        raise ConfigError(
            f"The local model (llama.cpp) does not take {names}: leave "
            f"{'them' if len(unknown) > 1 else 'it'} out for --model local, or ask a model "
            "that does. It takes e.g. seed, stop, top_k, min_p, repeat_penalty, grammar, "
            "json_schema, response_format."
        )


def request_params(
    defaults: Mapping[str, Any], items: Iterable[str] = (), effort: str | None = None
) -> dict[str, Any]:
    """A request's extra parameters: ``AmigoMagics.params``, then the cell's ``-p`` items, then
    ``--effort`` as ``reasoning_effort``."""
    if effort is not None and effort not in EFFORTS:
        raise ConfigError(f"--effort takes {', '.join(EFFORTS)}; got {effort!r}.")
    effort_layer = {"reasoning_effort": effort} if effort else {}
    return merge_params(defaults, parse_params(items), effort_layer)
