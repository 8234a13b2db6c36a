"""The README's worked example in JupyterLab: a dataframe and a chart asked about — the dry run
shows the frame's view and the picture, the answer's request carries both (the chart as a PNG
image part), the status line says so. Also makes ``docs/images/context.png``.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image as PILImage
from playwright.sync_api import Page, expect

from tests.amigo_server import AmigoServer, Reply
from tests.browser import Lab

pytest_plugins = ["tests.browser"]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "context.png"

FRAME = """\
import numpy as np, pandas as pd
rng = np.random.default_rng(7)
n = 10_000
sales = pd.DataFrame({
    "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
    "amount": rng.gamma(2.0, 60.0, n).round(2),
    "units": rng.integers(1, 9, n),
    "placed": pd.date_range("2024-01-01", periods=n, freq="h"),
})"""

CHART = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 2.4))
sales.groupby("region").amount.sum().sort_values().plot.barh(ax=ax, title="Revenue by region");"""

QUESTION = (
    "Which region brings in the most revenue, and does the chart agree with the table?\n"
    "{sales}\n{fig}"
)

# The stand-in server's answer (scripted: no model runs here); what is sent is real.
ANSWER = (
    "**North**, by the chart: its bar is the longest (about 480k), then south, east and west. "
    "The table cannot confirm totals — it shows 10 of its 10,000 rows — but north is the most "
    "common region in that sample, which fits."
)


def test_a_frame_and_a_chart_asked_about_in_jupyterlab(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(ANSWER, delay=0.02))
    lab.write_notebook(
        "context",
        [
            "%load_ext amigo_magic",
            FRAME,
            CHART,
            f"%%amigo --dry-run\n{QUESTION}",
            f"%%amigo\n{QUESTION}",
        ],
    )
    notebook = lab.open(page, "context")
    if page.locator("#jp-left-stack").is_visible():
        notebook.command("application:toggle-left-area")
    notebook.run_all()
    notebook.wait_executed(0, 1, 2, 3, 4)

    chart = notebook.outputs(2).locator("img")
    expect(chart).to_have_count(1)
    preview = notebook.output_text(3)
    assert preview.startswith("Dry run, nothing sent: gpt-4o-mini would get 1 message")
    assert "context: 1 object, 1 picture" in preview.splitlines()[0]
    assert "pandas.DataFrame: 10,000 rows, 4 columns" in preview
    assert "[picture 1: {fig}, attached]" in preview
    assert "[image part 1: {fig}: PNG " in preview
    answer = notebook.outputs(4)
    expect(answer.locator("strong")).to_have_text("North")
    status = answer.locator(".amigo-status")
    expect(status).to_contain_text("context: 1 object, 1 picture")

    (chat,) = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    text, picture = chat["messages"][-1]["content"]
    assert "region  str" in text["text"]
    assert "… 9,990 more rows" in text["text"]
    head, _, data = picture["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64"
    with PILImage.open(io.BytesIO(base64.b64decode(data))) as sent:
        assert sent.format == "PNG"
        assert max(sent.size) <= 1024

    notebook.save()
    notebook.cell(0).locator(".jp-InputPrompt").click()
    page.mouse.move(1270, 890)
    if os.environ.get("UPDATE_DOCS_IMAGES"):  # README pictures are refreshed on request only
        # the lab scrolls inside its notebook panel: a window tall enough shows every cell
        outer = notebook.panel.locator(".jp-WindowedPanel-outer")
        height = outer.evaluate("(el) => el.scrollHeight - el.clientHeight")
        page.set_viewport_size({"width": 1280, "height": 900 + int(height) + 16})
        page.mouse.move(1270, 10)
        outer.evaluate("(el) => el.scrollTo(0, 0)")
        box = notebook.cell(4).bounding_box()
        assert box is not None
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        bottom = box["y"] + box["height"] + 24
        page.screenshot(path=SCREENSHOT, clip={"x": 0, "y": 0, "width": 1280, "height": bottom})


PANEL_SCREENSHOT = SCREENSHOT.with_name("panel-context.png")


def test_the_panel_sends_picked_variables_and_recent_cells(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    from tests.test_browser_panel import Panel

    server.enqueue(Reply.stream(ANSWER, delay=0.02))
    lab.write_notebook(
        "panel-context",
        ["%load_ext amigo_magic", FRAME, CHART, "print(len(sales), 'orders')", "%amigo_panel"],
    )
    notebook = lab.open(page, "panel-context")
    if page.locator("#jp-left-stack").is_visible():
        notebook.command("application:toggle-left-area")
    notebook.run_all()
    notebook.wait_executed(0, 1, 2, 3, 4)
    panel = Panel(notebook, 4)
    expect(panel.root).to_be_visible()
    section = panel.root.locator(".amigo-context")
    section.get_by_text("Context", exact=True).click()  # opening it lists the variables
    variables = section.locator(".amigo-context-variables select")
    expect(variables).to_be_visible()
    expect(variables.locator("option")).to_contain_text(["ax · Axes", "fig · Figure"])
    variables.select_option(label=["fig · Figure", "sales · DataFrame"])
    section.locator(".amigo-context-cells select").select_option(label="the last cell")
    expect(section).to_contain_text("Context: 2 variables, 1 cell")
    panel.ask("Which region brings in the most revenue?")
    expect(panel.newest().locator("strong")).to_have_text("North")
    panel.wait_idle()

    (chat,) = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    text, picture = chat["messages"][-1]["content"]
    assert "print(len(sales), 'orders')" in text["text"]
    assert "10000 orders" in text["text"]
    assert "pandas.DataFrame: 10,000 rows, 4 columns" in text["text"]
    assert "[picture 1: {fig}, attached]" in text["text"]
    assert picture["image_url"]["url"].startswith("data:image/png;base64,")
    expect(panel.newest("user").locator("img")).to_have_count(1)  # the prompt's picture
    expect(panel.status).to_contain_text("context: 1 object, 1 cell, 1 picture")
    if os.environ.get("UPDATE_DOCS_IMAGES"):
        page.set_viewport_size({"width": 1280, "height": 1600})  # the whole panel in view
        page.mouse.move(1270, 10)
        panel.root.screenshot(path=PANEL_SCREENSHOT)
