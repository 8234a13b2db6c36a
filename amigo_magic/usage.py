"""Usage, cost and the budget: what each answered request used, what that cost, and the cap.

Every answer's turn keeps its prompt and completion tokens — the server's counts, else an
estimate (~4 characters a token, the same rule as the context budget's) marked
``meta["tokens_estimated"]``. No tokenizer is used: the encodings that count exactly for the
catalogue's models do not ship inside a package (tiktoken downloads its files at first use), and
a wrong exact-looking number is worse than a labelled estimate.

Cost comes from ``genai-prices`` (a maintained price dataset, its bundled snapshot: nothing is
downloaded) at display time, by the model id the backend was sent; the local model costs 0; a
model the dataset does not know is "unknown", never a guess. Replayed answers (``meta
["replayed"]``) sent nothing: they cost nothing and do not count toward the budget.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attach import MAX_SIDE, picture_tokens, size_of
from .context import estimate_tokens
from .errors import ConfigError
from .history import Turn

__all__ = [
    "BudgetExceededError",
    "Spent",
    "TurnUsage",
    "UsageReport",
    "check_budget",
    "dollars",
    "estimate_prompt_tokens",
    "price",
    "report",
    "turn_usage",
    "usage_from_file",
]

MESSAGE_OVERHEAD = 4  # tokens a chat message's role and framing take, estimated


class BudgetExceededError(ConfigError):
    """The notebook reached ``budget_tokens`` or ``budget_usd``: the request was not sent."""


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The messages' tokens, estimated (~4 characters a token, a few for each message); a
    picture part counts what ``--dry-run`` says it costs (:func:`.attach.picture_tokens` of its
    size), not the length of its base64 text."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            total += sum(_part_tokens(part) for part in content) + MESSAGE_OVERHEAD
            continue
        text = content if isinstance(content, str) else str(content or "")
        total += estimate_tokens(text) + MESSAGE_OVERHEAD
    return total


def _part_tokens(part: object) -> int:
    """One part of a message's content: its text's tokens, or a picture's."""
    if not isinstance(part, Mapping):
        return estimate_tokens(str(part))
    if part.get("type") == "text":
        return estimate_tokens(str(part.get("text") or ""))
    if part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return _picture_tokens(url if isinstance(url, str) else "")
    return estimate_tokens(str(part))


def _picture_tokens(url: str) -> int:
    """A picture part's tokens by its size in pixels, read from its data URL's header (a link,
    or a size that cannot be read, counts as a picture as large as one is sent)."""
    head, comma, data = url.partition(",")
    size = None
    if comma and head.startswith("data:") and head.endswith(";base64"):
        for chars in (64 * 1024, len(data)):  # a header is near the start (a JPEG's may not be)
            try:
                size = size_of(base64.b64decode(data[: chars - chars % 4]))
            except (binascii.Error, ValueError):
                break
            if size is not None or chars >= len(data):
                break
    if size is None:
        return picture_tokens(MAX_SIDE, MAX_SIDE)
    return picture_tokens(size[1], size[2])


@dataclass(frozen=True, slots=True)
class TurnUsage:
    """What one answered request used."""

    model: str
    backend: str
    model_id: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    replayed: bool
    created: float
    picture: bool = False  # an image request: priced per picture, which the dataset lacks
    chat: str = "default"
    notebook: str = ""
    requests: int = 1  # more when it totals a batch's items (one model, one day)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float | None:
        """US dollars; None when the price is unknown; 0 for a replay or the local model."""
        if self.replayed or self.backend == "local":
            return 0.0
        if self.picture:
            return None
        return price(self.backend, self.model_id, self.prompt_tokens, self.completion_tokens)


def turn_usage(turn: Turn, *, chat: str = "default", notebook: str = "") -> TurnUsage | None:
    """The usage of an answer's turn (None for a prompt, or an answer that used nothing)."""
    meta = turn.meta if isinstance(turn.meta, dict) else {}
    picture = meta.get("kind") == "image" or bool(turn.images)
    counted = turn.prompt_tokens is not None or turn.completion_tokens is not None
    if turn.role != "assistant" or not (counted or picture):
        return None
    return TurnUsage(
        model=turn.model,
        backend=str(meta.get("backend") or ("local" if turn.model == "local" else "amigo")),
        model_id=str(meta.get("model_id") or turn.model),
        prompt_tokens=turn.prompt_tokens or 0,
        completion_tokens=turn.completion_tokens or 0,
        estimated=bool(meta.get("tokens_estimated")),
        replayed=bool(meta.get("replayed")),
        picture=picture,
        created=turn.created,
        chat=chat,
        notebook=notebook,
    )


