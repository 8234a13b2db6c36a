"""Builds every MIME bundle amigo_magic displays: answers, pictures, tables and notices.

Pure of IPython: functions return plain ``(data, metadata)`` dicts, or :class:`Rich` objects with
``_repr_mimebundle_``, that the kernel side displays. Model text reaches a bundle only through
:mod:`.sanitize`. A markdown answer's bundle is ``text/markdown`` (made safe) and ``text/plain``:
the front end's own renderer formats it — code highlighting, math, tables, theme colours — and
the saved notebook holds the answer twice, not three times. While it streams, an
:class:`AnswerView` keeps the finished blocks' markdown between updates and shows the block
still being written as plain code (:mod:`.live_markdown`), so the work per update stays bounded.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from .answer import LIVE_PHASES, AnswerState, Phase
from .render_typed import diff_bundle, text_table, tool_calls_bundle, value_table

if TYPE_CHECKING:
    from .answer import ModelSource
    from .catalog import Alias, Model
    from .history import ChatSummary, Turn

__all__ = [
    "AnswerFormat",
    "AnswerState",
    "AnswerView",
    "Phase",
    "Rich",
    "answer_bundle",
    "chats_table",
    "code_block",
    "config_table",
    "diff_bundle",
    "endpoint_models_table",
    "escape_stream_html",
    "help_table",
    "image_bundle",
    "markdown_html",
    "models_table",
    "notice",
    "progress",
    "reasoning_html",
    "status_text",
    "tool_calls_bundle",
    "transcript",
    "turn_bundle",
    "value_table",
]

AnswerFormat = Literal["markdown", "text", "html", "code", "json"]

UNFORMATTED_ABOVE = 256 * 1024  # characters: a longer answer's final display is not formatted
_FORMATS = frozenset({"markdown", "text", "html", "code", "json"})
_IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


# --------------------------------------------------------------------------------------------
# Status line and bundles


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _usage_parts(state: AnswerState) -> list[str]:
    if state.tokens is None:
        return []
    about = "~" if state.tokens_estimated else ""  # the server did not count them (yet)
    parts = [f"{about}{state.tokens} token{'' if state.tokens == 1 else 's'}"]
    # A rate over a fraction of a second (a cached or echoed answer) is noise, not a speed.
    if state.phase in ("streaming", "done") and state.seconds >= 0.25:
        parts.append(f"{state.tokens / state.seconds:.1f} tok/s")
    return parts


def status_text(state: AnswerState) -> str:
    """The one-line status under an answer, e.g. ``claude · 120 tokens · 45.1 tok/s · 2.7 s``."""
    model = _one_line(state.model)
    seconds = f"{state.seconds:.1f} s"
    has_text = bool(state.text.strip())
    kept = " (partial answer kept)" if has_text else ""
    if state.phase == "thinking":
        line = f"{model} · thinking…"
    elif state.phase == "loading":
        line = f"{model} · loading model…"
    elif state.phase == "drawing":
        line = f"{model} · drawing… {seconds}"
    elif state.phase == "stopped":
        line = " · ".join([f"■ stopped by you after {seconds}", model, *_usage_parts(state)]) + kept
    elif state.phase == "error":
        line = f"✖ {_one_line(state.error or 'unknown error')}{kept}"
    else:
        line = " · ".join([model, *_usage_parts(state), seconds])
    if state.context and state.phase != "error":
        line += f" · {_one_line(state.context)}"
    if state.warning:
        line += f" · ⚠ {_one_line(state.warning)}"
    return line


_STATUS_STYLE = "opacity: 0.8; font-size: 0.85em; margin-top: 0.4em"  # the theme's own colour


def _status_div(status: str, *, live: bool = False) -> str:
    # "$" as an entity: a front end's math pass must not pair two of them in a status line.
    escaped = html.escape(status).replace("$", "&#36;")
    classes = "amigo-status amigo-live" if live else "amigo-status"
    return f'<div class="{classes}" style="{_STATUS_STYLE}">{escaped}</div>'


_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _markdown_literal(value: str) -> str:
    """Backslash-escape every ASCII punctuation character: markdown then shows it as text."""
    return _ASCII_PUNCTUATION.sub(r"\\\1", _one_line(value))


def _plain(text: str, status: str) -> str:
    return f"{text}\n\n{status}" if text else status


def _answer_metadata(state: AnswerState, fmt: AnswerFormat) -> dict[str, Any]:
    return {
        "amigo": {
            "model": state.model,
            "chat": state.chat,
            "phase": state.phase,
            "tokens": state.tokens,
            "seconds": round(state.seconds, 2),
            "format": fmt,
        }
    }


class AnswerView:
    """One answer's display across its updates: what its live markdown already rendered."""

    def __init__(self, fmt: AnswerFormat = "markdown") -> None:
        from .live_markdown import LiveMarkdown  # imports the sanitiser: the first update only

        self.fmt = fmt
        self.live = LiveMarkdown()

    def bundle(self, state: AnswerState) -> tuple[dict[str, Any], dict[str, Any]]:
        """The live bundle while ``state`` streams, then the final one in this view's format."""
        return answer_bundle(state, fmt=self.fmt, view=self)


