"""Recorded answers: the request fingerprint, and the stores that keep a recording per request.

A request's identity is a hash of its normalised parts (:func:`request_parts`): the kind (chat
or image), the target (backend, endpoint name) and model, the messages — a picture inside one
by the hash of its bytes — the parameters and the format. Two requests with the same
:func:`fingerprint` are the same request: ``AmigoMagics.cache = 'auto'`` answers the second from
the first's :class:`Recording`; ``'replay'`` never calls a model, and a request with no recording
is a :class:`ReplayMissError` that says what differs from the closest recording
(:func:`explain_miss`).

The API other modules build on is small: ``key = fingerprint(parts)``, then
``store.lookup(key)`` → a :class:`Recording` or None, and ``store.record(recording)``;
``store.closest(parts)`` for a miss's explanation. :func:`open_recordings` gives the store:
the history database's ``recordings`` table (migration m004) by default, or a portable
JSON-lines file (``AmigoMagics.cache_file``, ``$AMIGO_CACHE_FILE``) meant to be committed beside
the notebook — one recording per line, appended, the last line of a key winning; a damaged line
is skipped and counted, never rewritten.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache_miss import explain_miss, likeness
from .errors import AmigoError, ConfigError
from .history import StoredImage

__all__ = [
    "CACHE_MODES",
    "DatabaseRecordings",
    "FileRecordings",
    "MemoryRecordings",
    "Recording",
    "Recordings",
    "ReplayMissError",
    "explain_miss",
    "fingerprint",
    "open_recordings",
    "request_parts",
]

log = logging.getLogger("amigo_magic.cache")

CACHE_MODES = ("off", "auto", "replay")
FORMAT_VERSION = 1
CLOSEST_SCAN = 2000  # recordings compared at most when explaining a miss
WRITE_WAIT_MS = 250  # a recording's write waits this long for another program's lock, then waits
LATEST = 253402300799  # 9999-12-31 23:59:59 UTC: a later date is a damaged recording
_PARTS = {"kind": str, "target": str, "model": str, "format": str, "params": dict}


class ReplayMissError(ConfigError):
    """``cache = 'replay'`` and this request was never recorded: nothing was sent."""


def _hashed(value: Any) -> Any:
    """``value`` with every ``data:…;base64,…`` string (a picture) replaced by its hash."""
    if isinstance(value, str):
        if value.startswith("data:") and ";base64," in value[:100]:
            return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
        return value
    if isinstance(value, Mapping):
        return {str(k): _hashed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hashed(v) for v in value]
    return value


def request_parts(
    *,
    kind: str,
    backend: str,
    endpoint: str | None,
    model: str,
    messages: Sequence[Mapping[str, Any]] = (),
    params: Mapping[str, Any] | None = None,
    fmt: str = "markdown",
    prompt: str | None = None,
) -> dict[str, Any]:
    """A request's normalised parts, as JSON-ready values: what its fingerprint is made of."""
    parts: dict[str, Any] = {
        "kind": kind,
        "target": f"{backend}:{endpoint}" if endpoint else backend,
        "model": model,
        "params": _hashed(dict(params or {})),
        "format": fmt,
    }
    if kind == "image":
        parts["prompt"] = prompt or ""
    else:
        parts["messages"] = _hashed([dict(m) for m in messages])
    return parts


