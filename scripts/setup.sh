#!/usr/bin/env bash
# Creates .venv (if missing) and installs usagelog with its ingest and dev extras; then the peers
# the request-overhead benchmark compares with, into .venv/peers (benchmarks/peers-requirements.txt
# says why apart). Re-running is cheap: pip only installs what changed, the peers when their list did.
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
echo "setup: installing usagelog[ingest,dev] into .venv" >&2
.venv/bin/python -m pip install --quiet -e ".[dev]"
peers=benchmarks/peers-requirements.txt
if ! cmp -s "$peers" .venv/peers/requirements.txt 2>/dev/null; then
    echo "setup: installing the benchmark's peers into .venv/peers" >&2
    rm -rf .venv/peers
    .venv/bin/python -m pip install --quiet --no-deps --target .venv/peers -r "$peers"
    cp "$peers" .venv/peers/requirements.txt
fi
