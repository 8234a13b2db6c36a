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
        # math is kept as written, but raw HTML inside it must not come alive either
        '$<img src=x onerror="window.__pwned=8">$ and $$<svg onload="window.__pwned=9">$$',
        r"\(<script>window.__pwned=10</script>\) \[<img src=x onerror=window.__pwned=11>\]",
        "![a remote picture](http://127.0.0.1:9/leak?secret=1)",
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

    # The answer grew on screen while it streamed (a finished block loses its markdown syntax
    # as it is formatted, so the length may dip), then was rendered as markdown.
    assert len(lengths) >= 2, f"the answer did not visibly stream: lengths seen {lengths}"
    assert lengths[0] < lengths[-1], f"the streamed text did not grow: {lengths}"
    answer = notebook.outputs(1)
    expect(answer).to_have_count(1)
    expect(answer.locator("h2")).to_have_text(re.compile(r"^List comprehensions¶?$"))
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
    """Click each link but the web addresses (a click on those opens them, as it should)."""
    links = notebook.outputs().locator("a:not([href^='http://']):not([href^='https://'])")
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
    expect(notebook.outputs().locator("img")).to_have_count(0)  # a remote image is a link
    assert popups == [], [popup.url for popup in popups]


def test_model_output_cannot_run_script(lab: Lab, page: Page, server: AmigoServer) -> None:
    _hostile_story(lab, page, server)


def test_model_output_cannot_run_script_in_notebook7(
    notebook7: Lab, page: Page, server: AmigoServer
) -> None:
    _hostile_story(notebook7, page, server)


def _hostile_story(lab: Lab, page: Page, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(PAYLOADS, delay=0.02), Reply.stream(PAYLOADS))
    lab.write_notebook(
        "payloads",
        [
            "%load_ext amigo_magic",
            "%%amigo\nShow me some HTML",
            "%%amigo -f html\nShow me the same HTML",
        ],
    )
    notebook = lab.open(page, "payloads")
    assert ("/notebooks/payloads.ipynb" in page.url) == (lab.app == "notebook"), page.url
    assert page.evaluate("window.__pwned") is None  # the flag starts unset
    popups: list[Page] = []
    page.context.on("page", lambda popup: popups.append(popup))

    def rendered_and_inert() -> None:
        notebook.wait_output(1, "still bold")
        notebook.wait_output(2, "still bold")
        bold = notebook.outputs(1).locator("strong, b").filter(has_text="still bold")
        expect(bold).to_be_visible()
        picture = notebook.outputs(1).locator("a", has_text="image: a remote picture")
        expect(picture).to_have_attribute("href", "http://127.0.0.1:9/leak?secret=1")
        _click_every_link(notebook)
        page.wait_for_timeout(1000)
        _assert_inert(notebook, popups)

    notebook.run_all()
    # While it streams too: the finished blocks are markdown, and nothing in them is live.
    midway = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not notebook.outputs(2).count():
        if notebook.answer(1)[0]:
            midway += 1
            assert notebook.panel.evaluate(_LIVE_MARKUP_JS) == []
            assert page.evaluate("window.__pwned") is None, "a streaming answer ran script"
        time.sleep(0.02)
    assert midway, "the hostile answer was never seen streaming"
    notebook.wait_executed(0, 1, 2)
    rendered_and_inert()

    # Saved and reopened, the outputs come back from the file (trusted, as the lab signed it).
    notebook.save()
    notebook.reopen()
    rendered_and_inert()


# The rich answer: what Markdown(text) renders well, and ours must render as well.
RICH_ANSWER = r"""# Solving it step by step

Here is **bold** text and a [link](https://example.com/docs).

```python
def integrate(f, a, b, n=1000):
    # the midpoint rule
    h = (b - a) / n
    return sum(f(a + (i + 0.5) * h) for i in range(n)) * h
```

```bash
export PATH="$HOME/bin:$PATH"
echo "$USER has $(nproc) cores"
```

| name | cost ($) | note |
| --- | --- | --- |
| alpha | 10 | first |
| beta | 2 | second, with a < b |

Inline math: $\int_0^1 x^2\,dx = \frac{1}{3}$ and the set $\{1, 2\}$, with $a < b$.

$$
A = \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}
$$

- first level
  - second level with `code`
    - third level
- back to the first

LONG_LINE
""".replace("LONG_LINE", "This long line wraps in the output area rather than scrolling, " * 6)

# While an answer streams: the finished blocks (everything but the tail <pre> just before the
# status line) and what MathJax made of the tail.
_MIDWAY_JS = """(cell) => {
  const out = cell.querySelector('.jp-OutputArea-output');
  const status = out && out.querySelector('.amigo-live');
  if (!status) return null;
  const before = status.previousElementSibling;
  const tail = before && before.tagName === 'PRE' && !before.querySelector('code[class]')
    ? before : null;
  const copy = out.cloneNode(true);
  copy.querySelectorAll('.amigo-status').forEach((s) => s.remove());
  if (tail) copy.querySelectorAll('pre').forEach((p) => {
    if (p.innerText === tail.innerText) p.remove();
  });
  return {
    finished: copy.innerText,
    headings: out.querySelectorAll('h1').length,
    tail: tail ? tail.innerText : '',
    tailMath: tail ? tail.querySelectorAll('mjx-container').length : 0,
    mathOutsideBlocks: [...out.querySelectorAll('mjx-container')].filter(
      (m) => !m.closest('p, li, td, th')).length,
  };
}"""

