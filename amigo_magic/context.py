"""What a ``{name}`` field sends: a typed view of the object, bounded by a token budget, and the
one builder of a chat request's messages (a cell, the panel and ``--dry-run`` alike).

An object that describes itself for a model (``_repr_llm_()``, or ``text/llm+plain`` in its
``_repr_mimebundle_``) is sent as it says; then a view registered with :func:`register`; then the
built-in views — pandas and polars frames and series (recognised by type name: no library is
ever imported here), numpy arrays, long lists, dicts and sets, exceptions, functions and classes.
Strings are sent as they are (``{Err[7]}`` is a traceback). Every other view fits the budget
(tokens, estimated at four characters each) and says what it left out ("… 9,990 more rows").

Pure: no IPython, no pandas, no numpy import; a view reads only what it shows (a frame's head,
tail, dtypes, null counts and ranges), never a copy of the data.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .attach import Picture, from_bytes
from .errors import ConfigError
from .history import Turn, window
from .redact import scrub

__all__ = [
    "DEFAULT_BUDGET",
    "Filled",
    "Preview",
    "Prompt",
    "build_messages",
    "estimate_tokens",
    "recent_cells",
    "register",
    "summary",
    "view",
]

DEFAULT_BUDGET = 2000  # tokens per filled-in value (AmigoMagics.context_budget)
CHARS_PER_TOKEN = 4
MIN_BUDGET = 32  # a smaller budget counts as this: room for a view's first line and its note
SAMPLE_ROWS = 5  # head and tail each
LONG_COLLECTION = 20  # items; a shorter one whose str() fits is sent as str()

View = Callable[[Any, int], str]
_registered: list[tuple[type | str, View]] = []


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` is likely to cost (about four characters each)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def register(type_or_name: type | str, fn: View) -> None:
    """Send objects of ``type_or_name`` (a class, or a qualified type name such as
    ``"shapely.geometry.Polygon"``, matched without importing it) as ``fn(obj, budget)`` says.

    A later registration wins over an earlier one and over the built-in views; the text is
    still cut to the budget if ``fn`` returns more.
    """
    _registered.insert(0, (type_or_name, fn))


@dataclass(frozen=True, slots=True)
class Filled:
    """One ``{field}`` as it was filled in: which view, and its estimated tokens."""

    field: str
    kind: str
    tokens: int


def view(value: Any, budget: int = DEFAULT_BUDGET) -> tuple[str, str]:
    """``(text, kind)``: what ``value`` is sent as, within ``budget`` tokens (strings whole)."""
    if isinstance(value, str):
        return value, "text"
    kind, fn = _find(value)
    text = fn(value, budget)
    return bound(text, budget, keep="tail" if kind == "exception" else "head"), kind


def bound(text: str, budget: int, keep: str = "head") -> str:
    """``text`` cut to ``budget`` tokens, saying how much was left out."""
    limit = max(budget, MIN_BUDGET) * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    room = limit - 48  # the note fits in the budget too
    if keep == "tail":
        kept = text[-room:]
        return f"… {len(text) - len(kept):,} earlier characters left out\n{kept}"
    kept = text[:room]
    cut = kept.rfind("\n")
    kept = kept[:cut] if cut > room // 2 else kept
    return f"{kept}\n… {len(text) - len(kept):,} more characters left out"


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt as sent: its text, its pictures (image parts after it), the context summary."""

    text: str
    pictures: tuple[Picture, ...] = ()
    context: str | None = None

    def check(self, model: str, sees_pictures: bool | None) -> None:
        """One line, before anything is sent, if ``model`` reads text only (None: unknown)."""
        if self.pictures and sees_pictures is False:
            count, what = len(self.pictures), ", ".join(p.label for p in self.pictures)
            raise ConfigError(
                f"'{model}' reads text only, and this prompt has {count} picture"
                f"{'s' if count != 1 else ''} ({what}): pick a model that sees pictures "
                "(gpt-4o-mini, gpt, claude, gemini, llama-vision), or leave the picture out."
            )

    def text_only(self) -> str:
        """The text of a prompt for an image model, which takes no pictures."""
        if self.pictures:
            raise ConfigError(
                "An image model takes a text prompt only: leave the picture out, or ask a "
                "chat model about it with %%amigo."
            )
        return self.text.strip()