def _live_markdown(text: str, view: AnswerView | None) -> str:
    if view is not None and view.fmt in ("markdown", "code"):
        return view.live.markdown(text)
    from .live_markdown import tail_block

    return tail_block(text.strip("\n")) if text.strip() else ""


def answer_bundle(
    state: AnswerState, *, fmt: AnswerFormat = "markdown", view: AnswerView | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for displaying ``state``.

    While the answer is live (thinking, loading, streaming) its ``text/markdown`` is the finished
    blocks formatted (with a ``view``, whose work between updates is bounded) and the block
    being written as plain code; without a view, all of it as plain code. Once final (done,
    stopped, error) it is rendered in ``fmt``. ``fmt="json"`` on a done answer raises
    :class:`ValueError` with a one-line message when the text is not JSON; a stopped or failed
    JSON answer is shown as text.
    """
    if fmt not in _FORMATS:
        supported = ", ".join(sorted(_FORMATS))
        raise ValueError(f"Unknown answer format {fmt!r}; use one of {supported}")
    metadata = _answer_metadata(state, fmt)
    status = status_text(state)
    text = state.text
    if state.phase in LIVE_PHASES and len(text) > UNFORMATTED_ABOVE:
        # As it will end (shown unformatted), and one copy per update instead of two: each
        # update of a long answer re-sends all of it, and its temporaries are the peak memory.
        data = {"text/plain": _plain(text, f"{status} · shown unformatted while this long")}
    elif state.phase in LIVE_PHASES:
        body = _live_markdown(text, view)
        live_status = _status_div(status, live=True)
        data = {
            "text/markdown": f"{body}\n\n{live_status}" if body else live_status,
            "text/plain": _plain(text, status),
        }
    elif fmt == "json" and state.phase == "done":
        data = _json_data(text)
    elif fmt in ("text", "json"):
        data = {"text/plain": _plain(text, status)}
    elif fmt == "html":
        from . import sanitize

        data = {
            "text/html": sanitize.sanitize_html(text) + _status_div(status),
            "text/plain": _plain(text, status),
        }
    elif len(text) > UNFORMATTED_ABOVE:
        # Rendering markdown this long holds markdown-it's token trees, ~25x the text, and
        # takes seconds: show it as it streamed (escaped) instead, and say so.
        from . import sanitize

        status = f"{status} · shown unformatted (over {UNFORMATTED_ABOVE >> 10} KB)"
        data = {
            "text/markdown": sanitize.as_code_block(text, after=_status_div(status)),
            "text/plain": _plain(text, status),
        }
    else:
        data = {"text/markdown": _final_markdown(text, status), "text/plain": _plain(text, status)}
    if state.reasoning:
        data = _with_reasoning(data, state)
    return data, metadata


def reasoning_html(reasoning: str, *, live: bool = False) -> str:
    """A model's reasoning as one marked ``<details>`` (open while it thinks, collapsed once it
    answers; "" for none): escaped, on one line of markup so no blank line in it ever ends the
    block and lets it be read as markdown."""
    if not reasoning:
        return ""
    shown = reasoning[-4000:] if live else reasoning  # bounded while it grows
    body = html.escape(shown).replace("\r", "").replace("\n", "<br>")
    words = len(reasoning.split())
    summary = f"💭 reasoning · {words} word{'' if words == 1 else 's'}" + (" …" if live else "")
    return (
        f'<details class="amigo-reasoning"{" open" if live else ""}><summary>'
        f'{summary}</summary><div style="opacity: 0.75">{body}</div></details>'
    )


def _with_reasoning(data: dict[str, Any], state: AnswerState) -> dict[str, Any]:
    """The reasoning above the answer in its markup types, never in ``text/plain``."""
    live = state.phase in LIVE_PHASES and not state.text
    block = reasoning_html(state.reasoning, live=live)
    shown = dict(data)
    if "text/markdown" in shown:
        shown["text/markdown"] = f"{block}\n\n{shown['text/markdown']}"
    if "text/html" in shown:
        shown["text/html"] = block + shown["text/html"]
    return shown


def turn_bundle(text: str, view: AnswerView | None = None) -> dict[str, Any]:
    """A panel turn's text as a cell shows it, without the status line: safe ``text/markdown``
    (with a live ``view``, the finished blocks and the plain tail) and ``text/plain``."""
    from . import sanitize

    if view is not None:
        markdown = view.live.markdown(text)
    elif len(text) > UNFORMATTED_ABOVE:
        markdown = sanitize.as_code_block(text)
    else:
        markdown = sanitize.safe_markdown_closed(text)
    return {"text/markdown": markdown, "text/plain": text}


def markdown_html(text: str) -> str:
    """Model markdown as sanitised HTML (side-by-side columns): no script, no live markup; its
    math as written, for the front end to typeset (:func:`.math_text.keep_in_html`)."""
    from . import math_text, sanitize

    return math_text.keep_in_html(text, sanitize.safe_html_from_markdown)


def code_block(text: str, *, fenced_only: bool = False) -> tuple[str, str | None]:
    """The first fenced code block of an answer and its language; without one, the whole text
    (``fenced_only``: ``("", None)``)."""
    from . import sanitize

    if fenced_only and not _FENCE_LINE.search(text):
        return "", None
    return sanitize.extract_code(text)


_FENCE_LINE = re.compile(r"^[ \t>]*(?:`{3,}|~{3,})", re.M)


def escape_stream_html(text: str) -> str:
    """The cheap HTML for an answer still streaming: escaped text, line breaks kept. O(n)."""
    return f'<div class="amigo-stream" style="white-space: pre-wrap">{html.escape(text)}</div>'


def _final_markdown(text: str, status: str) -> str:
    from . import sanitize

    if not text.strip():
        return _status_div(status)
    return f"{sanitize.safe_markdown_closed(text)}\n\n{_status_div(status)}"


_JSON_FENCE = re.compile(
    r"\A\s*(`{3,}|~{3,})[ \t]*(?:json)?[ \t]*\n(.*)\n[ \t]*\1[ \t]*\s*\Z", re.I | re.S
)
_EXCERPT_WIDTH = 80


def _json_data(text: str) -> dict[str, Any]:
    body, line_offset = text, 0
    fenced = _JSON_FENCE.match(text)
    if fenced:
        body, line_offset = fenced.group(2), text.count("\n", 0, fenced.start(2))
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(_json_error_message(exc, line_offset)) from None
    return {
        "application/json": value,
        "text/plain": json.dumps(value, indent=2, ensure_ascii=False),
    }


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are Python's extension; the front end's JSON cannot carry them.
    raise ValueError(f"The answer is not valid JSON: {name} is not a JSON value")


def _json_error_message(exc: json.JSONDecodeError, line_offset: int) -> str:
    lines = exc.doc.split("\n")
    line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
    excerpt = line
    if len(line) > _EXCERPT_WIDTH:
        start = max(0, min(exc.colno - 1 - _EXCERPT_WIDTH // 2, len(line) - _EXCERPT_WIDTH))
        excerpt = line[start : start + _EXCERPT_WIDTH]
        excerpt = (
            ("…" if start else "") + excerpt + ("…" if start + _EXCERPT_WIDTH < len(line) else "")
        )
    return (
        f"The answer is not valid JSON: {exc.msg} at line {exc.lineno + line_offset}, "
        f"column {exc.colno}: {excerpt!r}"
    )


def image_bundle(
    png: bytes, *, alt: str, mime: str = "image/png", model: str, chat: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for a generated picture: base64 image data plus a text fallback.

    Only raster types are accepted: an SVG from a model could carry script.
    """
    if mime not in _IMAGE_MIMES:
        supported = ", ".join(sorted(_IMAGE_MIMES))
        raise ValueError(f"Unsupported image type {mime!r}; use one of {supported}")
    data = {mime: base64.b64encode(png).decode("ascii"), "text/plain": f"<image: {alt}>"}
    metadata = {"amigo": {"model": model, "chat": chat, "format": "image", "alt": alt}}
    return data, metadata


