"""Many answers at once: ``map``'s scheduling — one template over many items, a bounded number of
requests in flight on the session's loop, results in input order, nothing in history — and the
live :class:`Batch` a front end follows (done / failed / in flight, tokens, rate, time left).

Each item is its own conversation: one request through the session's pooled backend (so one
connection pool and one rate gate, see :mod:`.ratelimit`) with the client's retry policy. A
failed item becomes a :class:`Failed` value holding its one-line error; it never stops the
others. Stopping (the ■ button) cancels what is in flight and keeps what finished.

Memory is flat in the number of items: the items are read lazily, one at a time, by the
workers (never a task or a prompt per item up front); only the results grow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from .answer import error_line
from .batch_item import Failed, ItemAsker, Outcome
from .errors import ConfigError
from .interpolate import interpolate, without_lone_surrogates

if TYPE_CHECKING:
    from .config import Settings
    from .schema import Spec
    from .session import AskOptions, ChatSession

__all__ = [
    "MAX_CONCURRENCY",
    "Batch",
    "BatchState",
    "Failed",
    "Results",
    "Summary",
    "start",
]

# Requests in flight at most: httpx's pool opens 100 connections (more would wait for one and
# time out). Its default of 20 idle ones is kept on purpose: httpcore scans every connection on
# each request, so 256 idle made 1,000 items at 64 at once 3x slower (benchmarks/map.py).
MAX_CONCURRENCY = 100
_REASONS = 10  # distinct error lines a summary keeps

BatchPhase = Literal["running", "done", "stopped", "error"]


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the progress display shows at one moment."""

    total: int | None
    done: int
    failed: int
    in_flight: int
    tokens: int
    seconds: float
    phase: BatchPhase
    model: str = ""
    error: str | None = None
    paused: float = 0.0  # seconds a Retry-After still holds every worker

    @property
    def rate(self) -> float:
        """Items finished per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def left(self) -> float | None:
        """Seconds until the last item, at the rate so far (None: not known yet)."""
        if self.total is None or not self.done or self.phase != "running":
            return None
        return (self.total - self.done) / self.rate

    def line(self, width: int = 20) -> str:
        """One tqdm-like line: ``map 412/1,000 ▕████▏ 41% · 3 failed · 16 in flight · …``."""
        parts = [f"{self.done:,}/{self.total:,}" if self.total is not None else f"{self.done:,}"]
        if self.total:
            share = self.done / self.total
            filled = round(share * width)
            parts[0] += f" ▕{'█' * filled}{' ' * (width - filled)}▏ {share:4.0%}"
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        if self.phase == "running":
            parts.append(f"{self.in_flight} in flight")
            if self.paused > 0:
                parts.append(f"⏸ rate limited: resuming in {math.ceil(self.paused)} s")
        parts.append(f"{self.tokens:,} tokens")
        parts.append(f"{self.rate:.1f} items/s")
        left = self.left
        parts.append(f"{_clock(self.seconds)} elapsed" if left is None else f"{_clock(left)} left")
        if self.phase == "stopped":
            parts.append("■ stopped")
        elif self.phase == "error":
            parts.append(f"✖ {self.error}")
        return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class Summary:
    """How a batch went: answered, failed (and why), not answered (a stop), tokens, time."""

    total: int
    answered: int
    failed: int
    tokens: int
    seconds: float
    reasons: tuple[tuple[str, int], ...] = ()
    stopped: bool = False
    error: str | None = None
    recorded: int = 0  # answered from the replay cache's recordings: not sent

    @property
    def unanswered(self) -> int:
        return self.total - self.answered - self.failed

    def __str__(self) -> str:
        head = f"{self.answered:,} of {self.total:,} answered in {self.seconds:.1f} s"
        parts = [head, f"{self.tokens:,} tokens"]
        if self.recorded:
            parts.append(f"{self.recorded:,} from recordings (not sent)")
        if self.failed:
            why = "; ".join(f"{line} [{count}]" for line, count in self.reasons)
            parts.append(f"{self.failed:,} failed ({why})")
        if self.stopped:
            parts.append(f"■ stopped: {self.unanswered:,} not sent or cut off (None)")
        if self.error:
            parts.append(f"✖ {self.error}")
        return " · ".join(parts)


class Results(list):  # type: ignore[type-arg]
    """The answers in input order (a :class:`Failed` for a failed item, ``None`` for one a stop
    left unanswered), with :attr:`summary`."""

    summary: Summary

    def __init__(self, values: Iterable[Any], summary: Summary) -> None:
        super().__init__(values)
        self.summary = summary


class Batch:
    """One running ``map``: written by the loop thread, read (and stopped) from any thread."""

    def __init__(self, total: int | None, *, model: str, index: Any = None) -> None:
        self.total = total
        self.model = model
        self.index = index  # a pandas input's index: the results come back as a Series on it
        self.results: list[Any] = [None] * total if total is not None else []
        self.done_count = 0
        self.failed = 0
        self.in_flight = 0
        self.tokens = 0
        self.recorded = 0
        self.reasons: Counter[str] = Counter()
        self.started = time.monotonic()
        self.finished: float | None = None
        self.phase: BatchPhase = "running"
        self.error: BaseException | None = None
        self.changed = threading.Event()  # set as items finish; a follower clears it
        self.done = threading.Event()
        self.future: concurrent.futures.Future[None] | None = None
        self.gate: Any = None  # the client's RateGate, when the backend has one

    # -- read side -----------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def snapshot(self) -> BatchState:
        return BatchState(
            total=self.total if self.total is not None else None,
            done=self.done_count,
            failed=self.failed,
            in_flight=self.in_flight,
            tokens=self.tokens,
            seconds=self.seconds,
            phase=self.phase,
            model=self.model,
            error=error_line(self.error),
            paused=max(0.0, self.gate.until - time.monotonic()) if self.gate else 0.0,
        )

    def summary(self) -> Summary:
        return Summary(
            total=len(self.results),
            answered=self.done_count - self.failed,
            failed=self.failed,
            tokens=self.tokens,
            seconds=self.seconds,
            reasons=tuple(self.reasons.most_common(_REASONS)),
            stopped=self.phase == "stopped",
            error=error_line(self.error),
            recorded=self.recorded,
        )

    def values(self) -> Any:
        """The results: a list (:class:`Results`), or a pandas Series on the input's index."""
        summary = self.summary()
        if self.index is not None and "pandas" in sys.modules:
            series = sys.modules["pandas"].Series(
                self.results, index=self.index, name="answer", dtype=object
            )
            series.attrs["amigo"] = summary
            return series
        return Results(self.results, summary)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def stop(self) -> None:
        """Cancel what is in flight; what finished stays."""
        if self.future is not None:
            self.future.cancel()

    # -- write side (the loop thread) ----------------------------------------------------------

    def running(self, future: concurrent.futures.Future[None]) -> None:
        self.future = future

    def begin(self, index: int) -> None:
        if self.total is None:
            self.results.append(None)
        self.in_flight += 1

    def finish(self, index: int, outcome: Outcome) -> None:
        self.in_flight -= 1
        self.done_count += 1
        self.tokens += outcome.tokens
        self.recorded += outcome.cached
        if outcome.error is not None:
            line = error_line(outcome.error) or "failed"
            self.failed += 1
            if line in self.reasons or len(self.reasons) < 100:
                self.reasons[line] += 1
            self.results[index] = Failed(line, type(outcome.error).__name__)
        else:
            self.results[index] = outcome.result
        self.changed.set()

    def close(self, phase: BatchPhase, error: BaseException | None = None) -> None:
        self.phase, self.error = phase, error
        self.in_flight = 0
        self.finished = time.monotonic()
        self.done.set()
        self.changed.set()


