"""History: open a notebook's 10,000-turn chat and append a turn, on a real SQLite file.

"Open" is what a request and the panel do: ``load`` of the whole chat (the panel's transcript)
and of the request window (``2 * max_history + 2`` newest turns), on a fresh connection each
time, as a new kernel would. "Append" is one turn in its own transaction, as the session writes.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Row

NAME = "history"
TITLE = "History (SQLite)"

TURNS = 10_000
WINDOW = 2 * 20 + 2  # the request window for the default max_history


def run(ctx: Context) -> list[Row]:
    from amigo_magic.history import Turn
    from amigo_magic.store import SQLiteStore

    turns = 200 if ctx.quick else TURNS
    path = ctx.workdir / "history-bench.db"
    store = SQLiteStore(path)
    ctx.log(f"history: writing {turns} turns")
    for i in range(turns):  # other chats and notebooks around it, as in a real file
        text = f"turn {i}: " + "lorem ipsum dolor sit amet " * 20
        store.add("big.ipynb", "default", Turn("user" if i % 2 == 0 else "assistant", text))
        if i % 10 == 0:
            store.add("other.ipynb", f"chat{i % 7}", Turn("user", text))
    store.close()

    whole: list[float] = []
    window: list[float] = []
    append: list[float] = []
    for turn in range(ctx.repeat):
        ctx.log(f"history: repeat {turn + 1}/{ctx.repeat}")
        start = time.perf_counter()
        store = SQLiteStore(path)  # a new kernel opening the file: migrations checked
        loaded = store.load("big.ipynb", "default")
        whole.append((time.perf_counter() - start) * 1000)
        assert len(loaded) == turns + turn  # each repeat appended one
        start = time.perf_counter()
        recent = store.load("big.ipynb", "default", limit=WINDOW)
        window.append((time.perf_counter() - start) * 1000)
        assert len(recent) == WINDOW
        start = time.perf_counter()
        store.add("big.ipynb", "default", Turn("user", "one more question"))
        append.append((time.perf_counter() - start) * 1000)
        store.close()
    label = f"{turns:,}-turn chat"
    return [
        Row(NAME, f"open a {label} (all turns)", whole, "ms"),
        Row(NAME, f"read the request window of a {label} ({WINDOW} turns)", window, "ms"),
        Row(NAME, f"append a turn to a {label}", append, "ms"),
    ]