def summary(filled: Sequence[Filled]) -> str | None:
    """The status line's ``context: 2 objects, 3 cells, 1 picture · ~2.4k tokens`` or None."""
    if not filled:
        return None
    cells = sum(1 for f in filled if f.kind == "cell")
    pictures = sum(1 for f in filled if f.kind == "picture")
    parts = [(len(filled) - cells - pictures, "object"), (cells, "cell"), (pictures, "picture")]
    what = ", ".join(f"{n} {word}{'s' if n != 1 else ''}" for n, word in parts if n)
    tokens = sum(f.tokens for f in filled)
    shown = f"{tokens / 1000:.1f}k" if tokens >= 1000 else str(tokens)
    return f"context: {what} · ~{shown} tokens"


def recent_cells(
    cells: Sequence[Sequence[Any]],
    budget: int,
    secrets: Sequence[str],
    pictures: list[Picture] | None = None,
) -> tuple[str, list[Filled]]:
    """The block ``--cells N`` puts before the prompt: each cell's source, text output and the
    pictures it showed (``In [3]:`` / ``Out [3]:``; each picture appended to ``pictures``, when
    given, and named where it was shown), the budget shared between them, the secrets scrubbed.

    A cell is ``(count, source, outputs)`` or ``(count, source, outputs, pictures)``, its
    pictures ``(mime, bytes)``; one that does not fit its share is named, not sent."""
    if not cells:
        return "", []
    share = max(budget // len(cells), MIN_BUDGET)
    blocks: list[str] = []
    filled: list[Filled] = []
    sent: list[Picture] = pictures if pictures is not None else []
    for count, source, outputs, *more in cells:
        label = str(count) if count is not None else "?"
        text = f"In [{label}]:\n{bound(source.rstrip(), share // 2)}\n"
        room, notes = share - estimate_tokens(text), []
        for _mime, data in more[0] if more and pictures is not None else ():
            try:  # each picture takes what it costs from the cell's share; the text the rest
                picture = from_bytes(data, f"In [{label}]", room - MIN_BUDGET)
            except ConfigError as why:
                notes.append(f"[a picture it showed is left out: {why}]")
                continue
            sent.append(picture)
            room -= picture.tokens
            notes.append(f"[picture {len(sent)}: shown by In [{label}], attached]")
            filled.append(Filled(f"In [{label}]", "picture", picture.tokens))
        shown = "\n".join(["".join(outputs).rstrip(), *notes]).strip() or "(no output)"
        text += f"Out [{label}]:\n{bound(shown, room, keep='tail')}"
        text = scrub(text, [s for s in secrets if s])
        blocks.append(text)
        filled.append(Filled(f"In [{label}]", "cell", estimate_tokens(text)))
    many = f"{len(cells)} cells" if len(cells) != 1 else "cell"
    their = "their" if len(cells) != 1 else "its"
    head = f"The notebook's last {many} before this one, with {their} output:\n\n"
    return head + "\n\n".join(blocks) + "\n\n---\n\n", filled


# -- the one message builder, and what --dry-run shows ------------------------------------------


class Asking(Protocol):
    """What the builder reads of a request's options (the session's ``AskOptions``)."""

    @property
    def system(self) -> str | None: ...
    @property
    def use_history(self) -> bool: ...
    @property
    def max_history(self) -> int: ...


def build_messages(
    prompt: str, earlier: Sequence[Turn], options: Asking, pictures: Sequence[Picture] = ()
) -> list[dict[str, Any]]:
    """The request's messages: the system message, the window of ``earlier`` turns (with
    history on), the prompt — its text, then an image part per picture — for a cell, the
    panel and ``--dry-run`` alike. Earlier turns go as text (a picture is sent once)."""
    messages: list[dict[str, Any]] = []
    if options.system:
        messages.append({"role": "system", "content": options.system})
    if options.use_history:
        messages += window(earlier, options.max_history)
    if pictures:
        parts = [{"type": "text", "text": prompt}, *(picture.part() for picture in pictures)]
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": prompt})
    return messages


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


@dataclass(frozen=True, slots=True)
class Preview:
    """What a request would send, not sent (``%%amigo --dry-run``)."""

    model: str
    messages: tuple[Mapping[str, Any], ...]
    context: str | None = None
    pictures: tuple[Picture, ...] = ()  # the last message's image parts, described

    @property
    def tokens(self) -> int:
        text = sum(estimate_tokens(_text(m["content"])) + 4 for m in self.messages)  # + role
        return text + sum(picture.tokens for picture in self.pictures)

    def __str__(self) -> str:
        count = len(self.messages)
        lines = [
            f"Dry run, nothing sent: {self.model} would get {count} message"
            f"{'s' if count != 1 else ''}, ~{self.tokens:,} tokens (estimated)"
            + (f" · {self.context}" if self.context else "")
        ]
        for message in self.messages:
            text = _text(message["content"])
            pictures = () if isinstance(message["content"], str) else self.pictures
            tokens = estimate_tokens(text) + sum(picture.tokens for picture in pictures)
            lines += [f"── {message['role']} · ~{tokens:,} tokens ──", text]
            lines += [f"[image part {n}: {p.describe()}]" for n, p in enumerate(pictures, 1)]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


# -- finding a view ------------------------------------------------------------------------------


def _names(value: Any) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(value).__mro__]


