"""Ingest throughput: events stored per second and per CPU-second, spool and Kafka, against the
engine's own insert of the same rows.

One set of real encoded usage events (``tests/spoolfill.py``: OTLP payloads as the in-app
exporter writes them, 2,500 events a spool segment, 1,000 a Kafka message; the requests vary as an
API's do, ``spoolfill.as_traffic``: methods, statuses, durations, sizes, queries, clients) is
stored four ways, each in its own process and its own chDB directory, side by side in one run:

- ``spool, engine``: ``usagelog ingest --spool`` with the default decoder (the engine reads the
  payloads, :mod:`usagelog.ingest.engine_decode`);
- ``spool, python``: the same with ``USAGELOG_INGEST_DECODER=python`` (the reference decoder);
- ``raw insert``: the rows the engine run stored, exported as one Native file, inserted into a
  fresh store with one ``INSERT ... SELECT FROM file()`` (timed around that statement only): the
  ceiling no decoder can pass;
- ``kafka, 1 worker`` and ``kafka, 2 workers`` (unless ``--no-kafka``): the payloads in a topic of
  a real broker (2 partitions), consumed by ``usagelog ingest --from kafka://...`` until stored.

"start CPU s" is what a run costs besides ingesting, from a run of one spool segment (one Kafka
message, for the worker) into a fresh store: subtracted for the per-core figure after the start.

Events/s is events over wall time (for the workers, from their start until every message was
committed, watched from outside the group); events per CPU-second is events over the process's CPU time
(all threads, the engine's included, from ``wait4``): the per-core figure. "RSS MB" is the peak
resident size (files mapped in included); "own MB", for the workers, the peak of their own memory
(resident, not mapped from files, sampled every 10 ms), which a worker's bound
(``USAGELOG_WORKER_MAX_MEMORY_MB``) counts. Rounds alternate the variants. Every run is checked:
each event stored exactly once, else the script exits non-zero.

    python benchmarks/ingest.py                 # 1,000,000 events, 2 rounds (~4 min here)
    python benchmarks/ingest.py --quick         # 100,000 events, 1 round, no Kafka (CI)
    python benchmarks/ingest.py --json > ingest.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "instrumentation"), str(ROOT / "ingest")]
PER_SEGMENT = 2500
ONE_MESSAGE = 1000  # events in a Kafka message
TARGET_PER_CORE = 100_000
# Measured per event on one 32 MiB batch (72,000 events) in one process: staging 3.05 us (the
# protobuf read 1.2, the columns taken out of the attributes 0.9, the checks 0.75, SHA-256 0.13);
# storing it 3.4-3.8 us against 2.6 for a raw insert of the same 72,000 rows in one statement
# while a batch's part was wide (158 files), 1.7 us since it is compact (migration 011). The spool
# ingest of 1M events by statement (CPU-s): staging 3.3 (the protobuf read alone ~1.3), the insert
# 1.7, the duplicate check 0.5, the rollups' refresh 0.35, the counts of the staged rows 0.26,
# noting the rollups' minutes 0.11. Since, by statement, side by side with the code before (1M
# events, 64 MiB batches, merges stopped, two pairs): the duplicate check 0.26-0.27 -> 0.04 CPU-s
# (the stored events are looked up only when one lies in the batch's sequence ranges), staging
# 2.26-2.28 -> 2.13-2.16 (the extra attributes' map built only for rows with any), the whole run
# 4.82-4.97 -> 4.55-4.67. In the Kafka worker draining 1M events (in process): the engine
# writing the archive's chunks 0.67 CPU-s, finalizing the archive's files (sort, Parquet) 1.0.
# Since the events vary as an API's do (spoolfill.as_traffic), one worker draining 1M of them with
# USAGELOG_ARCHIVE_URL=off: 110.7k and 124.0k per CPU-second after the start; alternated with runs
# archiving: 87.3k and 86.0k. Of the archive's work on 240,000 such events: the engine's Arrow
# writer 0.15 us an event (0.32 with the Apache Arrow library's, chDB's default), checking for
# copies and sorting ~0.3 us, the Parquet file 0.48 us (the engine's own Parquet writer: 1.47).
# A batch's fixed cost (groups of 2,500 events, merges stopped, in process): ~60 ms, of which the
# staging statement ~25 (its analysis ~16), the insert with its three materialized views ~30, the
# rest ~5 statements of a few ms each; settings passed to the client instead of in the statement
# cost ~6 ms more each (it reads system.settings and sets and resets them). Since: settings in the
# statements, the staged rows counted in one statement, spool groups of 64 MiB (their payloads
# mapped from the segments): 1M events in process 6.2-6.4 -> 5.1 CPU-s.
WHY_NOT_PER_CORE = {
    "spool, engine": (
        "staging a batch in the engine (its protobuf read of the OTLP payloads, the columns taken "
        "out of the attributes and the checks with the checksum's SHA-256, ~3 us an event) comes "
        "on top of the insert itself, and so do the merges of the parts each batch adds"
    ),
    "kafka, 1 worker": (
        "at the target within the machine's noise: one worker stored 90-108k events per "
        "CPU-second in runs of one hour; on top of the spool's costs, the archive (with it off "
        "114-123k in that hour, ~1.1 us an event: the engine writing each batch's chunk, at "
        "rotation ~0.65 us of sorting and writing Parquet); of the worker's CPU a quarter is the "
        "kernel's (page faults on fresh memory 12%, creating the files of each batch's parts 6%) "
        "and a tenth the merges"
    ),
}
WHY_NOT_QUARTER = (
    "a quarter of the raw insert (one statement of a million rows, ~1.2 us an event) leaves ~4.9 "
    "us; staging a batch takes ~2.2 us of it (the engine's protobuf read alone ~1.1, then the "
    "columns and the checks with the checksum's SHA-256), the insert of the batch with the rollups' "
    "sums ~1.05 (as much as the raw insert), each group's fixed cost (~60 ms: the statements' "
    "analysis, the parts of the insert and its views) ~0.5 in groups of 64 MiB, and the merges of "
    "the parts the groups add and the process's own work (reading the segments and writing them out "
    "for the engine) come on top"
)
WHY_NOT_MEMORY = (
    "the engine's background merges of usage_events run in the worker's process, on top of a "
    "batch being staged; the worker restarts itself when a batch leaves it over the bound"
)
# The stored columns but the insert time (the table sets it): usage_events' compact form
# (migration 010) keeps it as an offset from the timestamp.
COLUMNS_SQL = "SELECT * EXCEPT inserted_offset_ms FROM usagelog.usage_events"


BATCH_BYTES: dict[str, str] = {}  # --batch-bytes: USAGELOG_BATCH_MAX_BYTES for every run


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGELOG_", "OTEL_"))}
    env.update(BATCH_BYTES)
    paths = [str(ROOT / "instrumentation"), str(ROOT / "ingest"), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def _run(args: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a child to its end; wall time, CPU time (all threads) and peak RSS."""
    started = time.perf_counter()
    with log.open("wb") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(args[:6])} failed ({status}): {log.read_text()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}


