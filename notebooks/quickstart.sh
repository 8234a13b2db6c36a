#!/usr/bin/env bash
# Set everything up and run the quickstart notebook headless (the README's first command).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash .ci/setup quickstart
exec .venv/bin/python notebooks/run_quickstart.py "$@"
