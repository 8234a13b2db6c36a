"""The one place that owns an event loop: a daemon thread running asyncio, started lazily.

A kernel already runs a loop in its main thread, so ``asyncio.run`` inside a magic fails and
patching the kernel's loop (nest_asyncio) changes asyncio for the whole kernel. Instead every
coroutine of ours runs here; the main thread submits work and, for ``%%amigo``, waits for it in
short, interruptible slices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Runner", "get_runner"]

log = logging.getLogger("amigo_magic.runner")
T = TypeVar("T")


class Runner:
    """A background event loop with a guaranteed report of every failure."""

    def __init__(self, name: str = "amigo-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; a failure goes to ``on_error`` (or the log), never
        nowhere."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def report(done: concurrent.futures.Future[T]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:
                return
            if on_error is not None:
                on_error(error)
            else:
                log.error("background task failed: %s", error, exc_info=error)

        future.add_done_callback(report)
        return future

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop thread)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("Runner.call() from the loop thread would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_close(self, closer: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Register an async cleanup (closing a pooled client) for :meth:`close`."""
        self._closers.append(closer)

    def close(self, timeout: float = 5.0) -> None:
        """Run the cleanups, stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            closers, self._closers = self._closers, []
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for closer in closers:
                try:
                    await closer()
                except Exception:  # a cleanup failing must not keep the others from running
                    log.exception("cleanup failed")
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()


_runner: Runner | None = None
_runner_lock = threading.Lock()


def get_runner() -> Runner:
    """The kernel's runner (one per process)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = Runner()
        return _runner


def close_runner() -> None:
    """Stop the kernel's runner, if one was started (extension unload)."""
    global _runner
    with _runner_lock:
        runner, _runner = _runner, None
    if runner is not None:
        runner.close()
