"""Following a live answer on screen, written once: when to redraw, and how to wait.

:class:`Pacer` is the decision, pure over a clock: the first text at once, a phase change
("loading model…") at once, a tick each second while nothing has come ("thinking… 3 s"), and
streamed text at most every ``max(throttle, length / 1 MB/s)`` seconds — every update re-sends
the whole answer, so updates grow rarer as it grows. Two drivers use it:
:func:`follow` blocks (the ``%%amigo`` cell: a kernel interrupt stops the answer) and
:func:`follow_async` polls on the loop (the panel, which must never block the kernel). Both give
a stopped request :data:`STOP_GRACE` seconds to record itself, then :meth:`Live.abandon` it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .answer import AnswerState, Live

__all__ = ["STOP_GRACE", "Pacer", "follow", "follow_async"]

STOP_GRACE = 5.0  # seconds a stopped request may take to record itself
TEXT_RATE = 1_000_000  # characters per second of re-sent text the updates may cost
TICK = 1.0  # seconds between clock ticks while no text has come
FIRST_POLL = 0.005  # the panel looks this often until the first text (it should show at once)

Show = Callable[[AnswerState], None]


@dataclass
class Pacer:
    """Decides whether a live answer should be redrawn now; remembers what was last shown."""

    throttle: float = 0.05
    tick: float = TICK
    _length: int = 0
    _phase: str = ""
    _last: float = field(default=-math.inf)

    def interval(self, length: int) -> float:
        return max(self.throttle, length / TEXT_RATE)

    def due(self, now: float, length: int, phase: str) -> bool:
        if length != self._length:
            return not self._length or now - self._last >= self.interval(length)
        return not length and (phase != self._phase or now - self._last >= self.tick)

    def delay(self, now: float, length: int) -> float:
        """Seconds until new text will be due (0 if it is due now)."""
        if length == self._length or not self._length:
            return 0.0
        return max(0.0, self._last + self.interval(length) - now)

    def shown(self, now: float, length: int, phase: str) -> None:
        self._length, self._phase, self._last = length, phase, now


def follow(
    answer: Live,
    show: Show,
    *,
    throttle: float = 0.05,
    slice_seconds: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Show ``answer`` as it changes until it ends; a ``KeyboardInterrupt`` stops it.

    Waits in slices of at most ``slice_seconds`` so an interrupt lands at once. The final
    display is the caller's (it knows the format); this only keeps the live one current.
    """
    pacer = Pacer(throttle)
    phase = answer.phase  # read before the (slow) first display, so a change is not missed
    show(answer.snapshot())
    pacer.shown(clock(), 0, phase)
    try:
        while not answer.done.is_set():
            wait = pacer.delay(clock(), answer.length)
            if wait:
                answer.done.wait(min(wait, slice_seconds))
            else:
                answer.changed.wait(slice_seconds)
                answer.changed.clear()
            for errand in answer.take_errands():  # a tool call to approve, on this thread
                errand()
            if answer.done.is_set():
                break
            now, length, phase = clock(), answer.length, answer.phase
            if pacer.due(now, length, phase):
                show(answer.snapshot())
                pacer.shown(now, length, phase)
    except KeyboardInterrupt:
        answer.stop()
        if not answer.wait(STOP_GRACE):
            answer.abandon()


async def follow_async(
    answer: Live,
    show: Show,
    *,
    throttle: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """:func:`follow` as a coroutine on the loop: polls, never blocks, never raises for a stop.

    Looks every :data:`FIRST_POLL` seconds until the first text, then every ``throttle``.
    """
    pacer = Pacer(throttle)
    pacer.shown(clock(), 0, answer.phase)
    give_up: float | None = None
    while not answer.done.is_set():
        await asyncio.sleep(throttle if answer.length else FIRST_POLL)
        now = clock()
        if answer.stop_requested:
            give_up = give_up or now + STOP_GRACE
            if now > give_up:
                answer.abandon()  # cancelled before it began: nothing will record it
                return
        length, phase = answer.length, answer.phase
        if pacer.due(now, length, phase):
            answer.changed.clear()
            show(answer.snapshot())
            pacer.shown(now, length, phase)
