"""The panel's context controls: recent cells and picked variables go with a panel prompt through
the cell's own builder — on the wire, in the status line, in the transcript — with the
extension's shell, a real session and the loopback server."""

from __future__ import annotations

import base64
import html
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest

from amigo_magic import ChatPanel
from amigo_magic.panel_context import variable_names
from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell, wait_until

matplotlib.use("agg")
import matplotlib.pyplot as plt


def chats(server: AmigoServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def status(panel: ChatPanel) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status_line.value))


@pytest.fixture
def panel(ip: TestingShell) -> Iterator[ChatPanel]:
    session = ip.magics_manager.registry["AmigoMagics"].session
    made = ChatPanel(session=session)
    yield made
    made.close()


def send(panel: ChatPanel, prompt: str) -> None:
    panel.prompt.value = prompt
    panel.send_button.click()
    wait_until(lambda: not panel.send_button.disabled, "the panel's answer")


def test_the_controls_sit_under_the_prompt_and_list_the_users_variables(
    ip: TestingShell, panel: ChatPanel
) -> None:
    children = list(panel.children)
    assert children[children.index(panel.prompt) - 1] is panel.context.box  # just above it
    assert "amigo-context" in panel.context.box._dom_classes
    ip.run_cell("import os\nsales = [1, 2, 3]\n_private = 1\nlimit = 10")
    panel.context.box.selected_index = 0  # opening the section lists the variables now
    names = [name for _, name in panel.context.variables.options]
    assert "sales" in names
    assert "limit" in names
    assert "os" not in names  # modules, private and IPython's own names are not offered
    assert "_private" not in names
    assert "In" not in names
    assert "Err" not in names  # {Err[7]} is written, not picked whole
    assert ("sales · list", "sales") in panel.context.variables.options
    assert variable_names({"get_ipython": 1, "x": 2}, {}) == [("x · int", "x")]


def test_picked_variables_and_recent_cells_go_as_the_cells_would_send_them(
    ip: TestingShell, panel: ChatPanel, server: AmigoServer
) -> None:
    ip.user_ns["orders"] = pd.DataFrame({"id": np.arange(5000), "amount": np.linspace(1, 9, 5000)})
    ip.run_cell("print('checked', len(orders))")
    panel.context.refresh()
    panel.context.variables.value = ("orders",)
    panel.context.cells.value = 1
    assert panel.context.box.get_title(0) == "Context: 1 variable, 1 cell"
    server.enqueue(Reply.stream(chunks=["Two columns."]))
    send(panel, "What is in it?")
    (chat,) = chats(server)
    sent = chat["messages"][-1]["content"]
    assert sent.startswith("The notebook's last cell before this one, with its output:")
    assert "print('checked', len(orders))" in sent
    assert "checked 5000" in sent
    assert "What is in it?\n\npandas.DataFrame: 5,000 rows, 2 columns" in sent
    assert "… 4,990 more rows" in sent
    assert "context: 1 object, 1 cell · ~" in status(panel)
    # the same prompt from a cell sends the same text (one builder)
    server.enqueue(Reply.stream(chunks=["Same."]))
    ip.run_cell("%%amigo --cells 1 --dry-run\nWhat is in it?\n\n{orders}")
    preview = ip.run_cell("%%amigo --cells 2 --dry-run\nWhat is in it?\n\n{orders}").result
    assert "pandas.DataFrame: 5,000 rows, 2 columns" in preview.messages[-1]["content"]
    # a picked variable the prompt already names as {orders} is not added again; one it only
    # reaches into ({orders.amount}) still goes whole, once
    server.enqueue(Reply.stream(chunks=["Once."]))
    panel.context.cells.value = 0
    send(panel, "Sum of {orders.amount}?")
    again = chats(server)[-1]["messages"][-1]["content"]
    assert again.count("pandas.DataFrame") == 1
    assert again.startswith("Sum of \npandas.Series 'amount'")
    server.enqueue(Reply.stream(chunks=["Once more."]))
    send(panel, "Rows of {orders}?")
    assert chats(server)[-1]["messages"][-1]["content"].count("pandas.DataFrame") == 1


def test_a_picked_figure_goes_as_a_picture_and_shows_in_the_transcript(
    ip: TestingShell, panel: ChatPanel, server: AmigoServer
) -> None:
    import ipywidgets as widgets

    fig, ax = plt.subplots()
    ax.plot([1, 3, 2])
    ip.user_ns["fig"] = fig
    try:
        panel.context.refresh()
        panel.context.variables.value = ("fig",)
        server.enqueue(Reply.stream(chunks=["A peak in the middle."]))
        send(panel, "Describe the chart")
    finally:
        plt.close(fig)
    (chat,) = chats(server)
    text, part = chat["messages"][-1]["content"]
    assert text["text"] == "Describe the chart\n\n[picture 1: {fig}, attached]"
    data = base64.b64decode(part["image_url"]["url"].partition(",")[2])
    assert data.startswith(b"\x89PNG")
    asked = panel.turn_boxes[-2]
    (picture,) = asked.children[2:]  # after the header and the text's Output widget
    assert isinstance(picture, widgets.Image)
    assert picture.value == data
    assert "context: 1 picture · ~" in status(panel)


def test_a_text_only_model_with_a_picked_figure_is_one_line_in_the_status(
    ip: TestingShell, panel: ChatPanel, server: AmigoServer
) -> None:
    fig = plt.figure()
    ip.user_ns["fig"] = fig
    try:
        panel.context.refresh()
        panel.context.variables.value = ("fig",)
        panel.model_picker.value = "Qwen/Qwen2.5-72B-Instruct-Turbo"
        panel.prompt.value = "Describe it"
        panel.send_button.click()
    finally:
        plt.close(fig)
    assert "reads text only, and this prompt has 1 picture ({fig})" in status(panel)
    assert 'class="amigo-error"' in panel.status_line.value
    assert not panel.send_button.disabled
    assert panel.prompt.value == "Describe it"  # nothing lost
    assert chats(server) == []


def test_without_a_kernel_the_controls_are_off() -> None:
    code = (
        "from amigo_magic.panel_context import ContextControls\n"
        "c = ContextControls()\n"
        "print(c.cells.disabled, c.variables.disabled, c.box.get_title(0))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "True True Context (needs the notebook's kernel)"
