"""Freshness: from a request's response to its row in ClickHouse (chDB), on both paths, defaults.

The demo API (``usagelog.demo.app`` under ``opentelemetry-instrument``, one process) is driven at
a steady rate; every request carries its own W3C ``traceparent``, so its event carries a trace ID
the client knows, and the client notes the wall-clock time it read the response. Then:

- **embedded**: ``USAGELOG_EXPORTER=spool``; ``usagelog ingest --spool DIR --follow`` stores the
  spool continuously (a round as soon as a segment is sealed, looked for every 0.2 s).
- **kafka**: ``USAGELOG_EXPORTER=otlp`` to the real collector (``collector/build.sh``, base and
  monitored configs) → the real Kafka broker (``kafka/broker.py``, 3 partitions) → one ingest
  worker (``usagelog ingest --from kafka://...``) → chDB.

Every ``USAGELOG_*`` and ``OTEL_*`` variable is removed first: the app, the collector and the
worker run on their defaults, except where to send, store and archive (and no OTel metrics).

Freshness of a request = ``inserted_at`` of its row (``DateTime64(3)``, ``DEFAULT now64(3)``:
the engine sets it while inserting) minus the client's response time, both read from this
machine's clock. Every request must be found exactly once, or the run fails. As a check that
``inserted_at`` is when a row becomes queryable, a reader process polls the store
(:data:`POLL_SECONDS`) while the load runs, as a dashboard would, and notes when it first saw
each row: the reader can never see a row before its ``inserted_at``, and its lag behind it is
what a chDB reader waits on top (its turn on the directory lock, its poll interval).

    python benchmarks/freshness.py                  # 60 req/s for 30 s per path (~2 min)
    python benchmarks/freshness.py --quick          # 10 s per path (< 1 min plus startup)
    python benchmarks/freshness.py --paths embedded --rate 100 --seconds 60
    python benchmarks/freshness.py --json > freshness.json   # table on stderr, JSON on stdout
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.pipeline: the broker, collector and worker helpers
    sys.path.insert(0, str(REPO))

TARGET_SECONDS = 5.0
POLL_SECONDS = 1.0  # the reader's poll interval
WARMUP_REQUESTS = 10
CLIENT_THREADS = 4


@dataclass
class Sent:
    trace_id: str
    answered_at: float  # time.time() once the response was read
    status: int


# -- the client ---------------------------------------------------------------------------------


def request(port: int, path: str, trace_id: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()


def drive(port: int, rate: float, seconds: float) -> list[Sent]:
    """``rate`` requests a second for ``seconds``, each sent at its scheduled time (open loop)
    from a few client threads."""
    total = int(rate * seconds)
    sent: list[Sent] = []
    lock = threading.Lock()
    taken = iter(range(total))
    start = time.monotonic() + 0.1

    def client() -> None:
        while True:
            with lock:
                k = next(taken, None)
            if k is None:
                return
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            trace_id = secrets.token_hex(16)
            status = request(port, f"/api/items/{k % 20 + 1}", trace_id)
            answered = time.time()
            with lock:
                sent.append(Sent(trace_id, answered, status))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [s.status for s in sent if s.status != 200]
    if bad:
        raise SystemExit(f"freshness: {len(bad)} requests answered {sorted(set(bad))}, not 200")
    return sent


# -- helper processes (this script, run with --reader) -----------------------


def _stop_on_term() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _trace_expr(store: Any) -> str:
    """``trace_id`` as 32 hex digits, whether it is stored as hex text or as binary."""
    _, rows = store.query(
        "SELECT type FROM system.columns WHERE database = 'usagelog' AND table = 'usage_events' "
        "AND name = 'trace_id'"
    )
    kind = str(rows[0][0]) if rows else "String"
    return "trace_id" if kind in ("String", "LowCardinality(String)") else "lower(hex(trace_id))"


def reader(url: str, out: str) -> int:
    """Poll the store every POLL_SECONDS (open, query the rows inserted lately, close), until
    SIGTERM; append ``trace_id seen_at`` for every row seen the first time."""
    from usagelog.ingest.store import connect

    stop = _stop_on_term()
    seen: set[str] = set()
    since_ms = 0
    with open(out, "a") as log:
        while not stop.is_set():
            try:
                with connect(url, migrate_schema=False) as store:
                    sql = (
                        f"SELECT {_trace_expr(store)}, toUnixTimestamp64Milli(inserted_at) "
                        "FROM usagelog.usage_events "
                        f"WHERE inserted_at >= fromUnixTimestamp64Milli({since_ms})"
                    )
                    _, rows = store.query(sql)
                at = time.time()
            except Exception as exc:  # the schema is not there yet, say: try again at the next poll
                print(f"reader: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows, at = [], time.time()
            for trace_id, inserted_ms in rows:
                if trace_id not in seen:
                    seen.add(trace_id)
                    log.write(f"{trace_id} {at:.3f}\n")
                # Rows are inserted in batches; look back a little past the newest seen.
                since_ms = max(since_ms, int(inserted_ms) - 10_000)
            log.flush()
            stop.wait(POLL_SECONDS)
    return 0


def _helper(args: list[str], log: Path, name: str) -> Any:
    from usagelog.process import Child

    return Child.start([sys.executable, __file__, *args], log=log, name=name, env=dict(os.environ))


def _read_seen(path: Path) -> dict[str, float]:
    seen: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                seen.setdefault(parts[0], float(parts[1]))
    return seen


def _wait_seen(path: Path, wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not wanted <= _read_seen(path).keys():
        time.sleep(0.5)


def stored_rows(url: str) -> dict[str, list[float]]:
    """trace ID → the ``inserted_at`` (epoch seconds) of each of its rows."""
    from usagelog.ingest.store import connect

    with connect(url) as store:
        _, rows = store.query(
            f"SELECT {_trace_expr(store)}, toUnixTimestamp64Milli(inserted_at) FROM usagelog.usage_events"
        )
    found: dict[str, list[float]] = {}
    for trace_id, inserted_ms in rows:
        found.setdefault(str(trace_id), []).append(int(inserted_ms) / 1000)
    return found


# -- one path -----------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def rank(q: float) -> float:  # nearest rank
        return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]

    return {
        "p50": round(rank(0.50), 3),
        "p90": round(rank(0.90), 3),
        "p99": round(rank(0.99), 3),
        "max": round(ordered[-1], 3),
    }


def measure(port: int, url: str, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Warm up until the first rows are stored, then drive the load with a reader polling; the
    processes that store stay up, and are stopped by the caller after this returns."""
    warm_ids = [secrets.token_hex(16) for _ in range(WARMUP_REQUESTS)]
    for trace_id in warm_ids:
        request(port, "/api/items", trace_id)
    seen_log = workdir / "seen.txt"
    poller = _helper(["--reader", url, str(seen_log)], workdir / "reader.log", "reader")
    try:
        _wait_seen(seen_log, set(warm_ids), 120)
        if not set(warm_ids) <= _read_seen(seen_log).keys():
            raise SystemExit(f"freshness: the warm-up requests were not stored within 120 s ({url})")
        sent = drive(port, rate, seconds)
        # Until every request was seen by the reader (or a minute), so the late ones count too.
        _wait_seen(seen_log, {s.trace_id for s in sent}, 60)
    finally:
        poller.stop(timeout=30)
    return {"sent": sent, "seen": _read_seen(seen_log)}


