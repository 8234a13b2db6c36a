"""Property: no sanitised output of any generated markup holds live markup, and its text survives.

Hypothesis builds model answers from markdown, raw HTML tags with event-handler attributes,
``javascript:``/``data:``/``vbscript:`` URLs in links and images, ``<iframe>``, ``<script>``,
``<svg onload>``, entities and nested lists. Each strategy returns the markup together with the
words a reader must still see after sanitising. The final bundle's ``text/html``, and its
``text/markdown`` rendered the way a trusting front end renders it, are parsed back with
:mod:`html.parser` and must hold no ``on*`` attribute, no script, frame, object or embed
element and no unsafe URL, while every one of those words is still in the visible text.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from amigo_magic.live_markdown import LiveMarkdown
from amigo_magic.render import AnswerState, AnswerView, answer_bundle, markdown_html

# ------------------------------------------------------------------------------------------
# What the output may not hold, read with html.parser


BANNED_ELEMENTS = frozenset(
    {
        *("script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math"),
        *("img", "style", "base", "meta", "link", "form", "video", "audio", "source"),
    }
)
URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "poster", "background", "srcset", "data"}
)
UNSAFE_SCHEME = re.compile(r"(javascript|data|vbscript|file):")
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")


class Page(HTMLParser):
    """Elements with their attributes, and the visible text, of an HTML fragment."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str]]]] = []
        self.text_parts: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, [(name, value or "") for name, value in attrs]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.text_parts)


def assert_inert_and_complete(rendered: str, words: list[str], source: str) -> None:
    page = Page(rendered)
    for tag, attrs in page.elements:
        assert tag not in BANNED_ELEMENTS, (tag, rendered, source)
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, rendered, source)
            assert name != "srcdoc", (tag, rendered, source)
            if name in URL_ATTRIBUTES:
                probe = _URL_NOISE.sub("", html.unescape(value)).lower()
                assert not UNSAFE_SCHEME.match(probe), (tag, name, value, source)
    missing = [word for word in words if word not in page.text]
    assert not missing, (missing, page.text, source)


class TrustingMarkdownIt(MarkdownIt):
    """A trusted JupyterLab output: raw HTML on, any link accepted, no nesting limit (marked)."""

    def validateLink(self, url: str) -> bool:
        return True


TRUSTING = TrustingMarkdownIt("commonmark", {"html": True, "maxNesting": 10_000})
TRUSTING.enable(["table", "strikethrough"])


# The one raw HTML an answer's markdown may hold: its status line (ours, escaped text).
STATUS_DIV = re.compile(r'<div class="amigo-status( amigo-live)?" style="[^"<>]*">[^<>]*</div>\n?')


def assert_answer_markdown_inert(markdown: str, words: list[str], text: str) -> None:
    for token in TRUSTING.parse(markdown):
        if token.type == "html_block" and (
            STATUS_DIV.fullmatch(token.content) or token.content == "<!-- -->\n"
        ):  # our status line, and the comment between separately rendered runs of blocks
            continue
        for child in [token, *(token.children or [])]:
            assert child.type not in ("html_block", "html_inline", "image"), (child, text)
    assert_inert_and_complete(TRUSTING.render(markdown), words, text)


def final_bundle(text: str, fmt: str) -> dict[str, str]:
    state = AnswerState(text=text, model="m", chat="c", phase="done", seconds=1.0, tokens=3)
    data, _ = answer_bundle(state, fmt=fmt)  # type: ignore[arg-type]
    return data


# ------------------------------------------------------------------------------------------
# Generated markup: (markup, words that must stay visible)