def start(
    session: ChatSession,
    template: str,
    items: Iterable[Any],
    options: AskOptions,
    *,
    concurrency: int = 8,
    schema: Any = None,
    settings: Settings | None = None,
) -> Batch:
    """Start ``template`` over ``items`` on the session's loop; return the live batch at once.

    Raises at once (nothing sent) for an unknown model, a bad concurrency or schema, a spent
    budget, or a template that does not say where an item goes. ``schema`` is what ``--schema``
    takes (a pydantic model, dataclass, TypedDict, JSON-schema dict or concise fields).
    """
    if not isinstance(template, str) or not template.strip():
        raise ConfigError("map needs a template: a prompt with {item} (or {column}) in it.")
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency must be 1 to {MAX_CONCURRENCY}; got {concurrency!r}.")
    settings = settings or session.settings()
    target = session._chat_target(options, settings)
    spec = _spec(schema)
    if spec is not None:
        system = "\n\n".join(part for part in (options.system, spec.instruction()) if part)
        options = replace(options, system=system)
    spent = session.cache.check_budget()  # the history's total, once: each item adds its own
    prefs = session.preferences()
    secrets = tuple(prefs.secrets(session._env))
    budget = prefs.context_budget
    total, index, rows = _rows(items)
    prompts = _prompts(template, rows, secrets, budget)
    first = next(prompts, None)
    if first is not None and first[1] == template:
        raise ConfigError(
            "The template names no field of the items, so every request would be the same: "
            "write {item} where each item goes (or {column} for a row's field)."
        )
    batch = Batch(total, model=target.label, index=index)
    if first is None:
        batch.close("done")
        return batch
    jobs = itertools.chain([first], prompts)
    ask = ItemAsker(session, target, settings, options, spec, spent)
    batch.gate = getattr(getattr(ask.backend, "_http", None), "gate", None)  # for the progress

    async def worker() -> None:
        for number, prompt in jobs:  # next() runs on the loop thread only: no item twice
            batch.begin(number)
            if isinstance(prompt, Failed):
                batch.finish(number, Outcome("", error=ConfigError(prompt.error)))
                continue
            batch.finish(number, await ask(prompt))

    async def run() -> None:
        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            batch.close("stopped")
            raise
        except Exception as error:  # the items' iterator failed: keep what finished
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            batch.close("error", error)
        else:
            batch.close("done")

    batch.running(session._runner.submit(run()))
    return batch


