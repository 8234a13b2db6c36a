"""Layout touches on safe markdown that change how it looks, never what it holds.

:func:`left_align_tables`: a table column the model left unaligned (``---``) is marked left
(``:---``). A browser centres an unaligned header cell and a notebook's stylesheet may right-align
a cell (JupyterLab does outside markdown), while prose in a table reads best left-aligned —
which is what the model meant by giving no alignment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from markdown_it.token import Token

__all__ = ["left_align_tables"]

_UNALIGNED = re.compile(r"\s*-+\s*")


def _left(cell: str) -> str:
    return cell.replace("-", ":-", 1) if _UNALIGNED.fullmatch(cell) else cell


def left_align_tables(markdown: str, tokens: Sequence[Token]) -> str:
    """``markdown`` with each unaligned table column left-aligned; ``tokens`` is its parse."""
    rows = {t.map[0] + 1 for t in tokens if t.type == "table_open" and t.map is not None}
    if not rows:
        return markdown
    lines = markdown.split("\n")
    for row in rows:
        if row < len(lines):
            lines[row] = "|".join(_left(cell) for cell in lines[row].split("|"))
    return "\n".join(lines)
