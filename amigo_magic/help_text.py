"""The magics' ``%amigo?`` help as plain text a reader can use: IPython shows a magic's
docstring as written, so reST markup (``::``, double backticks) is taken out, and the usage
line that ``magic_arguments`` writes names the form the options belong to (``%%amigo``, whose
options a ``%amigo VERB`` line does not take)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["plain"]

_LITERAL = re.compile(r"``(.+?)``", re.S)


def plain(func: Callable[..., Any], usage_name: str, note: str = "") -> None:
    """Rewrite ``func.__doc__`` in place: plain text, its usage line under ``usage_name``."""
    doc = func.__doc__ or ""
    name = f"%{func.__name__}"
    if doc.startswith("::\n\n"):
        doc = "Usage:\n\n" + doc[len("::\n\n") :]
    doc = re.sub(rf"^(\s*){re.escape(name)} \[", rf"\g<1>{usage_name} [", doc, count=1, flags=re.M)
    doc = _LITERAL.sub(r"\1", doc).replace("Examples::", "Examples:")
    func.__doc__ = doc + (f"\n{note}\n" if note else "")