def summarize(
    name: str, sent: list[Sent], stored: dict[str, list[float]], seen: dict[str, float]
) -> dict[str, Any]:
    missing = [s.trace_id for s in sent if s.trace_id not in stored]
    twice = [s.trace_id for s in sent if len(stored.get(s.trace_id, [])) > 1]
    fresh = [stored[s.trace_id][0] - s.answered_at for s in sent if s.trace_id in stored]
    reader_lag = [
        seen[s.trace_id] - stored[s.trace_id][0] for s in sent if s.trace_id in stored and s.trace_id in seen
    ]
    seen_fresh = [seen[s.trace_id] - s.answered_at for s in sent if s.trace_id in seen]
    return {
        "path": name,
        "requests": len(sent),
        "found": len(sent) - len(missing),
        "missing": len(missing),
        "stored_twice": len(twice),
        "seen_by_reader": sum(1 for s in sent if s.trace_id in seen),
        "freshness_s": percentiles(fresh) if fresh else None,
        "seen_by_reader_s": percentiles(seen_fresh) if seen_fresh else None,
        "reader_after_inserted_s": percentiles(reader_lag) if reader_lag else None,
        # Never negative if inserted_at is when the row became visible.
        "reader_before_inserted": sum(1 for lag in reader_lag if lag < -0.002),
    }


