"""``map``: many short requests against a server that takes a fixed time per request, at several
concurrencies — ours (``ChatSession.map``, the path ``amigo_magic.map`` takes) against
``asyncio.gather`` over the official ``AsyncOpenAI`` client with the same semaphore, and both
against the ideal, items * delay / concurrency.

Each client runs on a loop thread of its own with a warm connection pool; the order alternates
every repeat and the ratios are taken within a repeat. Every result is checked: answer *i* must
be the server's echo of prompt *i*, in input order. Memory: the peak ``tracemalloc`` allocation
of a whole ``map`` beyond its results, for 250 and for 1,000 items — flat if nothing is kept per
item but the answer.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from typing import Any

from benchmarks.common import MODEL, RATIO, Context, Row, rotate

NAME = "map"
TITLE = "map: many requests at once"

DELAY = 0.05  # seconds the server waits before answering each request
CLIENTS = ["ours", "openai"]
TARGET_CONCURRENCY = 16  # the figure: 1,000 items at 16


def _sizes(quick: bool) -> list[tuple[int, int]]:
    """(concurrency, items): ~2.5 s of ideal time at the low end, 1,000 items from 16 up."""
    if quick:
        return [(1, 8), (16, 64)]
    return [(1, 50), (8, 400), (16, 1_000), (32, 1_000), (64, 1_000)]


def run(ctx: Context) -> list[Row]:
    from amigo_magic.runner import Runner
    from amigo_magic.session import ChatSession
    from amigo_magic.store import SQLiteStore

    server = ctx.server
    runner, sdk_runner = Runner("map-ours"), Runner("map-openai")
    store = SQLiteStore(ctx.workdir / "map.db")
    env = {"AMIGO_BASE_URL": server.amigo_url, "AMIGO_HOME": str(ctx.workdir)}
    session = ChatSession(store=store, notebook="bench", runner=runner, env=env)
    sdk = sdk_runner.call(_sdk(server.openai_url))
    delay = 0.01 if ctx.quick else DELAY
    try:
        clients = {
            "ours": lambda n, c: _ours(session, n, c),
            "openai": lambda n, c: sdk_runner.call(_openai(sdk, n, c)),
        }
        targets = {"ours": "amigo", "openai": "openai"}
        for name in CLIENTS:  # warm up: imports, the pools' first connections
            server.enqueue(targets[name], echo=True, count=64)
            clients[name](64, 16)
        rows: list[Row] = []
        for concurrency, items in _sizes(ctx.quick):
            ideal = items * delay / concurrency
            seconds: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for turn in range(ctx.repeat):
                ctx.log(f"map: {items:,} items at {concurrency}, repeat {turn + 1}/{ctx.repeat}")
                for name in rotate(CLIENTS, turn):
                    server.enqueue(targets[name], echo=True, stall_before=delay, count=items)
                    start = time.perf_counter()
                    results = clients[name](items, concurrency)
                    seconds[name].append(time.perf_counter() - start)
                    _check(name, results, items)
            rows += _rows(concurrency, items, delay, ideal, seconds)
        rows += _memory(ctx, session, server)
    finally:
        sdk_runner.call(sdk.close())
        sdk_runner.close()
        runner.close()
        store.close()
    return rows


def _rows(
    concurrency: int, items: int, delay: float, ideal: float, seconds: dict[str, list[float]]
) -> list[Row]:
    ours, sdk = seconds["ours"], seconds["openai"]
    at = f"{concurrency:>2} at once"
    target = concurrency == TARGET_CONCURRENCY
    return [
        Row(
            NAME,
            f"{at}: {items:,} items, {delay * 1000:g} ms each, ideal {ideal:.2f} s",
            [],
            text="every answer in input order",
        ),
        Row(NAME, f"{at}: ours (ChatSession.map)", ours, "s"),
        Row(NAME, f"{at}: openai SDK, gather + semaphore", sdk, "s"),
        Row(
            NAME,
            f"{at}: ours ÷ ideal, wall",
            [s / ideal for s in ours],
            RATIO,
            ("<=", 1.2) if target else None,
        ),
        Row(NAME, f"{at}: openai ÷ ideal, wall", [s / ideal for s in sdk], RATIO),
        Row(
            NAME,
            f"{at}: ours ÷ openai, wall",
            [o / s for o, s in zip(ours, sdk, strict=True)],
            RATIO,
            ("<=", 1.0) if target else None,
        ),
    ]


def _memory(ctx: Context, session: Any, server: Any) -> list[Row]:
    """Traced allocation of a whole map beyond its results, at two sizes: the peak while it runs
    (which includes httpcore's per-request reference cycles until the collector runs) and what
    is still held once it is over and collected."""
    sizes = (50, 200) if ctx.quick else (250, 1_000)
    peaks: dict[int, list[float]] = {n: [] for n in sizes}
    held: dict[int, list[float]] = {n: [] for n in sizes}
    for turn in range(ctx.repeat):
        for items in rotate(list(sizes), turn):  # type: ignore[arg-type]
            server.enqueue("amigo", echo=True, stall_before=0.002, count=items)
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                results = _ours(session, items, TARGET_CONCURRENCY)
                peak = tracemalloc.get_traced_memory()[1]
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            _check("ours", results, items)
            kept = sys.getsizeof(results) + sum(sys.getsizeof(r) for r in results)
            peaks[items].append((peak - base - kept) / 1024)
            held[items].append((after - base - kept) / 1024)
            del results
    small, big = sizes
    extra = big - small
    return [
        Row(NAME, f"memory: peak beyond the results, {small:,} items", peaks[small], "KiB"),
        Row(NAME, f"memory: peak beyond the results, {big:,} items", peaks[big], "KiB"),
        Row(NAME, f"memory: held after, beyond the results, {small:,} items", held[small], "KiB"),
        Row(NAME, f"memory: held after, beyond the results, {big:,} items", held[big], "KiB"),
        Row(
            NAME,
            f"memory: held per item beyond its answer ({small:,} → {big:,} items)",
            [(b - s) * 1024 / extra for b, s in zip(held[big], held[small], strict=True)],
            "bytes",
            ("<=", 64),
        ),
    ]


def _ours(session: Any, items: int, concurrency: int) -> list[Any]:
    options = session.options(model=MODEL, use_history=False)
    batch = session.map("Item {item}", range(items), options, concurrency=concurrency)
    if not batch.wait(600):
        raise RuntimeError("map did not finish in 600 s")
    return list(batch.values())


async def _sdk(url: str) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)


async def _openai(sdk: Any, items: int, concurrency: int) -> list[str]:
    """What a user writes without ``map``: a semaphore and ``asyncio.gather``."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            stream = await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Item {i}"}], stream=True
            )
            parts = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
            return "".join(parts)

    return list(await asyncio.gather(*(one(i) for i in range(items))))


def _check(name: str, results: list[Any], items: int) -> None:
    expected = [f"Echo: Item {i}" for i in range(items)]
    if results != expected:
        wrong = next(i for i, (a, b) in enumerate(zip(results, expected, strict=False)) if a != b)
        raise RuntimeError(f"{name}: result {wrong} is {results[wrong]!r}, not {expected[wrong]!r}")
