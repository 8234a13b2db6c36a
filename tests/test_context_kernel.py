"""The notebook as context in a real kernel (nbclient), asserted on what reached the wire."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

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


CHART = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(df["placed"][:500], df["amount"][:500])
ax.set_title("amount over the first 500 orders")
plt.close(fig)
"""


def image_parts(message: dict[str, Any]) -> list[bytes]:
    """The pictures of one user message, decoded from their data URLs."""
    found = []
    for part in message["content"]:
        if part["type"] == "image_url":
            head, _, data = part["image_url"]["url"].partition(",")
            assert head == "data:image/png;base64"
            found.append(base64.b64decode(data))
    return found


def assert_png(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.verify()  # the whole file decodes: a valid PNG
        return image.size


def test_fig_sends_one_image_part_whose_data_is_a_valid_png(
    wired: AmigoServer, tmp_path: Path
) -> None:
    wired.enqueue(Reply.stream(chunks=["The amount rises steadily."]))
    nb = notebook("%load_ext amigo_magic", FRAME, CHART, "%%amigo\nWhat does {fig} show?")
    execute(nb, tmp_path)
    (chat,) = chats(wired)
    user = chat["messages"][-1]
    text, _ = user["content"]
    assert text == {"type": "text", "text": "What does [picture 1: {fig}, attached] show?"}
    (data,) = image_parts(user)
    width, height = assert_png(data)
    assert max(width, height) <= 1024
    status = nb.cells[3].outputs[0].data["text/plain"].splitlines()[-1]
    assert "context: 1 picture · ~" in status


def test_cells_2_sends_the_cells_pictures_too(wired: AmigoServer, tmp_path: Path) -> None:
    wired.enqueue(Reply.stream(chunks=["A rising line."]))
    nb = notebook(
        "%load_ext amigo_magic",
        FRAME,
        "import matplotlib.pyplot as plt\nprint('plotting', len(df))\n"
        "plt.plot(df['order_id'][:100], df['amount'][:100]); plt.title('first 100')",
        "float(df['amount'].mean())",
        "%%amigo --cells 2\nDoes the chart agree with the mean?",
    )
    execute(nb, tmp_path)
    (chat,) = chats(wired)
    user = chat["messages"][-1]
    text = user["content"][0]["text"]
    assert "In [3]:\nimport matplotlib.pyplot as plt\nprint('plotting', len(df))" in text
    assert "plotting 10000" in text
    assert "[picture 1: shown by In [3], attached]" in text
    assert "In [4]:\nfloat(df['amount'].mean())\nOut [4]:\nresult: 250.5" in text
    assert "order_id = np.arange" not in text  # the frame's cell is three back
    (data,) = image_parts(user)
    shown = nb.cells[2].outputs[-1].data["image/png"]  # what the notebook itself shows
    assert data == base64.b64decode(shown)
    assert_png(data)
    status = nb.cells[4].outputs[0].data["text/plain"].splitlines()[-1]
    assert "context: 2 cells, 1 picture · ~" in status


def test_a_text_only_model_with_fig_fails_in_one_line_with_nothing_sent(
    wired: AmigoServer, tmp_path: Path
) -> None:
    nb = notebook(
        "%load_ext amigo_magic",
        FRAME,
        CHART,
        "%%amigo -m qwen\nWhat does {fig} show?",
        "%amigo history",
    )
    execute(nb, tmp_path, allow_errors=True)
    assert chats(wired) == []
    (error,) = nb.cells[3].outputs
    assert error.output_type == "error"
    assert error.ename == "ConfigError"
    assert error.evalue == (
        "'Qwen/Qwen2.5-72B-Instruct-Turbo' reads text only, and this prompt has 1 picture "
        "({fig}): pick a model that sees pictures (gpt-4o-mini, gpt, claude, gemini, "
        "llama-vision), or leave the picture out."
    )
    assert len(error.traceback) == 1  # one line, no traceback
    assert nb.cells[4].outputs[0].data["text/plain"] == "Chat 'default' is empty."
