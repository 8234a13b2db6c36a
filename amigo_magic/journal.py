"""Turns the history file could not take yet: kept in order in memory, written by a retry.

A write from a cell never waits long for the database: when another program holds its lock past
a short wait, or the disk is full, the turn goes here and the cell goes on. A daemon thread calls
the store's ``drain`` with a growing pause until nothing is left. While anything is held back,
later turns queue behind it, so the file receives every turn in the order it was made.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .history import Turn

__all__ = ["MAX_HELD", "Held", "Journal"]

log = logging.getLogger("amigo_magic.journal")

MAX_HELD = 256 * 2**20  # bytes of text and pictures kept in memory for a later write
FIRST_PAUSE = 0.05  # seconds before the first retry; doubled after each failed one
LAST_PAUSE = 5.0


@dataclass(frozen=True, slots=True)
class Held:
    """One turn waiting to be written, with where it goes."""

    notebook: str
    chat: str
    turn: Turn
    replace_cell: bool

    @property
    def size(self) -> int:
        return len(self.turn.content) + sum(len(image.data) for image in self.turn.images)


class Journal:
    """The held turns, oldest first. ``drain()`` writes what it can and returns True when the
    journal is empty (False: try again later). Every method is safe from any thread."""

    def __init__(self, drain: Callable[[], bool], *, name: str = "amigo-history-writer") -> None:
        self._drain = drain
        self._name = name
        self._items: deque[Held] = deque()
        self._size = 0
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Held) -> bool:
        """Hold ``item`` for the writer; False (not held) when memory for held turns is full."""
        with self._mutex:
            if self._size + item.size > MAX_HELD and self._items:
                return False
            self._items.append(item)
            self._size += item.size
            self._idle.clear()
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._wake.set()
        return True

    def head(self) -> Held | None:
        with self._mutex:
            return self._items[0] if self._items else None

    def pop(self, item: Held) -> None:
        """``item`` (the head) is written."""
        with self._mutex:
            if self._items and self._items[0] is item:
                self._items.popleft()
                self._size -= item.size
            if not self._items:
                self._idle.set()

    def held(self, notebook: str, chat: str) -> list[Held]:
        """The chat's held turns, oldest first."""
        with self._mutex:
            return [i for i in self._items if i.notebook == notebook and i.chat == chat]

    def drop(self, notebook: str, chat: str | None = None) -> int:
        """Forget the held turns of one chat (or every chat of ``notebook``); how many went."""
        with self._mutex:
            kept = [
                i
                for i in self._items
                if i.notebook != notebook or (chat is not None and i.chat != chat)
            ]
            dropped = len(self._items) - len(kept)
            self._items = deque(kept)
            self._size = sum(i.size for i in kept)
            if not kept:
                self._idle.set()
        return dropped

    def wait(self, timeout: float) -> bool:
        """Wait until nothing is held (True) or ``timeout`` passes (False)."""
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def _run(self) -> None:
        pause = FIRST_PAUSE
        while not self._closed:
            self._wake.wait(pause if len(self._items) else None)
            self._wake.clear()
            if self._closed:
                return
            if not self._items:
                continue
            try:
                empty = self._drain()
            except Exception:  # a bug in draining must not end the retries silently
                log.exception("writing held history turns failed")
                empty = False
            pause = FIRST_PAUSE if empty else min(pause * 2, LAST_PAUSE)
