"""The durable history store: SQLite (stdlib), the only module that writes SQL.

One file for every notebook, keyed by (notebook, chat). WAL mode so readers never block the
writer and two kernels can write at once (a busy timeout covers the short write lock); one
transaction per turn; numbered migrations applied on open (``PRAGMA user_version``).

Pictures are stored as BLOBs in the same transaction as their turn, not as files beside the
database: a crash can never leave a turn without its pictures or orphaned files, ``reset`` removes
both atomically, and a backup or move is one file. They are small (≤ 20 MB each, usually far
less) and read only when a transcript shows them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .history import ChatSummary, StoredImage, Turn

__all__ = ["DB_NAME", "SQLiteStore", "default_home"]

log = logging.getLogger("amigo_magic.store")

DB_NAME = "history.db"
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another kernel's write to finish


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


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_m001_initial,)

_COLUMNS = (
    "id, role, content, model, status, prompt_tokens, completion_tokens, seconds, cell_id, "
    "created, error"
)


def default_home(env: dict[str, str] | os._Environ[str]) -> Path:
    """``$AMIGO_HOME``, else the user's data directory (e.g. ``~/.local/share/amigo_magic``)."""
    if env.get("AMIGO_HOME"):
        return Path(env["AMIGO_HOME"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("amigo_magic", appauthor=False))


class SQLiteStore:
    """A :class:`~amigo_magic.history.HistoryStore` in one SQLite file (or ``":memory:"``).

    Safe to share between threads: one connection, used under a lock. ``notice`` holds what the
    user should be told about opening it (a corrupt file moved aside), or None.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.notice: str | None = None
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as error:
            if self.path == ":memory:" or not _is_corruption(error):
                raise
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            self.notice = (
                f"The history database was damaged ({error}); it was moved aside to {aside} "
                "and a new one was started."
            )
            log.warning(self.notice)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            _enable_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across a kernel crash
            db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                (check,) = db.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                (current,) = db.execute("PRAGMA user_version").fetchone()
                if current < number:  # another kernel may have migrated meanwhile
                    migration(db)
                    db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    # -- the HistoryStore interface ------------------------------------------------------------

    def load(self, notebook: str, chat: str, *, limit: int | None = None) -> list[Turn]:
        if limit is not None and limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM turns WHERE notebook = ? AND chat = ? "
                "ORDER BY id DESC LIMIT ?",
                (notebook, chat, -1 if limit is None else limit),
            ).fetchall()
            rows.reverse()
            images = self._images([row[0] for row in rows])
        return [_turn(row, images.get(row[0], ())) for row in rows]

    def add(self, notebook: str, chat: str, turn: Turn, *, replace_cell: bool = False) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if replace_cell and turn.cell_id:
                    db.execute(
                        "DELETE FROM turns WHERE notebook = ? AND chat = ? AND cell_id = ?",
                        (notebook, chat, turn.cell_id),
                    )
                cursor = db.execute(
                    "INSERT INTO turns (notebook, chat, role, content, model, status, "
                    "prompt_tokens, completion_tokens, seconds, cell_id, created, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        notebook, chat, turn.role, turn.content, turn.model, turn.status,
                        turn.prompt_tokens, turn.completion_tokens, turn.seconds, turn.cell_id,
                        turn.created, turn.error,
                    ),
                )  # fmt: skip
                db.executemany(
                    "INSERT INTO images (turn_id, position, mime, alt, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (cursor.lastrowid, i, image.mime, image.alt, image.data)
                        for i, image in enumerate(turn.images)
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def chats(self, notebook: str) -> list[ChatSummary]:
        with self._lock:
            rows = self._db.execute(
                "SELECT chat, COUNT(*), MAX(created) FROM turns WHERE notebook = ? "
                "GROUP BY chat ORDER BY MAX(created) DESC",
                (notebook,),
            ).fetchall()
        return [ChatSummary(name, count, last) for name, count, last in rows]

    def reset(self, notebook: str, chat: str | None = None) -> int:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if chat is None:
                    cursor = db.execute("DELETE FROM turns WHERE notebook = ?", (notebook,))
                else:
                    cursor = db.execute(
                        "DELETE FROM turns WHERE notebook = ? AND chat = ?", (notebook, chat)
                    )
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------------

    def _images(self, turn_ids: Sequence[int]) -> dict[int, tuple[StoredImage, ...]]:
        found: dict[int, list[StoredImage]] = {}
        for start in range(0, len(turn_ids), 500):  # stay under SQLite's variable limit
            chunk = turn_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for turn_id, mime, alt, data in self._db.execute(
                f"SELECT turn_id, mime, alt, data FROM images WHERE turn_id IN ({marks}) "
                "ORDER BY turn_id, position",
                chunk,
            ):
                found.setdefault(turn_id, []).append(StoredImage(mime, bytes(data), alt))
        return {turn_id: tuple(images) for turn_id, images in found.items()}


def _turn(row: tuple[object, ...], images: tuple[StoredImage, ...]) -> Turn:
    _, role, content, model, status, prompt, completion, seconds, cell_id, created, error = row
    return Turn(
        role,  # type: ignore[arg-type]
        str(content),
        model=str(model),
        status=status,  # type: ignore[arg-type]
        prompt_tokens=prompt,  # type: ignore[arg-type]
        completion_tokens=completion,  # type: ignore[arg-type]
        seconds=seconds,  # type: ignore[arg-type]
        cell_id=cell_id,  # type: ignore[arg-type]
        created=float(created),  # type: ignore[arg-type]
        images=images,
        error=error,  # type: ignore[arg-type]
    )


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL. When two kernels open a new file at the same moment, SQLite
    answers one of them "database is locked" at once, without its busy wait (measured: about
    half of simultaneous first opens), so retry for as long as a busy writer would be waited for.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _rollback(db: sqlite3.Connection) -> None:
    """Undo an open transaction. SQLite may already have rolled it back itself (a full disk
    does), and a failing ROLLBACK must not hide the error that caused it."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return any(
        words in text
        for words in ("not a database", "malformed", "integrity check failed", "corrupt")
    )