def _clean_env() -> None:
    for key in list(os.environ):
        if key.startswith(("USAGELOG_", "OTEL_")):
            del os.environ[key]


def run_embedded(workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    from usagelog.demo.run import start_instances, stop_instances

    spool, url = workdir / "spool", "chdb://" + str(workdir / "chdb")
    from usagelog.process import Child

    follower = Child.start(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "ingest",
            "--spool",
            str(spool),
            "--clickhouse",
            url,
            "--follow",
        ],
        log=workdir / "follower.log",
        name="spool follower",
        env=dict(os.environ),
    )
    instances = start_instances(spool, workdir / "logs", count=1)
    try:
        result = measure(instances[0].port, url, workdir, rate, seconds)
    finally:
        stop_instances(instances)
        follower.stop(timeout=120)
    return summarize("embedded", result["sent"], stored_rows(url), result["seen"])


def run_kafka(workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    from tests.pipeline import Collector, WorkerProcess, broker_module, collector_binary
    from usagelog.demo.run import start_instances, stop_instances

    binary = collector_binary()
    broker = broker_module().KafkaBroker(workdir / "kafka", partitions=3)
    broker.start()
    try:
        stem = f"freshness-{uuid.uuid4().hex[:6]}"
        topic, monitored = f"{stem}.events", f"{stem}.monitored"
        broker.create_topics([topic, monitored, f"{topic}.deadletter"], partitions=3)
        collector = Collector(binary, workdir / "collector", broker.bootstrap, topic, monitored).start()
        url = "chdb://" + str(workdir / "chdb")
        worker = WorkerProcess(workdir, broker.bootstrap, topic, url, "w1")
        for key in ("USAGELOG_BATCH_MAX_SECONDS", "USAGELOG_HEALTH_INTERVAL_SECONDS"):
            worker.env.pop(key)  # the test helper's quicker settings: this measures the defaults
        worker.start()
        app_env = {
            "USAGELOG_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRICS_EXPORTER": "none",
        }
        try:
            instances = start_instances(workdir / "spool", workdir / "logs", extra_env=app_env, count=1)
            try:
                result = measure(instances[0].port, url, workdir, rate, seconds)
            finally:
                stop_instances(instances)
        finally:
            if worker.stop(timeout=120) != 0:
                raise SystemExit(f"freshness: the worker failed:\n{worker.log()[-3000:]}")
            collector.stop()
    finally:
        broker.stop()
    summary = summarize("kafka", result["sent"], stored_rows(url), result["seen"])
    # Restarts past USAGELOG_WORKER_MAX_MEMORY_MB: each one is a rebalance, a pause in storing.
    summary["worker_restarts"] = worker.log().count("restarting in place")
    return summary


# -- report ---------------------------------------------------------------------------------------

# What each path's default budget is made of, shown when its target is not met.
WHY_NOT = {
    "embedded": "an event waits for the in-app flush (USAGELOG_FLUSH_INTERVAL_MS), then in the open "
    "spool segment until it is sealed (USAGELOG_SPOOL_SEGMENT_SECONDS), then for the spool ingest",
    "kafka": "an event waits for the in-app flush (USAGELOG_FLUSH_INTERVAL_MS), the collector's "
    "sending queue (batch flush_timeout), the worker's batch (USAGELOG_BATCH_MAX_SECONDS) and its "
    "turn on the chDB directory",
}
WHY_NOT_READER = {
    "embedded": "the reader waits for the spool ingest's turn on the chDB directory, then its own poll",
    "kafka": "on top of the row's own delay the reader polls once a second, waits for the batch the "
    "worker is storing when it asks for the chDB directory (the worker lets go after it), and opens "
    "the engine itself (~0.5 s); a ClickHouse server has no such turn",
}


def _target(name: str, p99: float | None, ok: bool, why_not: str) -> dict[str, Any]:
    met = ok and p99 is not None and p99 < TARGET_SECONDS
    return {"name": name, "met": met, "value": p99, "why_not": None if met else why_not}


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path: the row stored (``inserted_at``), the target's measure; then the same as seen
    by a chDB reader in another process, which has its own poll and its turn on the directory
    lock on top."""
    rows = []
    for r in results:
        ok = r["missing"] == 0 and r["stored_twice"] == 0
        p99 = r["freshness_s"]["p99"] if r["freshness_s"] else None
        rows.append(
            _target(f"freshness p99 < {TARGET_SECONDS:g} s ({r['path']})", p99, ok, WHY_NOT[r["path"]])
        )
    for r in results:
        reader = r["seen_by_reader_s"]["p99"] if r["seen_by_reader_s"] else None
        name = f"freshness p99 < {TARGET_SECONDS:g} s ({r['path']}, seen by a chDB reader process)"
        rows.append(_target(name, reader, r["missing"] == 0, WHY_NOT_READER[r["path"]]))
    return rows


def table(results: list[dict[str, Any]], rate: float, seconds: float, settings: dict[str, str]) -> str:
    given = " ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    lines = [
        f"freshness: response → row in chDB, {rate:g} req/s for {seconds:g} s per path, {given}",
        f"{'path':<10} {'what':<30} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}",
    ]
    for r in results:
        for key, label in (
            ("freshness_s", "inserted_at - response (s)"),
            ("seen_by_reader_s", f"seen by a reader/{POLL_SECONDS:g}s (s)"),
            ("reader_after_inserted_s", "reader seen - inserted_at (s)"),
        ):
            p = r[key]
            if p:
                figures = " ".join(f"{p[k]:>7.2f}" for k in ("p50", "p90", "p99", "max"))
                lines.append(f"{r['path']:<10} {label:<30} {figures}")
        lines.append(
            f"{r['path']:<10} requests {r['requests']}, found {r['found']}, missing {r['missing']}, "
            f"stored twice {r['stored_twice']}, seen by the reader {r['seen_by_reader']}, "
            f"before inserted_at {r['reader_before_inserted']}"
            + (f", worker restarts {r['worker_restarts']}" if "worker_restarts" in r else "")
        )
    for t in targets(results):
        state = "met" if t["met"] else "NOT met"
        lines.append(
            f"target {t['name']}: {state} (p99 {t['value']} s)" + ("" if t["met"] else f": {t['why_not']}")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s per path")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    parser.add_argument("--rate", type=float, default=60.0, help="requests a second (default 60)")
    parser.add_argument("--seconds", type=float, default=0.0, help="load per path (default 30; --quick 10)")
    parser.add_argument("--paths", default="embedded,kafka", help="embedded,kafka (default both)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every process (app, ingest); repeat for several (e.g. an earlier default)",
    )
    parser.add_argument("--reader", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        return reader(*args.reader)

    seconds = args.seconds or (10.0 if args.quick else 30.0)
    paths = [p for p in args.paths.split(",") if p]
    runners = {"embedded": run_embedded, "kafka": run_kafka}
    unknown = set(paths) - runners.keys()
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
    _clean_env()
    settings = dict(item.split("=", 1) for item in args.env)
    os.environ.update(settings)
    results = []
    with tempfile.TemporaryDirectory(prefix="usagelog-freshness-") as tmp:
        for name in paths:
            print(
                f"freshness: {name} path, {args.rate:g} req/s for {seconds:g} s", file=sys.stderr, flush=True
            )
            started = time.monotonic()
            workdir = Path(tmp) / name
            workdir.mkdir()
            results.append(runners[name](workdir, args.rate, seconds))
            print(
                f"freshness: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
            )
    print(table(results, args.rate, seconds, settings), file=sys.stderr)
    if args.json:
        out = {
            "rate": args.rate,
            "seconds": seconds,
            "settings": settings,
            "paths": results,
            "targets": targets(results),
        }
        print(json.dumps(out, indent=2))
    failed = [r["path"] for r in results if r["missing"] or r["stored_twice"]]
    if failed:
        print(f"freshness: requests missing or stored twice on: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
