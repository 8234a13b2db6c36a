"""What a saved notebook holds of one long answer: a 20,000-token ``%%amigo`` answer in a real
kernel (nbclient), written by nbformat as Jupyter saves it, beside ``Markdown(text)`` of the same
text in the same kernel, and beside the text itself.

The answer's bundle is ``text/markdown`` (made safe) and ``text/plain``: the answer twice. Before
issue 14 it also carried ``text/html`` (three times: 387 KB where ``Markdown(text)`` saved 129).
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.common import RATIO, Context, Row, chunks

NAME = "saved"
TITLE = "Saved notebook size of one long answer"


def _saved(nbformat: Any, outputs: list[Any]) -> tuple[int, str]:
    """Bytes ``outputs`` add to a saved one-cell notebook, and that notebook's text."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x", outputs=outputs)]
    full = nbformat.writes(notebook)
    notebook.cells[0].outputs = []
    return len(full.encode()) - len(nbformat.writes(notebook).encode()), full


def _copies(saved: str, answer: str) -> float:
    """How many times the file holds the answer: 200 characters from inside one of its middle
    lines (so markup around paragraphs cannot hide a copy), counted as the JSON spells them."""
    lines = [line for line in answer.split("\n") if len(line) > 240]
    middle = lines[len(lines) // 2]
    window = middle[20:220]
    # the benchmark's answer repeats its words: divide by how often the window is in one copy
    return saved.count(json.dumps(window)[1:-1]) / answer.count(window)


def run(ctx: Context) -> list[Row]:
    import nbformat
    from nbclient import NotebookClient

    n = 500 if ctx.quick else 20_000
    ours: list[float] = []
    markdown: list[float] = []
    text: list[float] = []
    copies: list[float] = []
    for turn in range(ctx.repeat):
        ctx.log(f"saved: repeat {turn + 1}/{ctx.repeat} ({n:,}-token answer)")
        ctx.server.enqueue(n=n)
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        notebook.cells = [
            nbformat.v4.new_code_cell(
                f"%load_ext amigo_magic\n%config AmigoMagics.base_url = {ctx.server.amigo_url!r}"
            ),
            nbformat.v4.new_code_cell(f"%%amigo --no-history -o answer\nanswer in {n} chunks"),
            nbformat.v4.new_code_cell("from IPython.display import Markdown\nMarkdown(answer)"),
            nbformat.v4.new_code_cell("print(len(answer.encode()))"),
        ]
        client = NotebookClient(
            notebook, timeout=600, resources={"metadata": {"path": str(ctx.workdir)}}
        )
        client.execute()
        answer_outputs = notebook.cells[1].outputs
        if f"{n} tokens" not in answer_outputs[-1]["data"]["text/plain"]:
            raise RuntimeError("the answer did not arrive whole")
        size, saved = _saved(nbformat, answer_outputs)
        length = notebook.cells[3].outputs[0]["text"]
        answer = "".join(chunks(n)).strip()  # what the server sent
        ours.append(size)
        markdown.append(_saved(nbformat, notebook.cells[2].outputs)[0])
        text.append(int(length))
        copies.append(_copies(saved, answer))
    label = f"{n:,}-token answer"
    return [
        Row(NAME, f"{label}: its text", [t / 1024 for t in text], "KiB"),
        Row(NAME, f"{label}: saved, %%amigo", [b / 1024 for b in ours], "KiB"),
        Row(NAME, f"{label}: saved, Markdown(text)", [b / 1024 for b in markdown], "KiB"),
        Row(NAME, f"{label}: copies of it in the saved file", copies, "copies", ("<=", 2)),
        Row(
            NAME,
            f"{label}: saved %%amigo ÷ its text",
            [b / t for b, t in zip(ours, text, strict=True)],
            RATIO,
        ),
        Row(
            NAME,
            f"{label}: saved %%amigo ÷ saved Markdown(text)",
            [b / m for b, m in zip(ours, markdown, strict=True)],
            RATIO,
        ),
    ]
