"""Context: the typed view of a 1,000,000-row, 5-column frame (int, float, string, datetime,
int32) that ``{df}`` sends — how long building it takes, and how much it allocates next to the
frame's own size (it reads dtypes, null counts, ranges and a head and a tail; it never copies).

The target is well under a request's own time: a first token from a hosted model takes 0.3 s or
more, so the view is held to 250 ms; its peak allocation (``tracemalloc``, numpy included) to
5 % of the frame.
"""

from __future__ import annotations

import time
import tracemalloc

from benchmarks.common import Context, Row

NAME = "context"
TITLE = "Context (typed views)"

ROWS = 1_000_000


def run(ctx: Context) -> list[Row]:
    import numpy as np
    import pandas as pd

    from amigo_magic.context import estimate_tokens, view

    rows = 10_000 if ctx.quick else ROWS
    ctx.log(f"context: building a {rows:,}-row frame")
    df = pd.DataFrame(
        {
            "order_id": np.arange(rows),
            "amount": np.linspace(1.0, 500.0, rows),
            "customer": [f"cust{i:07d}" for i in range(rows)],
            "placed": pd.date_range("2024-01-01", periods=rows, freq="s"),
            "units": (np.arange(rows) % 9).astype("int32"),
        }
    )
    size = float(df.memory_usage(deep=True).sum())
    seconds: list[float] = []
    peaks: list[float] = []
    tokens: list[float] = []
    for turn in range(ctx.repeat):
        ctx.log(f"context: repeat {turn + 1}/{ctx.repeat}")
        start = time.perf_counter()
        text, _ = view(df)
        seconds.append((time.perf_counter() - start) * 1000)
        tracemalloc.start()
        try:
            view(df)
            peaks.append(tracemalloc.get_traced_memory()[1] / size * 100)
        finally:
            tracemalloc.stop()
        tokens.append(estimate_tokens(text))
    label = f"{{df}} of {rows:,} rows, 5 columns ({size / 1e6:,.0f} MB)"
    return [
        Row(NAME, f"{label}: building its view", seconds, "ms", ("<=", 250)),
        Row(NAME, "peak allocation while building it ÷ the frame", peaks, "%", ("<=", 5)),
        Row(NAME, "its view, estimated (default budget 2,000)", tokens, "tokens", ("<=", 2000)),
    ]
