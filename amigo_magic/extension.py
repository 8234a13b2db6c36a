"""``%load_ext amigo_magic``: registering the magics, the ``Err`` recorder and the shell's
session (which the panel finds with :func:`~amigo_magic.cells.session_for`), and undoing it.
Nothing heavy is imported here: the session and the HTTP stack load on first use."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from .cells import register_session, unregister_session
from .errors import ConfigError
from .magics import AmigoMagics

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["current", "load", "unload"]

_loaded: dict[int, AmigoMagics] = {}


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
    _warm_up_after_this_cell(shell)


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


def unload(shell: InteractiveShell) -> None:
    """Undo everything :func:`load` did and stop the background loop."""
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
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
