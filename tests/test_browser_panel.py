"""The chat panel as a user sees it: JupyterLab in headless Chromium, the loopback server behind.

One lab for the whole story (starting one costs seconds): the panel renders, a model is picked,
Send streams, Stop stops, an image model draws, and a ``%%amigo`` cell in the same notebook
continues the panel's conversation. Also makes the README's ``docs/images/panel.png``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from amigo_magic.panel import model_options
from tests.amigo_server import AmigoServer, Reply
from tests.browser import TIMEOUT, Lab, Notebook
from tests.test_browser import _FINAL_JS, PAYLOADS, RICH_ANSWER

pytest_plugins = ["tests.browser"]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "panel.png"
LABELS = {value: label for label, value in model_options()}
CLAUDE = "claude-3-5-sonnet-20241022"
FLUX = "flux-pro/v1.1"

ANSWER = """\
A **list comprehension** builds a list in one expression:

```python
squares = [n * n for n in range(10) if n % 2 == 0]
```

- **Shorter** than a loop that calls `append`
- **Readable** while it stays one idea
"""
CELL_PROMPT = "And a generator expression, in one line?"


class Panel:
    """The panel in the page, found by its CSS classes."""

    def __init__(self, notebook: Notebook, cell: int) -> None:
        self.notebook = notebook
        self.root = notebook.cell(cell).locator(".amigo-panel")
        self.send = self.root.locator("button.amigo-send")
        self.stop = self.root.locator("button.amigo-stop")
        self.status = self.root.locator(".amigo-status")
        self.transcript = self.root.locator(".amigo-transcript")

    def newest(self, role: str = "assistant") -> Locator:
        """The newest turn of ``role`` (the transcript's DOM lists the newest first)."""
        return self.transcript.locator(f".amigo-turn-{role}").first

    def pick(self, model: str) -> None:
        self.root.locator(".amigo-model select").select_option(value=LABELS[model])

    def ask(self, prompt: str) -> None:
        self.root.locator(".amigo-prompt textarea").fill(prompt)
        self.send.click()

    def body_text(self) -> str:
        return self.newest().locator(".amigo-body").inner_text()

    def wait_idle(self, timeout: float = TIMEOUT) -> None:
        expect(self.send).to_be_enabled(timeout=timeout * 1000)
        expect(self.stop).to_be_disabled()


def _collapse_left_sidebar(notebook: Notebook) -> None:
    if notebook.page.locator("#jp-left-stack").is_visible():
        notebook.command("application:toggle-left-area")
    expect(notebook.page.locator("#jp-left-stack")).to_be_hidden()


def _run_cell(notebook: Notebook, index: int, command: str = "notebook:run-cell") -> None:
    notebook.cell(index).locator(".jp-InputPrompt").click()
    notebook.command(command)


def _watch_stream(panel: Panel) -> list[int]:
    """Poll the newest answer until it is final; the text lengths seen while it streamed."""
    lengths: list[int] = []
    turn = panel.newest()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        # one JS call, so the final render cannot land between the two readings
        live, text = turn.evaluate(
            "(el) => [el.classList.contains('amigo-live'),"
            " el.querySelector('.amigo-body').innerText.trim()]"
        )
        if live and text and (not lengths or lengths[-1] != len(text)):
            lengths.append(len(text))
        if not live and text and panel.send.is_enabled():
            return lengths
        time.sleep(0.03)
    raise panel.notebook.lab.fail(f"the panel's answer never finished: {lengths=}")


def _chat_requests(server: AmigoServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_panel_in_jupyterlab(lab: Lab, page: Page, server: AmigoServer) -> None:
    lab.write_notebook(
        "panel",
        [
            "%load_ext amigo_magic",
            "%amigo_panel --chat demo",
            f"%%amigo --chat demo\n{CELL_PROMPT}",
            "21 * 2",
        ],
    )
    notebook = lab.open(page, "panel")
    _collapse_left_sidebar(notebook)
    _run_cell(notebook, 2, "notebook:run-all-above")  # the extension and the panel, not the cell
    notebook.wait_executed(0, 1)

    # The panel renders: a real widget view, the picker showing the default.
    panel = Panel(notebook, 1)
    expect(panel.root).to_be_visible()
    expect(notebook.outputs(1).filter(has_text="Loading widget")).to_have_count(0)
    picker = panel.root.locator(".amigo-model select")
    expect(picker).to_be_visible()
    expect(picker).to_have_value(LABELS["gpt-4o-mini"])
    expect(panel.stop).to_be_disabled()
    expect(panel.status).to_contain_text("0 turns in chat 'demo'")

    # A model is picked; Send streams the answer into the transcript, then renders markdown.
    server.enqueue(Reply.stream(ANSWER, delay=0.06))
    panel.pick(CLAUDE)
    panel.ask("Explain list comprehensions briefly")
    expect(panel.stop).to_be_enabled()
    lengths = _watch_stream(panel)
    assert len(lengths) >= 3, f"the answer did not visibly stream: lengths seen {lengths}"
    assert lengths[0] < lengths[-1], f"the streamed text did not grow: {lengths}"
    panel.wait_idle()
    answer = panel.newest()
    expect(answer.locator("strong").first).to_have_text("list comprehension")
    expect(answer.locator("pre code")).to_contain_text("squares = [n * n for n in range(10)")
    expect(answer.locator(".amigo-who")).to_have_text(CLAUDE)
    expect(panel.newest("user")).to_contain_text("Explain list comprehensions briefly")
    expect(panel.status).to_contain_text(re.compile(rf"{CLAUDE} · \d+ tokens · [\d.]+ tok/s"))
    assert _chat_requests(server)[0]["model"] == CLAUDE

    # Stop halts a long answer mid-way: the partial text stays, marked stopped.
    server.enqueue(Reply.stream(chunks=[f"word{i} " for i in range(400)], delay=0.03))
    panel.ask("Now write a very long essay")
    expect(panel.newest()).to_have_class(re.compile(r"\bamigo-live\b"), timeout=20_000)
    expect(panel.newest().locator(".amigo-body")).to_contain_text("word5 ", timeout=20_000)
    _run_cell(notebook, 3)  # the kernel is free while the panel streams
    notebook.wait_output(3, "42", timeout=10)
    expect(panel.newest()).to_have_class(re.compile(r"\bamigo-live\b"))  # still streaming
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.mouse.move(1270, 890)
    if os.environ.get("UPDATE_DOCS_IMAGES"):  # README pictures are refreshed on request only
        notebook.cell(1).screenshot(path=SCREENSHOT)  # mid-conversation: an answer streaming
    panel.stop.click()
    panel.wait_idle(timeout=5)
    expect(panel.newest().locator(".amigo-who")).to_contain_text("■ stopped")
    partial = panel.body_text()
    assert partial.startswith("word0 word1 "), partial[:80]
    assert "word399" not in partial, partial[-80:]
    expect(panel.status).to_contain_text("stopped by you")

    # An image model draws a picture into the transcript.
    server.enqueue(Reply.image(size=(480, 270)))
    panel.pick(FLUX)
    panel.ask("a lighthouse at dusk")
    picture = panel.newest().locator("img")
    expect(picture).to_have_count(1)
    expect(picture).to_be_visible()
    width = picture.evaluate("(img) => img.decode().then(() => img.naturalWidth)")
    assert width == 480
    panel.wait_idle()
    expect(panel.status).to_contain_text("1 picture")

    # A %%amigo cell in the same notebook continues the panel's conversation...
    server.enqueue(Reply.stream("Like a list comprehension, but lazy: (n * n for n in xs)."))
    _run_cell(notebook, 2)
    notebook.wait_executed(2)
    notebook.wait_output(2, "but lazy")
    sent = [m["content"] for m in _chat_requests(server)[-1]["messages"]]
    assert sent[0] == "Explain list comprehensions briefly"
    assert sent[1] == ANSWER
    assert sent[2] == "Now write a very long essay"
    assert sent[3].startswith(partial.strip())
    assert "cut off" in sent[3]
    assert sent[-1] == CELL_PROMPT
    # ...and after Refresh the cell's turn is in the panel.
    panel.root.locator("button.amigo-refresh").click()
    expect(panel.newest()).to_contain_text("but lazy")
    expect(panel.newest("user")).to_contain_text(CELL_PROMPT)
    expect(panel.transcript.locator(".amigo-turn")).to_have_count(8)

    # Model output cannot run script in the panel either: hostile markup streams in and stays text.
    assert page.evaluate("window.__pwned") is None
    server.enqueue(Reply.stream(PAYLOADS, delay=0.01))
    panel.pick(CLAUDE)
    panel.ask("Repeat these lines")
    panel.wait_idle()
    hostile = panel.newest()
    expect(hostile.locator("strong")).to_have_text("still bold")  # harmless markdown renders
    for link in hostile.locator("a").all():
        link.click(modifiers=["Control"])  # a javascript: href would run on click
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__pwned") is None, "model output ran script in the panel"
    assert hostile.locator("script, iframe, svg, img, object, embed").count() == 0
    hrefs = hostile.evaluate(
        "(el) => Array.from(el.querySelectorAll('[href]')).map((a) => a.getAttribute('href'))"
    )
    assert not [h for h in hrefs if not h.lower().strip().startswith(("http", "mailto", "#"))]
    handlers = hostile.evaluate(
        "(el) => Array.from(el.querySelectorAll('*'))"
        ".some((n) => n.getAttributeNames().some((a) => a.startsWith('on')))"
    )
    assert handlers is False


# WCAG contrast of an element's text over what is really behind it: the page's computed colours
# (any CSS colour syntax, normalised through a canvas), backgrounds composited from the root down.
_CONTRAST_JS = """(el) => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const rgba = (c) => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = '#000';
    ctx.fillStyle = c;
    ctx.fillRect(0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2], d[3] / 255];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3]));
  const chain = [];
  let opacity = 1;
  for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
    chain.unshift(n);
    opacity *= Number(getComputedStyle(n).opacity);
  }
  let bg = [255, 255, 255];
  for (const n of chain) bg = over(rgba(getComputedStyle(n).backgroundColor), bg);
  const fg = rgba(getComputedStyle(el).color);
  const text = over([fg[0], fg[1], fg[2], fg[3] * opacity], bg);
  const lum = (c) => {
    const [r, g, b] = c.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(text), lum(bg)].sort((x, y) => y - x);
  return Math.round(((a + 0.05) / (b + 0.05)) * 100) / 100;
}"""


def _contrasts(panel: Panel) -> dict[str, float]:
    """Contrast of the text a reader reads in the panel: each bubble's header and text, the
    status line."""
    targets = {
        "you: who": panel.newest("user").locator(".amigo-who"),
        "you: text": panel.newest("user").locator(".jp-RenderedMarkdown p").first,
        "answer: who": panel.newest().locator(".amigo-who"),
        "answer: text": panel.newest().locator(".jp-RenderedMarkdown p").first,
        "answer: table": panel.newest().locator(".jp-RenderedMarkdown td").first,
        "status": panel.status.locator(".widget-html-content"),
    }
    return {name: float(locator.evaluate(_CONTRAST_JS)) for name, locator in targets.items()}


def _set_theme(notebook: Notebook, theme: str, light: bool) -> None:
    notebook.command("apputils:change-theme", {"theme": theme})
    notebook.page.wait_for_function(
        f"() => document.body.dataset.jpThemeLight === '{str(light).lower()}'"
    )
    notebook.page.wait_for_timeout(500)  # the theme's stylesheet applied


def test_panel_renders_like_the_cell_in_both_themes(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    lab.write_notebook("rich-panel", ["%load_ext amigo_magic", "%amigo_panel"])
    notebook = lab.open(page, "rich-panel")
    _collapse_left_sidebar(notebook)
    notebook.run_all()
    notebook.wait_executed(0, 1)
    panel = Panel(notebook, 1)
    expect(panel.root).to_be_visible()

    server.enqueue(Reply.stream(RICH_ANSWER, delay=0.02))
    panel.ask("Show me *everything*")
    expect(panel.newest()).to_have_class(re.compile(r"\bamigo-live\b"))
    panel.wait_idle()
    expect(panel.newest()).not_to_have_class(re.compile(r"\bamigo-live\b"))
    turn = panel.newest()
    page.wait_for_function(
        "(el) => el.querySelectorAll('mjx-container').length >= 4", arg=turn.element_handle()
    )
    # The same renderer as the cell: highlighted code, MathJax with a two-row matrix, a table.
    final = turn.evaluate(_FINAL_JS.replace(".jp-OutputArea-output", ".amigo-body"))
    assert final["keywordColor"] is not None, final
    assert (final["keywordColor"], final["keywordWeight"]) != (
        final["plainColor"],
        final["plainWeight"],
    ), final
    assert str(final["integral"]).startswith("∫01x2"), final
    assert (final["matrixRows"], final["matrixCells"]) == (2, 4), final
    assert final["mathErrors"] == 0, final
    assert final["links"] == ["link"], final
    expect(panel.newest("user").locator("em")).to_have_text("everything")
    expect(turn.locator("table")).to_have_count(1)

    light = _contrasts(panel)
    assert min(light.values()) >= 4.5, light
    page.mouse.move(1270, 890)
    if os.environ.get("UPDATE_DOCS_IMAGES"):
        notebook.cell(1).screenshot(path=SCREENSHOT.with_name("panel-rich.png"))
    _set_theme(notebook, "JupyterLab Dark", light=False)
    dark = _contrasts(panel)
    assert min(dark.values()) >= 4.5, dark
    assert light != dark  # the colours did follow the theme
    if os.environ.get("UPDATE_DOCS_IMAGES"):
        notebook.cell(1).screenshot(path=SCREENSHOT.with_name("panel-dark.png"))
    _set_theme(notebook, "JupyterLab Light", light=True)


def test_side_panel_opens_beside_the_notebook_and_streams(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    lab.write_notebook(
        "side", ["%load_ext amigo_magic", "%amigo_panel --side", *(f"{n} * 2" for n in range(30))]
    )
    notebook = lab.open(page, "side")
    _collapse_left_sidebar(notebook)
    notebook.run_all()
    notebook.wait_executed(0, 1, 31)
    notebook.wait_output(1, "open beside the notebook")
    # The panel is in its own tab beside the notebook; the cell's copy of it stays hidden.
    side = page.locator(".jupyterlab-sidecar .amigo-panel")
    expect(side).to_have_count(1)
    expect(side).to_be_visible()
    expect(notebook.panel.locator(".amigo-panel")).to_be_hidden()
    expect(notebook.outputs(1).locator(".amigo-side-missing")).to_be_hidden()
    tab = page.locator(".lm-TabBar-tab", has_text="amigo chat")
    expect(tab).to_be_visible()
    # It streams there, and stays in view while the notebook scrolls.
    server.enqueue(Reply.stream(chunks=[f"word{i} " for i in range(120)], delay=0.03))
    side.locator(".amigo-prompt textarea").fill("Write a long answer")
    side.locator("button.amigo-send").click()
    turn = side.locator(".amigo-turn-assistant").first
    expect(turn).to_have_class(re.compile(r"\bamigo-live\b"))
    expect(turn.locator(".amigo-body")).to_contain_text("word5 ")
    page.mouse.move(1270, 890)
    if os.environ.get("UPDATE_DOCS_IMAGES"):
        page.screenshot(path=SCREENSHOT.with_name("panel-side.png"))
    notebook.panel.locator(".jp-WindowedPanel-outer").evaluate(
        "(el) => el.scrollTo(0, el.scrollHeight)"
    )
    expect(side).to_be_in_viewport()
    expect(side.locator("button.amigo-send")).to_be_enabled(timeout=TIMEOUT * 1000)
    expect(turn.locator(".amigo-body")).to_contain_text("word119")


def test_side_panel_in_notebook7_shows_in_the_cell_and_says_so(
    notebook7: Lab, page: Page, server: AmigoServer
) -> None:
    notebook7.write_notebook("side", ["%load_ext amigo_magic", "%amigo_panel --side"])
    notebook = notebook7.open(page, "side")
    notebook.run_all()
    notebook.wait_executed(0, 1)
    expect(notebook.outputs(1).locator(".amigo-side-missing")).to_be_visible()
    expect(notebook.outputs(1).locator(".amigo-side-missing")).to_contain_text("shown here")
    expect(notebook.outputs(1).locator(".amigo-side-present")).to_be_hidden()
    inline = notebook.outputs(1).locator(".amigo-panel")
    expect(inline).to_be_visible()
    server.enqueue(Reply.stream("Answered in the cell's copy of the panel."))
    inline.locator(".amigo-prompt textarea").fill("hello")
    inline.locator("button.amigo-send").click()
    expect(inline.locator(".amigo-turn-assistant").first).to_contain_text("cell's copy")