@functools.lru_cache(maxsize=256)
def price(backend: str, model_id: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The request's price in US dollars from genai-prices' bundled data; 0 for the local model;
    None when the dataset does not know the model (or is not installed)."""
    if backend == "local":
        return 0.0
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a dependency; an install without it says unknown
        return None
    model = model_id.rstrip("-")  # AmigoChat spells a few upstream ids with a trailing dash
    try:
        found = calc_price(
            Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens), model_ref=model
        )
    except (LookupError, ValueError):
        return None
    return float(found.total_price)


@dataclass(frozen=True, slots=True)
class Spent:
    """Totals of some requests."""

    requests: int = 0
    tokens: int = 0
    usd: float = 0.0
    unknown: int = 0  # requests whose price is unknown (not in ``usd``)
    replayed: int = 0

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.requests + other.requests,
            self.tokens + other.tokens,
            self.usd + other.usd,
            self.unknown + other.unknown,
            self.replayed + other.replayed,
        )

    @classmethod
    def of(cls, uses: Iterable[TurnUsage]) -> Spent:
        requests = tokens = unknown = replayed = 0
        usd = 0.0
        for use in uses:
            if use.replayed:
                replayed += use.requests
                continue
            requests += use.requests
            tokens += use.tokens
            cost = use.cost
            if cost is None:
                unknown += use.requests
            else:
                usd += cost
        return cls(requests, tokens, usd, unknown, replayed)


def check_budget(spent: Spent, budget_tokens: int, budget_usd: float) -> None:
    """Refuse, in one line, a request once the notebook's caps are reached (0: no cap)."""
    if budget_tokens and spent.tokens >= budget_tokens:
        raise BudgetExceededError(
            f"Budget reached: this notebook used {spent.tokens:,} tokens in {spent.requests} "
            f"request{'s' if spent.requests != 1 else ''} (AmigoMagics.budget_tokens = "
            f"{budget_tokens:,}); nothing was sent. Raise it with %config "
            f"AmigoMagics.budget_tokens = {max(budget_tokens * 2, spent.tokens + 1000)} "
            "(0: no cap); %amigo usage shows where they went."
        )
    if budget_usd and spent.usd >= budget_usd:
        unknown = f" (+{spent.unknown} of unknown price)" if spent.unknown else ""
        raise BudgetExceededError(
            f"Budget reached: this notebook spent {dollars(spent.usd)}{unknown} in "
            f"{spent.requests} request{'s' if spent.requests != 1 else ''} "
            f"(AmigoMagics.budget_usd = {budget_usd:g}); nothing was sent. Raise it with "
            f"%config AmigoMagics.budget_usd = {budget_usd * 2:g} (0: no cap); %amigo usage "
            "shows where it went."
        )


@dataclass(frozen=True)
class UsageReport:
    """``%amigo usage``: rows per model (and day), with a total line."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    summary: str = ""


def dollars(value: float) -> str:
    """``$0.0123``, with two significant digits for amounts under a cent (``$0.0000051``)."""
    if not value:
        return "$0"
    places = max(4, 1 - math.floor(math.log10(abs(value))))
    return f"${value:.{places}f}"


def _money(value: float, unknown: int, requests: int) -> str:
    if requests and unknown == requests:
        return "unknown"
    return f"{dollars(value)} + unknown" if unknown else dollars(value)


def report(uses: Sequence[TurnUsage], *, by_day: bool = False, title: str = "") -> UsageReport:
    """Requests, tokens and cost per model (per day and model with ``by_day``)."""
    groups: dict[tuple[str, ...], list[TurnUsage]] = {}
    for use in uses:
        day = time.strftime("%Y-%m-%d", time.gmtime(use.created))
        groups.setdefault((day, use.model) if by_day else (use.model,), []).append(use)
    rows: list[tuple[str, ...]] = []
    for group, items in sorted(groups.items()):
        spent = Spent.of(items)
        prompt = sum(u.prompt_tokens for u in items if not u.replayed)
        completion = sum(u.completion_tokens for u in items if not u.replayed)
        about = "~" if any(u.estimated for u in items if not u.replayed) else ""
        replayed = f" (+{spent.replayed} replayed)" if spent.replayed else ""
        rows.append(
            (
                *group,
                f"{spent.requests}{replayed}",
                f"{about}{prompt:,}",
                f"{about}{completion:,}",
                _money(spent.usd, spent.unknown, spent.requests),
            )
        )
    total = Spent.of(uses)
    estimated = any(u.estimated for u in uses if not u.replayed)
    summary = (
        f"{title}{total.requests} request{'s' if total.requests != 1 else ''}, "
        f"{'~' if estimated else ''}{total.tokens:,} tokens, "
        f"{_money(total.usd, total.unknown, total.requests)}"
        + (f"; {total.replayed} replayed (no cost)" if total.replayed else "")
        + ("; ~ marks estimates (the server did not count)" if estimated else "")
        + ". Prices: genai-prices' list prices of the model; local: 0."
    )
    headers = ("day", "model") if by_day else ("model",)
    return UsageReport((*headers, "requests", "prompt", "completion", "cost"), rows, summary)


def usage_from_file(path: str) -> list[TurnUsage]:
    """Every notebook's answers in the history file at ``path`` (``%amigo usage --all``)."""
    try:
        db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return []
    try:
        rows = db.execute(
            "SELECT notebook, chat, model, prompt_tokens, completion_tokens, created, meta "
            "FROM turns WHERE role = 'assistant' AND (prompt_tokens IS NOT NULL OR "
            'completion_tokens IS NOT NULL OR meta LIKE \'%"kind": "image"%\')'
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    found = []
    for notebook, chat, model, prompt, completion, created, meta in rows:
        turn = Turn(
            "assistant",
            "",
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            created=created,
            meta=_meta(meta),
        )
        use = turn_usage(turn, chat=chat, notebook=notebook)
        if use is not None:
            found.append(use)
    return found


def _meta(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
