"""TeX math inside model markdown: found the way Jupyter's renderer finds it, kept intact.

A notebook front end lifts math out of markdown *before* its markdown parser runs (JupyterLab's
``removeMath``): ``$…$``, ``$$…$$``, ``\\begin{env}…\\end{env}``, and pairs any unescaped ``$``
with the next one in the same paragraph. So inside math a markdown escape is wrong (``x^2\\,dx``
keeps its ``\\,``, a ``pmatrix`` its ``\\\\`` rows, ``\\{1, 2\\}`` its braces), and an HTML
escape is shown literally. :func:`protect` therefore rewrites math only where it must:

- ``<`` becomes ``\\lt `` (the same symbol to MathJax and KaTeX), so no front end — also one that
  does not treat the span as math — can read raw HTML there;
- ``\\(…\\)`` and ``\\[…\\]`` (which markdown would turn into ``(…)`` and ``[…]``) become ``$…$``
  and ``$$…$$``, which every notebook front end typesets.

Everything else in a math span is left as the model wrote it. Pure: no markdown parser.
:func:`keep_in_html` does the same for markdown rendered to HTML (the side-by-side columns): each
math span goes past the renderer as a placeholder and comes back as its own escaped text, which
the front end's math pass (it typesets HTML outputs too) reads as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["keep_in_html", "protect", "spans"]

_MATH = re.compile(
    r"""
      \$\$.+?\$\$                                     # display: $$ … $$
    | \\\[.+?\\\]                                     # display: \[ … \]
    | \\\(.+?\\\)                                     # inline: \( … \)
    | \\begin\{([A-Za-z]+\*?)\}.*?\\end\{\1\}         # \begin{env} … \end{env}
    | (?<!\\)\$(?:\\.|[^$\\\n]|\n(?![ \t]*\n))+?\$    # inline: $ … $, within a paragraph
    """,
    re.S | re.X,
)


def spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each math span in ``text`` (prose, not code), in order."""
    return [(m.start(), m.end()) for m in _MATH.finditer(text)]


def _rewrite(span: str) -> str:
    if span.startswith("\\["):
        span = f"$${span[2:-2]}$$"
    elif span.startswith("\\("):
        span = f"${span[2:-2].strip()}$"
    return span.replace("<", "\\lt ")


def protect(text: str, prose: Callable[[str], str]) -> str:
    """``text`` with its math spans rewritten as above and ``prose`` applied to everything
    else. ``prose`` must not add anything a math span needs (it escapes raw HTML)."""
    parts: list[str] = []
    position = 0
    for start, end in spans(text):
        parts.append(prose(text[position:start]))
        parts.append(_rewrite(text[start:end]))
        position = end
    parts.append(prose(text[position:]))
    return "".join(parts)


_HOLD = re.compile("\ue000([0-9]+)\ue001")


def keep_in_html(text: str, render: Callable[[str], str]) -> str:
    """``render(text)`` (markdown to safe HTML) with every math span outside the renderer's
    reach: put back as its own text, HTML-escaped. A span with a backquote is left to the
    renderer (it may be code, and a placeholder would cut the code span)."""
    import html

    text = text.replace("\ue000", "\ufffd").replace("\ue001", "\ufffd")
    held: list[str] = []
    parts: list[str] = []
    position = 0
    for start, end in spans(text):
        span = text[start:end]
        if "`" in span:
            continue
        parts.append(text[position:start])
        parts.append(f"\ue000{len(held)}\ue001")
        held.append(html.escape(span))
        position = end
    parts.append(text[position:])
    rendered = render("".join(parts))
    return _HOLD.sub(lambda match: held[int(match.group(1))], rendered)  # only ours: see above
