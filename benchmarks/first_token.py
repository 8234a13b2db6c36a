"""Time to the first visible token: from sending the execute request to the first iopub display
message whose text/plain holds answer text, minus the server's own wait before its first byte.

The server holds every reply for ``STALL`` seconds before the status line, as a model thinking
would; what is left is ours (the kernel, the magic, the HTTP request, the first render, iopub).
Each repeat starts a fresh kernel: the *first* ``%%amigo`` right after ``%load_ext`` (as Run All
sends it: it waits for the HTTP stack the warm-up is still importing), then a second one in the
same kernel. An empty cell's round trip in that kernel is shown for scale: that much is the
kernel's, whatever runs. A second fresh kernel per repeat sends its first ``%%amigo``
``PAUSE`` seconds after ``%load_ext``, as a person typing the cell would: the warm-up's share.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Context, Row, chunks

NAME = "first_token"
TITLE = "Time to first visible token"

STALL = 0.2
PAUSE = 1.0  # seconds between %load_ext and the first cell, for the typed-by-hand row


def run(ctx: Context) -> list[Row]:
    from tests.kernel import running_kernel

    stall = 0.05 if ctx.quick else STALL
    first_word = chunks(1)[0].strip()
    cold: list[float] = []
    warm: list[float] = []
    empty: list[float] = []
    panel: list[float] = []
    paused: list[float] = []
    for turn in range(ctx.repeat):
        ctx.log(f"first_token: repeat {turn + 1}/{ctx.repeat} (fresh kernel)")
        with running_kernel(cwd=str(ctx.workdir)) as kernel:
            _ok(kernel.execute("%load_ext amigo_magic"))
            _ok(kernel.execute(f"%config AmigoMagics.base_url = {ctx.server.amigo_url!r}"))
            for times in (cold, warm):
                ctx.server.enqueue(n=50, stall_before=stall)
                times.append((_first_text(kernel, first_word) - stall) * 1000)
            start = time.perf_counter()
            _ok(kernel.execute("pass"))
            empty.append((time.perf_counter() - start) * 1000)
            ctx.server.enqueue(n=50, stall_before=stall)
            panel.append((_panel_first_text(kernel, first_word) - stall) * 1000)
        with running_kernel(cwd=str(ctx.workdir)) as kernel:
            _ok(kernel.execute("%load_ext amigo_magic"))
            _ok(kernel.execute(f"%config AmigoMagics.base_url = {ctx.server.amigo_url!r}"))
            time.sleep(0.05 if ctx.quick else PAUSE)
            ctx.server.enqueue(n=50, stall_before=stall)
            paused.append((_first_text(kernel, first_word) - stall) * 1000)
    return [
        Row(
            NAME,
            f"first %%amigo of a fresh kernel, typed {PAUSE:g} s after %load_ext "
            f"(server waits {stall * 1000:.0f} ms)",
            paused,
            "ms",
            ("<=", 30),
        ),
        # Run All sends the first cell while the warm-up still imports the HTTP stack: that
        # import is paid here once, because %load_ext must not import it (see README).
        Row(NAME, "first %%amigo sent right after %load_ext (Run All)", cold, "ms"),
        Row(NAME, "next %%amigo, same kernel", warm, "ms", ("<=", 30)),
        Row(NAME, "for scale: empty cell round trip", empty, "ms"),
        Row(NAME, "panel: Send to the first text in the transcript", panel, "ms", ("<=", 30)),
    ]


PANEL_CELL = """\
import time as _t
from amigo_magic import ChatPanel
_p = ChatPanel()
_p.prompt.value = "first token, please"
_t0 = _t.perf_counter()
_p.send_button.click()  # what a click does: returns at once; the answer streams in the background
while {word!r} not in (str(_p.turn_boxes[-1].children[1].outputs) if _p.turn_boxes else ""):
    _t.sleep(0.0005)
print(_t.perf_counter() - _t0)
"""


def _panel_first_text(kernel: Any, word: str) -> float:
    """Seconds from Send to the streaming turn's Output widget holding ``word``, timed in the
    kernel. The widget's outputs are what is sent to the browser; its own paint is not counted.
    """
    run = kernel.execute(PANEL_CELL.format(word=word))
    _ok(run)
    return float(run.stream_text.split()[-1])


def _first_text(kernel: Any, word: str) -> float:
    """Seconds from sending the request to the first display holding ``word``."""
    seen: list[float] = []

    def on_message(message: dict[str, Any]) -> None:
        if seen or message["msg_type"] not in ("display_data", "update_display_data"):
            return
        if word in message["content"]["data"].get("text/plain", ""):
            seen.append(time.perf_counter())

    start = time.perf_counter()
    _ok(kernel.execute("%%amigo --no-history\nhello", on_message=on_message))
    if not seen:
        raise RuntimeError("no display with answer text arrived")
    return seen[0] - start


def _ok(execution: Any) -> Any:
    if execution.status != "ok":
        raise RuntimeError(f"cell failed: {execution.messages[-3:]}")
    return execution
