"""The bundles of typed answers, fixes and tool calls (issue 16), re-exported by :mod:`.render`:
a typed object as a small table, a fix as a highlighted diff, an answer's tool calls collapsed.

Everything the model wrote is escaped (``html.escape``) before it is markup: no part of these
bundles can run script, and none is rendered as markdown that could hold raw HTML.
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .schema import rows

__all__ = ["Bundle", "diff_bundle", "tool_calls_bundle", "value_table"]

Bundle = tuple[dict[str, Any], dict[str, Any]]  # (data, metadata), shown with raw=True

MAX_ROWS = 50  # a --many answer's table shows this many rows, then says how many more
MAX_RESULT = 300  # characters of a tool's result shown in the output


def value_table(value: Any, caption: str) -> Bundle:
    """A typed answer (an instance, a dict, a list of them) as a table; a DataFrame as itself."""
    meta = {"amigo": {"typed": type(value).__name__}}
    if type(value).__name__ == "DataFrame" and hasattr(value, "_repr_html_"):
        table = value._repr_html_()
        return {"text/plain": f"{value!r}\n{caption}", "text/html": table + _caption(caption)}, meta
    headers, found = rows(value)
    more = len(found) - MAX_ROWS
    shown = found[:MAX_ROWS] + ([["…"] * len(headers)] if more > 0 else [])
    caption += f" ({more} more rows)" if more > 0 else ""
    lines, table = text_table(headers, shown)
    return {
        "text/plain": "\n".join([*lines, caption]),
        "text/html": table + _caption(caption),
    }, meta


def text_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = ""
) -> tuple[list[str], str]:
    """``rows`` under ``headers`` as aligned plain lines and as an escaped, left-aligned HTML
    table (with ``caption`` as its caption when given): every table the package shows."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    head = "".join(f'<th style="text-align:left">{html.escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="text-align:left">{html.escape(c)}</td>' for c in r) + "</tr>"
        for r in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    table = f'<table class="amigo-table">{cap}<thead><tr>{head}</tr></thead>'
    table += f"<tbody>{body}</tbody></table>"
    return lines, table


def _caption(text: str) -> str:
    return f'<div class="amigo-status">{html.escape(text)}</div>'


def diff_bundle(old: str, new: str, *, caption: str) -> Bundle:
    """``old`` → ``new`` as a unified diff: removed lines red, added lines green, escaped."""
    lines = list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), "failed cell", "fixed", lineterm="", n=3
        )
    )
    if not lines:
        lines = ["(the fix is the same code)"]
    colours = {"+": "#1a7f37", "-": "#cf222e", "@": "#6e7781"}
    body = "\n".join(
        f'<span style="color:{colours[line[0]]}">{html.escape(line)}</span>'
        if line[:1] in colours and not line.startswith(("+++", "---"))
        else html.escape(line)
        for line in lines
    )
    plain = caption + "\n" + "\n".join(lines)
    return (
        {
            "text/plain": plain,
            "text/html": f'<div class="amigo-notice">{html.escape(caption)}</div>'
            f'<pre class="amigo-diff">{body}</pre>',
        },
        {"amigo": {"diff": True}},
    )


def tool_calls_bundle(calls: Sequence[Mapping[str, Any]]) -> Bundle:
    """An answer's tool calls, collapsed: each call with its arguments, how it ended, and the
    start of its result."""
    items, plain = [], [f"🔧 {len(calls)} tool call{'s' if len(calls) != 1 else ''}"]
    for call in calls:
        label = f"{call.get('name', '?')}({_arguments(call.get('arguments', ''))})"
        result = str(call.get("result", ""))
        if len(result) > MAX_RESULT:
            result = result[: MAX_RESULT - 1] + "…"
        status = str(call.get("status", ""))
        plain.append(f"  {label} → {status}: {result}")
        items.append(
            f"<li><code>{html.escape(label)}</code> → {html.escape(status)}: "
            f"<code>{html.escape(result)}</code></li>"
        )
    summary = html.escape(plain[0])
    return (
        {
            "text/plain": "\n".join(plain),
            "text/html": f'<details class="amigo-tools"><summary>{summary}</summary>'
            f"<ul>{''.join(items)}</ul></details>",
        },
        {"amigo": {"tool_calls": len(calls)}},
    )


def _arguments(text: Any) -> str:
    try:
        found = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except ValueError:
        return str(text)[:80]
    if not isinstance(found, dict):
        return str(text)[:80]
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in found.items())
    return shown if len(shown) <= 120 else shown[:119] + "…"
