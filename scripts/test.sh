#!/usr/bin/env bash
# Quick start, part 2: set up, then run the whole test suite and the benchmarks' quick modes.
# Extra arguments go to pytest (e.g. scripts/test.sh -k capture).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The browser tests (tests/dashboards/test_browser.py) drive Debian's chromium through Playwright;
# Playwright's own browser download is never used. Install the package when it is missing.
CHROMIUM=/usr/bin/chromium
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n env DEBIAN_FRONTEND=noninteractive "$@"; fi
}
if [ ! -x "$CHROMIUM" ]; then
    echo "test: $CHROMIUM is missing; installing Debian's chromium package" >&2
    if [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
        echo "test: cannot install chromium: not root and no passwordless sudo." >&2
        echo "      Run as root: apt-get install -y --no-install-recommends chromium" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "test: cannot install chromium: no apt-get here; install a chromium at $CHROMIUM" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Without package lists (a fresh container) the first try fails: update, then try again.
    as_root apt-get install -y --no-install-recommends chromium \
        || { as_root apt-get update && as_root apt-get install -y --no-install-recommends chromium; } \
        || true
    if [ ! -x "$CHROMIUM" ]; then
        echo "test: installing chromium failed; the browser tests need $CHROMIUM" >&2
        exit 1
    fi
fi

# The archive's S3 tests (tests/ingest/test_archive_s3.py) run against SeaweedFS's S3 gateway,
# built from the Go module proxy: minutes the first time, then cached outside the repository
# (scripts/seaweedfs.sh only checks the cached binary runs). Built here so that no test waits on it.
bash scripts/seaweedfs.sh >/dev/null

if [ $# -eq 0 ]; then
    echo "test: ruff on the tree, mypy (strict) on the package" >&2
    .venv/bin/ruff check .
    .venv/bin/mypy
fi
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
    echo "test: benchmarks' quick modes (prove the harnesses run; numbers are in docs/benchmarks.md)" >&2
    .venv/bin/python benchmarks/run.py --quick
    .venv/bin/python benchmarks/kill_window.py --quick
fi
