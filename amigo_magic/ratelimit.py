"""One rate gate per HTTP client: a ``Retry-After`` on one request pauses every request.

When a server says "429, retry after 5 s", the other requests in flight to it would get the
same answer, each spending an attempt; a batch of 16 workers would hammer the limit 16 times
over. So the client asks the gate before every attempt, and a retryable status that names a
wait closes the gate until then for every worker on that client (the pooled backend of one
target, which every item of a ``map`` shares).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateGate"]


class RateGate:
    """Closed until a moment on the monotonic clock; :meth:`wait` sleeps until it opens."""

    def __init__(self) -> None:
        self.until = 0.0
        self.pauses = 0  # times a Retry-After closed it (for tests and the progress line)

    def pause(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (a later end wins over an earlier one)."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self.until:
            self.until = until
            self.pauses += 1

    async def wait(self) -> None:
        """Return when the gate is open (at once, nearly always)."""
        # A deadline, not an event: a pause that arrives meanwhile pushes it later.
        while (left := self.until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
