"""What a SIGKILL under load costs in usage events, and what keeping them costs per request.

Two sections, printed as tables:

1. **Per-request cost** (in-process, no server): the request thread's part of usagelog, in
   microseconds per call, median over chunks:
   - ``Sequence.next`` as before loss accounting (a counter) and now (plus the store of the
     allocated number into the memory-mapped counter file);
   - ``Recorder.record`` with the default flush (append to the in-memory queue) and with the
     journal (``USAGELOG_JOURNAL=true``: encode the event and ``write`` it to the page cache).
2. **Loss per kill**: the demo API (``usagelog.demo.app`` under ``opentelemetry-instrument``,
   spool exporter, default 200 ms flush) driven by client threads, then SIGKILLed; the spool
   is reaped (:func:`usagelog.instrumentation.losses.reap_orphans`) and read. Per kill: requests
   the clients saw answered, events stored, answered - stored (answered requests whose event
   is lost), and the tail report's count (allocated numbers never handed to the exporter,
   requests in flight included). Once with the default, once with the journal.

    python benchmarks/kill_window.py            # 5 kills per variant, 3 s of load each (~1 min)
    python benchmarks/kill_window.py --quick    # 1 kill per variant, 1 s of load (~15 s)
    python benchmarks/kill_window.py --kills 10 --seconds 5 --clients 8
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from usagelog.demo.run import start_instances
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import Settings
from usagelog.instrumentation.counters import Counters
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.exporters import MemoryExporter
from usagelog.instrumentation.identity import Identity, Sequence
from usagelog.instrumentation.journal import Journal
from usagelog.instrumentation.losses import reap_orphans
from usagelog.instrumentation.recorder import Recorder
from usagelog.instrumentation.spool import Frame, list_segments, read_frames
from usagelog.instrumentation.userid import UserResolver

VARIANTS = {"default": {}, "journal": {"USAGELOG_JOURNAL": "true"}}


# -- 1. per-request cost ----------------------------------------------------------------------


class CounterOnly:
    """``Sequence`` as it was before loss accounting: a counter and the last number taken."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self.last = 0

    def next(self) -> int:
        seq = next(self._next)
        self.last = seq
        return seq


def _median_us(run: Any, calls: int, chunks: int) -> float:
    times = []
    for _ in range(chunks):
        started = time.perf_counter_ns()
        run(calls)
        times.append((time.perf_counter_ns() - started) / calls / 1000)
    return statistics.median(times)


def demo_exchange(seq: int) -> Exchange:
    x = Exchange(None, seq)
    x.method, x.path, x.route, x.status_code = "GET", "/api/items", "/api/items", 200
    x.user_agent = "python-requests/2.32"
    x.client_address = "127.0.0.1"
    x.user_headers = {"HTTP_AUTHORIZATION": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}
    x.trace_id, x.span_id, x.trace_flags = 0x1234 << 64, 0x99, 1
    return x


def record_cost(recorder: Recorder, calls: int, batch: int = 400) -> float:
    """Microseconds per ``record`` call; the queue is flushed (untimed) every ``batch`` calls,
    below the early wake-up, so the background thread stays asleep while timed."""
    elapsed = 0
    seq = recorder.recorded
    for _ in range(0, calls, batch):
        made = [demo_exchange(seq + i + 1) for i in range(batch)]
        seq += batch
        started = time.perf_counter_ns()
        for x in made:
            recorder.record(x)
        elapsed += time.perf_counter_ns() - started
        recorder.flush()
    return elapsed / calls / 1000


def request_costs(quick: bool) -> list[tuple[str, float]]:
    calls, chunks = (2000, 5) if quick else (20000, 15)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = CounterOnly()
        counters = Counters.create(tmp, "bench", {"resource": {}})
        new = Sequence(counters.cells)

        def take(sequence: Any) -> Any:
            def run(n: int) -> None:
                step = sequence.next
                for _ in range(n):
                    step()

            return run

        rows.append(("Sequence.next, counter only (before)", _median_us(take(old), calls, chunks)))
        rows.append(
            ("Sequence.next + store into the mmap'd counter file", _median_us(take(new), calls, chunks))
        )
        counters.close(remove=True)

        identity = Identity({"service.name": "bench", "service.instance.id": "bench-1", "process.pid": 1})
        builder = EventBuilder(Settings(), UserResolver(["jwt:sub", "basic"]), identity, "bench")
        for name, journal in (("default flush", False), ("journal", True)):
            recorder = Recorder(
                builder.encode_batch, MemoryExporter(), flush_interval_ms=600_000, max_queue=10**9
            )
            if journal:
                recorder.journal = Journal(tmp, "bench-1", builder.encode_batch, lambda: 0)
            samples = [record_cost(recorder, calls) for _ in range(chunks)]
            rows.append((f"Recorder.record, {name}", statistics.median(samples)))
            if recorder.journal is not None:
                recorder.journal.close(remove=True)
    return rows


