#!/usr/bin/env bash
# The whole test suite on a fresh machine (the README's test command; .ci/run calls it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash .ci/setup --browser
echo "== ruff, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
