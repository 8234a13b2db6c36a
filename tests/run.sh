#!/usr/bin/env bash
# The whole test suite on a fresh machine (the README's test command; .ci/run calls it).
# Everything is installed inside the clone: a .venv, and pip's cache under .cache/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PIP_CACHE_DIR="$root/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[dev]'
echo "== ruff, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
