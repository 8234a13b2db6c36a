"""The durable history store: SQLite (stdlib), the only module that writes SQL.

One file for every notebook, keyed by (notebook, chat). WAL mode so readers never block the
writer and two kernels can write at once (a short busy wait covers the brief write lock; a lock
held longer, or a full disk, holds the turn back in a :mod:`~amigo_magic.journal` for a background
retry); one transaction per turn; numbered migrations applied on open (``PRAGMA user_version``),
and a file of a newer schema is never written to.

Pictures are stored as BLOBs in the same transaction as their turn, not as files beside the
database: a crash can never leave a turn without its pictures or orphaned files, ``reset`` removes
both atomically, and a backup or move is one file. They are small (≤ 20 MB each, usually far
less) and read only when a transcript shows them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .history import ChatSummary, HistoryBusyError, StoredImage, Turn, in_exchange_order
from .journal import Held, Journal
from .migrations import MIGRATIONS, NewerSchema, enable_wal, is_corruption

__all__ = ["DB_NAME", "SQLiteStore", "default_home", "open_store"]

log = logging.getLogger("amigo_magic.store")

DB_NAME = "history.db"
BUSY_TIMEOUT = 10.0  # seconds opening (and closing) waits for another kernel's write
WRITE_WAIT = 0.5  # seconds a turn's write waits for another program's lock before it is held back
DRAIN_WAIT = 0.1  # seconds each background retry of a held turn waits for the lock
RESET_WAIT = 2.0  # seconds a reset (the user waits for its answer) waits for the lock
CLOSE_WAIT = 2.0  # seconds closing (unload, kernel exit) waits for held turns to be written
RECENT = 200  # turns per chat remembered for answering when the file cannot be read


_COLUMNS = (
    "id, role, content, model, status, prompt_tokens, completion_tokens, seconds, cell_id, "
    "created, error, uid, reply_to, no_history, meta"
)


def default_home(env: Mapping[str, str]) -> Path:
    """``$AMIGO_HOME``, else the user's data directory (e.g. ``~/.local/share/amigo_magic``)."""
    if env.get("AMIGO_HOME"):
        return Path(env["AMIGO_HOME"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("amigo_magic", appauthor=False))


def open_store(env: Mapping[str, str]) -> tuple[SQLiteStore, list[str]]:
    """The kernel's history database and what to tell the user about opening it; if it cannot
    be opened at all, memory, with a notice that says so and what to do."""
    path = default_home(env) / DB_NAME
    try:
        store = SQLiteStore(path)
    except (OSError, sqlite3.Error) as error:
        notice = (
            f"⚠ History cannot be saved to {path} ({error}); this kernel keeps it in memory "
            "only. Set AMIGO_HOME to a writable folder."
        )
        return SQLiteStore(":memory:"), [notice]
    return store, [f"⚠ {store.notice}"] if store.notice else []


class SQLiteStore:
    """A :class:`~amigo_magic.history.HistoryStore` in one SQLite file (or ``":memory:"``).

    Safe to share between threads: one connection, used under a lock. ``notice`` holds what the
    user should be told about opening it (a corrupt file moved aside, a newer version's file left
    alone), or None; :meth:`take_notices` what happened since.

    A turn is never lost to the file: a write waits at most :data:`WRITE_WAIT` for another
    program's lock, then the turn is held in a :class:`~amigo_magic.journal.Journal` and written
    by a background retry (so are turns a full disk refused), in order. Before each use the file
    at ``path`` is compared with the open one, so a deleted file is noticed and a new one started.
    A file of a newer schema is never written to: the store keeps this kernel's turns in memory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.notice: str | None = None
        self._lock = threading.RLock()
        self._notices: list[str] = []
        self._memory = self.path == ":memory:"
        self._identity: tuple[int, int] | None = None
        self._recent: dict[tuple[str, str], list[Turn]] = {}  # what a failed read falls back on
        self._read_problem: str | None = None
        self._held_since = 0  # turns held back (and not dropped) since the journal was last empty
        self._journal = Journal(self._drain)
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except NewerSchema as newer:
            self.notice = newer.notice(self.path)
            log.warning(self.notice)
            self._db = self._open_memory()
        except sqlite3.DatabaseError as error:
            if self._memory or not is_corruption(error):
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
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > len(MIGRATIONS):  # before anything that writes, the WAL switch too
                raise NewerSchema(version)
            enable_wal(db, BUSY_TIMEOUT)
            db.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across a kernel crash
            db.execute("PRAGMA foreign_keys = ON")
            if not self._memory:
                (check,) = db.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self._migrate(db)
            db.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")
            if not self._memory:
                self._identity = _identity(self.path)
        except BaseException:
            db.close()
            raise
        return db

    def _open_memory(self) -> sqlite3.Connection:
        self._memory = True
        self._identity = None
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA foreign_keys = ON")
        self._migrate(db)
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
        key = (notebook, chat)
        with self._lock:
            self._follow_file()
            waiting = self._journal.held(notebook, chat)
            held = [item.turn for item in waiting]
            replaced = {i.turn.cell_id for i in waiting if i.replace_cell and i.turn.cell_id}
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM turns WHERE notebook = ? AND chat = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (notebook, chat, -1 if limit is None else limit),
                ).fetchall()
                rows.reverse()
                images = self._images([row[0] for row in rows])
            except sqlite3.Error as error:  # answer from what this kernel knows
                problem = f"the history file could not be read ({error})"
                if problem != self._read_problem:
                    self._read_problem = problem
                    self._notices.append(
                        f"⚠ {problem[:1].upper()}{problem[1:]}; this kernel goes on with the "
                        "turns it knows."
                    )
                known = [t for t in self._recent.get(key, []) if t not in held] + held
                return known[-limit:] if limit is not None else known
            self._read_problem = None
            turns = [_turn(row, images.get(row[0], ())) for row in rows]
            if replaced:  # a re-run cell's prompt is held: its earlier exchange is as good as gone
                turns = [t for t in turns if t.cell_id not in replaced]
            turns = in_exchange_order(turns + held)  # a --bg answer under its own question
            self._recent[key] = turns[-RECENT:]
        return turns[-limit:] if limit is not None else turns

    def add(
        self, notebook: str, chat: str, turn: Turn, *, replace_cell: bool = False
    ) -> str | None:
        item = Held(notebook, chat, turn, replace_cell)
        with self._lock:
            self._follow_file()
            if not len(self._journal):
                try:
                    self._write(item)
                except (sqlite3.Error, OSError) as error:
                    if self._memory:
                        log.warning("could not keep a turn: %s", error)
                        return f"not saved to history ({error})"
                    return self._hold(item, error)
                recent = self._recent.get((notebook, chat))
                if recent is not None:
                    recent.append(turn)
                    del recent[:-RECENT]
                return None
            return self._hold(item, None)

    def chats(self, notebook: str) -> list[ChatSummary]:
        with self._lock:
            self._follow_file()
            try:
                rows = self._db.execute(
                    "SELECT chat, COUNT(*), MAX(created) FROM turns WHERE notebook = ? "
                    "GROUP BY chat ORDER BY MAX(created) DESC",
                    (notebook,),
                ).fetchall()
            except sqlite3.Error as error:
                raise HistoryBusyError(
                    f"The history file could not be read ({error}); try again in a moment."
                ) from None
        return [ChatSummary(name, count, last) for name, count, last in rows]

    def reset(self, notebook: str, chat: str | None = None) -> int:
        with self._lock:
            self._follow_file()
            db = self._db
            try:
                db.execute(f"PRAGMA busy_timeout = {int(RESET_WAIT * 1000)}")
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
            except sqlite3.Error as error:
                raise HistoryBusyError(
                    f"Could not clear the history ({error}); nothing was removed. Try again "
                    "when the program using the history file is done."
                ) from None
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")
            removed = cursor.rowcount + self._journal.drop(notebook, chat)
            for key in list(self._recent):
                if key[0] == notebook and (chat is None or key[1] == chat):
                    del self._recent[key]
        return removed

    def take_notices(self) -> list[str]:
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    def close(self) -> None:
        """Write what is held back (waiting a moment for it), then close the file."""
        if len(self._journal) and not self._journal.wait(CLOSE_WAIT):
            log.warning(
                "%d history turns could not be written to %s before closing; they are lost",
                len(self._journal),
                self.path,
            )
        self._journal.close()
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------

    def _write(self, item: Held) -> None:
        """One turn in one transaction. An answer whose prompt has gone (a reset, or a re-run
        of its cell while it streamed) is not written: it would pair with nothing."""
        db, turn = self._db, item.turn
        notebook, chat = item.notebook, item.chat
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > len(MIGRATIONS):  # a newer version migrated the file meanwhile
                _rollback(db)
                self._leave_for_memory(NewerSchema(version).notice(self.path))
                self._write(item)
                return
            if (
                turn.reply_to is not None
                and not db.execute(
                    "SELECT 1 FROM turns WHERE notebook = ? AND chat = ? AND uid = ?",
                    (notebook, chat, turn.reply_to),
                ).fetchone()
            ):
                db.execute("COMMIT")
                return
            if item.replace_cell and turn.cell_id:
                db.execute(
                    "DELETE FROM turns WHERE notebook = ? AND chat = ? AND cell_id = ?",
                    (notebook, chat, turn.cell_id),
                )
            cursor = db.execute(
                "INSERT INTO turns (notebook, chat, role, content, model, status, "
                "prompt_tokens, completion_tokens, seconds, cell_id, created, error, uid, "
                "reply_to, no_history, meta) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    notebook, chat, turn.role, turn.content, turn.model, turn.status,
                    turn.prompt_tokens, turn.completion_tokens, turn.seconds, turn.cell_id,
                    turn.created, turn.error, turn.uid, turn.reply_to, int(turn.no_history),
                    json.dumps(turn.meta, ensure_ascii=False) if turn.meta else None,
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO images (turn_id, position, mime, alt, data) VALUES (?, ?, ?, ?, ?)",
                [
                    (cursor.lastrowid, i, image.mime, image.alt, image.data)
                    for i, image in enumerate(turn.images)
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _hold(self, item: Held, error: BaseException | None) -> str:
        """Keep ``item`` for the background writer; the line that tells the user."""
        why = _why(error) if error is not None else "earlier turns are still waiting to be written"
        if not self._journal.add(item):
            return f"not saved to history: {why}, and memory for unsaved turns is full"
        if not self._held_since and error is not None:  # once, when turns start waiting
            self._notices.append(
                f"⚠ History is not being saved right now ({why}): turns are kept in memory "
                "and written to the file as soon as it can take them."
            )
        self._held_since += 1
        log.info("history turn held back: %s", why)
        return f"not saved to history yet: {why}; kept in memory and written as soon as it can be"

    def _drain(self) -> bool:
        """Write held turns, oldest first, each waiting at most a moment for the lock (the
        store's lock is held meanwhile, so a cell waits no longer than that)."""
        while True:
            with self._lock:
                item = self._journal.head()
                if item is None:
                    return True
                self._follow_file()
                self._db.execute(f"PRAGMA busy_timeout = {int(DRAIN_WAIT * 1000)}")
                try:
                    self._write(item)
                except (sqlite3.Error, OSError) as error:
                    log.debug("held history turn still not written: %s", error)
                    return False
                finally:
                    self._db.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")
                self._journal.pop(item)
                if not len(self._journal) and self._held_since:
                    count, self._held_since = self._held_since, 0
                    self._notices.append(
                        f"✓ {count} history turn{'s' if count != 1 else ''} held back earlier "
                        f"{'are' if count != 1 else 'is'} now saved."
                    )

    def _follow_file(self) -> None:
        """Reopen when the file at ``path`` is no longer the open one (deleted or replaced):
        otherwise every later turn would go to a file no one can open again."""
        if self._memory:
            return
        now = _identity(self.path)
        if now == self._identity:
            return
        gone = now is None
        self._db.close()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except NewerSchema as newer:
            self._leave_for_memory(newer.notice(self.path))
            return
        except (sqlite3.Error, OSError) as error:
            self._leave_for_memory(
                f"The history file {self.path} was {'deleted' if gone else 'replaced'} and "
                f"could not be started again ({error}); this kernel keeps its history in memory "
                "only."
            )
            return
        self._recent.clear()
        self._notices.append(
            f"⚠ The history file {self.path} was deleted while this kernel ran; a new one was "
            "started there (the earlier turns are gone)."
            if gone
            else f"⚠ The history file {self.path} was replaced while this kernel ran; this "
            "kernel now uses the new one."
        )

    def _leave_for_memory(self, why: str) -> None:
        """Go on in memory, starting from the turns this kernel knows, so windows keep them."""
        self._db.close()
        self._db = self._open_memory()
        for (notebook, chat), turns in self._recent.items():
            for turn in turns:
                self._write(Held(notebook, chat, turn, False))
        self._notices.append(f"⚠ {why}")

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


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _why(error: BaseException) -> str:
    text = str(error)
    if "locked" in text or "busy" in text:
        return "another program is holding the history file's lock"
    if "full" in text or getattr(error, "errno", None) == errno.ENOSPC:
        return "the disk is full"
    return f"the history file cannot be written ({text})"


def _turn(row: tuple[object, ...], images: tuple[StoredImage, ...]) -> Turn:
    _, role, content, model, status, prompt, completion, seconds, cell_id, created, error = row[:11]
    uid, reply_to, no_history, meta = row[11:]
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
        uid=uid,  # type: ignore[arg-type]
        reply_to=reply_to,  # type: ignore[arg-type]
        no_history=bool(no_history),
        meta=_meta(meta),
    )


def _meta(text: object) -> dict[str, Any]:
    """A turn's ``meta`` column; a damaged value is dropped, never an error."""
    if not text:
        return {}
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _rollback(db: sqlite3.Connection) -> None:
    """Undo an open transaction. SQLite may already have rolled it back itself (a full disk
    does), and a failing ROLLBACK must not hide the error that caused it."""
    if db.in_transaction:
        db.execute("ROLLBACK")
