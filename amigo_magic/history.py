"""Conversation history: the value types, the store interface, and the request window.

Value types carry no storage identity. A store keeps turns per (notebook, chat); the session
layer is its only caller. :class:`~amigo_magic.store.SQLiteStore` implements the interface.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "ChatSummary",
    "HistoryStore",
    "Status",
    "StoredImage",
    "Turn",
    "window",
]

Status = Literal["complete", "stopped", "error"]
Role = Literal["user", "assistant"]

CUT_OFF_NOTE = "\n\n[This answer was cut off before it finished.]"


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A picture kept with its turn: the bytes themselves, so it outlives its URL."""

    mime: str
    data: bytes
    alt: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, with how it ended."""

    role: Role
    content: str
    model: str = ""
    status: Status = "complete"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    cell_id: str | None = None
    created: float = field(default_factory=time.time)
    images: tuple[StoredImage, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """A named chat of a notebook."""

    name: str
    turns: int
    last_used: float


class HistoryStore(Protocol):
    """Where turns live. Implementations must be safe to call from any one thread at a time."""

    def load(self, notebook: str, chat: str, *, limit: int | None = None) -> list[Turn]:
        """The chat's turns, oldest first; with ``limit``, only the newest ``limit``."""
        ...

    def add(self, notebook: str, chat: str, turn: Turn, *, replace_cell: bool = False) -> None:
        """Append ``turn``. With ``replace_cell``, first drop the chat's earlier turns of the
        same cell (a re-run cell replaces its exchange instead of duplicating it)."""
        ...

    def chats(self, notebook: str) -> list[ChatSummary]:
        """The notebook's chats, most recently used first."""
        ...

    def reset(self, notebook: str, chat: str | None = None) -> int:
        """Forget one chat, or every chat of the notebook; returns how many turns went."""
        ...

    def close(self) -> None: ...


def window(turns: Sequence[Turn], max_turns: int) -> list[dict[str, str]]:
    """Earlier turns as request messages: at most ``max_turns``, oldest dropped first.

    An exchange whose answer failed with no text is left out (prompt and all). A stopped or
    failed answer that has text is sent with a note that it was cut off, so the model never
    takes it for a finished answer. The window starts at a user message.
    """
    messages: list[dict[str, str]] = []
    pending: Turn | None = None
    for turn in turns:
        if turn.role == "user":
            pending = turn
            continue
        if pending is None or not turn.content:
            pending = None
            continue
        content = turn.content if turn.status == "complete" else turn.content + CUT_OFF_NOTE
        messages.append({"role": "user", "content": pending.content})
        messages.append({"role": "assistant", "content": content})
        pending = None
    if max_turns <= 0:
        return []
    kept = messages[-max_turns:]
    if kept and kept[0]["role"] == "assistant":
        kept = kept[1:]
    return kept
