"""The fault suite's pipeline, all real: API processes (the demo app under
``opentelemetry-instrument``, ``USAGELOG_EXPORTER=otlp``) → the collector binary → a Kafka broker of
the suite's own (kafka/broker.py, which scenarios may kill) → ``usagelog ingest`` worker processes
→ chDB, with a local archive. :meth:`Stack.verify` is the check every scenario ends with.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.load import Tally
from tests.pipeline import Collector, WorkerProcess
from tests.rollups import assert_rollups_exact
from usagelog.demo.run import INSTANCES, Instance, start_instances
from usagelog.ingest import queries
from usagelog.ingest.archive import read_archive
from usagelog.ingest.store import connect


def api_env(collector: Collector, spool: Path) -> dict[str, str]:
    """What turns usage logging on in an API process: environment variables only."""
    return {
        "USAGELOG_EXPORTER": "otlp",
        "USAGELOG_SPOOL_DIR": str(spool),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        # Usage events only: traces and metrics would cost the shared CPUs and prove nothing here.
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }


@dataclass
class Verdict:
    """What :meth:`Stack.verify` found."""

    answered: int
    stored: int
    distinct: int
    instances: int
    gaps: int
    duplicates: int
    checksum_failures: int
    archived: int  # stored events found in the archive
    archive_rows: int  # rows in the archive files (an event archived twice counts twice)
    missing: list[str] = field(default_factory=list)  # answered, not stored
    unexplained: list[str] = field(default_factory=list)  # stored, never sent (or refused)

    @property
    def lost(self) -> int:
        return len(self.missing)


class Stack:
    """One scenario's pipeline: a fresh collector, topics, consumer group, chDB and archive on a
    shared broker. Workers are named (``w1``, ``w2``, ...) and can be added, stopped and killed."""

    def __init__(self, workdir: Path, broker: Any, collector_bin: Path, *, apis: int = 3) -> None:
        self.workdir = workdir
        self.broker = broker
        stem = f"faults-{workdir.name}-{uuid.uuid4().hex[:6]}"
        self.topic, self.monitored = f"{stem}.events", f"{stem}.monitored"
        self.group = f"{stem}-ingest"
        broker.create_topics([self.topic, self.monitored, f"{self.topic}.deadletter"], partitions=3)
        self.url = "chdb://" + str(workdir / "chdb")
        self.archive = workdir / "archive"  # WorkerProcess sets USAGELOG_ARCHIVE_URL to this
        self.spool = workdir / "spool"
        self.collector = Collector(
            collector_bin, workdir / "collector", broker.bootstrap, self.topic, self.monitored
        )
        self.workers: dict[str, WorkerProcess] = {}
        self.apis: list[Instance] = []
        self.api_count = apis

    # -- starting and stopping ------------------------------------------------------------------
    def start(self, workers: int = 2, each_api: list[dict[str, str]] | None = None) -> Stack:
        """Start the collector, ``workers`` workers and the API processes (``each_api``: extra
        environment variables per API process)."""
        self.collector.start()
        for i in range(1, workers + 1):
            self.start_worker(f"w{i}")
        self.apis = start_instances(
            self.spool,
            self.workdir / "logs",
            api_env(self.collector, self.spool),
            count=self.api_count,
            per_instance_env=each_api,
        )
        return self

    def start_worker(self, name: str) -> WorkerProcess:
        env = {
            "USAGELOG_KAFKA_GROUP": self.group,
            # A chDB directory held by another process is waited for this long before a retry.
            "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "120",
            "USAGELOG_HEALTH_INTERVAL_SECONDS": "5",
        }
        worker = WorkerProcess(self.workdir, self.broker.bootstrap, self.topic, self.url, name, extra_env=env)
        self.workers[name] = worker.start()
        return worker

    def restart_api(self, index: int) -> Instance:
        """Start API process ``index`` again (same identity attributes, same spool, new port)."""
        assert not self.apis[index].process.running(), "the old process must be gone first"
        env = api_env(self.collector, self.spool)
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(f"{k}={v}" for k, v in INSTANCES[index].items())
        (new,) = start_instances(self.spool, self.workdir / f"logs-restart-{index}", env, count=1)
        self.apis[index] = new
        return new

    @property
    def ports(self) -> list[int]:
        return [api.port for api in self.apis]

    def pids(self) -> dict[str, int]:
        """Every running process of the pipeline by role."""
        pids = {f"api-{i + 1}": api.process.pid for i, api in enumerate(self.apis) if api.process.running()}
        if self.collector.process is not None and self.collector.process.running():
            pids["collector"] = self.collector.process.pid
        for name, worker in self.workers.items():
            if worker.process is not None and worker.process.running():
                pids[f"worker-{name}"] = worker.process.pid
        if self.broker.pid is not None:
            pids["kafka"] = self.broker.pid
        return pids

    def stop_apis(self) -> None:
        for api in self.apis:
            api.process.stop(timeout=30)
        for api in self.apis:
            # usagelog flushes on SIGTERM, then lets the signal end the process as it would have.
            status = api.process.returncode
            assert status in (0, -signal.SIGTERM), f"API exited {status}: {api.process.log_tail()}"

    def stop_workers(self) -> None:
        """SIGTERM every live worker: each stores and commits its batch and finalizes its archive files."""
        for worker in self.workers.values():
            if worker.process is not None and worker.process.running():
                assert worker.stop(timeout=120) == 0, worker.log()[-3000:]

    def close(self) -> None:
        """Whatever is still running goes (after a failed scenario too)."""
        for api in self.apis:
            api.process.stop(timeout=10)
        for worker in self.workers.values():
            if worker.process is not None:
                worker.process.stop(timeout=10)
        self.collector.kill()

    # -- what is stored -------------------------------------------------------------------------
    def stored(self) -> int:
        """Events in the table now (the test briefly takes its turn at the chDB directory)."""
        if not (self.workdir / "chdb").exists():
            return 0
        with connect(self.url, wait=120) as store:
            _, rows = store.query("SELECT count() FROM usagelog.usage_events")
        return int(rows[0][0])

    def wait_stored(self, expected: int, timeout: float, interval: float = 1.0) -> float:
        """Seconds until at least ``expected`` events were stored; fails after ``timeout``."""
        return self.wait_recovered(expected, {}, timeout, interval)

    def wait_recovered(
        self, backlog: int, ends: dict[int, int], timeout: float, interval: float = 1.0
    ) -> float:
        """Seconds until the pipeline caught up with a moment: at least ``backlog`` events stored
        (the requests answered by then) and the group's commits past ``ends`` (the topic's end
        offsets then, see :meth:`ends`), so no partition is still stuck behind the fault."""
        from confluent_kafka import KafkaException

        started = time.monotonic()
        while True:
            count = self.stored()
            behind = {}
            if count >= backlog and ends:
                try:
                    committed = self.committed()
                except KafkaException:  # the group coordinator is still loading: not yet
                    committed = {}
                behind = {p: end for p, end in ends.items() if max(committed.get(p, 0), 0) < end}
            if count >= backlog and not behind:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{count} of {backlog} events stored, partitions {sorted(behind)} not committed "
                    f"after {timeout:.0f}s"
                )
            time.sleep(interval)

    def wait_settled(self, minimum: int, timeout: float, quiet: float = 4.0) -> int:
        """The stored count once it is at least ``minimum`` and has not changed for ``quiet``
        seconds (for a scenario where some events are gone for good); fails after ``timeout``."""
        started = time.monotonic()
        last, since = -1, time.monotonic()
        while True:
            count = self.stored()
            if count != last:
                last, since = count, time.monotonic()
            elif count >= minimum and time.monotonic() - since >= quiet:
                return count
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{count} events stored (at least {minimum} expected) after {timeout:.0f}s"
                )
            time.sleep(1.0)

    def redelivered(self) -> int:
        """Events the workers found already stored (read again after a kill or a failed commit),
        from the last health line of each worker's log."""
        total = 0
        for worker in self.workers.values():
            counts = re.findall(r"\bduplicates=(\d+)", worker.log())
            total += int(counts[-1]) if counts else 0
        return total

    def holds_store(self, pid: int) -> bool:
        """Whether process ``pid`` has the chDB directory now (usagelog's lock, from /proc/locks):
        for a worker, that it is storing a batch."""
        try:
            inode = os.stat(str(self.workdir / "chdb") + ".lock").st_ino
            locks = Path("/proc/locks").read_text()
        except OSError:
            return False
        for line in locks.splitlines():
            fields = line.split()
            # "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"
            if (
                len(fields) >= 6
                and fields[1] == "FLOCK"
                and fields[4] == str(pid)
                and fields[5].rsplit(":", 1)[-1] == str(inode)
            ):
                return True
        return False

    def committed(self) -> dict[int, int]:
        """The consumer group's committed offset per partition (negative: none yet)."""
        from confluent_kafka import Consumer, TopicPartition

        # Same group, never subscribed: reads the group's offsets without joining it.
        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": self.group})
        try:
            parts = consumer.committed([TopicPartition(self.topic, p) for p in range(3)], timeout=10)
            return {tp.partition: tp.offset for tp in parts}
        finally:
            consumer.close()

    def ends(self, timeout: float = 60.0) -> dict[int, int]:
        """The topic's end offset per partition now (what a caught-up group has committed). A
        broker that has just started answers "not leader" until it has loaded its partitions."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": self.group})
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    return {
                        p: consumer.get_watermark_offsets(
                            TopicPartition(self.topic, p), timeout=10, cached=False
                        )[1]
                        for p in range(3)
                    }
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            consumer.close()

    def kafka_lag(self) -> int:
        """Messages in the topic that the group has not committed."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": self.group})
        try:
            lag = 0
            for tp in consumer.committed([TopicPartition(self.topic, p) for p in range(3)], timeout=10):
                low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                lag += high - (tp.offset if tp.offset >= 0 else low)
            return lag
        finally:
            consumer.close()

    # -- the end of every scenario --------------------------------------------------------------
    def verify(self, tally: Tally) -> Verdict:
        """Match stored events with the requests (by trace ID), run the audit, read the archive.

        Call after the workers have stopped (their archive files are final then)."""
        with connect(self.url, wait=120) as store:
            _, rows = store.query("SELECT trace_id, event_id FROM usagelog.usage_events")
            columns, audit_rows = queries.audit(store)
        audit = [dict(zip(columns, row, strict=True)) for row in audit_rows]
        traces = [str(r[0]) for r in rows]
        ids = {str(r[1]) for r in rows}
        stored_traces = set(traces)
        sent = set(tally.answered) | set(tally.unsure)
        archive_rows = [str(r["event_id"]) for r in read_archive(str(self.archive))]
        archived = set(archive_rows)
        verdict = Verdict(
            answered=len(tally.answered),
            stored=len(rows),
            distinct=len(ids),
            instances=len(audit),
            gaps=sum(int(a["gaps"]) for a in audit),
            duplicates=sum(int(a["duplicates"]) for a in audit),
            checksum_failures=sum(int(a["checksum_failures"]) for a in audit),
            archived=len(archived & ids),
            archive_rows=len(archive_rows),
            missing=sorted(set(tally.answered) - stored_traces),
            unexplained=sorted(stored_traces - sent),
        )
        assert archived == ids, (
            f"archive: {len(ids - archived)} stored events missing, {len(archived - ids)} extra"
        )
        return verdict

    def assert_complete(self, tally: Tally) -> Verdict:
        """Nothing lost, nothing twice, no gaps, the archive complete, the rollups exact."""
        verdict = self.verify(tally)
        assert verdict.missing == [], f"{verdict.lost} answered requests not stored"
        assert verdict.unexplained == [], f"{len(verdict.unexplained)} stored events never sent"
        assert verdict.stored == verdict.distinct, "the same event stored twice"
        assert set(tally.unsure) == set(), "every request should have been answered or refused"
        assert verdict.stored == verdict.answered
        assert (verdict.gaps, verdict.duplicates, verdict.checksum_failures) == (0, 0, 0)
        with connect(self.url, wait=120) as store:
            assert_rollups_exact(store)  # whatever the faults left noted or added
        return verdict


def env_seconds(name: str, default: float) -> float:
    """A duration from the environment (``name``), for lengthening a scenario by hand."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number of seconds")
    return value
