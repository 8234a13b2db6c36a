"""A turn is never lost to the history file: locks held by another program, a file deleted under
the kernel, a full disk, a file of a newer schema, answers that finish out of order, a reset while
an answer streams, and ``--no-history`` exchanges kept out of later windows (issue 11).

Every case runs on a real SQLite file (a real tmpfs for the full disk, when run as root), through
the in-process shell or a real session, against the loopback server.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amigo_magic.config import Settings
from amigo_magic.history import HistoryBusyError, Turn, window
from amigo_magic.runner import close_runner, get_runner
from amigo_magic.session import AskOptions, ChatSession
from amigo_magic.store import SQLiteStore
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Published, Recorder, TestingShell, wait_until

NOTEBOOK = "durable.ipynb"


# -- helpers ---------------------------------------------------------------------------------


def home() -> Path:
    return Path(os.environ["AMIGO_HOME"])


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def chat_requests(server: AmigoServer) -> list[list[dict[str, str]]]:
    return [r.json["messages"] for r in server.requests if r.path == "/v1/chat/completions"]


@contextmanager
def shell(server: AmigoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestingShell]:
    """The in-process shell with the extension loaded (a "kernel"; unloading ends it)."""
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    monkeypatch.setenv("JPY_SESSION_NAME", NOTEBOOK)
    ip = TestingShell.instance()
    ip.display_pub = Recorder()
    ip.run_cell("%load_ext amigo_magic")
    ip.run_cell("%config AmigoMagics.throttle = 0.05")
    try:
        yield ip
    finally:
        ip.run_cell("%unload_ext amigo_magic")


def shown(ip: TestingShell) -> list[str]:
    """Every text the user saw, in order (the last state of each display)."""
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    last: dict[object, Published] = {}
    for index, item in enumerate(pub.displays):
        last[item.display_id or index] = item
    return [item.data.get("text/plain", "") for item in last.values()]


def fresh(ip: TestingShell) -> None:
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    pub.calls.clear()


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the file's write lock (``BEGIN IMMEDIATE``) until the block ends."""
    script = (
        "import sqlite3, sys\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "db.execute('COMMIT')\n"
        "print('released', flush=True)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield holder
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(10)


@pytest.fixture
def session(server: AmigoServer) -> Iterator[Callable[[Path], ChatSession]]:
    """Sessions (one per "kernel") on stores at given paths, on one loop thread."""
    stores: list[SQLiteStore] = []

    def make(path: Path) -> ChatSession:
        store = SQLiteStore(path)
        stores.append(store)
        return ChatSession(store=store, notebook=NOTEBOOK, runner=get_runner())

    yield make
    close_runner()
    for store in stores:
        store.close()


# -- 6: a lock held past the busy timeout ------------------------------------------------------


def test_a_held_lock_defers_turns_and_writes_them_in_order_when_it_frees(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore(path)
    store.add(NOTEBOOK, "default", Turn("user", "before"))
    with lock_held_elsewhere(path):
        prompt = Turn("user", "during the lock")
        answer = Turn("assistant", "answered anyway", reply_to=prompt.uid)
        start = time.monotonic()
        said = [store.add(NOTEBOOK, "default", t) for t in (prompt, answer)]
        waited = time.monotonic() - start
        assert waited < 1.2  # not the 10 s busy timeout: ≤ 0.5 s, then held back
        assert said[0] is not None
        assert "not saved to history yet" in said[0]
        assert "another program is holding" in said[0]
        # a read meanwhile sees what this kernel knows, held turns included, in order
        assert [t.content for t in store.load(NOTEBOOK, "default")] == [
            "before", "during the lock", "answered anyway",
        ]  # fmt: skip
        assert rows(path, "SELECT content FROM turns") == [("before",)]
    wait_until(lambda: len(rows(path, "SELECT id FROM turns")) == 3, "the held turns")
    assert rows(path, "SELECT role, content FROM turns ORDER BY id") == [
        ("user", "before"), ("user", "during the lock"), ("assistant", "answered anyway"),
    ]  # fmt: skip
    assert any("now saved" in n for n in store.take_notices())
    store.close()


def test_a_recording_under_a_held_lock_is_held_replayed_and_written_later(tmp_path: Path) -> None:
    from amigo_magic.cache import DatabaseRecordings, Recording

    path = tmp_path / "history.db"
    SQLiteStore(path).close()  # the file with its recordings table
    recordings = DatabaseRecordings(path)
    request = {"kind": "chat", "target": "amigo", "model": "m", "format": "markdown",
               "params": {}, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    recording = Recording("k1", request, text="recorded during the lock")
    with lock_held_elsewhere(path):
        start = time.monotonic()
        recordings.record(recording)
        assert time.monotonic() - start < 1.0  # not the 5 s busy timeout
        assert any("held in memory" in n for n in recordings.notices)
        found = recordings.lookup("k1")  # replayed from memory meanwhile
        assert found is not None
        assert found.text == "recorded during the lock"
        assert rows(path, "SELECT key FROM recordings") == []
    assert recordings.lookup("k1") is not None  # the next call writes it
    assert rows(path, "SELECT key FROM recordings") == [("k1",)]
    recordings.close()


def test_a_cell_rerun_under_a_held_lock_replaces_its_exchange_once_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore(path)
    first = Turn("user", "v1", cell_id="c1")
    store.add(NOTEBOOK, "default", first, replace_cell=True)
    store.add(NOTEBOOK, "default", Turn("assistant", "a1", cell_id="c1", reply_to=first.uid))
    with lock_held_elsewhere(path):
        again = Turn("user", "v2", cell_id="c1")
        assert store.add(NOTEBOOK, "default", again, replace_cell=True) is not None
        store.add(NOTEBOOK, "default", Turn("assistant", "a2", cell_id="c1", reply_to=again.uid))
        # the re-run's earlier exchange is not offered as context while it waits
        assert [t.content for t in store.load(NOTEBOOK, "default")] == ["v2", "a2"]
    wait_until(lambda: rows(path, "SELECT content FROM turns ORDER BY id") == [("v2",), ("a2",)],
               "the re-run to replace its exchange")  # fmt: skip
    store.close()


def test_a_reset_under_a_held_lock_says_so_in_one_line_and_removes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore(path)
    store.add(NOTEBOOK, "default", Turn("user", "kept"))
    with lock_held_elsewhere(path):
        with pytest.raises(HistoryBusyError) as raised:
            store.reset(NOTEBOOK)
        (line,) = raised.value._render_traceback_()
        assert "nothing was removed" in line
    assert store.reset(NOTEBOOK) == 1  # once the lock is free
    store.close()


def test_cells_under_a_held_lock_answer_at_once_and_lose_nothing(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home() / "history.db"
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nfirst")
        with lock_held_elsewhere(path):
            fresh(ip)
            start = time.monotonic()
            ip.run_cell("%%amigo\nsecond, under the lock")
            ip.run_cell("%%amigo\nthird, under the lock")
            seconds = time.monotonic() - start
            seen = shown(ip)
            assert seconds < 4  # two cells; each write waits ≤ 0.5 s, not 10 s
            answers = [s for s in seen if s.startswith("Echo:")]
            assert [a.split("\n")[0] for a in answers] == [
                "Echo: second, under the lock", "Echo: third, under the lock",
            ]  # fmt: skip
            assert all("not saved to history yet" in a for a in answers)
            assert not any("database is locked" in s or "Traceback" in s for s in seen)
            assert any(s.startswith("⚠ History is not being saved right now") for s in seen)
            # the third cell's window holds the second exchange, known only to this kernel
            assert chat_requests(server)[-1][-3:] == [
                {"role": "user", "content": "second, under the lock"},
                {"role": "assistant", "content": "Echo: second, under the lock"},
                {"role": "user", "content": "third, under the lock"},
            ]
        wait_until(lambda: len(rows(path, "SELECT id FROM turns")) == 6, "the held turns")
        assert rows(path, "SELECT content FROM turns ORDER BY id") == [
            ("first",), ("Echo: first",),
            ("second, under the lock",), ("Echo: second, under the lock",),
            ("third, under the lock",), ("Echo: third, under the lock",),
        ]  # fmt: skip


# -- 7: the file deleted while the kernel runs -------------------------------------------------


def test_a_deleted_history_file_is_noticed_and_a_new_one_kept(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home() / "history.db"
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nbefore the delete")
        path.unlink()  # `rm history.db` while the kernel runs (its -wal and -shm stay)
        fresh(ip)
        ip.run_cell("%%amigo\nafter the delete")
        seen = shown(ip)
        notices = [s for s in seen if "was deleted while this kernel ran" in s]
        assert len(notices) == 1
        assert "\n" not in notices[0]
        assert "a new one was started" in notices[0]
        assert path.exists()
    assert rows(path, "SELECT content FROM turns ORDER BY id") == [
        ("after the delete",), ("Echo: after the delete",),
    ]  # fmt: skip
    with shell(server, monkeypatch) as ip:  # a restart: the new file is the history
        ip.run_cell("%%amigo\nafter the restart")
    assert chat_requests(server)[-1] == [
        {"role": "user", "content": "after the delete"},
        {"role": "assistant", "content": "Echo: after the delete"},
        {"role": "user", "content": "after the restart"},
    ]


# -- 8: two answers streaming into one chat at once --------------------------------------------


@pytest.mark.parametrize(
    ("stall_a", "stall_b", "kernels"),
    [(1.0, 0.0, 1), (0.4, 1.0, 1), (1.0, 0.0, 2), (0.4, 1.0, 2)],
    ids=["B-first-one-kernel", "A-first-one-kernel", "B-first-two-kernels", "A-first-two-kernels"],
)
def test_answers_finishing_out_of_order_pair_with_their_own_questions(
    server: AmigoServer,
    session: Callable[[Path], ChatSession],
    tmp_path: Path,
    stall_a: float,
    stall_b: float,
    kernels: int,
) -> None:
    path = tmp_path / "history.db"
    one = session(path)
    two = session(path) if kernels == 2 else one  # a second kernel, or the panel and a cell
    settings_ = Settings(base_url=server.base_url)
    server.enqueue(Reply.stream(stall_before=stall_a), Reply.stream(stall_before=stall_b))
    a = one.ask("question A", AskOptions(), settings_)
    wait_until(lambda: len(chat_requests(server)) == 1, "A's request")  # A's reply is A's
    b = two.ask("question B", AskOptions(), settings_)
    assert a.wait(10)
    assert b.wait(10)
    one.ask("question C", AskOptions(), settings_).wait(10)
    assert chat_requests(server)[-1] == [
        {"role": "user", "content": "question A"},
        {"role": "assistant", "content": "Echo: question A"},
        {"role": "user", "content": "question B"},
        {"role": "assistant", "content": "Echo: question B"},
        {"role": "user", "content": "question C"},
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=8).flatmap(
        lambda flags: st.tuples(st.just(flags), st.permutations(range(len(flags))))
    ),
    st.integers(min_value=0, max_value=20),
)
def test_window_pairs_every_answer_with_its_prompt_in_any_finishing_order(
    case: tuple[list[bool], list[int]], max_turns: int
) -> None:
    no_history, finishing = case
    prompts = [Turn("user", f"q{i}", no_history=flag) for i, flag in enumerate(no_history)]
    answers = [Turn("assistant", f"a{i}", reply_to=prompts[i].uid) for i in finishing]
    # every prompt was sent before any answer came back; answers land in any order
    messages = window([*prompts, *answers], max_turns)
    expected: list[dict[str, str]] = []
    for i, flag in enumerate(no_history):
        if not flag:
            expected += [{"role": "user", "content": f"q{i}"}]
            expected += [{"role": "assistant", "content": f"a{i}"}]
    kept = expected[-max_turns:] if max_turns else []
    if kept and kept[0]["role"] == "assistant":
        kept = kept[1:]
    assert messages == kept


# -- 9: a history file of a newer schema ---------------------------------------------------------


def _newer_file(path: Path) -> None:
    SQLiteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("ALTER TABLE turns ADD COLUMN future_field TEXT")
    db.execute(
        "INSERT INTO turns (notebook, chat, role, content, created, future_field) "
        f"VALUES ('{NOTEBOOK}', 'default', 'user', 'written by the newer version', 1, 'x')"
    )
    db.execute("PRAGMA user_version = 7")
    db.close()


def test_a_newer_schema_file_is_never_written_and_the_kernel_keeps_answering(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home() / "history.db"
    path.parent.mkdir(parents=True)
    _newer_file(path)
    before = rows(path, "SELECT * FROM turns")
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nfirst")
        ip.run_cell("%amigo_image a lighthouse")
        ip.run_cell("%%amigo\nsecond")
        seen = shown(ip)
        notices = [s for s in seen if "newer amigo_magic" in s]
        assert len(notices) == 1
        assert "\n" not in notices[0]
        assert "schema version 7" in notices[0]
        assert "Upgrade amigo_magic" in notices[0]
        assert any(s.startswith("Echo: second") for s in seen)
        # answering goes on in memory: the second cell was sent the first exchange
        assert chat_requests(server)[-1][:2] == [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Echo: first"},
        ]
        said = repr(ip.run_cell("%amigo reset --all").result)
        assert said == "Removed 6 turns from every chat of this notebook."  # this kernel's own
    assert rows(path, "PRAGMA user_version") == [(7,)]
    assert rows(path, "SELECT * FROM turns") == before  # nothing written, nothing deleted


def test_a_file_a_newer_version_migrates_meanwhile_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore(path)
    q1 = Turn("user", "q1")
    for turn in (q1, Turn("assistant", "a1", reply_to=q1.uid)):
        store.add(NOTEBOOK, "default", turn)
    assert len(store.load(NOTEBOOK, "default")) == 2
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA user_version = 9")  # a newer kernel upgraded the file meanwhile
    db.close()
    q2 = Turn("user", "q2")
    for turn in (q2, Turn("assistant", "a2", reply_to=q2.uid)):
        assert store.add(NOTEBOOK, "default", turn) is None
    (notice,) = store.take_notices()
    assert "newer amigo_magic (schema version 9" in notice
    assert [t.content for t in store.load(NOTEBOOK, "default")] == ["q1", "a1", "q2", "a2"]
    assert store.reset(NOTEBOOK) == 4  # this kernel's memory, not the file
    store.close()
    assert rows(path, "SELECT content FROM turns ORDER BY id") == [("q1",), ("a1",)]


# -- 10: a full disk ---------------------------------------------------------------------------


def test_a_full_database_holds_the_turn_and_writes_it_when_there_is_room(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore(path)
    store.add(NOTEBOOK, "default", Turn("user", "small"))
    (pages,) = rows(path, "PRAGMA page_count")[0]
    # SQLite's own limit gives the real "database or disk is full" a full disk gives
    store._db.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = Turn("user", "x" * 200_000)
    said = store.add(NOTEBOOK, "default", big)
    assert said is not None
    assert "the disk is full" in said
    assert "\n" not in said
    assert [t.content[:5] for t in store.load(NOTEBOOK, "default")] == ["small", "xxxxx"]
    store._db.execute("PRAGMA max_page_count = 1073741823")  # room again
    wait_until(lambda: len(rows(path, "SELECT id FROM turns")) == 2, "the held turn")
    assert rows(path, "SELECT length(content) FROM turns ORDER BY id") == [(5,), (200_000,)]
    store.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 200 KB tmpfs (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the disk at ``folder`` to the last byte."""
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_still_answers_with_a_one_line_warning(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tiny_disk: Path
) -> None:
    monkeypatch.setenv("AMIGO_HOME", str(tiny_disk / "amigo"))
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nbefore the disk filled")
        filler = _fill(tiny_disk)
        fresh(ip)
        ip.run_cell("%%amigo\n" + "a long prompt " * 1_500)  # 21 KB
        seen = shown(ip)
        (answer,) = [s for s in seen if s.startswith("Echo: a long prompt")]
        assert "the disk is full" in answer.splitlines()[-1]
        assert "not saved to history" in answer.splitlines()[-1]
        assert not any("Traceback" in s for s in seen)
        filler.unlink()  # room again: the held turns are written
        db = tiny_disk / "amigo" / "history.db"
        wait_until(lambda: len(rows(db, "SELECT id FROM turns")) == 4, "the held turns")
    _fill(tiny_disk)
    with shell(server, monkeypatch) as ip:  # a fresh kernel on the full directory
        ip.run_cell("%%amigo\na fresh kernel")
        seen = shown(ip)
        assert any(s.startswith("Echo: a fresh kernel") for s in seen)
        assert not any("Traceback" in s for s in seen)


# -- 11: a reset while an answer streams ---------------------------------------------------------


@pytest.mark.parametrize("how", ["reset-all", "another-panel-clear"])
def test_reset_while_the_panel_streams_keeps_that_answer_out(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path = home() / "history.db"
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nearlier")
        panel = ip.run_cell("%amigo_panel").result
        other = ip.run_cell("%amigo_panel").result
        server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(30)], delay=0.03))
        panel.prompt.value = "streams while the chat is reset"
        panel.send_button.click()
        wait_until(lambda: server.active_streams, "the panel's answer to start")
        if how == "reset-all":
            ip.run_cell("%amigo reset --all")
        else:
            other.clear_button.click()
            other.confirm_delete.click()
        assert server.active_streams  # the reset came while the answer was still streaming
        wait_until(lambda: not panel.send_button.disabled, "the panel's answer to end")
        assert rows(path, "SELECT role, content FROM turns") == []
        ip.run_cell("%%amigo\nafter the reset")
    assert chat_requests(server)[-1] == [{"role": "user", "content": "after the reset"}]


def test_an_answer_whose_prompt_is_gone_is_not_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "history.db")
    prompt = Turn("user", "asked")
    store.add(NOTEBOOK, "default", prompt)
    assert store.reset(NOTEBOOK) == 1
    assert store.add(NOTEBOOK, "default", Turn("assistant", "late", reply_to=prompt.uid)) is None
    assert store.load(NOTEBOOK, "default") == []
    store.close()


# -- 18a: --no-history exchanges stay out of later windows ---------------------------------------


def test_a_no_history_prompt_is_not_resent_by_later_cells(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "big " * 500_000  # 2 MB
    with shell(server, monkeypatch) as ip:
        ip.run_cell("%%amigo\nkept in the window")
        server.enqueue(Reply.stream("A short answer to a long prompt."))
        ip.run_cell("%%amigo --no-history\n" + big)
        ip.run_cell("%%amigo\nnext")
    _first, alone, following = (r for r in server.requests if r.path == "/v1/chat/completions")
    assert len(alone.json["messages"]) == 1
    assert following.json["messages"] == [
        {"role": "user", "content": "kept in the window"},
        {"role": "assistant", "content": "Echo: kept in the window"},
        {"role": "user", "content": "next"},
    ]
    assert len(following.body) < 10_000  # the 2 MB prompt was not sent again
    kept = rows(home() / "history.db", "SELECT role, no_history FROM turns ORDER BY id")
    assert kept[2:4] == [("user", 1), ("assistant", 1)]  # still in history, marked


def test_turns_of_the_first_schema_migrate_and_still_pair(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    db = sqlite3.connect(path, isolation_level=None)
    from amigo_magic.store import MIGRATIONS

    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    for role, text in (("user", "old q"), ("assistant", "old a")):
        db.execute(
            "INSERT INTO turns (notebook, chat, role, content, created) VALUES (?, ?, ?, ?, ?)",
            (NOTEBOOK, "default", role, text, time.time()),
        )
    db.close()
    store = SQLiteStore(path)
    old = store.load(NOTEBOOK, "default")
    assert [(t.content, t.uid) for t in old] == [("old q", None), ("old a", None)]
    assert [m["content"] for m in window(old, 10)] == ["old q", "old a"]
    store.close()
    assert rows(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert uuid.UUID(Turn("user", "x").uid or "")  # new turns carry an identity