def _count(url: str) -> tuple[int, int]:
    code = (
        "import sys; from usagelog.ingest.store import connect\n"
        f"with connect({url!r}) as s:\n"
        "    print(*s.query('SELECT count(), uniqExact(event_id) FROM usagelog.usage_events')[1][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    rows, ids = out.stdout.split()
    return int(rows), int(ids)


def _check(name: str, url: str, events: int) -> None:
    rows, ids = _count(url)
    if (rows, ids) != (events, events):
        raise SystemExit(f"{name}: stored {rows} rows, {ids} distinct, of {events} events")


def spool_run(work: Path, pristine: Path, decoder: str, events: int, n: int) -> dict[str, float]:
    """The whole spool, then one segment of it into a fresh store: the second run's CPU is what a
    run costs besides ingesting (imports, the engine's start, the migrations), subtracted for the
    figure after the process start."""
    spool, url = work / f"spool-{decoder}-{n}", f"chdb://{work}/db-{decoder}-{n}"
    shutil.copytree(pristine, spool)
    args = [sys.executable, "-m", "usagelog.cli", "ingest", "--spool", str(spool), "--clickhouse", url]
    figures = _run(args, _env(USAGELOG_INGEST_DECODER=decoder), work / f"spool-{decoder}-{n}.log")
    _check(f"spool {decoder}", url, events)
    one, one_url = work / f"one-{decoder}-{n}", f"chdb://{work}/db-one-{decoder}-{n}"
    one.mkdir()
    first = sorted(pristine.iterdir())[0]
    shutil.copy(first, one / first.name)
    args = [sys.executable, "-m", "usagelog.cli", "ingest", "--spool", str(one), "--clickhouse", one_url]
    start = _run(args, _env(USAGELOG_INGEST_DECODER=decoder), work / f"one-{decoder}-{n}.log")
    figures["start_cpu_s"] = start["cpu_s"]
    return figures


RAW_CHILD = """
import sys, time, resource
from usagelog.ingest.store import connect
with connect(sys.argv[1]) as store:
    source = "FROM file('" + sys.argv[2] + "', Native)"
    names = ", ".join(row[0] for row in store.query("DESCRIBE TABLE " + source[5:])[1])
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    store.client.command("INSERT INTO usagelog.usage_events (" + names + ") SELECT * " + source)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(wall, cpu)
"""

EXPORT_CHILD = """
import sys
from usagelog.ingest.store import connect
with connect(sys.argv[1]) as store:
    store.client.command("INSERT INTO FUNCTION file('" + sys.argv[2] + "', Native) " + sys.argv[3])
"""


def raw_run(work: Path, source_url: str, events: int, n: int) -> dict[str, float]:
    native = work / f"rows-{n}.native"
    if not native.exists():
        subprocess.run(
            [sys.executable, "-c", EXPORT_CHILD, source_url, str(native), COLUMNS_SQL], env=_env(), check=True
        )
    url = f"chdb://{work}/db-raw-{n}"
    out = subprocess.run(
        [sys.executable, "-c", RAW_CHILD, url, str(native)],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = (float(x) for x in out.stdout.split()[-2:])
    _check("raw insert", url, events)
    return {"wall_s": wall, "cpu_s": cpu, "max_rss_mb": 0.0}


class _OwnMemory:
    """The largest memory of its own (resident, not mapped from files: what a worker's bound,
    ``USAGELOG_WORKER_MAX_MEMORY_MB``, counts) any of ``pids`` had, sampled every 10 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.peak = 0.0
        self._pids, self._done = pids, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._done.is_set():
            for pid in self._pids:
                try:
                    fields = Path(f"/proc/{pid}/statm").read_text().split()
                except OSError:  # gone (or a zombie: no fields)
                    continue
                if len(fields) > 2:
                    self.peak = max(self.peak, (int(fields[1]) - int(fields[2])) * page)
            self._done.wait(0.01)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


class _Drained:
    """When the workers had committed every message of ``topic`` (all stored: a worker commits a
    batch's offsets after storing it), polled every 50 ms from outside the group. The workers
    themselves stop only after ``--max-idle`` without messages, and when one leaves, the other
    gets its partitions and waits that long again: their exit is not when the work was done."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.at = 0.0
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._ends = [self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._partitions]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        passing = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
        }
        while not self._done.is_set():
            try:
                committed = self._consumer.committed(self._partitions, timeout=10)
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in passing:
                    raise
                committed = []  # e.g. the group's coordinator moving while the broker starts: ask again
            if [tp.offset for tp in committed] == self._ends:
                self.at = time.perf_counter()
                return
            self._done.wait(0.05)

    def stop(self) -> float:
        """The time (``perf_counter``) all was committed; 0 when it never was."""
        self._done.set()
        self._thread.join()
        self._consumer.close()
        return self.at


def _worker_args(source: str, url: str, *more: str) -> list[str]:
    """A worker storing ``source`` (a kafka:// URL) into ``url``, stopping 3 s after the last message."""
    return [sys.executable, "-m", "usagelog.cli", "ingest", "--from", source, "--clickhouse", url,
            "--max-idle", "3", *more]  # fmt: skip


def kafka_runs(
    work: Path, payloads: list[bytes], events: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    from tests.pipeline import broker_module, produce

    broker = broker_module().KafkaBroker(work / "kafka", partitions=2)
    broker.start()
    runs: dict[str, list[dict[str, float]]] = {"kafka, 1 worker": [], "kafka, 2 workers": []}
    try:
        topic = "ingest-bench"
        broker.create_topics([topic, f"{topic}.deadletter", f"{topic}-one"], partitions=2)
        produce(broker.bootstrap, topic, payloads)
        produce(broker.bootstrap, f"{topic}-one", payloads[:1])  # for the worker's start alone
        for n in range(rounds):
            for workers in (1, 2):
                name = f"kafka, {workers} worker{'s' if workers > 1 else ''}"
                url = f"chdb://{work}/db-kafka{workers}-{n}"
                env = _env(
                    USAGELOG_KAFKA_GROUP=f"bench-{workers}-{n}",
                    USAGELOG_KAFKA_DEAD_LETTER_TOPIC=f"{topic}.deadletter",
                    USAGELOG_STATE_DIR=str(work / f"state-{workers}-{n}"),
                    USAGELOG_KAFKA_AUTO_OFFSET_RESET="earliest",
                )
                args = _worker_args(f"kafka://{broker.bootstrap}/{topic}", url)
                drained = _Drained(broker.bootstrap, f"bench-{workers}-{n}", topic, partitions=2)
                started = time.perf_counter()
                children = []
                for w in range(workers):
                    log = (work / f"kafka{workers}-{n}-{w}.log").open("wb")
                    children.append(
                        subprocess.Popen(
                            [*args, "--worker-id", f"w{w}"], env=env, stdout=log, stderr=subprocess.STDOUT
                        )
                    )
                sampler = _OwnMemory([child.pid for child in children])
                cpu, rss = 0.0, 0.0
                for child in children:
                    _, status, usage = os.wait4(child.pid, 0)
                    if status != 0:
                        raise SystemExit(f"{name}: a worker failed ({status}); see {work}")
                    cpu += usage.ru_utime + usage.ru_stime
                    rss = max(rss, usage.ru_maxrss / 1024)
                own = sampler.stop()
                done_at = drained.stop()
                if not done_at:
                    raise SystemExit(f"{name}: the workers exited before committing every message")
                wall = done_at - started
                _check(name, url, events)
                runs[name].append({"wall_s": wall, "cpu_s": cpu, "max_rss_mb": rss, "own_mb": own})
                if workers == 1:
                    # What a run costs besides ingesting (imports, the engine's start, the
                    # migrations, joining the group, the idle wait at the end): one message.
                    one_url = f"chdb://{work}/db-kafka-one-{n}"
                    one_env = {**env, "USAGELOG_KAFKA_GROUP": f"bench-one-{n}",
                               "USAGELOG_STATE_DIR": str(work / f"state-one-{n}")}  # fmt: skip
                    one_args = _worker_args(
                        f"kafka://{broker.bootstrap}/{topic}-one", one_url, "--worker-id", "w0"
                    )
                    start = _run(one_args, one_env, work / f"kafka-one-{n}.log")
                    _check("kafka, one message", one_url, ONE_MESSAGE)
                    runs[name][-1].update(start_cpu_s=start["cpu_s"], start_events=ONE_MESSAGE)
    finally:
        broker.stop()
    return runs


def summarize(name: str, runs: list[dict[str, float]], events: int) -> dict[str, Any]:
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    row: dict[str, Any] = {
        "variant": name,
        "events": events,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events_per_s": round(events / wall),
        "events_per_cpu_s": round(events / cpu),
        "cpu_s_per_100k": round(cpu / events * 100_000, 2),
        "max_rss_mb": round(max(r["max_rss_mb"] for r in runs)),
    }
    if all("own_mb" in r for r in runs):
        row["own_mb_peak"] = round(max(r["own_mb"] for r in runs))
    if all("start_cpu_s" in r for r in runs):
        start = statistics.median(r["start_cpu_s"] for r in runs)
        row["start_cpu_s"] = round(start, 2)
        ingested = events - statistics.median(r.get("start_events", PER_SEGMENT) for r in runs)
        row["events_per_cpu_s_after_start"] = round(ingested / max(cpu - start, 1e-9))
    return row


def targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for name in ("spool, engine", "kafka, 1 worker"):
        if name not in rows:
            continue
        # Both figures after the process start (imports, the engine's start, migrations; for the
        # worker also joining the group and its idle wait at the end), measured apart: a run of
        # one spool segment, of one Kafka message.
        value = rows[name].get("events_per_cpu_s_after_start", rows[name]["events_per_cpu_s"])
        met = value >= TARGET_PER_CORE
        when = ", after the process start" if "events_per_cpu_s_after_start" in rows[name] else ""
        result.append({
            "name": f"ingest ≥ {TARGET_PER_CORE:,} events/s per core ({name.split(',')[0]}{when})",
            "met": met, "value": value,
            "why_not": None if met else WHY_NOT_PER_CORE[name],
        })  # fmt: skip
    if "raw insert" in rows and "spool, engine" in rows:
        # Per CPU-second on both sides: the raw insert is timed around its statement alone, so the
        # spool's figure is the one after the process start.
        spool = rows["spool, engine"]
        share = spool.get("events_per_cpu_s_after_start", spool["events_per_cpu_s"]) / max(
            rows["raw insert"]["events_per_cpu_s"], 1
        )
        result.append({
            "name": "ingest ≥ 1/4 of the raw insert of the same rows (spool, per CPU-second)",
            "met": share >= 0.25, "value": round(share, 3),
            "why_not": None if share >= 0.25 else WHY_NOT_QUARTER,
        })  # fmt: skip
    peaks = [r["own_mb_peak"] for r in rows.values() if "own_mb_peak" in r]
    if peaks:
        from usagelog.ingest.settings import WorkerSettings

        bound = WorkerSettings.max_memory_mb
        result.append({
            "name": f"a worker's own memory ≤ its bound, {bound} MiB by default (Kafka, peak while draining)",
            "met": max(peaks) <= bound, "value": max(peaks),
            "why_not": None if max(peaks) <= bound else WHY_NOT_MEMORY,
        })  # fmt: skip
    if "kafka, 2 workers" in rows:
        one = rows["kafka, 1 worker"]
        ratio = rows["kafka, 2 workers"]["events_per_s"] / one["events_per_s"]
        cores = one["cpu_s"] / max(one["wall_s"], 1e-9)  # what one worker keeps busy
        result.append({
            "name": "two workers ≥ 1.8x one (Kafka)", "met": ratio >= 1.8, "value": round(ratio, 2),
            "why_not": None if ratio >= 1.8 else (
                "on chDB one process holds the store's engine at a time: a worker finding it held "
                "stages its batches ahead (decoded and checked in an engine of its own) and stores "
                f"them in its turn with the insert alone; one worker already keeps {cores:.2f} of the "
                f"machine's {os.cpu_count()} cores busy, so two could reach "
                f"{(os.cpu_count() or 1) / cores:.2f}x at most here, less the second worker's start (it "
                "gets its partitions in a rebalance after the first) and the run's end, where the "
                "batches one worker staged ahead are stored while the other has nothing left to read; "
                "and a batch staged ahead then stored costs more than one done whole, its store step "
                "about as long as its staging (docs/pipeline.md, \"Staging ahead\")"),
        })  # fmt: skip
    return result


def table(rows: dict[str, dict[str, Any]], tgts: list[dict[str, Any]]) -> str:
    head = (
        f"{'variant':<18} {'events':>9} {'wall s':>8} {'CPU s':>8} {'events/s':>10} {'per CPU-s':>10} "
        f"{'CPU s/100k':>10} {'RSS MB':>7} {'own MB':>7} {'start CPU s':>11} {'per CPU-s after start':>21}"
    )
    lines = [head]
    for r in rows.values():
        lines.append(
            f"{r['variant']:<18} {r['events']:>9,} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
            f"{r['events_per_s']:>10,} {r['events_per_cpu_s']:>10,} "
            f"{r['cpu_s_per_100k']:>10.2f} {r['max_rss_mb']:>7} {r.get('own_mb_peak', ''):>7} "
            f"{r.get('start_cpu_s', ''):>11} "
            f"{r.get('events_per_cpu_s_after_start', ''):>21}"
        )
    for t in tgts:
        lines.append(f"target {t['name']}: {'met' if t['met'] else 'NOT met'} ({t['value']})"
                     + ("" if t["met"] else f": {t['why_not']}"))  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 events, 1 round, no Kafka")
    parser.add_argument("--events", type=int, default=0, help="events (default 1,000,000; --quick 100,000)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 2; --quick 1)")
    parser.add_argument("--no-kafka", action="store_true", help="leave out the Kafka workers")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    parser.add_argument(
        "--batch-bytes", type=int, default=0, help="USAGELOG_BATCH_MAX_BYTES (spool groups, Kafka batches)"
    )
    args = parser.parse_args()
    if args.batch_bytes:
        BATCH_BYTES["USAGELOG_BATCH_MAX_BYTES"] = str(args.batch_bytes)
    events = args.events or (100_000 if args.quick else 1_000_000)
    events -= events % PER_SEGMENT
    rounds = args.rounds or (1 if args.quick else 2)
    from tests.spoolfill import make_payloads, write_spool

    work = Path(tempfile.mkdtemp(prefix="usagelog-ingest-bench-"))
    try:
        pristine = work / "pristine"
        write_spool(pristine, events // PER_SEGMENT, PER_SEGMENT, traffic=True)
        runs: dict[str, list[dict[str, float]]] = {"spool, engine": [], "spool, python": [], "raw insert": []}
        for n in range(rounds):
            for decoder in ("engine", "python") if n % 2 == 0 else ("python", "engine"):
                runs[f"spool, {decoder}"].append(spool_run(work, pristine, decoder, events, n))
                print(f"round {n + 1}: spool, {decoder} done", file=sys.stderr)
            runs["raw insert"].append(raw_run(work, f"chdb://{work}/db-engine-0", events, n))
        if not (args.quick or args.no_kafka):
            # 1,000 events a message: the broker's default message limit is 1 MB.
            payloads = make_payloads(events // ONE_MESSAGE, ONE_MESSAGE, instance="kafka-bench", traffic=True)
            runs.update(kafka_runs(work, payloads, events, rounds))
        rows = {name: summarize(name, r, events) for name, r in runs.items() if r}
        tgts = targets(rows)
        print(table(rows, tgts), file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps({"benchmark": "ingest", "events": events, "rounds": rounds,
                              "results": list(rows.values()), "targets": tgts}, indent=2))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
