"""Untrusted model text → markup that cannot run script: the one owner of that rule.

JupyterLab trusts ``text/markdown`` and ``text/html`` produced in the session and runs raw HTML
inside them (``<script>``, ``<img onerror>``, ``<svg onload>``, ``<iframe srcdoc>``) and keeps
``javascript:`` links, so nothing built from model text may carry live markup:

- :func:`safe_markdown`: raw HTML is escaped outside code, images become links (a remote image is
  fetched without a click, so it can leak data), and links keep only http, https and mailto
  destinations. The result is re-parsed and checked; if the check fails, stricter rewrites
  follow, down to showing the whole answer as a code block.
- :func:`safe_html_from_markdown`: markdown-it with raw HTML disabled, then ``nh3`` against an
  allow-list; :func:`sanitize_html` cleans HTML the model was asked for.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import urllib.parse
from collections.abc import Iterator, Sequence

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from . import math_text, md_layout

__all__ = [
    "as_code_block",
    "extract_code",
    "safe_html_from_markdown",
    "safe_markdown",
    "safe_markdown_closed",
    "sanitize_html",
]

# --------------------------------------------------------------------------------------------
# URLs


_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
# Browsers drop ASCII whitespace and control characters from URLs ("java\tscript:"); backslashes
# are markdown escapes ("javascript\:"). Removing both can only make the check stricter.
_URL_NOISE = re.compile(r"[\x00-\x20\x7f\\]+")


def _is_safe_url(url: str) -> bool:
    """True for relative URLs and for http, https and mailto; false for anything doubtful."""
    decoded = url
    for _ in range(4):  # "&amp;#106;" decodes twice on some paths; a few rounds reach a fixpoint
        once = html.unescape(decoded)
        if once == decoded:
            break
        decoded = once
    candidates = {url, decoded, urllib.parse.unquote(decoded)}
    return all(_scheme_is_safe(candidate) for candidate in candidates)


def _scheme_is_safe(url: str) -> bool:
    probe = _URL_NOISE.sub("", url).lower()
    colon = probe.find(":")
    if colon < 0 or any(ch in probe[:colon] for ch in "/?#"):
        return True  # no scheme: a relative reference
    # Anything before the colon that is not an allowed scheme is refused, including strings a
    # browser would read as relative ("<javascript:", a fullwidth "j"): when in doubt, refuse.
    return probe[:colon] in _SAFE_SCHEMES


# --------------------------------------------------------------------------------------------
# HTML: markdown-it with raw HTML off, then an allow-list


_ALLOWED_TAGS = frozenset(
    {
        *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("strong", "em", "b", "i", "del", "s", "code", "pre", "blockquote"),
        *("ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"),
        *("span", "div", "sup", "sub"),
    }
)
# Dropped together with their content: their text is script, style or a nested document.
_DROPPED_WITH_CONTENT = frozenset(
    {
        *("script", "style", "template", "iframe", "object", "embed", "svg", "math"),
        *("noscript", "noembed", "noframes", "title", "textarea", "select"),
    }
)
_ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title"}),
    "th": frozenset({"align", "style"}),
    "td": frozenset({"align", "style"}),
    "code": frozenset({"class"}),
    "ol": frozenset({"start"}),
}
_ALIGNMENTS = frozenset({"left", "right", "center", "justify"})
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.\-]{1,40}")
_LINK_REL = "noopener noreferrer nofollow"


def _filter_attribute(tag: str, name: str, value: str) -> str | None:
    """nh3 hook for the allowed attributes whose values need a closer look. Must never raise."""
    if name == "class":  # only <code> may carry one
        classes = [c for c in value.split() if _LANGUAGE_CLASS.fullmatch(c)]
        return " ".join(classes) or None
    if name == "style":  # only th/td: markdown-it writes table alignment as style
        return _text_align_style(value)
    if name == "align":
        return value.strip().lower() if value.strip().lower() in _ALIGNMENTS else None
    if name == "start":
        return value.strip() if value.strip().isdigit() else None
    return value


def _text_align_style(style: str) -> str | None:
    for declaration in style.split(";"):
        prop, _, value = declaration.partition(":")
        align = value.strip().lower()
        if prop.strip().lower() == "text-align" and align in _ALIGNMENTS:
            return f"text-align:{align}"
    return None


def _clean(fragment: str) -> str:
    return nh3.clean(
        fragment,
        tags=_ALLOWED_TAGS,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        strip_comments=True,
        link_rel=_LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=_SAFE_SCHEMES,
        filter_style_properties={"text-align"},
    )


def _render_image_as_link(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """markdown-it render rule: an image becomes a link, so the browser fetches nothing."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    label = f"image: {alt}" if alt else "image"
    title = token.attrGet("title")
    title_attr = f' title="{escapeHtml(str(title))}"' if title else ""
    href = escapeHtml(str(token.attrGet("src") or ""))
    return f'<a href="{href}"{title_attr}>{escapeHtml(label)}</a>'


