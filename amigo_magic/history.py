"""Conversation history: the value types, the store interface, and the request window.

Value types carry no storage identity. A store keeps turns per (notebook, chat); the session
layer is its only caller. :class:`~amigo_magic.store.SQLiteStore` implements the interface.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import HistoryBusyError

__all__ = [
    "ChatSummary",
    "HistoryBusyError",
    "HistoryStore",
    "Status",
    "StoredImage",
    "Turn",
    "in_exchange_order",
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


def new_uid() -> str:
    """A turn's identity in its conversation, made when the turn is: it names the prompt an
    answer replies to even before (or without) the turn reaching a database."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, with how it ended.

    ``uid`` names the turn; an answer's ``reply_to`` is its prompt's ``uid``, so each answer
    pairs with its own question whatever finished first (turns from before this link have
    ``uid`` None). ``no_history`` marks an exchange sent with ``--no-history``: it is kept,
    but never sent again as context.
    """

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
    uid: str | None = field(default_factory=new_uid)
    reply_to: str | None = None
    no_history: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


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

    def add(
        self, notebook: str, chat: str, turn: Turn, *, replace_cell: bool = False
    ) -> str | None:
        """Append ``turn``. With ``replace_cell``, first drop the chat's earlier turns of the
        same cell (a re-run cell replaces its exchange instead of duplicating it). An answer
        whose prompt (``reply_to``) is no longer in the chat is not kept.

        Never raises for a storage failure: returns None when the turn is written, else one
        line saying why it is not (yet) saved and what happens to it."""
        ...

    def chats(self, notebook: str) -> list[ChatSummary]:
        """The notebook's chats, most recently used first."""
        ...

    def reset(self, notebook: str, chat: str | None = None) -> int:
        """Forget one chat, or every chat of the notebook; returns how many turns went.
        Raises :class:`HistoryBusyError` (nothing removed) when the history cannot be changed."""
        ...

    def take_notices(self) -> list[str]:
        """One-line news about the store itself since the last call (a file deleted under
        it, turns held back that are now written), for the front end to show once."""
        ...

    def close(self) -> None: ...


def in_exchange_order(turns: Sequence[Turn]) -> list[Turn]:
    """``turns`` (in write order) with each answer right after the prompt it replies to: a
    ``--bg`` answer that ended after a later cell's exchange is written after it, and would
    read as that exchange's answer in ``%amigo history``, exports and the panel. The rest keep
    their order; an answer whose prompt is not among ``turns`` stays where it is."""
    asked = {turn.uid for turn in turns if turn.role == "user" and turn.uid is not None}
    answers: dict[str, list[Turn]] = {}
    for turn in turns:
        if turn.role != "user" and turn.reply_to in asked:
            answers.setdefault(str(turn.reply_to), []).append(turn)
    ordered: list[Turn] = []
    for turn in turns:
        if turn.role != "user" and turn.reply_to in asked:
            continue  # placed after its prompt
        ordered.append(turn)
        if turn.role == "user" and turn.uid is not None:
            ordered += answers.pop(turn.uid, [])
    return ordered


def window(turns: Sequence[Turn], max_turns: int) -> list[dict[str, str]]:
    """Earlier turns as request messages: at most ``max_turns``, oldest dropped first.

    Each answer is paired with the prompt it replies to (``reply_to``), and exchanges are in the
    order of their prompts, so two answers that streamed at once, finishing in either order,
    each follow their own question. An answer from before that link pairs with the prompt just
    before it. An exchange whose answer failed with no text, or that was sent with
    ``--no-history``, is left out (prompt and all); so is a prompt without an answer. A stopped
    or failed answer that has text is sent with a note that it was cut off, so the model never
    takes it for a finished answer. The window starts at a user message.
    """
    if max_turns <= 0:
        return []
    prompts: dict[str, int] = {}  # uid → position in ``turns``
    answered: set[int] = set()
    exchanges: list[tuple[int, Turn, Turn]] = []
    previous: int | None = None  # the user turn just before, for answers without ``reply_to``
    for position, turn in enumerate(turns):
        if turn.role == "user":
            if turn.uid is not None:
                prompts[turn.uid] = position
            previous = position
            continue
        asked = prompts.get(turn.reply_to) if turn.reply_to is not None else previous
        previous = None
        if asked is None or asked in answered:
            continue
        answered.add(asked)
        prompt = turns[asked]
        if turn.content and not (prompt.no_history or turn.no_history):
            exchanges.append((asked, prompt, turn))
    exchanges.sort(key=lambda exchange: exchange[0])
    messages: list[dict[str, str]] = []
    for _, prompt, answer in exchanges:
        content = answer.content if answer.status == "complete" else answer.content + CUT_OFF_NOTE
        messages.append({"role": "user", "content": prompt.content})
        messages.append({"role": "assistant", "content": content})
    kept = messages[-max_turns:]
    if kept and kept[0]["role"] == "assistant":
        kept = kept[1:]
    return kept
