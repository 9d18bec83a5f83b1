#!/usr/bin/env bash
# Quick start, part 1: set up, then run the demo on the embedded default (spool + chDB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/usagelog demo "$@"