# The final answer: highlighting, math and table alignment as the page computed them.
_FINAL_JS = """(cell) => {
  const out = cell.querySelector('.jp-OutputArea-output');
  const code = [...out.querySelectorAll('pre code')]
    .find((c) => c.innerText.includes('def integrate'));
  const keyword = code && [...code.querySelectorAll('span')].find((s) => s.innerText === 'def');
  const plain = code && getComputedStyle(code).color;
  const math = [...out.querySelectorAll('mjx-container')];
  const mml = (m) => m.querySelector('mjx-assistive-mml math');
  const integral = math.find((m) => mml(m) && mml(m).textContent.includes('∫'));
  const matrix = math.find((m) => m.getAttribute('display') === 'true');
  const cells = [...out.querySelectorAll('table td, table th')];
  return {
    keywordColor: keyword ? getComputedStyle(keyword).color : null,
    keywordWeight: keyword ? getComputedStyle(keyword).fontWeight : null,
    plainColor: plain, plainWeight: code ? getComputedStyle(code).fontWeight : null,
    integral: integral ? mml(integral).textContent : null,
    integralCommas: integral ? integral.querySelectorAll('mjx-c.mjx-c2C').length : -1,
    integralSpace: integral ? integral.querySelectorAll('mjx-mspace').length : 0,
    set: (math.map(mml).find((m) => m && m.textContent.includes('{')) || {}).textContent || null,
    matrixRows: matrix ? matrix.querySelectorAll('mjx-mtr').length : 0,
    matrixCells: matrix ? matrix.querySelectorAll('mjx-mtd').length : 0,
    mathErrors: out.querySelectorAll('mjx-merror').length,
    alignments: [...new Set(cells.map((c) => getComputedStyle(c).textAlign))],
    links: [...out.querySelectorAll('a[href^="https://"]')].map((a) => a.innerText),
    nested: out.querySelectorAll('li li li').length,
  };
}"""


def test_rich_answer_renders_as_well_as_markdown(lab: Lab, page: Page, server: AmigoServer) -> None:
    _rich_story(lab, page, server)


def test_rich_answer_renders_as_well_as_markdown_in_notebook7(
    notebook7: Lab, page: Page, server: AmigoServer
) -> None:
    _rich_story(notebook7, page, server)


def _rich_story(lab: Lab, page: Page, server: AmigoServer) -> None:
    """The issue's rich answer streamed through %%amigo: midway, then after the end."""
    server.enqueue(Reply.stream(RICH_ANSWER, delay=0.03))
    lab.write_notebook("rich", ["%load_ext amigo_magic", "%%amigo\nShow me everything"])
    notebook = lab.open(page, "rich")
    assert ("/notebooks/rich.ipynb" in page.url) == (lab.app == "notebook"), page.url
    _collapse_left_sidebar(notebook)
    notebook.run_all()

    # Midway: finished blocks formatted (no fence or ** left in them), the tail plain text
    # that MathJax leaves alone.
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = notebook.cell(1).evaluate(_MIDWAY_JS)
        if state is None and seen:
            break
        if state is not None:
            seen.append(state)
        time.sleep(0.05)
    assert len(seen) >= 3, f"the answer did not visibly stream: {seen}"
    for state in seen:
        finished = str(state["finished"])
        assert "```" not in finished, state
        assert "**" not in finished, state
        assert state["tailMath"] == 0, state
        assert state["mathOutsideBlocks"] == 0, state
    formatted_midway = [s for s in seen if s["headings"] and s["tail"]]
    assert formatted_midway, f"no update showed formatted blocks above a plain tail: {seen}"
    assert any("$" in str(s["tail"]) for s in seen), "the tail never held raw math"
    notebook.wait_executed(0, 1)

    # After the end: what Markdown(text) shows, from the same front-end renderer.
    notebook.wait_output(1, "back to the first")
    notebook.page.wait_for_function(
        "(cell) => cell.querySelectorAll('mjx-container').length >= 4",
        arg=notebook.cell(1).element_handle(),
    )
    final = notebook.cell(1).evaluate(_FINAL_JS)
    assert final["keywordColor"] is not None, final
    assert (final["keywordColor"], final["keywordWeight"]) != (
        final["plainColor"],
        final["plainWeight"],
    ), final
    assert str(final["integral"]).startswith("∫01x2"), final
    assert (final["integralCommas"], final["integralSpace"]) == (0, 1), final  # \, is a space
    assert final["set"] == "{1,2}", final
    assert (final["matrixRows"], final["matrixCells"]) == (2, 4), final
    assert final["mathErrors"] == 0, final
    assert final["alignments"] in (["left"], ["start"], ["-webkit-left"]), final  # align=left
    assert final["links"] == ["link"], final
    assert final["nested"] == 1, final
    text = notebook.output_text(1)
    for syntax in ("# Solving", "**", "```", "| ---"):
        assert syntax not in text, text
    # The README's pictures of it, in the light and the dark theme.
    if os.environ.get("UPDATE_DOCS_IMAGES") and lab.app == "lab":
        page.mouse.move(1270, 890)
        notebook.cell(1).screenshot(path=SCREENSHOT.with_name("answer-rich.png"))
        notebook.command("apputils:change-theme", {"theme": "JupyterLab Dark"})
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_timeout(800)
        notebook.cell(1).screenshot(path=SCREENSHOT.with_name("answer-rich-dark.png"))
