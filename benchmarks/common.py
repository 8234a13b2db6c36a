"""What every section shares: the result row, the run context, the answer text, small helpers.

A section is a module with ``NAME`` (a short word, the first column of the table), ``TITLE``
and ``run(ctx) -> list[Row]``; ``benchmarks/__main__.py`` lists them in order.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"  # the default model: an id the strict server knows, the same for openai

# Token-sized words, cycled: chunk i of every answer is the same whatever the client, so all
# clients receive the same bytes. A blank line every PARAGRAPH words gives the final markdown
# render real paragraphs to work on.
_VOCABULARY = (
    "the of and to in is that for it as with was on be at by this had not are but from or have "
    "an they which one you were her all she there would their we him been has when who will "
    "more no if out so said what up its about into than them can only other new some could "
    "time these two may then do first any my now such like our over man me even most made "
    "after also did many before must through back years where much your way well down should "
    "because each just those people Python list comprehension generator iterator"
)
_WORDS = _VOCABULARY.split()
PARAGRAPH = 60
RATIO = "\u00d7"  # the unit of a ratio: the multiplication sign


def chunks(n: int) -> list[str]:
    """The ``n`` text pieces of a benchmark answer (about 4.8 characters each)."""
    out = []
    for i in range(n):
        word = _WORDS[i % len(_WORDS)]
        out.append(word + ("\n\n" if i % PARAGRAPH == PARAGRAPH - 1 else " "))
    return out


def chunks_for_size(size: int) -> list[str]:
    """Pieces adding up to at least ``size`` characters (ASCII: characters are bytes)."""
    out: list[str] = []
    total = 0
    i = 0
    while total < size:
        word = _WORDS[i % len(_WORDS)]
        piece = word + ("\n\n" if i % PARAGRAPH == PARAGRAPH - 1 else " ")
        out.append(piece)
        total += len(piece)
        i += 1
    return out


@dataclass
class Row:
    """One figure of the table: a value per repeat, and the target it is held to (if any).

    ``target`` is ``("<=", 1.25)`` or ``(">=", 1.0)``; it is checked against the median.
    A row with ``text`` and no values is a note ("n/a — no panel yet").
    """

    section: str
    name: str
    values: list[float]
    unit: str = ""
    target: tuple[str, float] | None = None
    text: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        op, bound = self.target
        value = statistics.median(self.values)
        return value <= bound if op == "<=" else value >= bound


@dataclass
class Context:
    """What a section gets: the loopback servers, how often to repeat, and how big to go."""

    server: ServerProcess
    repeat: int
    quick: bool
    workdir: Path
    log: Callable[[str], None] = field(default=lambda message: None)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rotate(items: list[str], turn: int) -> list[str]:
    """``items`` started at ``turn``: a different client goes first in every repeat."""
    k = turn % len(items)
    return items[k:] + items[:k]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def clean_environment(home: Path) -> None:
    """No proxies (loopback only), no developer AMIGO_* settings, history in ``home``."""
    for name in list(os.environ):
        if name.startswith(("AMIGO_", "JPY_SESSION")) or name.lower().endswith("_proxy"):
            del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    os.environ["AMIGO_HOME"] = str(home)
