"""Notebook end to end: ``%%amigo`` in a real kernel driven by nbclient, against the same cell
in an IPython shell inside this process (no kernel, no ZeroMQ, displays only counted).

For each answer size the kernel and the in-process shell alternate (the order rotating every
repeat). The kernel's figures: wall time of the cell as nbclient sees it, the kernel process's
CPU seconds (/proc), the display messages it sent on iopub for the cell, the most of them in any
one second (by the kernel's own message timestamps), and the size of the cell's saved outputs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from benchmarks.common import RATIO, Context, Row, cpu_seconds, rotate

NAME = "notebook"
TITLE = "Notebook end to end"

DISPLAY_TYPES = ("display_data", "update_display_data")


def run(ctx: Context) -> list[Row]:
    if ctx.quick:
        sizes, paced = [500, 50], (200, 0.001)
    else:
        sizes, paced = [20_000, 200], (2_000, 0.001)
    kernel = _KernelRunner(ctx)
    shell = _ShellRunner(ctx)
    try:
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for turn in range(ctx.repeat):
            ctx.log(f"notebook: repeat {turn + 1}/{ctx.repeat}")
            for n in sizes:
                for where in rotate(["kernel", "shell"], turn):
                    runner = kernel if where == "kernel" else shell
                    results.setdefault((where, n), []).append(runner.run(n))
            results.setdefault(("paced", paced[0]), []).append(kernel.run(*paced))
    finally:
        kernel.close()
        shell.close()

    rows: list[Row] = []
    for n in sizes:
        k, s = results[("kernel", n)], results[("shell", n)]
        label = f"{n:,} chunks"
        rows += [
            Row(NAME, f"{label}: kernel, wall", [r["wall"] * 1000 for r in k], "ms"),
            Row(NAME, f"{label}: in-process, wall", [r["wall"] * 1000 for r in s], "ms"),
            Row(
                NAME,
                f"{label}: kernel ÷ in-process, wall",
                [a["wall"] / b["wall"] for a, b in zip(k, s, strict=True)],
                RATIO,
                ("<=", 1.15) if n == sizes[0] else None,
            ),
            Row(NAME, f"{label}: kernel CPU", [r["cpu"] * 1000 for r in k], "ms"),
            Row(NAME, f"{label}: in-process CPU", [r["cpu"] * 1000 for r in s], "ms"),
            Row(NAME, f"{label}: display messages (kernel)", [r["displays"] for r in k], "msgs"),
            Row(NAME, f"{label}: display calls (in-process)", [r["displays"] for r in s], "calls"),
            Row(
                NAME,
                f"{label}: display messages, most in any 1 s",
                [r["peak"] for r in k],
                "msgs",
                ("<=", 25),
            ),
            Row(NAME, f"{label}: saved output", [r["saved"] / 1024 for r in k], "KiB"),
        ]
    n, delay = paced
    p = results[("paced", n)]
    label = f"{n:,} chunks at {1 / delay:,.0f}/s"
    rows += [
        Row(NAME, f"{label}: kernel, wall", [r["wall"] for r in p], "s"),
        Row(NAME, f"{label}: display messages", [r["displays"] for r in p], "msgs"),
        Row(
            NAME,
            f"{label}: display messages, most in any 1 s",
            [r["peak"] for r in p],
            "msgs",
            ("<=", 25),
        ),
    ]
    return rows


class _KernelRunner:
    """One kernel for the whole section, through nbclient, one new cell per run."""

    def __init__(self, ctx: Context) -> None:
        import nbformat
        from nbclient import NotebookClient

        class Recording(NotebookClient):  # type: ignore[misc]
            """Keeps (type, kernel timestamp) of every message nbclient processes for a cell."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.seen: list[tuple[str, datetime | None]] = []

            def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
                self.seen.append((msg["msg_type"], msg["header"].get("date")))
                return super().process_message(msg, cell, cell_index)

        self.ctx = ctx
        self.nbformat = nbformat
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        self.client = Recording(
            self.nb,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(ctx.workdir)}},
        )
        self._context = self.client.setup_kernel()
        self._context.__enter__()
        self.pid = self.client.km.provisioner.process.pid
        self._cell(
            f"%load_ext amigo_magic\n%config AmigoMagics.base_url = {ctx.server.amigo_url!r}"
        )
        ctx.server.enqueue(n=200)  # warm up: the HTTP stack, the renderer, the connection
        self._cell("%%amigo --no-history\nwarm up")

    def _cell(self, source: str) -> Any:
        cell = self.nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.seen = []
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        if any(o.get("output_type") == "error" for o in cell.outputs):
            raise RuntimeError(f"cell failed: {cell.outputs}")
        return cell

    def run(self, n: int, delay: float = 0.0) -> dict[str, float]:
        self.ctx.server.enqueue(n=n, delay=delay)
        cpu = cpu_seconds(self.pid)
        start = time.perf_counter()
        cell = self._cell(f"%%amigo --no-history\nanswer in {n} chunks")
        wall = time.perf_counter() - start
        cpu = cpu_seconds(self.pid) - cpu
        stamps = [date for kind, date in self.client.seen if kind in DISPLAY_TYPES]
        final = cell.outputs[-1]["data"]["text/plain"]
        if f"{n} tokens" not in final:
            raise RuntimeError(f"the answer did not arrive whole: {final[-200:]!r}")
        return {
            "wall": wall,
            "cpu": cpu,
            "displays": len(stamps),
            "peak": _most_in_one_second(stamps),
            "saved": len(json.dumps(cell.outputs)),
        }

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def _most_in_one_second(stamps: list[datetime | None]) -> int:
    times = sorted(s.timestamp() for s in stamps if s is not None)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


class _ShellRunner:
    """The same magic in an InteractiveShell in this process; displays are counted, not kept."""

    def __init__(self, ctx: Context) -> None:
        from IPython.core.displaypub import DisplayPublisher

        from tests.shell import TestingShell

        class Counting(DisplayPublisher):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.count = 0
                self.last: dict[str, Any] = {}

            def publish(self, data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
                self.count += 1
                self.last = data

            def clear_output(self, wait: bool = False) -> None:
                pass

        self.ctx = ctx
        self.shell = TestingShell.instance()
        self.publisher = Counting()
        self.shell.display_pub = self.publisher
        self.shell.run_cell("%load_ext amigo_magic")
        self.shell.run_cell(f"%config AmigoMagics.base_url = {ctx.server.amigo_url!r}")
        ctx.server.enqueue(n=200)
        self.shell.run_cell("%%amigo --no-history\nwarm up")

    def run(self, n: int) -> dict[str, float]:
        self.ctx.server.enqueue(n=n)
        self.publisher.count = 0
        cpu = time.process_time()
        start = time.perf_counter()
        self.shell.run_cell(f"%%amigo --no-history\nanswer in {n} chunks")
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if f"{n} tokens" not in self.publisher.last.get("text/plain", ""):
            raise RuntimeError("the in-process answer did not arrive whole")
        return {"wall": wall, "cpu": cpu, "displays": self.publisher.count}

    def close(self) -> None:
        self.shell.run_cell("%unload_ext amigo_magic")
