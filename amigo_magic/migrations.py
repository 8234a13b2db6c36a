"""The history file's schema and how a file is taken up: numbered migrations applied on open
(``PRAGMA user_version`` counts those applied; a new schema is one more function at the end of
:data:`MIGRATIONS`, none is changed once released), the switch to WAL, and what a file of a
newer version or a damaged file looks like. Only :mod:`.store` uses them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

__all__ = ["MIGRATIONS", "NewerSchema", "enable_wal", "is_corruption"]


def _m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            notebook TEXT NOT NULL,
            chat TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'stopped', 'error')),
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            seconds REAL,
            cell_id TEXT,
            created REAL NOT NULL,
            error TEXT
        )"""
    )
    # Loading a chat, listing chats and finding a cell's turn all start from (notebook, chat);
    # id order is insertion order, i.e. time order.
    db.execute("CREATE INDEX turns_by_chat ON turns (notebook, chat, id)")
    db.execute("CREATE INDEX turns_by_time ON turns (notebook, created)")
    db.execute(
        "CREATE INDEX turns_by_cell ON turns (notebook, chat, cell_id) WHERE cell_id IS NOT NULL"
    )
    db.execute(
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            turn_id INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            mime TEXT NOT NULL,
            alt TEXT NOT NULL,
            data BLOB NOT NULL
        )"""
    )
    db.execute("CREATE INDEX images_by_turn ON images (turn_id, position)")


def _m002_reply_links(db: sqlite3.Connection) -> None:
    """Each turn gets an identity and an answer the identity of its prompt, so two answers
    streaming into one chat at once each pair with their own question; ``no_history`` marks
    an exchange sent with ``--no-history``, never sent again as context."""
    db.execute("ALTER TABLE turns ADD COLUMN uid TEXT")
    db.execute("ALTER TABLE turns ADD COLUMN reply_to TEXT")
    db.execute("ALTER TABLE turns ADD COLUMN no_history INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX turns_by_uid ON turns (notebook, chat, uid) WHERE uid IS NOT NULL")


def _m003_turn_meta(db: sqlite3.Connection) -> None:
    """What a turn carries beyond its text, as one JSON object (``Turn.meta``): the request's
    parameters, usage estimates, reasoning, tool calls, replay and context notes. New kinds of
    detail become keys, not columns."""
    db.execute("ALTER TABLE turns ADD COLUMN meta TEXT")


def _m004_recordings(db: sqlite3.Connection) -> None:
    """Recorded answers (``AmigoMagics.cache``), one per request fingerprint: the record is
    :class:`~amigo_magic.cache.Recording`'s JSON; :mod:`.cache` reads and writes them."""
    db.execute(
        """CREATE TABLE recordings (
            key TEXT PRIMARY KEY,
            notebook TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            record TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX recordings_by_notebook ON recordings (notebook, created)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _m001_initial,
    _m002_reply_links,
    _m003_turn_meta,
    _m004_recordings,
)


class NewerSchema(Exception):
    """The file was written by a newer amigo_magic (its ``user_version`` is above ours)."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version

    def notice(self, path: str) -> str:
        return (
            f"The history file {path} was made by a newer amigo_magic (schema version "
            f"{self.version}; this one knows up to {len(MIGRATIONS)}): it is left untouched and "
            "this kernel keeps its history in memory only. Upgrade amigo_magic "
            "(pip install -U amigo-magic) to use that history."
        )


def enable_wal(db: sqlite3.Connection, patience: float) -> None:
    """Switch the file to WAL. When two kernels open a new file at the same moment, SQLite
    answers one of them "database is locked" at once, without its busy wait (measured: about
    half of simultaneous first opens), so retry for as long as a busy writer would be waited for.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def is_corruption(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return any(
        words in text
        for words in ("not a database", "malformed", "integrity check failed", "corrupt")
    )
