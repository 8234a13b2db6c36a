"""The panel's tool approval (``%amigo_panel -T NAME``): each call the model asks for is shown
with its arguments beside Approve and Deny; a click runs (or refuses) it.

The gate is called on the loop thread and never blocks it: it queues the call and shows the
first one waiting. Approve runs the function in the click's callback — on the kernel's main
thread, where the user's functions belong — and the answer goes on. A stopped answer drops what
is still waiting. ``AmigoMagics.approve_tools`` = ``"always"`` / ``"never"`` decide without
asking, as in a cell ("always" runs the function on a worker thread, so the loop, and every
other answer streaming on it, never waits for it).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

if TYPE_CHECKING:
    from .answer import Live

__all__ = ["Approvals", "calls_widget"]


def _no_ask(pending: Any) -> None:
    return None


def calls_widget(calls: list[dict[str, Any]]) -> widgets.HTML:
    """An answer's tool calls, collapsed (``<details>``), every word escaped."""
    from .render import tool_calls_bundle

    data, _ = tool_calls_bundle(calls)
    widget = widgets.HTML(data["text/html"])
    widget.add_class("amigo-tool-calls")
    return widget


class Approvals:
    """The approval row (hidden until a call waits) and the gate the session calls."""

    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self.question = widgets.HTML()
        self.approve = widgets.Button(description="Approve", button_style="success")
        self.deny = widgets.Button(description="Deny", button_style="warning")
        self.row = widgets.HBox([self.question, self.approve, self.deny])
        self.row.add_class("amigo-approval")
        self.row.layout.display = "none"
        self._waiting: list[Any] = []  # PendingCall, first shown
        self._lock = threading.Lock()
        self._on_error = on_error
        self.approve.on_click(lambda _: self._decide(True))
        self.deny.on_click(lambda _: self._decide(False))

    def gate(self, pending: Any, live: Live) -> None:
        """A call to decide (from the loop thread): by the policy, else shown for a click."""
        if pending.box.policy != "ask" or pending.box.always:  # no question: off the loop
            threading.Thread(target=pending.settle, args=(_no_ask,), daemon=True).start()
            return
        with self._lock:
            self._waiting.append(pending)
        self._show()

    def clear(self) -> None:
        """The answer ended: nothing waits any more."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for pending in waiting:
            pending.deny("the answer ended first")
        self._show()

    def _decide(self, approved: bool) -> None:
        with self._lock:
            pending = self._waiting.pop(0) if self._waiting else None
        self._show()
        if pending is None:
            return
        try:
            pending.approve() if approved else pending.deny()
        except Exception as error:  # approve() reports the function's own errors to the model
            self._on_error(error)

    def _show(self) -> None:
        with self._lock:
            first = self._waiting[0] if self._waiting else None
            more = len(self._waiting) - 1
        if first is None:
            self.row.layout.display = "none"
            return
        later = f" ({more} more waiting)" if more > 0 else ""
        self.question.value = (
            f"<span>Run <code>{html.escape(first.label)}</code>?{html.escape(later)}</span>"
        )
        self.row.layout.display = "flex"
