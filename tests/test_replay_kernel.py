"""Record and replay through real kernels (nbclient): a notebook run with ``cache=auto`` against
the loopback server, then re-run in a fresh kernel with the server stopped and ``cache=replay``,
shows the same answers and pictures — from the history database, and from a portable
``AMIGO_CACHE_FILE`` with a fresh ``AMIGO_HOME``; a changed prompt fails in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.amigo_server import AmigoServer

CELLS = (
    "%%amigo\nName a colour.",
    "%%amigo -p seed=7\nAnd another one, please.",  # its history holds the first exchange
    "%amigo_image a lighthouse at dusk",
)


@pytest.fixture
def own_server() -> Any:
    """A server of this test's own, so it can be stopped between the runs."""
    server = AmigoServer().start()
    try:
        yield server
    finally:
        server.stop()


def run(folder: Path, cells: tuple[str, ...]) -> list[dict[str, Any]]:
    """Run a notebook of ``cells`` in a fresh kernel (cwd ``folder``); each cell's outputs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext amigo_magic", *cells)]
    client = NotebookClient(nb, timeout=90, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(folder)}})  # fmt: skip
    client.execute()
    return [{"outputs": cell.outputs} for cell in nb.cells[1:]]


def answers(cells: list[dict[str, Any]]) -> list[Any]:
    """What each cell shows: an answer's text (its status line aside), a picture's bytes."""
    shown: list[Any] = []
    for cell in cells:
        for output in cell["outputs"]:
            data = output.get("data", {})
            if "image/png" in data:
                shown.append(("picture", data["image/png"]))
            elif output.get("output_type") == "error":
                shown.append(("error", output["ename"], output["evalue"]))
            elif "text/plain" in data and "text/markdown" in data:
                text, _, status = data["text/plain"].rpartition("\n\n")
                shown.append(("answer", text, status))
    return shown


def chat_and_image_requests(server: AmigoServer) -> int:
    return sum(r.path.startswith("/v1/") for r in server.requests)


def test_a_recorded_notebook_replays_from_the_history_with_the_server_stopped(
    own_server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", own_server.base_url)
    monkeypatch.setenv("AMIGO_CACHE", "auto")
    first = answers(run(tmp_path, CELLS))
    assert [kind for kind, *_ in first] == ["answer", "answer", "picture"]
    assert first[0][1] == "Echo: Name a colour."
    sent = chat_and_image_requests(own_server)
    assert sent == 3  # two answers, one picture
    seed = [r.json for r in own_server.requests if r.path == "/v1/chat/completions"][1]["seed"]
    assert seed == 7
    own_server.stop()

    monkeypatch.setenv("AMIGO_CACHE", "replay")
    second = answers(run(tmp_path, CELLS))
    assert [s[:2] for s in second] == [f[:2] for f in first]  # the same text, the same bytes
    assert "replayed · recorded 20" in second[0][2]
    assert "replayed" not in first[0][2]
    assert chat_and_image_requests(own_server) == sent  # nothing reached the server


def test_a_cache_file_replays_with_a_fresh_home_and_a_changed_prompt_fails_in_one_line(
    own_server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", own_server.base_url)
    monkeypatch.setenv("AMIGO_HOME", str(tmp_path / "home-1"))
    monkeypatch.setenv("AMIGO_CACHE", "auto")
    monkeypatch.setenv("AMIGO_CACHE_FILE", "answers.jsonl")  # beside the notebook
    first = answers(run(tmp_path, CELLS))
    assert (tmp_path / "answers.jsonl").is_file()
    sent = chat_and_image_requests(own_server)
    own_server.stop()

    monkeypatch.setenv("AMIGO_HOME", str(tmp_path / "home-2"))  # CI: a fresh home, no network
    monkeypatch.setenv("AMIGO_CACHE", "replay")
    second = answers(run(tmp_path, CELLS))
    assert [s[:2] for s in second] == [f[:2] for f in first]
    assert chat_and_image_requests(own_server) == sent

    changed = (CELLS[0].replace("colour", "number"), *CELLS[1:])
    third = answers(run(tmp_path, changed))
    kind, name, message = third[0]
    assert (kind, name) == ("error", "ReplayMissError")
    assert "\n" not in message
    assert message.startswith(
        "No recorded answer for this request (AmigoMagics.cache = 'replay', nothing sent): the "
        "prompt differs ('Name a colour.' recorded, now 'Name a number.')"
    )
    assert chat_and_image_requests(own_server) == sent


def test_a_notebook_that_resets_first_replays_in_its_own_history(
    own_server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "analysis.ipynb")  # one history across the runs
    monkeypatch.setenv("AMIGO_BASE_URL", own_server.base_url)
    monkeypatch.setenv("AMIGO_CACHE", "auto")
    cells = ("%amigo reset --all", *CELLS[:2])
    first = answers(run(tmp_path, cells))
    sent = chat_and_image_requests(own_server)
    monkeypatch.setenv("AMIGO_CACHE", "replay")
    second = answers(run(tmp_path, cells))
    assert [s[:2] for s in second] == [f[:2] for f in first]
    assert chat_and_image_requests(own_server) == sent
