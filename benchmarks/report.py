"""The table: one line per figure with min / median / max over the repeats, the target and
whether the median meets it; and a description of the machine it ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.common import Row

HEADER = ("section", "figure", "min", "median", "max", "unit", "target", "met")


def fmt(value: float) -> str:
    size = abs(value)
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    op, bound = row.target
    return f"{'≤' if op == '<=' else '≥'} {fmt(bound)}"


def _met(row: Row) -> str:
    met = row.met
    return "" if met is None else ("yes" if met else "**NO**")


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (it reads as well in a terminal)."""
    lines = []
    for row in rows:
        if row.values:
            low, mid, high = min(row.values), row.median or 0.0, max(row.values)
            cells = [row.section, row.name, fmt(low), fmt(mid), fmt(high)]
        else:
            cells = [row.section, row.name, "", row.text or "", ""]
        cells += [row.unit, _target(row), _met(row)]
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(HEADER, *lines, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(cells) for cells in lines]
    return "\n".join(out)


def summary(rows: Sequence[Row]) -> str:
    checked = [row for row in rows if row.met is not None]
    missed = [row for row in checked if not row.met]
    text = f"targets met: {len(checked) - len(missed)} of {len(checked)}"
    if missed:
        text += " — missed: " + "; ".join(f"{r.section}: {r.name}" for r in missed)
    return text


def machine(load_at_start: tuple[float, float, float] | None = None) -> str:
    """nproc, the CPU, memory, OS and Python, in a few lines."""
    lines = [f"- CPUs: {os.cpu_count()} (`nproc`: {_run('nproc') or '?'})"]
    cpu = [
        line.split(":", 1)[1].strip()
        for line in _run("lscpu").splitlines()
        if line.startswith(("Model name", "Architecture"))
    ]
    if cpu:
        lines.append(f"- CPU: {', '.join(reversed(cpu))}")
    memory = next((ln for ln in _run("free -h").splitlines() if ln.startswith("Mem:")), "")
    if memory:
        lines.append(f"- memory: {memory.split()[1]} total")
    lines.append(f"- OS: {platform.platform()}")
    lines.append(f"- Python {sys.version.split()[0]} ({sys.executable})")
    versions = []
    for name in ("httpx", "openai", "ipykernel", "IPython", "nbclient"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except Exception:
            pass
    lines.append("- " + ", ".join(versions))
    for when, load in (("start", load_at_start), ("end", os.getloadavg())):
        if load is not None:
            lines.append(f"- load average at {when}: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    return "\n".join(lines)


def _run(command: str) -> str:
    program = command.split()[0]
    if shutil.which(program) is None:
        return ""
    try:
        return subprocess.run(
            command.split(), capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
