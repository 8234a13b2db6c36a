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
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["protect", "spans"]

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
