"""The OpenAI-compatible backend against a real llama.cpp server (SmolLM2 on 127.0.0.1): the
server xllamacpp's prebuilt wheel embeds, so nothing compiles.

Nothing here asserts what the tiny model says, only the shape of what the user sees.
"""

from __future__ import annotations

import itertools
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from amigo_magic.backends.local import default_model_path
from tests.kernel import running_kernel

KEY = "llama-test-key-7d2c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# llama.cpp's own server, as xllamacpp (a prebuilt wheel) embeds it: started in a process of its
# own, it serves until terminated.
SERVE = """
import os, sys, threading
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the local backend does
import xllamacpp
params = xllamacpp.CommonParams()
params.model.path, params.port, params.api_keys = sys.argv[1], int(sys.argv[2]), [sys.argv[3]]
params.model_alias, params.n_ctx, params.n_parallel = {"smollm2"}, 512, 1
server = xllamacpp.Server(params)
print("listening on", server.listening_address, flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's server (xllamacpp's) serving SmolLM2 with a 512-token context and a key."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(default_model_path()), str(port), KEY],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                headers = {"authorization": f"Bearer {KEY}"}
                if httpx.get(f"{url}/models", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama.cpp server did not start:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_KEY", KEY)
    monkeypatch.setenv("WRONG_KEY", "not-the-key")


def test_cells_against_llama_cpp(llama_url: str, keys: None, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(source)
        for source in (
            "%load_ext amigo_magic",
            f"%amigo endpoint add llama {llama_url} --key-env LLAMA_KEY",
            f"%amigo endpoint add wrong {llama_url} --key-env WRONG_KEY",
            "%%amigo -m llama:smollm2 --max-tokens 24\nSay hello in five words.",
            "%amigo models",
            "%%amigo -m wrong:smollm2\nhello",
            "%%amigo -m llama:smollm2 --no-history\n" + "apple banana cherry " * 300,
        )
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    (answer,) = nb.cells[3].outputs
    assert answer.output_type == "display_data"
    assert answer.metadata["amigo"]["model"] == "llama:smollm2"
    assert answer.metadata["amigo"]["phase"] == "done"
    assert answer.data["text/plain"].split("\n\nllama:smollm2 · ")[0].strip()  # some text came
    listing = nb.cells[4].outputs[-1].data["text/plain"]
    assert "llama:smollm2" in listing
    assert "live" in listing
    (denied,) = nb.cells[5].outputs
    assert denied.ename == "AuthenticationError"
    assert len(denied.traceback) == 1
    assert "endpoint 'wrong' refused the credentials (401" in denied.traceback[0]
    (overflow,) = nb.cells[6].outputs
    assert overflow.ename == "BadRequestError"
    assert len(overflow.traceback) == 1
    assert "context window" in overflow.traceback[0]
    saved = nbformat.writes(nb)
    assert KEY not in saved
    assert "not-the-key" not in saved


def test_tokens_stream_from_llama_cpp(llama_url: str, keys: None, tmp_path: Path) -> None:
    with running_kernel(str(tmp_path)) as kernel:
        assert kernel.execute("%load_ext amigo_magic").status == "ok"
        add = kernel.execute(f"%amigo endpoint add llama {llama_url} --key-env LLAMA_KEY")
        assert add.status == "ok"
        assert kernel.execute("%config AmigoMagics.throttle = 0.01").status == "ok"
        run = kernel.execute("%%amigo -m llama:smollm2 --max-tokens 120\nTell a short story.")
        assert run.status == "ok"
        texts = [d["content"]["data"]["text/plain"] for d in run.displays]
        answers = [t.split("\n\nllama:smollm2")[0] for t in texts if "thinking" not in t]
        growing = [a for a in answers if a.strip()]
        assert len(set(growing)) >= 3, texts  # the answer grew on screen as tokens came
        assert all(len(b) >= len(a) for a, b in itertools.pairwise(growing))
        state: dict[str, float] = {}

        def interrupt(message: dict[str, Any]) -> None:
            text = message["content"].get("data", {}).get("text/plain", "")
            if len(text.split("\n\nllama:smollm2")[0]) > 40 and not state:
                state["at"] = time.monotonic()
                kernel.interrupt()

        stopped = kernel.execute(
            "%%amigo -m llama:smollm2 --max-tokens 400 --chat counting -t 0\n"
            "Count from 1 to 300, one number per line.",
            on_message=interrupt,
        )
        assert state
        assert time.monotonic() - state["at"] < 1.5  # Stop closes the stream at once
        assert stopped.reply["content"]["ename"] == "AnswerStopped"
    db = sqlite3.connect(tmp_path / "amigo-home" / "history.db")
    rows = db.execute(
        "SELECT status, length(content) FROM turns"
        " WHERE role = 'assistant' AND model = 'llama:smollm2' ORDER BY id"
    ).fetchall()
    db.close()
    assert [status for status, _ in rows] == ["complete", "stopped"]
    assert rows[1][1] > 40  # the stopped answer's text is kept
