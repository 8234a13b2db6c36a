"""An in-process IPython shell for tests: failing cells fail the test, displays are recorded;
and waiting, bounded, for what another thread does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell


@dataclass
class Published:
    data: dict[str, Any]
    metadata: dict[str, Any]
    display_id: str | None
    update: bool


@dataclass
class Recorder(DisplayPublisher):  # type: ignore[misc]
    """Keeps every display and update, as a front end would receive them."""

    calls: list[Published | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        display_id = (transient or {}).get("display_id")
        self.calls.append(Published(data, metadata or {}, display_id, update))

    def clear_output(self, wait: bool = False) -> None:
        self.calls.append("clear")

    @property
    def displays(self) -> list[Published]:
        return [c for c in self.calls if isinstance(c, Published)]

    def final(self) -> dict[str, Any]:
        """What is on screen for the last display id: its last data."""
        return self.displays[-1].data


class TestingShell(InteractiveShell):  # type: ignore[misc]
    """``run_cell`` raises what the cell raised, so a broken cell is a failed test."""

    __test__ = False  # a helper, not a test class

    def run_cell(self, raw_cell: str, *args: Any, **kwargs: Any) -> Any:
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result

    def run_cell_quietly(self, raw_cell: str) -> Any:
        """Run a cell that is expected to fail; return the result without raising."""
        return super().run_cell(raw_cell, store_history=True)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
