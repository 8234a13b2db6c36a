"""Load: 200 ``%%amigo`` cells in one real kernel leak no connection, thread or file descriptor.

The kernel counts its own resources before and after (after a warm-up cell has started the
background loop and opened the pooled keep-alive connection): open file descriptors, threads,
and its TCP sockets connected to the loopback server (``/proc/self/net/tcp*`` rows whose inode is
one of the kernel's own socket descriptors, in any state, so a half-closed leak counts too).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.amigo_server import AmigoServer
from tests.kernel import Kernel, running_kernel

CELLS = 200

# Defined in the kernel once; each probe prints the counts as JSON.
COUNTERS = """
import json as _json, os as _os, threading as _threading

def _amigo_counts(port):
    sockets = set()
    for fd in _os.listdir("/proc/self/fd"):
        try:
            target = _os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    connections = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    connections += remote_port == port and fields[9] in sockets
        except FileNotFoundError:
            continue
    return {
        "fds": len(_os.listdir("/proc/self/fd")),
        "threads": _threading.active_count(),
        "connections": connections,
    }
"""


@pytest.fixture
def server() -> Iterator[AmigoServer]:
    """A server of this test's own: no other test's connections to count."""
    with AmigoServer() as server:
        yield server


@pytest.fixture
def kernel(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Kernel]:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    monkeypatch.setenv("JPY_SESSION_NAME", "load.ipynb")
    with running_kernel(str(tmp_path)) as k:
        assert k.execute("%load_ext amigo_magic\n" + COUNTERS).status == "ok"
        yield k


def counts(kernel: Kernel, server: AmigoServer) -> dict[str, Any]:
    run = kernel.execute(f"print(_json.dumps(_amigo_counts({server.origin.rsplit(':', 1)[1]})))")
    assert run.status == "ok", run.reply["content"]
    return dict(json.loads(run.stream_text))


def ask(kernel: Kernel, prompt: str) -> str:
    run = kernel.execute(f"%%amigo -c load\n{prompt}")
    assert run.status == "ok", run.reply["content"]
    return str(run.displays[-1]["content"]["data"]["text/plain"])


def test_200_cells_leak_nothing(kernel: Kernel, server: AmigoServer) -> None:
    assert ask(kernel, "warm up").startswith("Echo: warm up")
    before = counts(kernel, server)
    assert before["connections"] <= 1  # the pooled keep-alive connection

    start = time.monotonic()
    for i in range(CELLS):
        shown = ask(kernel, f"question {i}")
        assert shown.startswith(f"Echo: question {i}\n"), shown
    seconds = time.monotonic() - start

    after = counts(kernel, server)
    # Nothing grows with the number of cells; a constant of one is allowed for each count
    # (the pool may have replaced its keep-alive connection, the executor may add a thread).
    assert after["connections"] <= 1, (before, after)
    assert after["fds"] <= before["fds"] + 1, (before, after)
    assert after["threads"] <= before["threads"] + 1, (before, after)
    assert server.active_streams == 0
    chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == CELLS + 1  # one request a cell: nothing retried, nothing lost
    db = sqlite3.connect(Path(os.environ["AMIGO_HOME"]) / "history.db")
    try:
        (turns,) = db.execute("SELECT count(*) FROM turns WHERE chat = 'load'").fetchone()
    finally:
        db.close()
    assert turns == 2 * (CELLS + 1)
    print(f"{CELLS} cells in {seconds:.1f} s; before {before}, after {after}")
