"""The magics in a real ipykernel: notebooks through nbclient, and message-level checks."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel, running_kernel

KEY = "sk-amigo-test-5f1e9c0d2b7a4e8f"
ANSWER = "# Lists\n\n" + " ".join(f"item{i}" for i in range(300)) + "\n\n**done**"


def notebook(*cells: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def execute(nb: Any, path: Path, *, allow_errors: bool = False) -> Any:
    client = NotebookClient(
        nb, timeout=60, kernel_name="python3", allow_errors=allow_errors,
        resources={"metadata": {"path": str(path)}},
    )  # fmt: skip
    client.execute()
    return nb


@pytest.fixture
def keyed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AmigoServer]:
    """A server that wants the key; the kernel gets it (and the URL) from its environment."""
    with AmigoServer(api_key=KEY) as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_API_KEY", KEY)
        yield server


def test_notebook_end_to_end(keyed_server: AmigoServer, tmp_path: Path) -> None:
    server = keyed_server
    words = ANSWER.split(" ")
    server.enqueue(Reply.stream(chunks=[w + " " for w in words[:-1]] + [words[-1]], delay=0.002))
    nb = notebook(
        "%load_ext amigo_magic",
        "%%amigo --model claude\nSummarise lists",
        "%%amigo\nAnd tuples?",
        "%amigo_image a lighthouse at dusk",
        "%amigo config",
    )
    execute(nb, tmp_path)
    answer_cell = nb.cells[1]
    (output,) = answer_cell.outputs  # one output per answer, whatever the token count
    assert output.output_type == "display_data"
    assert output.data["text/markdown"].startswith(ANSWER)
    assert "text/html" not in output.data  # the front end renders the markdown itself
    assert output.data["text/plain"].startswith(ANSWER)
    meta = output.metadata["amigo"]
    assert (meta["model"], meta["phase"]) == ("claude-3-5-sonnet-20241022", "done")
    # cell 2 continued cell 1's conversation
    chats = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    assert chats[0]["model"] == "claude-3-5-sonnet-20241022"
    assert chats[0]["personaId"] == "clude-claude-3-5-sonnet-20241022"
    assert [m["role"] for m in chats[1]["messages"]] == ["user", "assistant", "user"]
    assert chats[1]["messages"][1]["content"] == ANSWER
    # the picture is the PNG the server served, bytes and all
    (picture,) = nb.cells[3].outputs
    (fetched,) = [r.path for r in server.requests if r.path.startswith("/files/")]
    assert base64.b64decode(picture.data["image/png"]) == server.images[fetched]
    # the key went on the wire, and nowhere into the notebook
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests
               if r.path.startswith("/v1/"))  # fmt: skip
    assert KEY not in nbformat.writes(nb)
    assert "from AMIGO_API_KEY" in nb.cells[4].outputs[0].data["text/plain"]


def test_errors_are_one_line_in_the_notebook(keyed_server: AmigoServer, tmp_path: Path) -> None:
    keyed_server.enqueue(Reply.error(429, "Too many requests", retry_after="120"))
    nb = notebook("%load_ext amigo_magic", "%%amigo\nhello", "%%amigo -m nope\nhello")
    execute(nb, tmp_path, allow_errors=True)
    (rate,) = nb.cells[1].outputs
    assert rate.output_type == "error"
    assert rate.ename == "RateLimitError"
    assert len(rate.traceback) == 1
    assert "wait 120 s and run it again" in rate.traceback[0]
    (unknown,) = nb.cells[2].outputs
    assert unknown.ename == "UnknownModelError"
    assert len(unknown.traceback) == 1
    assert KEY not in nbformat.writes(nb)


def test_display_messages_are_bounded_by_the_throttle(kernel: Kernel, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["tok "] * 5000, delay=0.0003))
    start = time.monotonic()
    run = kernel.execute("%%amigo\nstream fast")
    seconds = time.monotonic() - start
    assert run.status == "ok"
    displays = run.displays
    assert displays[-1]["content"]["data"]["text/plain"].startswith("tok " * 4999 + "tok")
    assert len({d["content"]["transient"]["display_id"] for d in displays}) == 1
    # 5000 tokens, yet at most ~20 updates a second (throttle 0.05 s) plus first and last
    assert len(displays) <= seconds * 20 + 4, (len(displays), seconds)


def test_interrupt_keeps_partial_text_and_the_kernel_runs_on(
    kernel: Kernel, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(1000)], delay=0.01))
    state: dict[str, float] = {}

    def interrupt_after_text(message: dict[str, Any]) -> None:
        data = message["content"].get("data", {})
        if "interrupted" not in state and "w20 " in data.get("text/plain", ""):
            state["interrupted"] = time.monotonic()
            kernel.interrupt()

    run = kernel.execute("%%amigo\nlong answer", on_message=interrupt_after_text)
    stopped_after = time.monotonic() - state["interrupted"]
    assert stopped_after < 1.0  # a fraction of a second, not the 10 s the answer would take
    assert run.status == "error"
    assert run.reply["content"]["ename"] == "AnswerStopped"
    final = run.displays[-1]["content"]
    assert final["data"]["text/plain"].startswith("w0 w1 w2 ")
    assert "w999" not in final["data"]["text/plain"]
    assert "stopped" in final["data"]["text/plain"]
    assert final["metadata"]["amigo"]["phase"] == "stopped"
    # one stop message, the status line: no error box, yet the cell failed (Run All stops)
    assert run.of_type("error") == []
    assert final["data"]["text/plain"].count("stopped") == 1
    # the kernel is usable, and history holds the stopped answer
    history = kernel.execute("h = %amigo history\nprint(repr(h))")
    assert history.status == "ok"
    assert "(stopped)" in history.stream_text
    after = kernel.execute("%%amigo\nnext")
    assert after.status == "ok"
    assert after.displays[-1]["content"]["data"]["text/plain"].startswith("Echo: next")


def test_format_code_puts_the_code_in_the_next_cell(kernel: Kernel, server: AmigoServer) -> None:
    server.enqueue(Reply.stream("Sure:\n\n```python\nimport math\nprint(math.pi)\n```\n"))
    run = kernel.execute("%%amigo -f code\nprint pi")
    assert run.status == "ok"
    (payload,) = run.reply["content"]["payload"]
    assert payload["source"] == "set_next_input"
    assert payload["text"] == "import math\nprint(math.pi)"
    assert payload["replace"] is False


def test_load_ext_imports_nothing_heavy(tmp_path: Path) -> None:
    # Checked in the cell that loads: once it has finished, the warm-up imports the HTTP stack
    # in the background on purpose (tests/test_warm_up.py).
    heavy = ("httpx", "ipywidgets", "markdown_it", "nh3", "amigo_magic.session")
    with running_kernel(str(tmp_path)) as kernel:
        run = kernel.execute(
            "%load_ext amigo_magic\n"
            f"import sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
        )
    assert run.status == "ok"
    assert run.stream_text.strip() == "[]"
