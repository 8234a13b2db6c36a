"""What the extension reads off the kernel: the notebook's identity, the running cell's id, each
failed cell's traceback (``Err[n]``, and the last failure for ``%amigo fix``), which names of
the user's namespace ``-o`` may write, and which session belongs to a shell (how the panel finds
it without importing the magics).

Front-end plumbing, apart from the magics class: it needs only the shell, never the session.
"""

from __future__ import annotations

import builtins
import keyword
import os
import re
import traceback
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .session import ChatSession

__all__ = [
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
        tb = error.__traceback__
        while tb is not None and _is_ipython_frame(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next  # the user's traceback starts at their cell, not IPython's run_code
        trace = "".join(traceback.format_exception(type(error), error, tb))
        count = getattr(result, "execution_count", None)
        if count is not None:
            self.errors[count] = trace
        info = getattr(result, "info", None)
        self.last = (getattr(info, "raw_cell", "") or "", trace)


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
