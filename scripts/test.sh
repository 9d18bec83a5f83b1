#!/usr/bin/env bash
# Quick start, part 2: set up, then run the whole test suite and the benchmark's quick mode.
# Extra arguments go to pytest (e.g. scripts/test.sh -k capture).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ $# -eq 0 ]; then
    echo "test: ruff on the tree, mypy (strict) on the package" >&2
    .venv/bin/ruff check .
    .venv/bin/mypy
fi
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ] && [ -f benchmarks/request_overhead.py ]; then
    echo "test: benchmark quick mode (proves the harness runs; numbers are in docs/benchmarks.md)" >&2
    .venv/bin/python benchmarks/request_overhead.py --quick
fi
