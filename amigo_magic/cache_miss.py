"""A replay miss, explained: what differs between a request and the closest recording (the
kind, the backend, the model, a parameter, the format, the prompt, the system message or the
history), in the one line :class:`~.cache.ReplayMissError` says. Pure: works on request parts
(:func:`~.cache.request_parts`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import Recording

__all__ = ["difference", "explain_miss", "likeness"]


def likeness(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    score = sum(2 for key in ("kind", "target", "model", "format") if a.get(key) == b.get(key))
    score += a.get("params") == b.get("params")
    messages_a, messages_b = a.get("messages") or [], b.get("messages") or []
    if messages_a and messages_b and messages_a[-1] == messages_b[-1]:
        score += 4
    if a.get("prompt") is not None and a.get("prompt") == b.get("prompt"):
        score += 4
    score += sum(1 for x, y in zip(messages_a, messages_b, strict=False) if x == y)
    return score


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(_text(value).split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _pair(then: Any, now: Any, limit: int = 60) -> tuple[str, str]:
    """Two values as :func:`_short` shows them, but where both are long and start alike, each
    quoted from a little before where they part: ``'…shares. Then: apples.'``."""
    a, b = (" ".join(_text(v).split()) for v in (then, now))
    if len(a) <= limit and len(b) <= limit:
        return repr(a), repr(b)
    pairs = enumerate(zip(a, b, strict=False))
    same = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
    start = max(0, same - limit // 3)
    if start and " " in a[start:same]:  # from a word's start
        start = a.index(" ", start, same) + 1
    lead = "…" if start else ""
    return _short(lead + a[start:], limit), _short(lead + b[start:], limit)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _content(message: Mapping[str, Any] | None) -> Any:
    return None if message is None else message.get("content")


def difference(now: Mapping[str, Any], then: Mapping[str, Any]) -> str:
    """What differs between two requests' parts, in a few words."""
    for key, what in (("kind", "the kind"), ("target", "the backend"), ("model", "the model")):
        if now.get(key) != then.get(key):
            return f"{what} differs ({_short(then.get(key))} recorded, now {_short(now.get(key))})"
    params_now, params_then = now.get("params") or {}, then.get("params") or {}
    changed = sorted(
        k for k in {*params_now, *params_then} if params_now.get(k) != params_then.get(k)
    )
    if changed:
        shown = ", ".join(
            f"{k}: {_short(params_then.get(k, 'unset'), 20)} recorded, now "
            f"{_short(params_now.get(k, 'unset'), 20)}"
            for k in changed[:3]
        )
        return f"the parameters differ ({shown})"
    if now.get("format") != then.get("format"):
        return f"the format differs ({then.get('format')} recorded, now {now.get('format')})"
    if now.get("kind") == "image":
        prompts = _pair(then.get("prompt"), now.get("prompt"))
        return f"the prompt differs ({prompts[0]} recorded, now {prompts[1]})"
    messages_now, messages_then = now.get("messages") or [], then.get("messages") or []
    last_now = messages_now[-1] if messages_now else None
    last_then = messages_then[-1] if messages_then else None
    if _content(last_now) != _content(last_then):
        prompts = _pair(_content(last_then), _content(last_now))
        return f"the prompt differs ({prompts[0]} recorded, now {prompts[1]})"
    system_now = [m for m in messages_now if m.get("role") == "system"]
    system_then = [m for m in messages_then if m.get("role") == "system"]
    if system_now != system_then:
        return "the system message differs"
    earlier_now, earlier_then = (
        len(messages_now) - 1 - len(system_now),
        len(messages_then) - 1 - len(system_then),
    )
    if earlier_now != earlier_then:
        return f"the history differs ({earlier_then} earlier messages recorded, now {earlier_now})"
    return "the history differs (an earlier message changed)"


def explain_miss(
    parts: Mapping[str, Any], closest: Recording | None, where: str, damaged: int = 0
) -> str:
    """The one line of a replay miss: nothing was sent, what differs, what to do."""
    head = "No recorded answer for this request (AmigoMagics.cache = 'replay', nothing sent)"
    fix = "Record it with AmigoMagics.cache = 'auto' (or %env AMIGO_CACHE=auto)."
    if closest is None:
        skipped = f" ({damaged} damaged line{'s' if damaged != 1 else ''} skipped)"
        return f"{head}, and {where} holds no recordings{skipped if damaged else ''}. {fix}"
    return (
        f"{head}: {difference(parts, closest.request)} from the closest recording "
        f"({closest.when}, in {where}). {fix}"
    )
