#!/usr/bin/env bash
# Creates .venv (if missing) and installs usagelog with its ingest, dev and bench extras
# (bench: the peers the request-overhead benchmark compares with).
# Re-running is cheap: pip only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "usagelog needs Python 3.10 or newer (set PYTHON=/path/to/python3)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
echo "setup: installing usagelog[ingest,dev,bench] into .venv" >&2
.venv/bin/python -m pip install --quiet -e ".[dev,bench]"
