"""The SQLite history store on a real file, the request window, and export round trips."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from amigo_magic.export import to_json, to_markdown, turns_from_json
from amigo_magic.history import CUT_OFF_NOTE, StoredImage, Turn, window
from amigo_magic.store import SQLiteStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def db(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "history.db")
    yield store  # type: ignore[misc]
    store.close()


def exchange(
    store: SQLiteStore,
    prompt: str,
    answer: str,
    *,
    notebook: str = "nb.ipynb",
    chat: str = "default",
    cell: str | None = None,
) -> None:
    store.add(notebook, chat, Turn("user", prompt, cell_id=cell), replace_cell=bool(cell))
    store.add(notebook, chat, Turn("assistant", answer, model="m", cell_id=cell))


def test_schema_wal_and_migrations(tmp_path: Path, db: SQLiteStore) -> None:
    raw = sqlite3.connect(tmp_path / "history.db")
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA user_version").fetchone() == (4,)
    indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    expected = {"turns_by_chat", "turns_by_time", "turns_by_cell", "turns_by_uid", "images_by_turn"}
    expected.add("recordings_by_notebook")  # m004: recorded answers (amigo_magic.cache)
    assert expected <= indexes
    raw.close()
    SQLiteStore(tmp_path / "history.db").close()  # re-opening migrates nothing twice


def test_turns_round_trip_with_every_field(db: SQLiteStore) -> None:
    turn = Turn("assistant", "hi ünïcode", model="claude", status="stopped", prompt_tokens=3,
                completion_tokens=5, seconds=1.25, cell_id="c1", created=123.5,
                images=(StoredImage("image/png", PNG, "a fox"),), error="cut",
                meta={"params": {"seed": 7}, "reasoning": "hmm"})  # fmt: skip
    db.add("nb", "default", turn)
    assert db.load("nb", "default") == [turn]


def test_a_damaged_meta_value_loads_as_empty(tmp_path: Path, db: SQLiteStore) -> None:
    db.add("nb", "default", Turn("user", "hi", meta={"a": 1}))
    raw = sqlite3.connect(tmp_path / "history.db")
    raw.execute("UPDATE turns SET meta = '{not json'")
    raw.commit()
    raw.close()
    assert [turn.meta for turn in db.load("nb", "default")] == [{}]


def test_notebooks_and_chats_are_isolated(db: SQLiteStore) -> None:
    exchange(db, "a", "A", notebook="one.ipynb")
    exchange(db, "b", "B", notebook="two.ipynb")
    exchange(db, "c", "C", notebook="one.ipynb", chat="side")
    assert [t.content for t in db.load("one.ipynb", "default")] == ["a", "A"]
    assert [t.content for t in db.load("two.ipynb", "default")] == ["b", "B"]
    assert [c.name for c in db.chats("one.ipynb")] == ["side", "default"]
    assert [c.turns for c in db.chats("one.ipynb")] == [2, 2]


def test_rerun_cell_replaces_its_exchange(db: SQLiteStore) -> None:
    exchange(db, "q1", "first answer", cell="cell-1")
    exchange(db, "q2", "other", cell="cell-2")
    exchange(db, "q1 again", "second answer", cell="cell-1")
    assert [t.content for t in db.load("nb.ipynb", "default")] == [
        "q2", "other", "q1 again", "second answer",
    ]  # fmt: skip


def test_an_answer_written_after_a_later_exchange_loads_under_its_own_question(
    db: SQLiteStore,
) -> None:
    first, second = Turn("user", "first question"), Turn("user", "second question")
    for turn in (
        first,
        second,
        Turn("assistant", "second answer", reply_to=second.uid),
        Turn("assistant", "first answer", reply_to=first.uid),  # a --bg answer, ended last
    ):
        db.add("nb.ipynb", "default", turn)
    assert [t.content for t in db.load("nb.ipynb", "default")] == [
        "first question", "first answer", "second question", "second answer",
    ]  # fmt: skip


def test_load_limit_gives_the_newest(db: SQLiteStore) -> None:
    for i in range(10):
        exchange(db, f"q{i}", f"a{i}")
    assert [t.content for t in db.load("nb.ipynb", "default", limit=3)] == ["a8", "q9", "a9"]


def test_reset_says_how_many(db: SQLiteStore) -> None:
    exchange(db, "a", "A", chat="x")
    exchange(db, "b", "B", chat="y")
    db.add("nb.ipynb", "x", Turn("assistant", "pic", images=(StoredImage("image/png", PNG, ""),)))
    assert db.reset("nb.ipynb", "x") == 3
    assert db.reset("nb.ipynb") == 2
    assert db.load("nb.ipynb", "y") == []


def _writer(path: str, name: str, count: int) -> None:
    store = SQLiteStore(path)
    for i in range(count):
        store.add("shared.ipynb", "default", Turn("user", f"{name}-{i}"))
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    SQLiteStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, f"w{n}", 150)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = SQLiteStore(path)
    contents = {t.content for t in store.load("shared.ipynb", "default")}
    store.close()
    assert contents == {f"w{n}-{i}" for n in range(3) for i in range(150)}


def test_corrupt_file_is_moved_aside_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database at all" * 100)
    store = SQLiteStore(path)
    assert store.notice is not None
    assert "moved aside" in store.notice
    (aside,) = tmp_path.glob("history.db.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    store.add("nb", "default", Turn("user", "fresh"))
    assert [t.content for t in store.load("nb", "default")] == ["fresh"]
    store.close()


def test_window_trims_and_marks_cut_off_answers() -> None:
    turns = [
        Turn("user", "q1"), Turn("assistant", "a1"),
        Turn("user", "q2"), Turn("assistant", "", status="error"),  # failed, no text: left out
        Turn("user", "q3"), Turn("assistant", "partial", status="stopped"),
        Turn("user", "q4"),  # killed before its answer was written
        Turn("user", "q5"), Turn("assistant", "a5"),
    ]  # fmt: skip
    assert window(turns, 20) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "partial" + CUT_OFF_NOTE},
        {"role": "user", "content": "q5"},
        {"role": "assistant", "content": "a5"},
    ]
    assert [m["content"] for m in window(turns, 3)] == ["q5", "a5"]  # starts at a user turn
    assert window(turns, 0) == []


def test_export_json_round_trips(db: SQLiteStore) -> None:
    exchange(db, "q", "a")
    fox = StoredImage("image/png", PNG, "a fox")
    db.add("nb.ipynb", "default", Turn("assistant", "[1 picture]", model="flux", images=(fox,)))
    turns = db.load("nb.ipynb", "default")
    assert turns_from_json(to_json(turns, notebook="nb.ipynb", chat="default")) == turns


def test_export_markdown_writes_pictures_beside(tmp_path: Path) -> None:
    fox = StoredImage("image/png", PNG, "a fox")
    turns = [Turn("user", "draw"), Turn("assistant", "[1 picture]", model="flux", images=(fox,))]
    files = to_markdown(turns, chat="default", path=tmp_path / "chat.md")
    text = files[tmp_path / "chat.md"].decode()
    assert "## You\n\ndraw" in text
    assert "![a fox](chat_files/turn2-1.png)" in text
    assert files[tmp_path / "chat_files" / "turn2-1.png"] == PNG


def _open_in_lockstep(folder: str, races: int, barrier: Any, results: Any) -> None:
    for race in range(races):
        barrier.wait()  # both processes open the same new file at the same moment
        try:
            SQLiteStore(Path(folder) / f"race{race}.db").close()
            results.put("ok")
        except Exception as error:
            results.put(f"{type(error).__name__}: {error}")


def test_two_kernels_opening_a_new_file_at_once_both_succeed(tmp_path: Path) -> None:
    # SQLite answers one of two simultaneous WAL switches "database is locked" at once, with no
    # busy wait; before the retry about half of such opens failed (and a kernel lost its history
    # to an in-memory fallback).
    context = multiprocessing.get_context("spawn")
    races = 30
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_open_in_lockstep, args=(str(tmp_path), races, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in range(2 * races)]
    for worker in workers:
        worker.join(30)
    assert outcomes == ["ok"] * (2 * races)


def test_a_turn_is_one_transaction_a_failed_picture_leaves_the_cells_old_exchange(
    tmp_path: Path, db: SQLiteStore
) -> None:
    exchange(db, "v1", "the first answer", cell="c1")
    # The re-run's prompt deletes the cell's old exchange; its picture cannot be inserted (no
    # MIME type). All of it is one transaction: the file must still hold the old exchange.
    broken = Turn(
        "user",
        "v2",
        cell_id="c1",
        images=(StoredImage(None, PNG, "x"),),  # type: ignore[arg-type]
    )
    unsaved = db.add("nb.ipynb", "default", broken, replace_cell=True)
    assert unsaved is not None  # said, not raised
    raw = sqlite3.connect(tmp_path / "history.db")
    rows = raw.execute("SELECT role, content FROM turns ORDER BY id").fetchall()
    raw.close()
    assert rows == [("user", "v1"), ("assistant", "the first answer")]
