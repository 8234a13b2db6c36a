"""``%load_ext amigo_magic``: registering the magics, the ``Err`` recorder and the shell's
session (which the panel finds with :func:`~amigo_magic.cells.session_for`), and undoing it.
Nothing heavy is imported here: the session and the HTTP stack load on first use."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import complete
from .cells import register_session, unregister_session
from .errors import AnswerStopped, ConfigError
from .magics import AmigoMagics

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["current", "load", "nest_asyncio_run", "unload"]

_loaded: dict[int, AmigoMagics] = {}
_completers: dict[int, complete.Completer | None] = {}


def current(shell: InteractiveShell | None = None) -> AmigoMagics:
    """The loaded extension's magics for ``shell`` (default: the running IPython), loading the
    extension first if needed."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise ConfigError("amigo_magic needs IPython or Jupyter: run it in a notebook.")
    if id(shell) not in _loaded:
        load(shell)
    return _loaded[id(shell)]


def load(shell: InteractiveShell) -> None:
    """Register the magics and the error recorder (``%load_ext amigo_magic``)."""
    if id(shell) in _loaded:
        return
    magics = AmigoMagics(shell=shell)
    shell.register_magics(magics)
    shell.events.register("post_run_cell", magics.recorder.post_run_cell)
    shell.events.register("pre_run_cell", magics.cell_log.pre_run_cell)  # --cells N
    shell.events.register("post_run_cell", magics.cell_log.post_run_cell)
    shell.user_ns.setdefault("Err", magics.recorder.errors)
    register_session(shell, lambda: magics.session)
    _loaded[id(shell)] = magics
    if not shell.custom_exceptions:  # a stop ends the cell as failed (Run All stops), quietly
        shell.set_custom_exc((AnswerStopped,), _stopped)  # type: ignore[no-untyped-call]
    _completers[id(shell)] = complete.install(magics)  # Tab after %amigo, --model, …
    _warm_up_after_this_cell(shell)
    nest_asyncio_run(magics.nested_asyncio)
    magics.observe(lambda change: nest_asyncio_run(change["new"]), names="nested_asyncio")


def _stopped(shell: Any, etype: Any, value: Any, tb: Any, tb_offset: Any = None) -> None:
    """A stopped answer's cell shows no error box: its status line already says "■ stopped"
    (``value.shown``); any other stop is one plain line."""
    if not getattr(value, "shown", False):
        print(f"■ {value}")
    return None


def _warm_up_after_this_cell(shell: InteractiveShell) -> None:
    """Once the cell that loaded the extension has finished, warm up (the HTTP stack, the loop
    thread: :func:`~amigo_magic.session.warm_up`) on a daemon thread, so that the first
    ``%%amigo`` finds it ready. ``%load_ext`` itself stays light, and no cell ever waits for it."""

    def start(result: Any = None) -> None:
        shell.events.unregister("post_run_cell", start)
        if id(shell) in _loaded:  # not unloaded in the same cell
            threading.Thread(target=_warm_up, name="amigo-warm-up", daemon=True).start()

    shell.events.register("post_run_cell", start)


def _warm_up() -> None:
    try:
        from .session import warm_up

        warm_up()
    except Exception:  # a head start only: the first answer does it, and reports any error
        logging.getLogger("amigo_magic").debug("warm-up failed", exc_info=True)


_plain_run = asyncio.run


def nest_asyncio_run(enabled: bool) -> None:
    """Make ``asyncio.run`` work where a loop already runs (a notebook cell: the kernel's), or
    undo it. Only that call changes, and only where it would raise: the coroutine runs on a new
    loop in a helper thread while the cell waits (interruptible: Stop cancels it). The kernel's
    loop, asyncio's tasks and the magics' own loop thread stay as they are (nest_asyncio would
    patch all three)."""
    asyncio.run = _nested_run if enabled else _plain_run


def _nested_run(main: Any, **kwargs: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _plain_run(main, **kwargs)  # no loop here: the usual asyncio.run
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    box: dict[str, Any] = {}
    started = threading.Event()

    async def tracked() -> Any:
        box["task"], box["loop"] = asyncio.current_task(), asyncio.get_running_loop()
        started.set()
        return await main

    def target() -> None:
        try:
            box["value"] = _plain_run(tracked(), **kwargs)
        except BaseException as error:  # handed to the waiting cell
            box["error"] = error

    thread = threading.Thread(target=target, name="asyncio.run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)  # short slices: an interrupt reaches the cell at once
    except KeyboardInterrupt:
        if started.wait(1):
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join(5)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def unload(shell: InteractiveShell) -> None:
    """Undo everything :func:`load` did and stop the background loop."""
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    nest_asyncio_run(False)
    if shell.custom_exceptions == (AnswerStopped,):
        shell.set_custom_exc((), None)  # type: ignore[no-untyped-call]
    complete.uninstall(magics, _completers.pop(id(shell), None))
    unregister_session(shell)
    shell.events.unregister("post_run_cell", magics.recorder.post_run_cell)
    shell.events.unregister("pre_run_cell", magics.cell_log.pre_run_cell)
    shell.events.unregister("post_run_cell", magics.cell_log.post_run_cell)
    magics.cell_log.close()
    manager = shell.magics_manager
    for kind, names in AmigoMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
    configurables: list[Any] = shell.configurables
    if magics in configurables:
        configurables.remove(magics)
    if shell.user_ns.get("Err") is magics.recorder.errors:
        del shell.user_ns["Err"]
    if magics._session is not None:
        magics._session.close()
    elif "amigo_magic.session" in sys.modules:  # a panel's own session may have started the loop
        from .session import stop_background

        stop_background()