Piece = tuple[str, list[str]]

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=9)
UNSAFE_URL = st.sampled_from(
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&colon;alert(1)",
        "java&#x09;script:alert(1)",
        "javascript%3Aalert(1)",
        " javascript:alert(1)",
        "vbscript:msgbox(1)",
        "VBScript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "data:image/svg+xml,<svg onload=alert(1)>",
        "file:///etc/passwd",
    ]
)
SAFE_URL = st.sampled_from(
    ["https://example.com/a?b=1", "http://example.org", "mailto:a@example.com", "/relative", "#x"]
)
URL = st.one_of(UNSAFE_URL, SAFE_URL)
HANDLER = st.sampled_from(["onclick", "onerror", "onload", "ONMOUSEOVER", "onfocus", "ontoggle"])
SCRIPT = st.sampled_from(["alert(1)", "window.__pwned=1", "parent.__pwned=1"])
TAG = st.sampled_from(
    ["div", "span", "b", "p", "a", "details", "marquee", "body", "video", "table", "li", "em"]
)
ENTITY = st.sampled_from(
    ["&amp;", "&lt;script&gt;alert(1)&lt;/script&gt;", "&#60;img src=x onerror=alert(1)&#62;"]
)


@st.composite
def handler_tag(draw: st.DrawFn) -> Piece:
    """``<tag onX="js" href="url">word</tag>``: an element with a live handler around text."""
    tag, word = draw(TAG), draw(WORD)
    attributes = f' {draw(HANDLER)}="{draw(SCRIPT)}"'
    if draw(st.booleans()):
        attributes += f' href="{draw(URL)}"'
    return f"<{tag}{attributes}>{word}</{tag}>", [word]


@st.composite
def void_tag(draw: st.DrawFn) -> Piece:
    """Elements that are live without content: img onerror, svg onload, iframe, object, embed."""
    url, script = draw(URL), draw(SCRIPT)
    markup = draw(
        st.sampled_from(
            [
                f'<img src="{url}" onerror="{script}">',
                f'<svg onload="{script}"></svg>',
                f'<svg><a href="{url}">x</a></svg>',
                f'<iframe src="{url}"></iframe>',
                f'<iframe srcdoc="<script>{script}</script>"></iframe>',
                f'<object data="{url}"></object>',
                f'<embed src="{url}">',
                f"<script>{script}</script>",
                f'<a href="{url}">',
                "<!-- a comment -->",
                f'<math><mi xlink:href="{url}">x</mi></math>',
                f"<style>body{{background:url({url})}}</style>",
            ]
        )
    )
    return markup, []


MATH_DELIMITERS = st.sampled_from([("$", "$"), ("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]")])


@st.composite
def math_span(draw: st.DrawFn) -> Piece:
    """Markup inside math (kept as written there, so its ``<`` must still not open a tag)."""
    opening, closing = draw(MATH_DELIMITERS)
    markup, words = draw(st.one_of(handler_tag(), void_tag()))
    return f"{opening}x < {markup}{closing}", words


def _markdown_leaf() -> st.SearchStrategy[Piece]:
    return st.one_of(
        math_span(),
        WORD.map(lambda w: (f"${w}", [w])),  # a lone dollar, to pair with another
        WORD.map(lambda w: (w, [w])),
        WORD.map(lambda w: (f"**{w}**", [w])),
        WORD.map(lambda w: (f"*{w}*", [w])),
        WORD.map(lambda w: (f"`{w}`", [w])),
        WORD.map(lambda w: (f"~~{w}~~", [w])),
        st.tuples(WORD, URL).map(lambda p: (f"[{p[0]}]({p[1]})", [p[0]])),
        st.tuples(WORD, URL).map(lambda p: (f"![{p[0]}]({p[1]})", [p[0]])),
        st.tuples(WORD, URL).map(lambda p: (f"[{p[0]}](<{p[1]}>)", [p[0]])),
        st.tuples(WORD, URL).map(lambda p: (f"<{p[1]}> {p[0]}", [p[0]])),
        ENTITY.map(lambda e: (e, [])),
        handler_tag(),
        void_tag(),
    )


