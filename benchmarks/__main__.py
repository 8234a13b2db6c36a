"""``python -m benchmarks``: start the loopback servers, run every section, print one table.

    .venv/bin/python -m benchmarks               # the full run (5 repeats)
    .venv/bin/python -m benchmarks --quick       # tiny sizes, 1 repeat: does it all still run?
    .venv/bin/python -m benchmarks --only throughput,memory --repeat 3

A section is a module with ``NAME``, ``TITLE`` and ``run(ctx) -> list[Row]``; add a new one to
``SECTIONS`` below. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from benchmarks import (
    context,
    first_token,
    history,
    load,
    map,
    memory,
    notebook,
    replay,
    saved,
    throughput,
)
from benchmarks.common import Context, Row, clean_environment, progress
from benchmarks.report import machine, summary, table
from benchmarks.server import ServerProcess

SECTIONS: list[ModuleType] = [
    throughput,
    notebook,
    first_token,
    load,
    memory,
    history,
    context,
    map,
    replay,
    saved,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeat", type=int, default=None, help="repeats per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat (smoke)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: " + ", ".join(s.NAME for s in SECTIONS),
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 5)
    chosen = [s for s in SECTIONS if not args.only or s.NAME in args.only.split(",")]
    if not chosen:
        parser.error(f"--only: no such section (have {', '.join(s.NAME for s in SECTIONS)})")

    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[Row] = []
    started = time.monotonic()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="amigo-bench-") as tmp:
        workdir = Path(tmp)
        clean_environment(workdir / "amigo-home")
        with ServerProcess() as server:
            os.environ["AMIGO_BASE_URL"] = server.amigo_url  # kernels inherit it
            ctx = Context(server, repeat, args.quick, workdir, log=progress)
            for section in chosen:
                progress(f"{section.NAME}: {section.TITLE}")
                rows += section.run(ctx)
    print(f"command: {command.strip()}")
    print(f"repeats: {repeat}{' (quick sizes)' if args.quick else ''}")
    print(machine(load_at_start))
    print()
    print(table(rows))
    print()
    print(summary(rows))
    print(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
