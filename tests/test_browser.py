"""The magics as a user sees them: JupyterLab in headless Chromium, the loopback server behind.

Also makes the README's screenshot, ``docs/images/jupyterlab-magics.png``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.amigo_server import AmigoServer, Reply
from tests.browser import TIMEOUT, Lab, Notebook

pytest_plugins = ["tests.browser"]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "jupyterlab-magics.png"

ANSWER = """\
## List comprehensions

A **list comprehension** builds a new list from an iterable in one expression:

```python
squares = [n * n for n in range(10) if n % 2 == 0]
```

- **Shorter** than a `for` loop that calls `append`
- **Faster**, because the loop runs inside the interpreter
- **Readable** while it stays one idea: nest loops sparingly
"""

PAYLOADS = "\n".join(
    [
        "<script>window.__pwned=1</script>",
        '<img src=x onerror="window.__pwned=2">',
        '<svg onload="window.__pwned=3"></svg>',
        '<iframe srcdoc="<script>parent.__pwned=4</script>"></iframe>',
        "[click me](javascript:window.__pwned=5)",
        '<a href="javascript:window.__pwned=6">x</a>',
        '<details open ontoggle="window.__pwned=7">d</details>',
        "**still bold**",
    ]
)

# Anything in the outputs that could run script, or a link that would.
_LIVE_MARKUP_JS = """(root) => {
  const found = [];
  for (const el of root.querySelectorAll('.jp-OutputArea-output *')) {
    const tag = el.tagName.toLowerCase();
    if (['script', 'iframe', 'object', 'embed', 'frame'].includes(tag)) found.push(`<${tag}>`);
    for (const attr of el.attributes) {
      const value = attr.value.replace(/[\\s\\x00-\\x1f]/g, '').toLowerCase();
      if (attr.name.toLowerCase().startsWith('on')) found.push(`<${tag} ${attr.name}>`);
      if (value.startsWith('javascript:') || attr.name.toLowerCase() === 'srcdoc') {
        found.push(`<${tag} ${attr.name}="${attr.value}">`);
      }
    }
  }
  return found;
}"""


def _collapse_left_sidebar(notebook: Notebook) -> None:
    if notebook.page.locator("#jp-left-stack").is_visible():
        notebook.command("application:toggle-left-area")
    expect(notebook.page.locator("#jp-left-stack")).to_be_hidden()


def _watch_stream(notebook: Notebook, index: int) -> list[int]:
    """Poll cell ``index`` until its answer is final; the lengths seen while it streamed."""
    lengths: list[int] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        live, text = notebook.answer(index)
        if live and text and (not lengths or lengths[-1] != len(text)):
            lengths.append(len(text))
        if not live and text:
            return lengths
        time.sleep(0.02)
    raise notebook.lab.fail(f"the answer in cell {index} never finished: {lengths=}")


def test_magics_render_in_jupyterlab(lab: Lab, page: Page, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(ANSWER, delay=0.05), Reply.image(size=(480, 270)))
    lab.write_notebook(
        "magics",
        [
            "%load_ext amigo_magic",
            "%%amigo --model claude\nExplain list comprehensions briefly",
            "%amigo_image a lighthouse at dusk",
        ],
    )
    notebook = lab.open(page, "magics")
    _collapse_left_sidebar(notebook)

    notebook.run_all()
    lengths = _watch_stream(notebook, 1)
    notebook.wait_executed(0, 1, 2)

    # The answer grew on screen while it streamed, then was rendered as markdown.
    assert len(lengths) >= 2, f"the answer did not visibly stream: lengths seen {lengths}"
    assert lengths == sorted(lengths), f"the streamed text shrank: {lengths}"
    answer = notebook.outputs(1)
    expect(answer).to_have_count(1)
    expect(answer.locator("h2")).to_have_text("List comprehensions")
    items = answer.locator("li")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("Shorter than a for loop that calls append")
    expect(items.locator("strong")).to_have_text(["Shorter", "Faster", "Readable"])
    expect(answer.locator("pre code")).to_contain_text("squares = [n * n for n in range(10)")
    text = notebook.output_text(1)
    for syntax in ("##", "**", "```"):  # no markdown shown as typed
        assert syntax not in text, text
    status = answer.locator(".amigo-status")
    expect(status).to_be_visible()
    expect(status).to_contain_text("claude-3-5-sonnet-20241022")
    assert lengths[-1] <= len(ANSWER)

    # The picture is an image in the page, decoded at the size the server drew it.
    picture = notebook.outputs(2).locator("img")
    expect(picture).to_have_count(1)
    src = picture.get_attribute("src") or ""
    assert src.startswith(("data:image/png", "blob:")), src[:80]
    expect(picture).to_be_visible()
    width = picture.evaluate("(img) => img.decode().then(() => img.naturalWidth)")
    assert width == 480
    assert server.requests[0].json["model"] == "claude-3-5-sonnet-20241022"

    # The README's picture: saved (no unsaved-changes dot), the first cell active (its toolbar
    # sits beside the short %load_ext line), the mouse away from the outputs.
    notebook.save()
    notebook.cell(0).locator(".jp-InputPrompt").click()
    page.mouse.move(1270, 890)
    notebook.panel.locator(".jp-WindowedPanel-outer").evaluate("(el) => el.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("UPDATE_DOCS_IMAGES"):  # README pictures are refreshed on request only
        page.screenshot(path=SCREENSHOT, full_page=True)


def _click_every_link(notebook: Notebook) -> int:
    links = notebook.outputs().locator("a")
    count = links.count()
    for i in range(count):
        link = links.nth(i)
        if link.is_visible():
            link.click(timeout=5000)
        else:
            link.evaluate("(a) => a.click()")
    return count


def _assert_inert(notebook: Notebook, popups: list[Page]) -> None:
    page = notebook.page
    # Trusted outputs: JupyterLab's own sanitiser is off, so amigo_magic's is the one tested.
    for index in (1, 2):
        expect(notebook.outputs(index)).to_have_class(re.compile(r"\bjp-mod-trusted\b"))
    assert page.evaluate("window.__pwned") is None, "model output ran script"
    assert notebook.panel.evaluate(_LIVE_MARKUP_JS) == []
    expect(notebook.outputs().locator("iframe")).to_have_count(0)
    assert popups == [], [popup.url for popup in popups]


def test_model_output_cannot_run_script(lab: Lab, page: Page, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(PAYLOADS), Reply.stream(PAYLOADS))
    lab.write_notebook(
        "payloads",
        [
            "%load_ext amigo_magic",
            "%%amigo\nShow me some HTML",
            "%%amigo -f html\nShow me the same HTML",
        ],
    )
    notebook = lab.open(page, "payloads")
    assert page.evaluate("window.__pwned") is None  # the flag starts unset
    popups: list[Page] = []
    page.context.on("page", lambda popup: popups.append(popup))

    def rendered_and_inert() -> None:
        notebook.wait_output(1, "still bold")
        notebook.wait_output(2, "still bold")
        bold = notebook.outputs(1).locator("strong, b").filter(has_text="still bold")
        expect(bold).to_be_visible()
        _click_every_link(notebook)
        page.wait_for_timeout(1000)
        _assert_inert(notebook, popups)

    notebook.run_all()
    notebook.wait_executed(0, 1, 2)
    rendered_and_inert()

    # Saved and reopened, the outputs come back from the file (trusted, as the lab signed it).
    notebook.save()
    notebook.reopen()
    rendered_and_inert()
