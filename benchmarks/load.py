"""``%load_ext amigo_magic`` in a fresh kernel, timed by the kernel itself (perf_counter around
the load in the same cell), with the number of modules the load imported."""

from __future__ import annotations

from typing import Any

from benchmarks.common import Context, Row

NAME = "load"
TITLE = "%load_ext amigo_magic"

CELL = """\
import sys as _s, time as _t
_m = len(_s.modules); _t0 = _t.perf_counter()
%load_ext amigo_magic
print(f"{_t.perf_counter() - _t0:.6f} {len(_s.modules) - _m}")
"""


def run(ctx: Context) -> list[Row]:
    from tests.kernel import running_kernel

    seconds: list[float] = []
    modules: list[float] = []
    for turn in range(ctx.repeat):
        ctx.log(f"load: repeat {turn + 1}/{ctx.repeat} (fresh kernel)")
        with running_kernel(cwd=str(ctx.workdir)) as kernel:
            execution: Any = kernel.execute(CELL)
            if execution.status != "ok":
                raise RuntimeError(f"%load_ext failed: {execution.messages[-3:]}")
            took, count = execution.stream_text.split()
            seconds.append(float(took) * 1000)
            modules.append(int(count))
    return [
        Row(NAME, "%load_ext amigo_magic, fresh kernel", seconds, "ms", ("<=", 250)),
        Row(NAME, "modules it imported", modules, "modules"),
    ]
