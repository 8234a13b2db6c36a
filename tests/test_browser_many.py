"""``%%amigo --bg`` as a user sees it in JupyterLab: the answer keeps streaming into the first
cell's output while later cells run, and ends there whole — also when no cell runs after it."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.amigo_server import AmigoServer, Reply
from tests.browser import Lab

pytest_plugins = ["tests.browser"]

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel"


def test_a_background_answer_lands_in_its_own_cell(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(WORDS, delay=0.3), Reply.stream(WORDS.upper(), delay=0.3))
    lab.write_notebook(
        "background",
        [
            "%load_ext amigo_magic",
            "%%amigo --bg -o ans\nSpell eight words slowly.",
            "print('meanwhile', 'ans' in globals())",
            "%amigo wait",
            "print(ans)",
            "%%amigo --bg\nAnd louder.",
        ],
    )
    notebook = lab.open(page, "background")
    notebook.run_all()
    notebook.wait_executed(0, 1, 2, 3, 4, 5)
    assert "meanwhile False" in notebook.output_text(2)
    assert WORDS in notebook.output_text(4)
    notebook.wait_output(1, "hotel")  # the whole answer, in the cell that asked
    assert notebook.output_text(2).strip() == "meanwhile False"  # nothing leaked into others
    assert "alpha" not in notebook.output_text(3)
    # The last cell: nothing runs after it, and its answer still ends whole in it.
    notebook.wait_output(5, "HOTEL")