def _rows(items: Iterable[Any]) -> tuple[int | None, Any, Iterator[Any]]:
    """The count (if known), a pandas index (if any), and the items one at a time — a frame's
    rows as mappings of column → value, read lazily."""
    kind = type(items)
    pandas = kind.__module__.split(".")[0] == "pandas"
    if pandas and kind.__name__ == "DataFrame":
        frame: Any = items
        columns = [str(c) for c in frame.columns]
        rows = (
            dict(zip(columns, row, strict=True)) for row in frame.itertuples(index=False, name=None)
        )
        return len(frame), frame.index, rows
    if pandas and kind.__name__ == "Series":
        series: Any = items
        return len(series), series.index, iter(series.array)
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ConfigError(
            "map's items are a list (or any iterable) of values or mappings, a pandas Series or "
            f"a DataFrame; got {kind.__name__}."
        )
    return (len(items) if isinstance(items, Sized) else None), None, iter(items)


def _prompts(
    template: str, rows: Iterator[Any], secrets: tuple[str, ...], budget: int
) -> Iterator[tuple[int, str | Failed]]:
    """Each item's prompt: the template's fields filled from the item (a mapping's keys, else
    ``{item}``) by the cells' brace-safe rules; a field that cannot be filled fails that item."""
    for number, item in enumerate(rows):
        namespace: dict[Any, Any] = {"item": item}
        if isinstance(item, Mapping):
            namespace.update(item)
        try:
            text = interpolate(template, namespace, secrets, budget=budget)
        except ConfigError as error:
            yield number, Failed(str(error), "ConfigError")
            continue
        yield number, without_lone_surrogates(text)[0]


def _spec(schema: Any) -> Spec | None:
    """``schema=`` as ``--schema`` reads it: a class or dict by its name, else fields."""
    if schema is None:
        return None
    from .schema import resolve_spec

    if isinstance(schema, str):
        return resolve_spec(schema, {})
    name = getattr(schema, "__name__", "answer")
    return resolve_spec(name, {name: schema})


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