def fingerprint(parts: Mapping[str, Any]) -> str:
    """The request's key: the SHA-256 of its parts as canonical JSON."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded answer: the request it answered and what came back."""

    key: str
    request: Mapping[str, Any]
    text: str = ""
    reasoning: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False  # the token counts are estimates: the server did not say
    finish: str | None = None
    images: tuple[StoredImage, ...] = ()
    created: float = field(default_factory=time.time)
    notebook: str = ""

    @property
    def when(self) -> str:
        """When it was recorded, as ``2026-12-01 23:50 UTC``."""
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.created))

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "key": self.key,
            "created": self.created,
            "notebook": self.notebook,
            "request": self.request,
            "answer": {
                "text": self.text,
                "reasoning": self.reasoning,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "estimated": self.estimated,
                "finish": self.finish,
                "images": [
                    {"mime": i.mime, "alt": i.alt, "data": base64.b64encode(i.data).decode()}
                    for i in self.images
                ],
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> Recording:
        """A recording from :meth:`to_json`'s value; ValueError if it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            raise ValueError("not a recording")
        answer, request = data.get("answer"), data.get("request")
        if not isinstance(answer, dict) or not isinstance(request, dict):
            raise ValueError("a recording without its request or answer")
        if not _is_request(request):
            raise ValueError("a recording whose request is not one")
        created = data.get("created", 0.0)
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise ValueError("a recording without its date")
        if not 0 <= created <= LATEST:  # also NaN and infinities
            raise ValueError("a recording dated out of range")
        if not isinstance(answer.get("text", ""), str) or not isinstance(
            answer.get("images") or [], list
        ):
            raise ValueError("a recording whose answer is not text and pictures")
        images = tuple(_picture(i) for i in answer.get("images") or ())
        counts = [answer.get(k) for k in ("prompt_tokens", "completion_tokens")]
        return cls(
            key=data["key"],
            request=request,
            text=str(answer.get("text") or ""),
            reasoning=str(answer.get("reasoning") or ""),
            prompt_tokens=counts[0] if isinstance(counts[0], int) else None,
            completion_tokens=counts[1] if isinstance(counts[1], int) else None,
            estimated=bool(answer.get("estimated")),
            finish=answer.get("finish") if isinstance(answer.get("finish"), str) else None,
            images=images,
            created=float(created),
            notebook=str(data.get("notebook") or ""),
        )


def _picture(item: Any) -> StoredImage:
    """A recorded picture, only as what it is: bytes that sniff as the PNG, JPEG, GIF or WebP
    it says (a line saying ``image/svg+xml`` is damaged: amigo never shows that type)."""
    from .pictures import sniff

    if not isinstance(item, dict):
        raise ValueError("a recorded picture is not an object")
    data = base64.b64decode(item["data"], validate=True)
    try:
        mime = sniff(data, "a recorded picture")
    except AmigoError as error:  # not an image at all
        raise ValueError(str(error)) from None
    if item.get("mime") != mime:
        raise ValueError(f"a recorded picture says {item.get('mime')!r} but is {mime}")
    return StoredImage(mime, data, str(item.get("alt") or ""))


def _is_request(request: Any) -> bool:
    """``request`` has the shape :func:`request_parts` gives (a damaged one may parse as JSON)."""
    if not isinstance(request, dict):
        return False
    if any(not isinstance(request.get(k), kind) for k, kind in _PARTS.items()):
        return False
    if request["kind"] == "image":
        return isinstance(request.get("prompt"), str)
    messages = request.get("messages")
    return isinstance(messages, list) and all(isinstance(m, dict) for m in messages)


class Recordings:
    """Where recordings live. ``where`` names it for messages; ``notices`` holds one-line news
    about it (damaged entries skipped) for the front end to show once."""

    where = "memory"
    damaged = 0  # entries skipped because they are not recordings

    def __init__(self) -> None:
        self.notices: list[str] = []
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Recording | None:
        """The recording of the request whose fingerprint is ``key``, if any."""
        raise NotImplementedError

    def record(self, recording: Recording) -> None:
        """Keep ``recording`` (replacing one of the same key)."""
        raise NotImplementedError

    def recent(self, notebook: str | None = None) -> Iterable[Recording]:
        """Recordings, newest first (this notebook's first when ``notebook`` is given)."""
        raise NotImplementedError

    def closest(self, parts: Mapping[str, Any], notebook: str | None = None) -> Recording | None:
        """The recording whose request has the most in common with ``parts``."""
        best: tuple[int, Recording] | None = None
        for count, recording in enumerate(self.recent(notebook)):
            if count >= CLOSEST_SCAN:
                break
            score = likeness(parts, recording.request)
            if best is None or score > best[0]:
                best = (score, recording)
        return best[1] if best else None

    def close(self) -> None:
        """Release the file or connection."""


class MemoryRecordings(Recordings):
    """Recordings for this kernel only (the history itself is in memory)."""

    def __init__(self) -> None:
        super().__init__()
        self._items: dict[str, Recording] = {}

    def lookup(self, key: str) -> Recording | None:
        return self._items.get(key)

    def record(self, recording: Recording) -> None:
        with self._lock:
            self._items.pop(recording.key, None)
            self._items[recording.key] = recording

    def recent(self, notebook: str | None = None) -> Iterable[Recording]:
        return reversed(list(self._items.values()))


class FileRecordings(MemoryRecordings):
    """A portable JSON-lines file: read once (again when it changes), appended to."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.where = str(self.path)
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of what was read

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._items, self._seen = {}, None
            return
        except OSError as error:
            raise ConfigError(
                f"The cache file {self.path} cannot be read ({error}): check AMIGO_CACHE_FILE."
            ) from None
        if self._seen == (stat.st_size, stat.st_mtime_ns):
            return
        items: dict[str, Recording] = {}
        damaged = 0
        try:
            with self.path.open("rb") as file:
                lines = file.read().splitlines()
        except OSError as error:
            raise ConfigError(f"The cache file {self.path} cannot be read ({error}).") from None
        for line in lines:
            if not line.strip():
                continue
            try:
                recording = Recording.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                damaged += 1
                continue
            items.pop(recording.key, None)
            items[recording.key] = recording
        if damaged:
            self.notices.append(
                f"⚠ The cache file {self.path} has {damaged} damaged line"
                f"{'s' if damaged != 1 else ''} (not a recording); skipped — they are left in "
                "the file, and a request they recorded is called again (auto) or refused "
                "(replay)."
            )
        self._items, self._seen = items, (stat.st_size, stat.st_mtime_ns)
        self.damaged = damaged

    def lookup(self, key: str) -> Recording | None:
        with self._lock:
            self._refresh()
            return self._items.get(key)

    def recent(self, notebook: str | None = None) -> Iterable[Recording]:
        with self._lock:
            self._refresh()
            return list(reversed(list(self._items.values())))

    def record(self, recording: Recording) -> None:
        # the file is committed beside the notebook: it names the notebook, not where it lives
        recording = dataclasses.replace(recording, notebook=Path(recording.notebook).name)
        line = json.dumps(recording.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self._refresh()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as file:
                    if file.tell() and not _ends_with_newline(self.path):
                        file.write("\n")  # a damaged last line stays a line of its own
                    file.write(line)
                    file.flush()
                    os.fsync(file.fileno())
            except OSError as error:
                self.notices.append(f"⚠ The answer was not recorded in {self.path} ({error}).")
                return
            self._items.pop(recording.key, None)
            self._items[recording.key] = recording
            stat = self.path.stat()
            self._seen = (stat.st_size, stat.st_mtime_ns)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


class DatabaseRecordings(Recordings):
    """The ``recordings`` table of the history database (created by migration m004), on a
    connection of its own. A write waits at most :data:`WRITE_WAIT_MS` for another program's
    lock (it runs on the loop thread, where every answer streams); a recording that cannot be
    written yet is held in memory — replayed from there — and written by a later call."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.where = f"the history database ({path})"
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._held: dict[str, Recording] = {}  # not written yet: the file was locked

    def lookup(self, key: str) -> Recording | None:
        self._write_held()
        if key in self._held:
            return self._held[key]
        try:
            with self._lock:
                row = self._db.execute("SELECT record FROM recordings WHERE key = ?", (key,))
                found = row.fetchone()
        except sqlite3.Error as error:  # a damaged or locked file: a miss, said once
            self._unreadable(error)
            return None
        return self._load(found[0]) if found else None

    def _unreadable(self, error: sqlite3.Error) -> None:
        notice = f"⚠ Recordings in {self.where} cannot be read ({error}); none are used."
        if notice not in self.notices:
            self.notices.append(notice)

    def _load(self, text: str) -> Recording | None:
        try:
            return Recording.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError):
            self.notices.append("⚠ A damaged recording in the history database was skipped.")
            return None

    def record(self, recording: Recording) -> None:
        with self._lock:
            self._held[recording.key] = recording
        self._write_held()

    def _write_held(self, wait_ms: int = WRITE_WAIT_MS) -> None:
        """Write the held recordings, waiting at most ``wait_ms`` for the file's lock."""
        if not self._held:
            return
        with self._lock:
            held = list(self._held.values())
            rows = [
                (r.key, r.notebook, r.created, json.dumps(r.to_json(), ensure_ascii=False,
                                                          sort_keys=True))
                for r in held
            ]  # fmt: skip
            try:
                self._db.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO recordings (key, notebook, created, record) "
                        "VALUES (?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    self._drop_held(held, error)
                elif not any("is held in memory" in n for n in self.notices):
                    self.notices.append(
                        "⚠ Another program holds the history file's lock: the answer's "
                        "recording is held in memory and written when the lock is free."
                    )
            except sqlite3.Error as error:
                self._drop_held(held, error)
            else:
                for recording in held:
                    self._held.pop(recording.key, None)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA busy_timeout = 5000")

    def _drop_held(self, held: list[Recording], error: sqlite3.Error) -> None:
        for recording in held:
            self._held.pop(recording.key, None)
        self.notices.append(f"⚠ The answer was not recorded ({error}).")

    def recent(self, notebook: str | None = None) -> Iterable[Recording]:
        yield from list(self._held.values())
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT record FROM recordings ORDER BY notebook = ? DESC, created DESC "
                    "LIMIT ?",
                    (notebook or "", CLOSEST_SCAN),
                ).fetchall()
        except sqlite3.Error as error:
            self._unreadable(error)
            return
        for (text,) in rows:
            recording = self._load(text)
            if recording is not None:
                yield recording

    def close(self) -> None:
        self._write_held(5000)  # the last chance: wait as long as reads do
        self._db.close()


def open_recordings(cache_file: str, history_path: str, base: str | Path = ".") -> Recordings:
    """The store for recordings: ``cache_file`` (relative to ``base``, the notebook's folder)
    when set, else the history database at ``history_path`` (memory if that is memory)."""
    if cache_file:
        path = Path(cache_file).expanduser()
        return FileRecordings(path if path.is_absolute() else Path(base) / path)
    if history_path == ":memory:":
        return MemoryRecordings()
    try:
        return DatabaseRecordings(history_path)
    except sqlite3.Error as error:
        log.warning("recordings kept in memory: %s", error)
        return MemoryRecordings()
