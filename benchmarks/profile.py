"""Profiles behind the notes in ``benchmarks/README.md`` (not part of the table).

.venv/bin/python -m benchmarks.profile first-token   # pyinstrument, first %%amigo, fresh kernel
.venv/bin/python -m benchmarks.profile first-token 1 # the same, typed 1 s after %load_ext
.venv/bin/python -m benchmarks.profile client        # pyinstrument, our client, 50,000 chunks
.venv/bin/python -m benchmarks.profile render        # peak memory of each step, 1 MB answer
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import ROOT, chunks_for_size, clean_environment
from benchmarks.memory import _status
from benchmarks.server import ServerProcess

FIRST_TOKEN_CELL = """\
from pyinstrument import Profiler as _Profiler
_p = _Profiler(interval=0.0005)
_p.start()
get_ipython().run_cell_magic("amigo", "--no-history", "hello")
_p.stop()
print(_p.output_text(unicode=True, color=False))
"""


def first_token(server: ServerProcess, workdir: Path, pause: float = 0.0) -> None:
    """The kernel's main thread during its first %%amigo (the server waits 200 ms), sent
    ``pause`` seconds after %load_ext (0: at once, as Run All sends it)."""
    from tests.kernel import running_kernel

    with running_kernel(cwd=str(workdir)) as kernel:
        kernel.execute("%load_ext amigo_magic")
        kernel.execute(f"%config AmigoMagics.base_url = {server.amigo_url!r}")
        time.sleep(pause)
        server.enqueue(n=50, stall_before=0.2)
        print(kernel.execute(FIRST_TOKEN_CELL).stream_text)


def client(server: ServerProcess, n: int = 50_000) -> None:
    """Our client reading one answer of ``n`` chunks (pyinstrument's overhead inflates it)."""
    from pyinstrument import Profiler

    from amigo_magic.backends.amigo import AmigoBackend
    from amigo_magic.backends.base import ChatRequest
    from amigo_magic.config import Settings

    async def read() -> None:
        backend = AmigoBackend(Settings(base_url=server.amigo_url))
        request = ChatRequest("gpt-4o-mini", [{"role": "user", "content": "stream"}])
        server.enqueue(n=2_000)
        async for _ in backend.chat(request):
            pass
        server.enqueue(n=n)
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        async for _ in backend.chat(request):
            pass
        profiler.stop()
        await backend.aclose()
        print(profiler.output_text(unicode=True, color=False))

    asyncio.run(read())


RENDER_STEPS = {
    "pieces": "the streamed pieces, a list of str",
    "live": "one live update's bundle, the whole answer",
    "noted": "--cells noting that update (CellLog)",
    "final": "the final bundle (over 256 KB: unformatted)",
    "markdown": "safe_markdown_closed (the final markdown <= 256 KB)",
}


def render(size: int = 1_000_000) -> None:
    """Peak RSS growth of each step that shows or keeps an answer, each alone in a fresh process
    (freed memory from one step would otherwise hide the next one's growth)."""
    print(f"answer: {size:,} characters in {len(chunks_for_size(size)):,} pieces")
    for step, name in RENDER_STEPS.items():
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.profile", "render-step", step, str(size)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        peak = int(done.stdout.split()[-1])
        print(f"{name:52s} peak +{peak / 2**20:5.1f} MiB = {peak / size:5.1f}x the answer")


def render_step(step: str, size: int) -> int:
    """One step of ``RENDER_STEPS`` on a ``size``-character answer, after a small warm-up run of
    it (imports, caches): the peak RSS it adds."""
    from types import SimpleNamespace

    from amigo_magic import render, sanitize
    from amigo_magic.answer import AnswerState, Phase
    from amigo_magic.cells import CellLog

    text = "".join(chunks_for_size(size))

    def state(text: str, phase: Phase = "streaming") -> AnswerState:
        return AnswerState(text, "gpt-4o-mini", "default", phase, 2.5, tokens=len(text) // 5)

    view = render.AnswerView("markdown")
    view.bundle(state("*warm*\n\nup"))
    render.answer_bundle(state("*warm*", "done"))
    sanitize.safe_markdown_closed("*warm*")
    shown: list[int] = []
    shell = SimpleNamespace(display_pub=SimpleNamespace(publish=lambda data, **_: shown.append(1)))
    log = CellLog(shell)
    log.pre_run_cell(None)
    live, metadata = view.bundle(state(text) if step == "noted" else state("…"))
    transient = {"display_id": "answer"}
    shell.display_pub.publish({"text/plain": "…"}, metadata=metadata, transient=transient)
    run: Callable[[], object] = {
        "pieces": lambda: chunks_for_size(size),
        "live": lambda: view.bundle(state(text)),
        "noted": lambda: shell.display_pub.publish(
            live, metadata=metadata, transient=transient, update=True
        ),
        "final": lambda: render.answer_bundle(state(text, "done")),
        "markdown": lambda: sanitize.safe_markdown_closed(text),
    }[step]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    result = run()
    peak = _status("VmHWM") - before
    del result
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("what", choices=["first-token", "client", "render", "render-step"])
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "render-step":
        print(render_step(args.args[0], int(args.args[1])))
        return
    if args.what == "render":
        render()
        return
    with tempfile.TemporaryDirectory(prefix="amigo-profile-") as tmp:
        clean_environment(Path(tmp) / "amigo-home")
        with ServerProcess() as server:
            os.environ["AMIGO_BASE_URL"] = server.amigo_url
            if args.what == "first-token":
                first_token(server, Path(tmp), float(args.args[0]) if args.args else 0.0)
            else:
                client(server)


if __name__ == "__main__":
    main()
