"""What the extension reads off the kernel: the notebook's identity, the running cell's id, each
failed cell's traceback (``Err[n]``, and the last failure for ``%amigo fix``), which names of
the user's namespace ``-o`` may write, and which session belongs to a shell (how the panel finds
it without importing the magics).

Front-end plumbing, apart from the magics class: it needs only the shell, never the session.
"""

from __future__ import annotations

import base64
import builtins
import keyword
import os
import re
import sys
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .session import ChatSession

__all__ = [
    "CellLog",
    "ErrorRecorder",
    "cell_id",
    "check_out_name",
    "notebook_identity",
    "register_session",
    "session_for",
    "unregister_session",
]

# IPython's own names in the user namespace: replacing one breaks the shell (get_ipython, In)
# or silently corrupts its state (Out, Err, the _ / _i history variables).
_IPYTHON_NAMES = frozenset(
    {"In", "Out", "Err", "get_ipython", "exit", "quit", "_", "__", "___", "_oh", "_ih", "_dh"}
)
_IPYTHON_HISTORY_NAME = re.compile(r"_i+\d*|_\d+")


class ErrorRecorder:
    """Keeps each failed cell's traceback as ``errors[n]``, from IPython's ``post_run_cell``
    event (never a global exception hook); the traceback starts at the user's cell."""

    def __init__(self, ignore: tuple[type[BaseException], ...] = ()) -> None:
        self.errors: dict[int, str] = {}
        self.last: tuple[str, str] | None = None  # (cell source, traceback)
        self._ignore = ignore

    def post_run_cell(self, result: Any) -> None:
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if error is None or isinstance(error, self._ignore):
            return
        trace = _trace(error)  # the user's traceback starts at their cell, not IPython's run_code
        count = getattr(result, "execution_count", None)
        if count is not None:
            self.errors[count] = trace
        info = getattr(result, "info", None)
        self.last = (getattr(info, "raw_cell", "") or "", trace)


Shown = tuple[str, bytes]  # a picture a cell displayed: (mime, bytes)
RecentCell = tuple[int | None, str, tuple[str, ...], tuple[Shown, ...]]  # count, source, outputs
PICTURE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