# markdown-it stops parsing at its nesting limit and silently drops the rest of the text:
# commonmark's 20 levels are ten nested lists (a list and its item are two), and everything
# after them was lost. 40 follows 19 nested lists; deeper text is kept whole as code (_too_deep).
# Not higher: the limit also bounds link-label recursion, and "[" * 40_000 takes 1.2 s at 20,
# 2.0 s at 40 and 3.7 s at 100 (measured on this machine).
_MAX_NESTING = 40


def _too_deep(tokens: Sequence[Token]) -> bool:
    """True if the parse reached the nesting limit, so markdown-it may have dropped the tail."""
    return any(token.nesting == 1 and token.level >= _MAX_NESTING - 1 for token in tokens)


@functools.cache
def _html_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "maxNesting": _MAX_NESTING})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image_as_link)
    return md


def safe_html_from_markdown(text: str) -> str:
    """Render model markdown to HTML with raw HTML escaped, images as links, then sanitise it.

    Markdown nested deeper than the parser follows is shown as one code block: all of its text.
    """
    md = _html_markdown()
    env: EnvType = {}
    tokens = md.parse(text, env)
    if _too_deep(tokens):
        tokens = md.parse(as_code_block(text), env)
    # html=False already escapes raw HTML; nh3 still runs, so one parser bug is not an exploit.
    return _clean(md.renderer.render(tokens, md.options, env))


def sanitize_html(html_text: str) -> str:
    """Clean HTML the model wrote (``--format html``) against the allow-list; images are dropped."""
    return _clean(html_text)


# --------------------------------------------------------------------------------------------
# Markdown: escape raw HTML outside code, images to links, unsafe destinations to "#", verify


class _TrustingMarkdownIt(MarkdownIt):
    """Parses the way a trusting front end does: raw HTML on, every link destination accepted."""

    def validateLink(self, url: str) -> bool:
        return True


@functools.cache
def _analysis_markdown() -> MarkdownIt:
    md = _TrustingMarkdownIt(
        "commonmark", {"html": True, "linkify": False, "maxNesting": _MAX_NESTING}
    )
    md.enable(["table", "strikethrough"])
    return md


_NEWLINES = re.compile(r"\r\n?")
_MAX_PASSES = 6


def safe_markdown(text: str) -> str:
    """Markdown that renders like ``text`` but carries no raw HTML, no image, no unsafe link.

    Outside code, ``<`` becomes ``&lt;``; code is left alone (front ends show it as text).
    ``![alt](url)`` becomes ``[image: alt](url)``; a link or reference definition whose
    destination is not http, https, mailto or relative gets ``#`` as its destination.
    """
    return _inert_markdown(text)[0]


def _inert_markdown(text: str) -> tuple[str, list[Token]]:
    """:func:`safe_markdown`, plus the block tokens of its result."""
    md = _analysis_markdown()
    current = _NEWLINES.sub("\n", text).replace("\0", "\ufffd")
    original = current
    # Escaping can change the block structure (an HTML block becomes a paragraph, and a line
    # after it may stop or start being code), so rewrite until the text stops changing.
    for _ in range(_MAX_PASSES):
        tokens = md.parse(current)
        rewritten = _neutralize(current, _code_ranges(current, tokens))
        if rewritten == current:
            if _is_inert(tokens):
                return current, tokens
            break
        current = rewritten
    # Our idea of "code" disagrees with the parser's: treat nothing as code.
    current = _neutralize(original, [])
    tokens = md.parse(current)
    if _is_inert(tokens):
        return current, tokens
    current = as_code_block(original)
    return current, md.parse(current)


