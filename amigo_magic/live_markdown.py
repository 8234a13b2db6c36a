"""An answer's markdown while it streams: finished blocks formatted, the unfinished tail as code.

Each update re-sends the whole answer, so :class:`LiveMarkdown` keeps what it rendered: the
model text up to the last finished block (a blank line outside any code fence) is made safe by
:func:`.sanitize.safe_markdown_closed` and shown as markdown; the rest — the block still being
written — is shown as one fenced code block: monospace text that no markdown or math renderer
reads (Jupyter's math pass skips code, so a ``$`` in a half-written line pairs with nothing).

The work stays linear: each run of newly finished blocks is made safe once, on its own, and
joined to the runs before it with :data:`SEPARATOR`; and it takes at most about a ``share`` of
the wall time (after a render that took *t* seconds, the next waits *t / share*) — until then
the new blocks stay in the tail. Past :data:`FORMAT_LIMIT` characters nothing more is
formatted while streaming (the final display decides). The line scan that finds finished blocks
is incremental: each character is looked at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["FORMAT_LIMIT", "SEPARATOR", "LiveMarkdown", "tail_block"]

FORMAT_LIMIT = 256 * 1024  # characters: render.UNFORMATTED_ABOVE, the final display's limit
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
# Between two separately rendered runs of blocks: an HTML comment on a line of its own, after a
# blank line, closes every open list and quote, so the next run parses as it did alone — as a
# document of its own (its fences closed, its raw HTML escaped, its destinations made safe).
SEPARATOR = "<!-- -->"


def tail_block(text: str) -> str:
    """``text`` as one fenced code block (the fence outgrows any backtick run inside)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


class LiveMarkdown:
    """The live markdown of one answer; feed it the whole text so far at each update."""

    def __init__(
        self,
        render: Callable[[str], str] | None = None,
        *,
        share: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if render is None:
            from .sanitize import safe_markdown_closed

            render = safe_markdown_closed
        self._render: Callable[[str], str] = render
        self._share = share
        self._clock = clock
        self.renders = 0  # how many times the finished part was rendered (for tests, benchmarks)
        self._reset()

    def _reset(self) -> None:
        # the scan: complete lines seen, the open fence (its character and length), and the end
        # of the last blank line outside a fence — where the finished blocks end
        self._scanned = 0
        self._fence: tuple[str, int] | None = None
        self._finished = 0
        # what is shown: the model text rendered, its safe markdown, and when to render again
        self._shown = 0
        self._markdown = ""
        self._next = -float("inf")

    def _scan(self, text: str) -> None:
        while True:
            newline = text.find("\n", self._scanned)
            if newline < 0:
                return
            line = text[self._scanned : newline]
            self._scanned = newline + 1
            match = _FENCE.fullmatch(line)
            if self._fence is None:
                if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                    self._fence = (match.group(1)[0], len(match.group(1)))
                elif not line.strip():
                    self._finished = self._scanned
            elif match and not match.group(2).strip():
                char, length = self._fence
                if match.group(1)[0] == char and len(match.group(1)) >= length:
                    self._fence = None

    def markdown(self, text: str) -> str:
        """Safe markdown for ``text``, an answer that is still being written."""
        if len(text) < self._scanned:  # not the same answer any more: start again
            self._reset()
        self._scan(text)
        now = self._clock()
        if self._finished > self._shown and self._finished <= FORMAT_LIMIT and now >= self._next:
            new = self._render(text[self._shown : self._finished]).strip("\n")
            if new:
                self._markdown = (
                    f"{self._markdown}\n\n{SEPARATOR}\n\n{new}" if self._markdown else new
                )
            self._shown = self._finished
            self.renders += 1
            done = self._clock()
            self._next = done + (done - now) / self._share
        tail = text[self._shown :].strip("\n")
        if not tail.strip():
            return self._markdown
        block = tail_block(tail)
        return f"{self._markdown}\n\n{block}" if self._markdown else block
