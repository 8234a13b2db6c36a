"""Record and replay: what recording costs a live answer, and what a replay saves.

In an IPython shell inside this process against the loopback server, side by side in each
repeat (the order rotating): the same ``%%amigo`` cell with ``AmigoMagics.cache = 'off'`` and
with ``'auto'`` on a new prompt (a miss: the request's fingerprint, the lookup, the answer
recorded in the history database) — their ratio is the cost of recording; then that prompt
again (a hit: the recorded answer streamed through the same display) against the live answer
it replays, paced by the server like a real model.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import RATIO, Context, Row, rotate

NAME = "replay"
TITLE = "Record and replay"


def run(ctx: Context) -> list[Row]:
    n, delay = (300, 0.001) if ctx.quick else (2_000, 0.001)
    shell = _Shell(ctx)
    off: list[float] = []
    miss: list[float] = []
    hit: list[float] = []
    try:
        for turn in range(ctx.repeat):
            ctx.log(f"replay: repeat {turn + 1}/{ctx.repeat}")
            for mode in rotate(["off", "auto"], turn):
                prompt = f"answer {turn} with cache {mode}"
                (off if mode == "off" else miss).append(shell.cell(mode, prompt, n, delay))
            hit.append(shell.cell("auto", f"answer {turn} with cache auto", None, 0.0))
    finally:
        shell.close()
    label = f"{n:,} chunks at {1 / delay:,.0f}/s"
    return [
        Row(NAME, f"{label}: cache off, wall", [v * 1000 for v in off], "ms"),
        Row(NAME, f"{label}: cache auto, a miss (recorded), wall", [v * 1000 for v in miss], "ms"),
        Row(
            NAME,
            f"{label}: a miss ÷ cache off, wall",
            [a / b for a, b in zip(miss, off, strict=True)],
            RATIO,
            ("<=", 1.05),
        ),
        Row(NAME, f"{label}: replayed, wall", [v * 1000 for v in hit], "ms"),
        Row(
            NAME,
            f"{label}: replayed ÷ live, wall",
            [a / b for a, b in zip(hit, miss, strict=True)],
            RATIO,
            None if ctx.quick else ("<=", 0.2),  # a short answer is not much longer than 0.2 s
        ),
    ]


class _Shell:
    """``%%amigo`` in an InteractiveShell in this process; displays counted, not kept."""

    def __init__(self, ctx: Context) -> None:
        from IPython.core.displaypub import DisplayPublisher

        from tests.shell import TestingShell

        class Quiet(DisplayPublisher):  # type: ignore[misc]
            last: dict[str, Any] = {}  # noqa: RUF012 - one publisher, rebound per display

            def publish(self, data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
                self.last = data

            def clear_output(self, wait: bool = False) -> None:
                pass

        self.ctx = ctx
        self.shell = TestingShell.instance()
        self.publisher = Quiet()
        self.shell.display_pub = self.publisher
        self.shell.run_cell("%load_ext amigo_magic")
        self.shell.run_cell(f"%config AmigoMagics.base_url = {ctx.server.amigo_url!r}")
        ctx.server.enqueue(n=200)
        self.shell.run_cell("%%amigo --no-history\nwarm up")

    def cell(self, mode: str, prompt: str, n: int | None, delay: float) -> float:
        """Seconds one cell takes; ``n`` None: nothing queued, the answer must be a replay (a
        request would get the server's echo, not the recording, and fail the check)."""
        self.shell.run_cell(f"%config AmigoMagics.cache = {mode!r}")
        if n is not None:
            self.ctx.server.enqueue(n=n, delay=delay)
        start = time.perf_counter()
        self.shell.run_cell(f"%%amigo --no-history\n{prompt}")
        wall = time.perf_counter() - start
        shown = self.publisher.last.get("text/plain", "")
        if n is None and "replayed" not in shown:
            raise RuntimeError(f"the answer was not replayed: {shown[-200:]!r}")
        return wall

    def close(self) -> None:
        self.shell.run_cell("%config AmigoMagics.cache = ''")
        self.shell.run_cell("%unload_ext amigo_magic")