class CellLog:
    """The last ``keep`` cells run, each with its source, its text outputs (stdout, stderr,
    displays' ``text/plain``, the result, the error) and the pictures it displayed, in memory
    and bounded, for ``--cells N``.

    Fed by IPython's ``pre_run_cell`` / ``post_run_cell`` events: while a cell runs, its
    ``sys.stdout``/``sys.stderr`` writes and the shell's displays are also noted (``%%capture``'s
    way); both are put back when it ends. Pictures: at most ``pictures`` a cell, each at most
    ``picture_limit`` bytes, and ``memory`` bytes of them in all (the oldest cells' go first).
    """

    def __init__(
        self,
        shell: Any,
        keep: int = 20,
        limit: int = 20_000,
        *,
        pictures: int = 4,
        picture_limit: int = 5 * 2**20,
        memory: int = 32 * 2**20,
    ) -> None:
        self.cells: deque[RecentCell] = deque(maxlen=keep)
        self.keep = keep
        self._shell, self._limit = shell, limit
        self._picture_bounds = (pictures, picture_limit, memory)
        self._outputs: list[str] = []
        self._pictures: list[Shown] = []
        self._noted = 0  # characters in _outputs
        self._displays: dict[str, int] = {}  # display id → its output's index (updates replace)
        self._shown: dict[str, int] = {}  # display id → its picture's index
        self._streams: tuple[Any, Any] | None = None
        self._depth = 0  # a cell that runs cells (run_cell inside a cell) installs the tees once
        publisher = getattr(shell, "display_pub", None)
        self._publish = getattr(publisher, "publish", None)
        if publisher is not None and self._publish is not None:
            publisher.publish = self._noted_publish
        hook = getattr(shell, "displayhook", None)  # a cell's result (Out [n]) comes this way
        self._write_result = getattr(hook, "write_format_data", None)
        if hook is not None and self._write_result is not None:
            hook.write_format_data = self._noted_result
        self._resulted = False  # the running cell's result was noted as the notebook shows it

    def recent(self, count: int) -> list[RecentCell]:
        """The last ``count`` cells run before the one running now, oldest first."""
        return list(self.cells)[-count:] if count > 0 else []

    def pre_run_cell(self, info: Any) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        self._outputs, self._noted, self._displays = [], 0, {}
        self._pictures, self._shown, self._resulted = [], {}, False
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self._note), _Tee(sys.stderr, self._note)

    def post_run_cell(self, result: Any) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._depth == 0 and self._streams is not None:
            for name, stream in zip(("stdout", "stderr"), self._streams, strict=True):
                if isinstance(getattr(sys, name), _Tee):
                    setattr(sys, name, stream)
            self._streams = None
        value = getattr(result, "result", None)
        if value is not None and not self._resulted:
            self._note(f"result: {_repr(value)}\n")
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if error is not None:
            self._note(_trace(error))
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", "") or ""
        count = getattr(result, "execution_count", None)
        self.cells.append((count, source[: self._limit], tuple(self._outputs), (*self._pictures,)))
        self._bound_pictures()
        if self._depth == 0:
            self._outputs, self._noted, self._displays = [], 0, {}
            self._pictures, self._shown, self._resulted = [], {}, False

    def _bound_pictures(self) -> None:
        """Drop the oldest cells' pictures (their text note stays) past the memory bound."""
        memory = self._picture_bounds[2]
        total = sum(len(data) for cell in self.cells for _, data in cell[3])
        for index, (count, source, outputs, pictures) in enumerate(self.cells):
            if total <= memory:
                break
            if pictures:
                total -= sum(len(data) for _, data in pictures)
                self.cells[index] = (count, source, outputs, ())

    def close(self) -> None:
        """Put the shell's display publisher back (the extension's unload)."""
        publisher = getattr(self._shell, "display_pub", None)
        if publisher is not None and publisher.__dict__.get("publish") == self._noted_publish:
            del publisher.publish
        hook = getattr(self._shell, "displayhook", None)
        if hook is not None and hook.__dict__.get("write_format_data") == self._noted_result:
            del hook.write_format_data

    def _note(self, text: str) -> None:
        if self._noted < self._limit:
            self._outputs.append(text[: self._limit - self._noted])
            self._noted += len(self._outputs[-1])

    def _noted_publish(self, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            metadata = kwargs.get("metadata", args[0] if args else None)
            # an answer: noted without its status line's timings
            answer = isinstance(metadata, Mapping) and "phase" in (metadata.get("amigo") or {})
            # a map's progress, side-by-side columns: the text they say to note, timings left out
            amigo = metadata.get("amigo") if isinstance(metadata, Mapping) else None
            noted = amigo.get("noted") if isinstance(amigo, Mapping) else None
            display_id = (kwargs.get("transient") or {}).get("display_id")
            index = self._displays.get(display_id) if display_id else None
            replaced = len(self._outputs[index]) if index is not None else 0
            room = self._limit - self._noted + replaced  # an update's new text takes its old's
            shown = noted if isinstance(noted, str) else _display_text(data, room, answer=answer)
            shown = shown[: max(room, 0)]
            if index is not None:  # an update: it replaces what that display showed
                self._noted += len(shown) - replaced
                self._outputs[index] = shown
            elif kwargs.get("update"):  # another cell's display (a --bg answer): not this output
                display_id = None
            elif shown or display_id:
                count = len(self._outputs)
                self._note(shown)
                if display_id and len(self._outputs) > count:  # noted: its updates replace it
                    self._displays[display_id] = count
            if display_id is not None or not kwargs.get("update"):
                self._note_picture(data, display_id)
        except Exception:  # noting must never break a display
            pass
        assert self._publish is not None
        return self._publish(data, *args, **kwargs)

    def _noted_result(self, format_dict: Any, md_dict: Any = None) -> Any:
        """A cell's result as the notebook shows it (Out [n]): its text, and its picture."""
        try:
            shown = _display_text(format_dict, self._limit)
            if shown:
                self._resulted = True
                self._note(f"result: {shown}")
            self._note_picture(format_dict, None)
        except Exception:  # noting must never break a result
            pass
        assert self._write_result is not None
        return self._write_result(format_dict, md_dict)

    def _note_picture(self, data: Any, display_id: str | None) -> None:
        if not isinstance(data, Mapping):
            return
        mime = next((m for m in PICTURE_MIMES if m in data), None)
        if mime is None:
            return
        found = data[mime]
        picture = base64.b64decode(found) if isinstance(found, str) else found
        most, limit, _ = self._picture_bounds
        if not isinstance(picture, bytes) or len(picture) > limit:
            return
        if display_id is not None and display_id in self._shown:  # an update replaces it
            self._pictures[self._shown[display_id]] = (mime, picture)
        elif len(self._pictures) < most:
            self._pictures.append((mime, picture))
            if display_id is not None:
                self._shown[display_id] = len(self._pictures) - 1


class _Tee:
    """A stream that also hands every write to ``note``."""

    def __init__(self, stream: Any, note: Callable[[str], None]) -> None:
        self._stream, self._note_write = stream, note

    def write(self, text: str) -> Any:
        if isinstance(text, str):
            self._note_write(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _display_text(data: Any, limit: int, *, answer: bool = False) -> str:
    """What a display shows as text: its first ``limit`` characters (what can be noted), taken
    without copying the rest — each update of a long answer re-sends all of it."""
    if not isinstance(data, Mapping):
        return ""
    text = data.get("text/plain")
    text = text if isinstance(text, str) else ""
    if answer:
        return _answer_text(text, limit)
    pictures = [mime for mime in data if str(mime).startswith("image/")]
    if pictures:
        text = f"[a picture was shown: {', '.join(pictures)}] {text}".rstrip()
    elif len(text) > limit:
        return text[: max(limit, 0)]
    return text + "\n" if text else ""


_VISIBLE = re.compile(r"\S")


def _answer_text(shown: str, limit: int) -> str:
    """An answer's ``text/plain`` without its status line (the last paragraph), whose timings
    change on every run: a later ``--cells`` request stays the same, so it can be replayed. At
    most ``limit`` characters, found without copying the rest."""
    end = len(shown)
    while end and shown[end - 1] == "\n":
        end -= 1
    cut = shown.rfind("\n\n", 0, end)
    if cut < 0 or not _VISIBLE.search(shown, 0, cut):
        return ""
    return shown[: max(limit, 0)] if cut >= limit else f"{shown[:cut]}\n"


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as error:
        return f"<repr failed: {type(error).__name__}>"
    return text if len(text) <= 4000 else text[:4000] + f"… ({len(text) - 4000:,} more characters)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_FILE = re.compile(r'File "[^"\n]*ipykernel_\d+[/\\]\d+\.py"')  # a kernel's own per-run name
_LIBRARY = re.compile(
    r'File "[^"\n]*?[/\\](lib[/\\]python\d+\.\d+|site-packages|dist-packages)[/\\]'
)


def _trace(error: BaseException) -> str:
    """``error`` as the notebook shows it: an error that renders itself (amigo_magic's one
    line) as those lines, any other as its traceback from the user's cell on (IPython's own
    frames skipped) — the cell's file as ``<cell>``, a library's path from ``lib/python3.x``
    or ``site-packages`` on, so the text reads the same on every run and machine (a recorded
    ``--cells`` or ``%amigo fix`` request replays)."""
    render = getattr(error, "_render_traceback_", None)
    if callable(render):
        try:
            return _ANSI.sub("", "\n".join(render())) + "\n"
        except Exception:
            pass  # its own rendering failed: the traceback says it
    tb = error.__traceback__
    while tb is not None and _is_ipython_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    return _LIBRARY.sub(r'File "…/\1/', _CELL_FILE.sub('File "<cell>"', text))


def _is_ipython_frame(filename: str) -> bool:
    return f"{os.sep}IPython{os.sep}" in filename


def notebook_identity(shell: Any, env: Mapping[str, str] = os.environ) -> str:
    """The notebook's path as Jupyter passes it, else a per-kernel id."""
    namespace = getattr(shell, "user_ns", {})
    for candidate in (
        env.get("JPY_SESSION_NAME"),
        namespace.get("__session__"),
        namespace.get("__vsc_ipynb_file__"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return f"kernel-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def cell_id(shell: Any) -> str | None:
    """The running cell's id (JupyterLab sends it in the execute request's metadata), if any."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else {}
    except Exception:
        parent = getattr(kernel, "_parent_header", {})
    found = (parent or {}).get("metadata", {}).get("cellId")
    return found if isinstance(found, str) and found else None


def check_out_name(name: str, shell: Any) -> None:
    """``-o NAME`` must be a plain variable of the user's: a UsageError saying why otherwise."""
    example = "pick another name, e.g. -o answer"
    if not name.isidentifier():
        raise UsageError(
            f"-o {name!r} is not a Python variable name (letters, digits and _, not starting "
            f"with a digit): {example}."
        )
    if keyword.iskeyword(name):
        raise UsageError(f"-o {name!r} is a Python keyword: {example}.")
    hidden = getattr(shell, "user_ns_hidden", {})
    if (
        name in _IPYTHON_NAMES
        or name in hidden
        or _IPYTHON_HISTORY_NAME.fullmatch(name)
        or (name.startswith("__") and name.endswith("__"))
    ):
        raise UsageError(f"-o {name!r} would replace one of IPython's own names: {example}.")
    if hasattr(builtins, name):
        raise UsageError(f"-o {name!r} would hide Python's built-in {name}: {example}.")


_SESSIONS: dict[int, Callable[[], ChatSession]] = {}


def register_session(shell: object, provider: Callable[[], ChatSession]) -> None:
    """Make ``provider()`` the session of ``shell`` (the extension registers the magics')."""
    _SESSIONS[id(shell)] = provider


def unregister_session(shell: object) -> None:
    _SESSIONS.pop(id(shell), None)


def session_for(shell: object) -> ChatSession | None:
    """The session registered for ``shell``, if the extension is loaded there."""
    provider = _SESSIONS.get(id(shell))
    return provider() if provider is not None else None
