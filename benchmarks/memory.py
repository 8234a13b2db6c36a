"""Memory: the peak RSS growth while ``%%amigo`` streams a 1 MB answer, as a multiple of the
answer's size.

Each repeat is a fresh child process (``python -m benchmarks.memory URL SIZE MODE``): an IPython
shell that loads the extension and streams a small answer first (imports, the loop thread, the
connection), then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), streams the big
answer and reads the new peak (``VmHWM``). Displays are not kept (a front end's job); the answer
kept in the chat history is counted, as it stays in a real kernel too. The same answer through
the session alone (``ChatSession.ask``, no display, no final render) separates the cost of
keeping the streamed text from the cost of rendering it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.common import RATIO, ROOT, Context, Row, chunks_for_size

NAME = "memory"
TITLE = "Memory"


def run(ctx: Context) -> list[Row]:
    size = 50_000 if ctx.quick else 1_000_000
    count = len(chunks_for_size(size))
    growth: dict[str, list[float]] = {"magic": [], "session": []}
    for turn in range(ctx.repeat):
        for mode in growth:
            ctx.log(f"memory: repeat {turn + 1}/{ctx.repeat}, {mode} (fresh process)")
            ctx.server.enqueue(n=200)  # the child's warm-up answer
            ctx.server.enqueue(size=size)
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", ctx.server.amigo_url, str(size), mode],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"memory child failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            growth[mode].append(result["peak"] - result["before"])
    mib = 1 << 20
    label = f"{size / 1e6:g} MB answer in {count:,} chunks"
    magic, session = growth["magic"], growth["session"]
    return [
        Row(NAME, f"{label}: %%amigo, peak RSS growth", [g / mib for g in magic], "MiB"),
        Row(NAME, "%%amigo: growth ÷ answer size", [g / size for g in magic], RATIO, ("<=", 5)),
        Row(
            NAME, "streaming only (session, no display): ÷ size", [g / size for g in session], RATIO
        ),
    ]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(url: str, size: int, mode: str) -> dict[str, Any]:
    """``mode`` "magic": the whole %%amigo cell; "session": ChatSession.ask and wait, no display."""
    import gc

    from IPython.core.displaypub import DisplayPublisher

    from amigo_magic.session import AskOptions
    from tests.shell import TestingShell

    class Last(DisplayPublisher):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.shown = 0  # characters of text/plain last published; the bundle is not kept

        def publish(self, data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            self.shown = len(data.get("text/plain", ""))

        def clear_output(self, wait: bool = False) -> None:
            pass

    shell = TestingShell.instance()
    shell.display_pub = publisher = Last()
    shell.run_cell("%load_ext amigo_magic")
    shell.run_cell(f"%config AmigoMagics.base_url = {url!r}")
    shell.run_cell("%%amigo --no-history\nwarm up")
    magics = shell.magics_manager.registry["AmigoMagics"]
    publisher.shown = 0
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False  # then the growth is an upper bound: VmHWM may predate the big answer
    before = _status("VmRSS")
    if mode == "magic":
        shell.run_cell("%%amigo --no-history\na long answer")
        peak = _status("VmHWM")
        length = publisher.shown
    else:
        answer = magics.session.ask(
            "a long answer", AskOptions(use_history=False), magics.settings()
        )
        answer.wait()
        peak = _status("VmHWM")
        length = answer.length
    if length < size:
        raise RuntimeError(f"the answer did not arrive whole ({length} of {size} characters)")
    return {"before": before, "peak": peak, "reset": reset}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
