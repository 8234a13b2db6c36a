"""``%amigo_panel --side``: the chat panel beside the notebook, so it stays in view while the
notebook scrolls — through the ``sidecar`` widget (``pip install sidecar``, the ``side`` extra),
which JupyterLab opens as a tab in a pane split to the right of the notebook. Where there is no
side area to open — VS Code, or without ``sidecar`` — the panel shows inline and a line says so.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TITLE", "open_beside", "side_area"]

TITLE = "amigo chat"


def side_area(env: Mapping[str, str] = os.environ) -> str | None:
    """Why the panel cannot go to the side (None: it can)."""
    if any(name.startswith("VSCODE_") for name in env):
        return "VS Code has no side area for widgets"
    if importlib.util.find_spec("sidecar") is None:
        return "the side area needs the sidecar widget: pip install sidecar"
    return None


def open_beside(panel: Any, env: Mapping[str, str] = os.environ) -> Any:
    """Show ``panel`` in the side area; what the cell shows is returned.

    The kernel cannot tell which front end draws its widgets, so the cell also gets a view of
    the same panel (one widget, two views, always in step) with two lines: the page's own CSS
    (``panel.css``, ``:has()``) hides that copy and the first line once a side-area copy is on
    the page (JupyterLab), and otherwise hides the second — Notebook 7, whose page has no side
    area for it, shows the panel in the cell and says so. Where the kernel knows there is none
    (VS Code, no ``sidecar``) the panel goes only in the cell, after a line saying why.
    """
    import ipywidgets as widgets
    from IPython.display import display

    from .render import notice

    why = side_area(env)
    if why is not None:
        display(notice(f"The panel is shown here, in the notebook: {why}."))  # type: ignore[no-untyped-call]
        return panel
    from sidecar import Sidecar  # type: ignore[import-untyped]

    side = Sidecar(title=TITLE, anchor="split-right")  # a pane beside the notebook, not a strip
    with side:
        display(panel)  # type: ignore[no-untyped-call]
    present = widgets.HTML(
        f"The chat panel is open beside the notebook (the '{TITLE}' tab), in view as you "
        "scroll; close its tab to put it away."
    )
    missing = widgets.HTML("This page has no side area for the panel, so it is shown here.")
    present.add_class("amigo-side-present")
    missing.add_class("amigo-side-missing")
    cell = widgets.VBox((present, missing, panel))
    cell.add_class("amigo-side-fallback")
    return cell