def _find(value: Any) -> tuple[str, View]:
    if not isinstance(value, type):
        own = _own_description(value)
        if own is not None:
            return "described", lambda _v, _b: own
    names = _names(value)
    for key, fn in _registered:
        if isinstance(key, str) and (key in names or any(n.endswith("." + key) for n in names)):
            return "registered", fn
        if isinstance(key, type) and isinstance(value, key):
            return "registered", fn
    top = names[0]
    if top.startswith("pandas.") and "pandas" in sys.modules:
        if top.endswith(".DataFrame"):
            return "dataframe", _pandas_frame
        if top.endswith(".Series"):
            return "series", _pandas_series
    if top.startswith("polars.") and "polars" in sys.modules:
        if top.endswith(".DataFrame"):
            return "dataframe", _polars_frame
        if top.endswith(".Series"):
            return "series", _polars_series
    if top == "numpy.ndarray" and "numpy" in sys.modules:
        return "array", _numpy_array
    if isinstance(value, BaseException):
        return "exception", _exception
    if inspect.isroutine(value) or isinstance(value, type):
        return "code", _code
    if isinstance(value, list | tuple | set | frozenset | dict):
        return "collection", _collection
    return "value", _plain


def _own_description(value: Any) -> str | None:
    """``value._repr_llm_()``, else the ``text/llm+plain`` of its ``_repr_mimebundle_``."""
    try:
        method = getattr(value, "_repr_llm_", None)
        if callable(method):
            text = method()
            if isinstance(text, str):
                return text
        bundle_of = getattr(value, "_repr_mimebundle_", None)
        if callable(bundle_of):
            bundle = bundle_of(include=["text/llm+plain"], exclude=[])
            if isinstance(bundle, tuple):
                bundle = bundle[0]
            text = bundle.get("text/llm+plain") if isinstance(bundle, Mapping) else None
            if isinstance(text, str):
                return text
    except Exception:
        return None  # its own description failed: the views below still describe it
    return None


# -- the built-in views --------------------------------------------------------------------------


def _plain(value: Any, budget: int) -> str:
    return str(value)


def _left(count: int, what: str) -> str:
    return f"… {count:,} more {what}" if count > 0 else ""


def _fits(parts: Sequence[str], budget: int) -> bool:
    return estimate_tokens("\n".join(parts)) <= budget