@st.composite
def markdown_block(draw: st.DrawFn) -> Piece:
    """A paragraph, a nested list, a quote, a heading, a fence, a table or a reference link."""
    inline = draw(st.lists(_markdown_leaf(), min_size=1, max_size=4))
    line = " ".join(markup for markup, _ in inline)
    words = [word for _, found in inline for word in found]
    kind = draw(st.sampled_from(["para", "list", "quote", "heading", "fence", "table", "ref"]))
    if kind == "list":
        depth = draw(st.integers(1, 12))
        marker = draw(st.sampled_from(["- ", "* ", "1. "]))
        indent = " " * len(marker)
        text = "".join(f"{indent * i}{marker}{line}\n" for i in range(depth))
        return text, words
    if kind == "quote":
        return "> " * draw(st.integers(1, 6)) + line + "\n", words
    if kind == "heading":
        return "#" * draw(st.integers(1, 6)) + " " + line + "\n", words
    if kind == "fence":
        return f"```html\n{line}\n```\n", words
    if kind == "table":
        return f"| a | b |\n|---|---|\n| {line} | x |\n", words
    if kind == "ref":
        label, url = draw(WORD), draw(URL)
        return f"[{label}][r]\n\n[r]: {url}\n", [label]
    return line + "\n", words


@st.composite
def markdown_answer(draw: st.DrawFn) -> Piece:
    blocks = draw(st.lists(markdown_block(), min_size=1, max_size=5))
    text = "\n".join(markup for markup, _ in blocks)
    return text, [word for _, found in blocks for word in found]


# nh3 drops these elements together with their content; every other element's text stays.
DROPPED_WITH_CONTENT = ("script", "style", "iframe", "object", "svg", "math", "textarea", "title")


def html_fragment() -> st.SearchStrategy[Piece]:
    leaf = st.one_of(
        WORD.map(lambda w: (w, [w])),
        ENTITY.map(lambda e: (e, [])),
        void_tag(),
        handler_tag(),
    )

    def extend(child: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
        @st.composite
        def element(draw: st.DrawFn) -> Piece:
            inner = draw(st.lists(child, min_size=1, max_size=3))
            content = " ".join(markup for markup, _ in inner)
            words = [word for _, found in inner for word in found]
            if draw(st.integers(0, 5)) == 0:
                tag = draw(st.sampled_from(DROPPED_WITH_CONTENT))
                return f"<{tag}>{content}</{tag}>", []
            tag = draw(st.sampled_from(["div", "p", "ul", "li", "b", "a", "span", "blockquote"]))
            attributes = f' {draw(HANDLER)}="{draw(SCRIPT)}"' if draw(st.booleans()) else ""
            if tag == "a":
                attributes += f' href="{draw(URL)}"'
            return f"<{tag}{attributes}>{content}</{tag}>", words

        return element()

    return st.recursive(leaf, extend, max_leaves=12)


# ------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=200, deadline=None)
@given(markdown_answer())
def test_sanitised_markdown_answer_is_inert_and_keeps_its_text(answer: Piece) -> None:
    text, words = answer
    data = final_bundle(text, "markdown")
    assert set(data) == {"text/markdown", "text/plain"}
    assert_answer_markdown_inert(data["text/markdown"], words, text)
    assert_inert_and_complete(markdown_html(text), words, text)  # comparison columns' HTML


@settings(max_examples=150, deadline=None)
@given(markdown_answer(), st.lists(st.integers(1, 400), min_size=1, max_size=6))
def test_a_streaming_answer_is_inert_at_every_update(answer: Piece, cuts: list[int]) -> None:
    text, _ = answer
    view = AnswerView()
    view.live = LiveMarkdown(share=1e9)  # no time budget: render the finished blocks every time
    for cut in sorted(cuts):
        partial = text[:cut]
        live = AnswerState(text=partial, model="m", chat="c", phase="streaming", seconds=1.0)
        data, _ = view.bundle(live)
        assert_answer_markdown_inert(data["text/markdown"], [], partial)
        # the runs rendered apart parse as one document would: the same blocks, none code
        # that was prose (nor the reverse)
        markdown = data["text/markdown"]
        runs = markdown.split("\n\n<!-- -->\n\n")
        joined = [t.type for t in TRUSTING.parse(markdown) if t.type != "html_block"]
        apart = [t.type for run in runs for t in TRUSTING.parse(run) if t.type != "html_block"]
        assert joined == apart, (partial, markdown)


@settings(max_examples=250, deadline=None)
@given(html_fragment())
def test_sanitised_html_answer_is_inert_and_keeps_its_text(answer: Piece) -> None:
    text, words = answer
    data = final_bundle(text, "html")
    assert_inert_and_complete(data["text/html"], words, text)
