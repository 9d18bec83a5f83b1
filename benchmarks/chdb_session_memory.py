"""Memory of a process storing batches into chDB through usagelog's pipeline (its own, as the
workers' bound counts it: resident, not mapped from files): a session opened for each batch
against one session held, each with chDB's allocator as shipped and with jemalloc options
("trimmed": ``JE_MALLOC_CONF`` set to :data:`TRIMMED`). Each variant runs in a fresh process
(the allocator reads its options when chDB loads); the figures are MiB after the first batches,
at the end, and per batch between the two, and the seconds the batches took. See
docs/pipeline.md, "A worker's memory".

    python benchmarks/chdb_session_memory.py              # 100 and 300 batches (~2 min)
    python benchmarks/chdb_session_memory.py --batches 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM = 10  # batches before the first figure: caches and the schema settle
TRIMMED = "tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"


def _child(mode: str, batches: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's tests/ package
    from tests.spoolfill import make_payloads
    from usagelog.ingest.pipeline import Item, Pipeline
    from usagelog.ingest.recycle import memory_bytes
    from usagelog.ingest.store import connect

    url = "chdb://" + tempfile.mkdtemp(prefix="chdb-session-memory-") + "/chdb"
    pipeline = Pipeline(archive=None)
    sizes: list[float] = []

    def batch(i: int) -> list[Item]:
        payloads = make_payloads(10, 3, instance=f"i{i % 3}", first_seq=i * 30 + 1)
        return [Item("kafka", f"t/0@{i * 10 + j}", p) for j, p in enumerate(payloads)]

    started = time.monotonic()
    if mode == "held":
        with connect(url) as store:
            for i in range(batches):
                pipeline.process(batch(i), store)
                sizes.append((memory_bytes() or 0) / 2**20)
    else:
        for i in range(batches):
            with connect(url) as store:
                pipeline.process(batch(i), store)
            sizes.append((memory_bytes() or 0) / 2**20)
    seconds = time.monotonic() - started
    print(json.dumps({"warm": sizes[WARM - 1], "end": sizes[-1], "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=0, help="batches per variant (default 100 / 300)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.batches)
        return
    print(f"{'variant':<42} {'batches':>7} {'warm MiB':>9} {'end MiB':>8} {'MiB/batch':>9} {'s':>6}")
    for mode, default in (("per-batch", 100), ("held", 300)):
        batches = max(WARM + 1, args.batches or default)
        for conf in ("", TRIMMED):
            env = {**os.environ, "JE_MALLOC_CONF": conf}
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--batches", str(batches)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            per = (r["end"] - r["warm"]) / (batches - WARM)
            name = f"session {mode}, " + ("JE_MALLOC_CONF trimmed" if conf else "allocator as shipped")
            print(
                f"{name:<42} {batches:>7} {r['warm']:>9.0f} {r['end']:>8.0f} {per:>9.2f} {r['seconds']:>6.1f}"
            )


if __name__ == "__main__":
    main()
