"""``asyncio.run`` in a notebook cell: the seed's example pasted unchanged runs (the extension
lets ``asyncio.run`` work where the kernel's loop already runs), and the magics and the panel
stream, stop and record the same with that on and off."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel
from tests.test_seed import SEED, seed_example

POEM = "Весна пришла, ручьи звенят."


@pytest.mark.skipif(not SEED.is_file(), reason="the seed lives in ../shared")
def test_the_seed_example_runs_unchanged_in_a_cell(kernel: Kernel, server: AmigoServer) -> None:
    code = seed_example()
    assert "asyncio.run(main())" in code  # the example as written, not `await main()`
    server.enqueue(Reply.stream(POEM, delay=0.01))
    run = kernel.execute(code)
    assert run.status == "ok", run.reply["content"]
    assert run.stream_text == POEM  # the streamed answer, printed as from a script
    (request,) = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert request.json["messages"] == [{"role": "user", "content": "Напиши короткий стих о весне"}]
    # Turned off, the cell fails exactly as in plain IPython.
    assert kernel.execute("%config AmigoMagics.nested_asyncio = False").status == "ok"
    off = kernel.execute(code)
    assert off.status == "error"
    assert off.reply["content"]["ename"] == "RuntimeError"
    assert "cannot be called from a running event loop" in off.reply["content"]["evalue"]


def test_await_still_works_and_an_interrupt_stops_a_nested_run(kernel: Kernel) -> None:
    assert kernel.execute("import asyncio").status == "ok"
    awaited = kernel.execute("print(await asyncio.sleep(0, 'awaited'))")
    assert awaited.stream_text == "awaited\n"
    value = kernel.execute("print(asyncio.run(asyncio.sleep(0, 'nested')))")
    assert value.stream_text == "nested\n"
    failing = kernel.execute("async def f(): raise KeyError('inner')\nasyncio.run(f())")
    assert failing.reply["content"]["ename"] == "KeyError"  # the coroutine's own error
    state: dict[str, float] = {}

    def interrupt(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream" and not state:
            state["at"] = time.monotonic()
            kernel.interrupt()

    cell = "async def long():\n    print('started', flush=True)\n    await asyncio.sleep(60)\n"
    run = kernel.execute(cell + "asyncio.run(long())", on_message=interrupt)
    assert run.reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - state["at"] < 3
    assert kernel.execute("print(asyncio.run(asyncio.sleep(0, 'again')))").stream_text == "again\n"


PANEL = """\
import time as _t
from amigo_magic import ChatPanel
_p = ChatPanel()
_p.prompt.value = "panel question"
_p.send_button.click()
_t0 = _t.monotonic()
while "tok" not in (str(_p.turn_boxes[-1].children[1].outputs) if _p.turn_boxes else ""):
    assert _t.monotonic() - _t0 < 20, "no text in the panel"
    _t.sleep(0.005)
_p.stop_button.click()
while _p.send_button.disabled:
    assert _t.monotonic() - _t0 < 20, "the panel did not stop"
    _t.sleep(0.005)
print("panel stopped")
"""


@pytest.mark.parametrize("nested", [True, False])
def test_magics_and_panel_stream_stop_and_record_either_way(
    kernel: Kernel, server: AmigoServer, nested: bool, tmp_path: Path
) -> None:
    assert kernel.execute(f"%config AmigoMagics.nested_asyncio = {nested}").status == "ok"
    assert kernel.execute("%config AmigoMagics.throttle = 0.01").status == "ok"
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(30)], delay=0.01))
    run = kernel.execute("%%amigo --chat cells\nstream please")
    assert run.status == "ok"
    shown = {d["content"]["data"]["text/plain"].split("\n\n")[0] for d in run.displays}
    assert len(shown) >= 3  # it grew on screen
    server.enqueue(Reply.stream(chunks=["tok "] * 2000, delay=0.01))
    state: dict[str, bool] = {}

    def interrupt(message: dict[str, Any]) -> None:
        text = message["content"].get("data", {}).get("text/plain", "")
        if text.count("tok") > 5 and not state:
            state["sent"] = True
            kernel.interrupt()

    stopped = kernel.execute("%%amigo --chat cells\nstop me", on_message=interrupt)
    assert stopped.reply["content"]["ename"] == "AnswerStopped"
    server.enqueue(Reply.stream(chunks=["tok "] * 2000, delay=0.01))
    panel = kernel.execute(PANEL)
    assert panel.status == "ok", panel.reply["content"]
    assert panel.stream_text == "panel stopped\n"
    db = sqlite3.connect(tmp_path / "amigo-home" / "history.db")
    rows = db.execute("SELECT status FROM turns WHERE role = 'assistant' ORDER BY id").fetchall()
    db.close()
    assert [status for (status,) in rows] == ["complete", "stopped", "stopped"]
