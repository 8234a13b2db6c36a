"""The saved answer as nbconvert exports it (``jupyter nbconvert --to html``): the same bundle a
cell shows, rendered by nbconvert's own markdown pipeline — code highlighted, math kept intact
for MathJax, hostile markup inert."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbconvert import HTMLExporter

from amigo_magic.render import AnswerState, answer_bundle
from tests.test_browser import PAYLOADS, RICH_ANSWER
from tests.test_render import assert_inert_html


def exported(text: str) -> str:
    """The HTML ``nbconvert --to html`` writes for a notebook holding this answer's output."""
    state = AnswerState(text=text, model="m", chat="c", phase="done", seconds=1.0, tokens=9)
    data, metadata = answer_bundle(state)
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%%amigo\nask")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
    notebook.cells = [cell]
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    start = body.index('<div class="jp-Cell-outputWrapper"')
    return body[start : body.index("</main>", start)]


def test_the_rich_answer_exports_highlighted_with_its_math_intact() -> None:
    html = exported(RICH_ANSWER)
    assert '<div class="highlight"' in html  # pygments highlighted the Python block
    assert re.search(r'<span class="k">def</span>', html), html[:2000]
    assert r"$\int_0^1 x^2\,dx = \frac{1}{3}$" in html  # as written, for MathJax to typeset
    assert r"\begin{pmatrix} 1 &amp; 2 \\ 3 &amp; 4 \end{pmatrix}" in html
    assert r"$\{1, 2\}$" in html
    assert "<table>" in html
    assert 'class="amigo-status"' in html


@pytest.mark.parametrize("payload", PAYLOADS.split("\n"))
def test_hostile_markup_exports_inert(payload: str) -> None:
    html = exported(payload)
    output = html[html.index("jp-RenderedMarkdown") :]
    assert_inert_html(output.split(">", 1)[1])  # no script, handler, frame or unsafe link
