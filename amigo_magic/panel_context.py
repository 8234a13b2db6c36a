"""The chat panel's context controls: which recent cells and which of the notebook's variables
go with a prompt — through the same builder as a ``%%amigo`` cell (:meth:`ChatSession.prompt`),
so a picked ``df`` is sent as its view and a picked ``fig`` as a picture, within the budget.

A front end of its own beside :mod:`.panel`: stock widgets, no business logic. The variables and
the recent cells are the kernel's (the magics' namespace and ``CellLog`` when the extension is
loaded in this shell); without a kernel the controls are shown disabled.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

if TYPE_CHECKING:
    from .context import Prompt
    from .session import ChatSession

__all__ = ["CELL_CHOICES", "ContextControls", "variable_names"]

CELL_CHOICES = (
    ("no cells", 0),
    ("the last cell", 1),
    ("the last 2 cells", 2),
    ("the last 3 cells", 3),
    ("the last 5 cells", 5),
    ("the last 10 cells", 10),
)
MAX_NAMES = 500  # variables listed in the picker
_IPYTHON_NAMES = frozenset({"In", "Out", "Err", "get_ipython", "exit", "quit", "open"})


def variable_names(
    namespace: Mapping[str, Any], hidden: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The picker's ``(label, name)`` entries: the user's own variables (not IPython's, not
    private, not modules), each labelled with its type, sorted by name."""
    found = []
    for name, value in namespace.items():
        if name.startswith("_") or name in _IPYTHON_NAMES or name in hidden:
            continue
        if isinstance(value, types.ModuleType):
            continue
        found.append((f"{name} · {type(value).__name__}", name))
    return sorted(found, key=lambda entry: entry[1].casefold())[:MAX_NAMES]


def _not_the_panel(cells: Sequence[Any]) -> list[Any]:
    """The recent cells but those that only opened a panel (``%amigo_panel``)."""
    return [cell for cell in cells if not cell[1].lstrip().startswith("%amigo_panel")]


class ContextControls:
    """A "Context" section: a recent-cells choice (the cells that opened a panel are skipped)
    and a variables picker, and :meth:`prompt`, which builds the prompt a Send sends."""

    def __init__(self, shell: Any | None = None) -> None:
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        self._shell = shell
        wide = {"description_width": "initial"}
        self.cells = widgets.Dropdown(
            options=CELL_CHOICES,
            value=0,
            description="Recent cells",
            style=wide,
            layout=widgets.Layout(width="230px"),
        )
        self.variables = widgets.SelectMultiple(
            options=[],
            rows=4,
            description="Variables",
            style=wide,
            layout=widgets.Layout(flex="1 1 0%", min_width="240px"),
        )
        self.cells.add_class("amigo-context-cells")
        self.variables.add_class("amigo-context-variables")
        hint = widgets.HTML(
            '<span class="amigo-note">Sent with each prompt: a variable as its view (a figure '
            "as a picture), a cell with its output. Ctrl/⌘-click picks several.</span>"
        )
        inner = widgets.VBox(
            (widgets.HBox((self.cells, self.variables), layout=widgets.Layout(width="100%")), hint)
        )
        self.box = widgets.Accordion(children=(inner,), titles=("Context",))
        self.box.selected_index = None
        self.box.add_class("amigo-context")
        if shell is None:
            self.cells.disabled = self.variables.disabled = True
            self.box.set_title(0, "Context (needs the notebook's kernel)")
        self.box.observe(lambda _: self.refresh(), names=["selected_index"])
        self.cells.observe(lambda _: self._retitle(), names=["value"])
        self.variables.observe(lambda _: self._retitle(), names=["value"])
        self.refresh()

    def install(self, children: Sequence[Any], before: Any) -> tuple[Any, ...]:
        """``children`` with the section placed just before ``before`` (the prompt box)."""
        at = list(children).index(before)
        return (*children[:at], self.box, *children[at:])

    def refresh(self) -> None:
        """List the notebook's variables now, keeping what is still there picked."""
        if self._shell is None:
            return
        namespace, _ = self._sources()
        options = variable_names(namespace, getattr(self._shell, "user_ns_hidden", {}))
        names = {name for _, name in options}
        picked = tuple(name for name in self.variables.value if name in names)
        self.variables.options = options
        self.variables.value = picked

    def prompt(self, session: ChatSession, text: str) -> Prompt:
        """``text`` as Send sends it: each picked variable not already written as ``{name}``
        appended as a field, the chosen cells before it — built by ``session.prompt``."""
        namespace, log = self._sources()
        if self._shell is None:
            return session.prompt(text)
        fields = [f"{{{name}}}" for name in self.variables.value if f"{{{name}}}" not in text]
        full = "\n\n".join([text, *fields]) if fields else text
        count = int(self.cells.value)
        cells = _not_the_panel(log.recent(log.keep))[-count:] if log is not None and count else []
        return session.prompt(full, namespace, cells)

    def _sources(self) -> tuple[Mapping[str, Any], Any]:
        """The namespace ``{name}`` fields read (the magics', with ``Err``) and the cell log."""
        shell = self._shell
        registry = getattr(getattr(shell, "magics_manager", None), "registry", {})
        magics = registry.get("AmigoMagics")
        if magics is not None:
            return magics.namespace(), magics.cell_log
        return getattr(shell, "user_ns", {}), None

    def _retitle(self) -> None:
        picked, cells = len(self.variables.value), int(self.cells.value)
        parts = [f"{picked} variable{'s' if picked != 1 else ''}"] if picked else []
        parts += [f"{cells} cell{'s' if cells != 1 else ''}"] if cells else []
        self.box.set_title(0, "Context: " + ", ".join(parts) if parts else "Context")