def _walk(tokens: Sequence[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _is_inert(tokens: Sequence[Token]) -> bool:
    if _too_deep(tokens):  # the parser may have stopped early: the tail was never checked
        return False
    for token in _walk(tokens):
        if token.type in ("html_block", "html_inline", "image"):
            return False
        if token.type == "link_open" and not _is_safe_url(str(token.attrGet("href") or "")):
            return False
    return True


def as_code_block(text: str, after: str = "") -> str:
    """``text`` as one fenced code block, inert whatever it holds (the fence outgrows any run of
    backticks inside), then the markdown ``after`` — built in one step: ``text`` may be large."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}\n\n{after}" if after else f"{fence}\n{text}\n{fence}"


def _code_ranges(text: str, tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """Character ranges of ``text`` that the parser shows as code, sorted."""
    line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def offset(line: int) -> int:
        return line_starts[line] if line < len(line_starts) else len(text)

    ranges: list[tuple[int, int]] = []
    table_depth = 0
    table_lines: set[int] = set()  # every cell of a row is its own inline token: scan a row once
    for token in tokens:
        table_depth += {"table_open": 1, "table_close": -1}.get(token.type, 0)
        if token.map is None:
            continue
        first, end = token.map
        if token.type == "fence":  # the opening line's info string is not code
            ranges.append((offset(first + 1), offset(end)))
        elif token.type == "code_block":
            ranges.append((offset(first), offset(end)))
        elif token.type == "inline" and table_depth:
            if first not in table_lines:
                table_lines.add(first)
                ranges.extend(_table_row_code_spans(text, offset(first), offset(first + 1)))
        elif token.type == "inline":
            start = offset(first)
            ranges.extend((start + a, start + b) for a, b in _code_spans(text[start : offset(end)]))
    return sorted(set(ranges))


def _table_row_code_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    # A table splits its row on unescaped pipes before parsing inlines, so spans stay in a cell.
    cell_start = start
    for position in range(start, end + 1):
        if position == end or (text[position] == "|" and text[position - 1 : position] != "\\"):
            for a, b in _code_spans(text[cell_start:position]):
                yield cell_start + a, cell_start + b
            cell_start = position + 1


_BACKTICK_RUN = re.compile(r"`+")


def _code_spans(source: str) -> list[tuple[int, int]]:
    """CommonMark code spans in one block's inline source, backticks included.

    An opening backtick run must not be backslash-escaped; it closes at the next run of exactly
    the same length (backslashes are literal inside code); unmatched runs are plain text.
    """
    runs_by_length: dict[int, list[int]] = {}
    for run in _BACKTICK_RUN.finditer(source):
        runs_by_length.setdefault(run.end() - run.start(), []).append(run.start())
    spans: list[tuple[int, int]] = []
    i, n = 0, len(source)
    while i < n:
        if source[i] == "\\":
            i += 2
            continue
        if source[i] != "`":
            i += 1
            continue
        run_end = i
        while run_end < n and source[run_end] == "`":
            run_end += 1
        length = run_end - i
        closers = runs_by_length.get(length, [])
        k = bisect.bisect_left(closers, run_end)
        if k == len(closers):
            i = run_end
            continue
        spans.append((i, closers[k] + length))
        i = closers[k] + length
    return spans


def _neutralize(text: str, code_ranges: Sequence[tuple[int, int]]) -> str:
    parts: list[str] = []
    position = 0
    for start, end in code_ranges:
        if start < position:  # ranges never overlap; be robust if they ever do
            start = position
        parts.append(_neutralize_prose(text[position:start]))
        parts.append(text[start:end])
        position = max(position, end)
    parts.append(_neutralize_prose(text[position:]))
    return "".join(parts)


def _neutralize_prose(source: str) -> str:
    # Math keeps its text (a markdown or HTML escape would change it); its "<" becomes "\\lt".
    return math_text.protect(_defuse_destinations(_images_to_links(source)), _escape_angle_brackets)


def _images_to_links(source: str) -> str:
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        if source[i] == "\\":  # an escaped character never opens an image
            out.append(source[i : i + 2])
            i += 2
        elif source.startswith("![", i):
            if out and out[-1] == "!":
                out[-1] = "\\!"  # "!![x](u)": the first "!" would open an image again
            out.append("[image" if source.startswith("]", i + 2) else "[image: ")
            i += 2
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


# "](" opens an inline destination, "]:" a reference definition's. Both may be followed by
# spaces and one line break, and after the break by blockquote markers the parser strips.
# Matching these anywhere in prose (not only in real links) is deliberate: a false match only
# turns an unsafe-looking URL in plain text into "#".
_DESTINATION_START = re.compile(r"\][(:][ \t]*(?:\n[ \t>]*)?")


def _defuse_destinations(source: str) -> str:
    out: list[str] = []
    position = 0
    for match in _DESTINATION_START.finditer(source):
        start = match.end()
        if start < position:
            continue
        end = _destination_end(source, start)
        destination = source[start:end]
        out.append(source[position:start])
        out.append(_safe_destination(destination))
        position = end
    out.append(source[position:])
    return "".join(out)


def _destination_end(source: str, start: int) -> int:
    if source.startswith("<", start):
        close = source.find(">", start)
        newline = source.find("\n", start)
        if close != -1 and (newline == -1 or close < newline):
            return close + 1
    depth, i, n = 0, start, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch <= " " or ch == "\x7f" or (ch == ")" and depth == 0):
            break
        depth += {"(": 1, ")": -1}.get(ch, 0)
        i += 1
    return min(i, n)


def _safe_destination(destination: str) -> str:
    bracketed = destination.startswith("<") and destination.endswith(">")
    inner = destination[1:-1] if bracketed else destination
    if not _is_safe_url(inner):
        return "#"
    if bracketed:
        # "<" is about to be escaped, which would break the <...> form: spell it out instead.
        return inner.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return destination


_ANGLE = re.compile(r"(\\*)<")


def _escape_angle_brackets(source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        backslashes = match.group(1)
        if len(backslashes) % 2:  # "\<" is already a literal "<": keep its meaning, drop the "\"
            backslashes = backslashes[:-1]
        return backslashes + "&lt;"

    return _ANGLE.sub(replace, source)


def _close_open_fence(markdown: str, tokens: Sequence[Token]) -> str:
    """Close a top-level fence left open at the end, so text appended after it is not code."""
    top = [token for token in tokens if token.level == 0 and token.map is not None]
    fence = top[-1] if top else None
    if fence is None or fence.type != "fence" or fence.map is None:
        return markdown
    first, end = fence.map
    lines = markdown.split("\n")
    closer = re.compile(rf"[ ]{{0,3}}{re.escape(fence.markup[0])}{{{len(fence.markup)},}}[ \t]*")
    if end - first >= 2 and end - 1 < len(lines) and closer.fullmatch(lines[end - 1]):
        return markdown
    return markdown.rstrip("\n") + "\n" + fence.markup


# --------------------------------------------------------------------------------------------
# Code extraction


def extract_code(text: str) -> tuple[str, str | None]:
    """The first fenced code block's content and language; without a fence, the whole text."""
    for token in _html_markdown().parse(text):
        if token.type == "fence":
            info = unescapeAll(token.info).strip()
            language = info.split()[0] if info else None
            return token.content.rstrip("\n"), language
    return text.strip(), None


def safe_markdown_closed(text: str) -> str:
    """:func:`safe_markdown`, with a fence left open at the end closed, so that text appended
    after it (a status line) is not swallowed into the code block."""
    markdown, tokens = _inert_markdown(text)
    return _close_open_fence(md_layout.left_align_tables(markdown, tokens), tokens)
