"""Durable history through real kernels and a real SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel, running_kernel


@pytest.fixture(autouse=True)
def _wired(server: AmigoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)


def db_path() -> Path:
    return Path(os.environ["AMIGO_HOME"]) / "history.db"


def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path())
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def run_notebook(tmp_path: Path, *cells: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext amigo_magic", *cells)]
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    return nb


def sent(server: AmigoServer) -> list[list[str]]:
    return [
        [m["content"] for m in r.json["messages"]]
        for r in server.requests
        if r.path == "/v1/chat/completions"
    ]


def test_history_survives_a_kernel_restart_and_notebooks_are_isolated(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "analysis.ipynb")
    run_notebook(tmp_path, "%%amigo\nfirst question")
    run_notebook(tmp_path, "%%amigo\nafter restart")  # a new kernel, the same notebook
    monkeypatch.setenv("JPY_SESSION_NAME", "other.ipynb")
    run_notebook(tmp_path, "%%amigo\nanother notebook")
    assert sent(server) == [
        ["first question"],
        ["first question", "Echo: first question", "after restart"],
        ["another notebook"],
    ]
    notebooks = rows("SELECT DISTINCT notebook FROM turns ORDER BY notebook")
    assert notebooks == [("analysis.ipynb",), ("other.ipynb",)]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("JPY_SESSION_NAME", "cells.ipynb")
    with running_kernel(str(tmp_path)) as k:
        assert k.execute("%load_ext amigo_magic").status == "ok"
        yield k


def test_rerun_cell_replaces_its_turn(kernel: Kernel, server: AmigoServer) -> None:
    assert kernel.execute("%%amigo\nq1", cell_id="cell-a").status == "ok"
    assert kernel.execute("%%amigo\nq2", cell_id="cell-b").status == "ok"
    assert kernel.execute("%%amigo\nq1 reworded", cell_id="cell-a").status == "ok"
    assert kernel.execute("%%amigo\nq3", cell_id="cell-c").status == "ok"
    last = sent(server)[-1]
    assert last == ["q2", "Echo: q2", "q1 reworded", "Echo: q1 reworded", "q3"]
    assert sent(server)[2] == ["q2", "Echo: q2", "q1 reworded"]  # the re-run saw no old self
    cells = rows("SELECT cell_id, COUNT(*) FROM turns GROUP BY cell_id ORDER BY cell_id")
    assert cells == [("cell-a", 2), ("cell-b", 2), ("cell-c", 2)]


def test_stopped_answer_is_stored_as_stopped(kernel: Kernel, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(500)], delay=0.01))
    state: dict[str, bool] = {}

    def interrupt(message: dict[str, Any]) -> None:
        text = message["content"].get("data", {}).get("text/plain", "")
        if "w5 " in text and not state:
            state["sent"] = True
            kernel.interrupt()

    assert kernel.execute("%%amigo\nlong", on_message=interrupt).status == "error"
    ((status, content),) = rows("SELECT status, content FROM turns WHERE role = 'assistant'")
    assert status == "stopped"
    assert content.startswith("w0 w1 w2 w3 w4 w5 ")
    assert "w499" not in content


def test_two_kernels_writing_one_chat_lose_no_turn(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "shared.ipynb")
    with running_kernel(str(tmp_path)) as one, running_kernel(str(tmp_path)) as two:
        for k in (one, two):
            assert k.execute("%load_ext amigo_magic").status == "ok"

        for i in range(15):  # both kernels answer at the same time, each writing its turns
            pending = [(k, k.submit(f"%%amigo --no-history\n{n} {i}")) for k, n in
                       ((one, "one"), (two, "two"))]  # fmt: skip
            for k, msg_id in pending:
                assert k.wait(msg_id).status == "ok"
    prompts = {r[0] for r in rows("SELECT content FROM turns WHERE role = 'user'")}
    assert prompts == {f"{n} {i}" for n in ("one", "two") for i in range(15)}
    assert rows("SELECT COUNT(*) FROM turns WHERE role = 'assistant'") == [(30,)]


def test_sigkill_mid_answer_keeps_every_earlier_turn(kernel: Kernel, server: AmigoServer) -> None:
    assert kernel.execute("%%amigo\nbefore the crash").status == "ok"
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(2000)], delay=0.01))
    state: dict[str, bool] = {}

    def kill(message: dict[str, Any]) -> None:
        text = message["content"].get("data", {}).get("text/plain", "")
        if "w10 " in text and not state:
            state["killed"] = True
            os.kill(kernel.km.provisioner.process.pid, signal.SIGKILL)  # type: ignore[union-attr]

    with pytest.raises(TimeoutError):
        kernel.execute("%%amigo\ncrash during this", on_message=kill, timeout=5)
    assert state
    deadline = time.monotonic() + 10
    while kernel.km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows("PRAGMA integrity_check") == [("ok",)]
    assert rows("SELECT role, content FROM turns ORDER BY id") == [
        ("user", "before the crash"),
        ("assistant", "Echo: before the crash"),
        ("user", "crash during this"),  # written when it was sent
    ]


def test_two_kernels_answering_at_once_pair_each_answer_with_its_question(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prompt A, then prompt B from a second kernel of the same notebook before A's answer; B's
    # answer lands first. Before answers named their prompt, the next request paired them wrongly
    # (or dropped A's exchange).
    monkeypatch.setenv("JPY_SESSION_NAME", "shared.ipynb")
    with running_kernel(str(tmp_path)) as one, running_kernel(str(tmp_path)) as two:
        for k in (one, two):
            assert k.execute("%load_ext amigo_magic").status == "ok"
        server.enqueue(Reply.stream(stall_before=1.5), Reply.stream())
        first = one.submit("%%amigo\nquestion A")
        deadline = time.monotonic() + 10
        while not sent(server) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert two.execute("%%amigo\nquestion B").status == "ok"  # done while A still waits
        assert one.wait(first).status == "ok"
        assert two.execute("%%amigo\nquestion C").status == "ok"
    assert rows("SELECT content FROM turns WHERE role = 'assistant' ORDER BY id") == [
        ("Echo: question B",), ("Echo: question A",), ("Echo: question C",),
    ]  # fmt: skip
    assert sent(server)[-1] == [
        "question A", "Echo: question A", "question B", "Echo: question B", "question C",
    ]  # fmt: skip