def _column_lines(rows: Sequence[tuple[str, ...]], budget: int) -> list[str]:
    """Aligned ``name  dtype  nulls  range`` lines, as many as half the budget holds."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    lines: list[str] = []
    for row in rows:
        line = "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        if not _fits([*lines, line], budget // 2):
            lines.append("  " + _left(len(rows) - len(lines), "columns"))
            break
        lines.append(line)
    return lines


def _sampled(head: list[str], sample: Callable[[int], list[str]], budget: int) -> str:
    """``head`` plus the largest sample (rows shown from each end) that fits the budget."""
    for rows in (SAMPLE_ROWS, 3, 1):
        parts = head + sample(rows)
        if _fits(parts, budget):
            return "\n".join(parts)
    return "\n".join([*head, "(no sample rows: they do not fit the context budget)"])


def _range(series: Any) -> str:
    kind = getattr(series.dtype, "kind", "O")
    if kind not in "iufmMb" or len(series) == 0:
        return ""
    try:
        low, high = series.min(), series.max()
    except Exception:
        return ""
    return f"{_number(low)} … {_number(high)}"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _pandas_frame(df: Any, budget: int) -> str:
    rows, cols = df.shape
    table = [
        (str(name), str(df[name].dtype), f"{int(df[name].isna().sum()):,} null", _range(df[name]))
        for name in df.columns[:200]
    ]
    head = [f"pandas.DataFrame: {rows:,} rows, {cols:,} columns", "columns (dtype, nulls, range):"]
    head += _column_lines(table, budget)
    if cols > 200:
        head.append("  " + _left(cols - 200, "columns"))

    def sample(n: int) -> list[str]:
        if rows <= 2 * n:
            return ["rows:", df.to_string(max_cols=20, max_colwidth=40)]
        return [
            f"first {n} rows:",
            df.head(n).to_string(max_cols=20, max_colwidth=40),
            f"last {n} rows:",
            df.tail(n).to_string(max_cols=20, max_colwidth=40, header=False),
            _left(rows - 2 * n, "rows"),
        ]

    return _sampled(head, sample, budget)


def _pandas_series(series: Any, budget: int) -> str:
    size = len(series)
    nulls = int(series.isna().sum())
    span = _range(series)
    head = [
        f"pandas.Series {series.name!r}: {size:,} values, dtype {series.dtype}, {nulls:,} null"
        + (f", range {span}" if span else "")
    ]

    def sample(n: int) -> list[str]:
        if size <= 2 * n:
            return [series.to_string(max_rows=2 * n)]
        return [
            series.head(n).to_string(),
            "…",
            series.tail(n).to_string(),
            _left(size - 2 * n, "values"),
        ]

    return _sampled(head, sample, budget)


def _polars_frame(df: Any, budget: int) -> str:
    rows, cols = df.shape
    nulls = df.null_count().row(0)
    table = [
        (str(name), str(dtype), f"{int(n):,} null", "")
        for (name, dtype), n in zip(df.schema.items(), nulls, strict=False)
    ]
    head = [f"polars.DataFrame: {rows:,} rows, {cols:,} columns", "columns (dtype, nulls):"]
    head += _column_lines(table, budget)

    def sample(n: int) -> list[str]:
        if rows <= 2 * n:
            return ["rows:", str(df)]
        return [f"first {n} rows:", str(df.head(n)), f"last {n} rows:", str(df.tail(n)),
                _left(rows - 2 * n, "rows")]  # fmt: skip

    return _sampled(head, sample, budget)


def _polars_series(series: Any, budget: int) -> str:
    size = len(series)
    head = [f"polars.Series {series.name!r}: {size:,} values, dtype {series.dtype}, "
            f"{series.null_count():,} null"]  # fmt: skip
    return _sampled(head, lambda n: [str(series.head(n)), _left(size - n, "values")], budget)


def _numpy_array(array: Any, budget: int) -> str:
    numpy = sys.modules["numpy"]
    line = f"numpy.ndarray: shape {array.shape}, dtype {array.dtype}"
    if array.size and array.dtype.kind in "iufb":
        with contextlib.suppress(Exception):  # fmin/fmax: a NaN does not hide the range
            low, high = numpy.fmin.reduce(array, None), numpy.fmax.reduce(array, None)
            line += f", range {_number(low)} … {_number(high)}"
    edge = 3
    values = numpy.array2string(array, threshold=2 * edge * 2, edgeitems=edge, max_line_width=100)
    shown = math.prod(min(dim, 2 * edge) for dim in array.shape)
    parts = [line, values]
    if array.size > 4 * edge:
        parts.append(_left(array.size - shown, "values"))
    return "\n".join(parts)


def _exception(error: BaseException, budget: int) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()


def _code(obj: Any, budget: int) -> str:
    kind = "class" if isinstance(obj, type) else "function"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(…)"
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = ""
    if source:
        return f"{kind} {name}{signature}, source:\n{source.rstrip()}"
    doc = inspect.getdoc(obj) or "(no docstring)"
    return f"{kind} {name}{signature} (no source found)\n{doc}"


def _collection(value: Any, budget: int) -> str:
    size = len(value)
    if size <= LONG_COLLECTION:
        text = str(value)
        if estimate_tokens(text) <= budget:
            return text
    items = iter(value.items()) if isinstance(value, dict) else iter(value)
    shown: list[str] = []
    used = 0
    room = budget * CHARS_PER_TOKEN - 120
    for item in items:
        piece = f"{item[0]!r}: {item[1]!r}" if isinstance(value, dict) else repr(item)
        piece = piece if len(piece) <= 200 else piece[:199] + "…"
        if used + len(piece) + 2 > room:
            break
        shown.append(piece)
        used += len(piece) + 2
    what = "keys" if isinstance(value, dict) else "items"
    head = f"{type(value).__name__} of {size:,} {what}, the first {len(shown):,}:"
    return "\n".join([head, ", ".join(shown), _left(size - len(shown), what)])
