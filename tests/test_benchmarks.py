"""The benchmark suite still runs: ``python -m benchmarks --quick`` prints a row for every section.

Timings are not checked here (CI machines vary too much): the figures live in
``benchmarks/README.md``, from a full run on a quiet machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_quick_run_prints_every_section() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    assert header[:2] == ["section", "figure"]
    sections = {row[0] for row in body}
    assert sections == {section.NAME for section in SECTIONS}
    for row in body:
        # every row has figures (min, median, max) or says why not
        assert (row[2] and row[4]) or row[3], row
    assert "targets met:" in done.stdout


@pytest.mark.timeout(120)
def test_the_render_profile_runs_every_step() -> None:
    """``python -m benchmarks.profile render`` names today's rendering steps (its ``escape``
    step once named a function the rendering rewrite removed); a small answer, one process."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "render-step", "noted", "20000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from benchmarks import profile

    for step in profile.RENDER_STEPS:
        assert profile.render_step(step, 20_000) >= 0