# --------------------------------------------------------------------------------------------
# Tables, transcripts and notices: what %amigo subcommands return


class Rich:
    """A displayable result: IPython shows it through ``_repr_mimebundle_``."""

    def __init__(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
        self.data = dict(data)
        self.metadata = dict(metadata or {})

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", ""))


def notice(text: str) -> Rich:
    """One line of information."""
    return Rich(
        {
            "text/plain": text,
            "text/html": f'<div class="amigo-notice">{html.escape(text)}</div>',
        }
    )


def progress(text: str) -> Rich:
    """A status line that will be replaced (drawing…, loading…)."""
    return Rich(
        {"text/plain": text, "text/html": _status_div(text)},
        {"amigo": {"phase": "progress"}},
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> Rich:
    lines, table = text_table(headers, rows, caption)
    plain = (caption + "\n" if caption else "") + "\n".join(lines)
    return Rich({"text/plain": plain, "text/html": table})


def help_table(rows: Sequence[tuple[str, str]]) -> Rich:
    return _table(("command", "what it does"), rows)


def config_table(
    rows: Sequence[tuple[str, ...]], headers: Sequence[str] = ("setting", "value")
) -> Rich:
    return _table(headers, rows)


def endpoint_models_table(sources: Sequence[ModelSource], *, default: str) -> Rich:
    """The local model and each endpoint's live models; a server that is down says why."""
    rows: list[tuple[str, str, str]] = []
    for source in sources:
        if source.error:
            label = source.name if source.name == "local" else f"{source.name}:…"
            rows.append((f"  {label}", source.where, f"unavailable: {source.error}"))
        for model in source.models:
            mark = "* " if model == default else "  "
            rows.append(
                (mark + model, source.where, "live" if source.name != "local" else "offline")
            )
    return _table(("model", "where", "status"), rows)


def models_table(models: Sequence[Model], aliases: Mapping[str, Alias], *, default: str) -> Rich:
    """Every model: id (``*`` marks the default), its aliases, kind and description."""
    by_target: dict[str, list[str]] = {}
    for alias in aliases.values():
        by_target.setdefault(alias.target, []).append(alias.name)
    rows = [
        (
            ("* " if m.id == default else "  ") + m.id,
            ", ".join(sorted(by_target.get(m.id, []), key=len)),
            m.kind + (" · sees pictures" if m.sees_pictures else ""),
            m.description,
        )
        for m in models
    ]
    return _table(("model", "aliases", "kind", "what it is"), rows)  # persona ids are internal


def chats_table(chats: Sequence[ChatSummary]) -> Rich:
    if not chats:
        return notice("No chats in this notebook yet: a %%amigo cell starts one.")
    rows = [(c.name, str(c.turns), _when(c.last_used)) for c in chats]
    return _table(("chat", "turns", "last used"), rows)


def transcript(turns: Sequence[Turn], *, chat: str) -> Rich:
    """A chat as markdown (sanitised) with a plain-text twin; pictures are named, not embedded."""
    from . import sanitize

    if not turns:
        return notice(f"Chat '{chat}' is empty.")
    plain: list[str] = []
    markdown: list[str] = []
    for turn in turns:
        who = "You" if turn.role == "user" else turn.model or "assistant"
        flag = "" if turn.status == "complete" else f" ({turn.status})"
        pictures = f" [{len(turn.images)} picture(s)]" if turn.images else ""
        plain.append(f"{who}{flag}:{pictures}\n{turn.content}\n")
        markdown.append(f"**{_markdown_literal(who + flag)}**{pictures}\n\n{turn.content}")
    md = "\n\n---\n\n".join(markdown)
    return Rich(
        {
            "text/markdown": sanitize.safe_markdown(md),
            "text/plain": "\n".join(plain).rstrip(),
        },
        {"amigo": {"chat": chat, "turns": len(turns)}},
    )


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
