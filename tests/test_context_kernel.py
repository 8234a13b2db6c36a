"""The notebook as context in a real kernel (nbclient), asserted on what reached the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.amigo_server import AmigoServer, Reply
from tests.test_kernel import execute, notebook

FRAME = """\
import numpy as np, pandas as pd
n = 10_000
df = pd.DataFrame({
    "order_id": np.arange(n),
    "amount": np.linspace(1.0, 500.0, n),
    "customer": [f"cust{i:05d}" for i in range(n)],
    "placed": pd.date_range("2024-01-01", periods=n, freq="min"),
    "units": (np.arange(n) % 9).astype("int32"),
})
"""

DESCRIBED = """\
class Sales:
    def _repr_llm_(self):
        return "Sales ledger: 3 regions, totals 10, 20, 30"
    def __str__(self):
        return "<Sales object>"
sales = Sales()
"""


@pytest.fixture
def wired(server: AmigoServer, monkeypatch: pytest.MonkeyPatch) -> AmigoServer:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    return server


def chats(server: AmigoServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_a_frame_and_a_described_object_go_as_their_views(
    wired: AmigoServer, tmp_path: Path
) -> None:
    wired.enqueue(Reply.stream(chunks=["It holds orders."]))
    wired.enqueue(Reply.stream(chunks=["Three regions."]))
    nb = notebook(
        "%load_ext amigo_magic",
        FRAME,
        DESCRIBED,
        "%%amigo --no-history\nWhat is in {df}?",
        "%%amigo --no-history\nSummarise {sales}",
    )
    execute(nb, tmp_path)
    first, second = chats(wired)
    sent = first["messages"][-1]["content"]
    assert "10,000 rows, 5 columns" in sent
    for column, dtype in [("order_id", "int64"), ("amount", "float64"), ("customer", ""),
                          ("placed", "datetime64"), ("units", "int32")]:  # fmt: skip
        line = next(ln for ln in sent.splitlines() if ln.strip().startswith(column + " "))
        assert dtype in line, line
    assert "… 9,990 more rows" in sent
    assert "cust05000" not in sent  # not the 10,000 rows
    assert len(sent) // 4 <= 2000  # within the default budget (tokens, estimated)
    assert second["messages"][-1]["content"] == (
        "Summarise Sales ledger: 3 regions, totals 10, 20, 30"
    )
    status = nb.cells[3].outputs[0].data["text/plain"].splitlines()[-1]
    assert "context: 1 object · ~" in status


def test_dry_run_sends_nothing_and_shows_what_would_go(wired: AmigoServer, tmp_path: Path) -> None:
    nb = notebook(
        "%load_ext amigo_magic",
        FRAME,
        "%%amigo --dry-run -s 'Answer in one line.'\nHow many rows has {df}?",
        "%amigo history",
    )
    execute(nb, tmp_path)
    assert chats(wired) == []  # nothing on the wire
    (shown,) = nb.cells[2].outputs
    text = shown.data["text/plain"]
    assert text.startswith("Dry run, nothing sent: gpt-4o-mini would get 2 messages, ~")
    assert "tokens (estimated) · context: 1 object" in text.splitlines()[0]
    assert "── system · ~" in text
    assert "Answer in one line." in text
    assert "How many rows has \npandas.DataFrame: 10,000 rows, 5 columns" in text
    assert nb.cells[3].outputs[0].data["text/plain"] == "Chat 'default' is empty."  # nothing kept


def test_cells_2_sends_the_two_previous_cells_and_their_outputs(
    wired: AmigoServer, tmp_path: Path
) -> None:
    wired.enqueue(Reply.stream(chunks=["The mean is 2."]))
    nb = notebook(
        "%load_ext amigo_magic",
        "print('too early')",
        "values = [1, 2, 3]\nprint('loaded', len(values))\nsum(values) / len(values)",
        "from IPython.display import display\ndisplay({'text/plain': 'a summary table'}, raw=True)"
        "\nvalues[10]",
        "%%amigo --cells 2\nWhy does the last cell fail?",
    )
    execute(nb, tmp_path, allow_errors=True)
    (chat,) = chats(wired)
    sent = chat["messages"][-1]["content"]
    assert sent.startswith("The notebook's last 2 cells before this one, with their output:")
    assert "In [3]:\nvalues = [1, 2, 3]\nprint('loaded', len(values))" in sent
    assert "Out [3]:\nloaded 3\nresult: 2.0" in sent
    assert "In [4]:\nfrom IPython.display import display" in sent
    assert "a summary table" in sent
    assert "IndexError: list index out of range" in sent
    assert "too early" not in sent
    assert sent.endswith("Why does the last cell fail?")
    status = nb.cells[4].outputs[0].data["text/plain"].splitlines()[-1]
    assert "context: 2 cells · ~" in status