# -- 2. loss per kill -------------------------------------------------------------------------


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def read_spool(directory: Path) -> tuple[set[int], dict[str, Any]]:
    seqs: set[int] = set()
    tail: dict[str, Any] = {}
    for segment in list_segments(directory):
        for frame in read_frames(segment):
            if not isinstance(frame, Frame):
                continue
            for resource_logs in ExportLogsServiceRequest.FromString(frame.payload).resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        attrs = {kv.key: _value(kv.value) for kv in record.attributes}
                        if record.event_name == ev.LOSS_EVENT_NAME:
                            if attrs.get(ev.LOSS_REASON) == ev.LOSS_TAIL:
                                tail = attrs
                        else:
                            seqs.add(attrs[ev.SEQ])
    return seqs, tail


def one_kill(workdir: Path, env: dict[str, str], seconds: float, clients: int) -> dict[str, float]:
    import http.client

    spool = workdir / "spool"
    (instance,) = start_instances(spool, workdir / "logs", extra_env=env, count=1)
    answered = [0] * clients
    stop = threading.Event()

    def client(slot: int) -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=5)
                conn.request("GET", "/api/items")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    answered[slot] += 1
            except Exception:
                pass
            finally:
                if conn is not None:
                    conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    os.kill(instance.process.pid, signal.SIGKILL)
    instance.process.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join()
    reap_orphans(spool)
    stored, tail = read_spool(spool)
    total = sum(answered)
    return {
        "answered": total,
        "req_per_s": total / seconds,
        "stored": len(stored),
        "lost_answered": max(0, total - len(stored)),
        "tail": tail.get(ev.LOSS_COUNT, 0),
        "allocated": tail.get(ev.LOSS_ALLOCATED_SEQ, 0),
    }


def kill_windows(kills: int, seconds: float, clients: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(kills):
            for name, env in VARIANTS.items():  # interleaved: machine drift hits both alike
                workdir = Path(tmp) / f"{name}-{round_}"
                result = one_kill(workdir, env, seconds, clients)
                results[name].append(result)
                print(f"  {name} kill {round_ + 1}: {result}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 kill per variant, 1 s of load")
    parser.add_argument("--kills", type=int, help="kills per variant (default 5)")
    parser.add_argument("--seconds", type=float, help="seconds of load before each kill (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    args = parser.parse_args(argv)
    kills = args.kills or (1 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)

    print("per-request cost (request thread, in-process)", file=sys.stderr, flush=True)
    costs = request_costs(args.quick)
    print(f"{'what':<55} {'us/call':>8}")
    for name, us in costs:
        print(f"{name:<55} {us:>8.2f}")
    print()

    print(
        f"loss per SIGKILL ({kills} kills per variant, {seconds:g} s of load, {args.clients} clients)",
        file=sys.stderr,
    )
    results = kill_windows(kills, seconds, args.clients)
    print(
        f"{'variant':<9} {'req/s':>7} {'answered':>9} {'stored':>7} {'answered-stored':>16} {'max':>5} "
        f"{'tail report':>12}"
    )
    for name, rows in results.items():

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        worst = max(r["lost_answered"] for r in rows)
        print(
            f"{name:<9} {med('req_per_s'):>7.0f} {med('answered'):>9.0f} {med('stored'):>7.0f} "
            f"{med('lost_answered'):>16.0f} {worst:>5.0f} {med('tail'):>12.0f}"
        )
    print("(medians per kill; 'max' is the worst kill; 'tail report' counts allocated numbers never handed")
    print(" to the exporter, requests in flight at the kill included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
