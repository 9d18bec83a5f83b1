"""Loss accounting in the API process: nothing leaves memory before it is written, drops at the
byte bound are counted, logged once and reported, a failed final flush is counted in the counter
file, and the counter file of a killed process becomes loss reports."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from usagelog.instrumentation import counters as c
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.accounting import LossAccount
from usagelog.instrumentation.config import Settings
from usagelog.instrumentation.counters import Counters, claim_orphans
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.losses import reap_orphans
from usagelog.instrumentation.recorder import Recorder, estimated_size
from usagelog.instrumentation.runtime import Runtime
from usagelog.instrumentation.spool import Frame, claim_segments, list_segments

from .test_recorder import builder, exchanges, seqs

RESOURCE = {"service.name": "s", "service.instance.id": "i-1", "host.name": "h", "process.pid": 1}


class BrokenDisk:
    """An exporter whose writes fail (a read-only or full spool) until ``healed``."""

    def __init__(self) -> None:
        self.healed = False
        self.payloads: list[bytes] = []
        self.attempts = 0

    def export(self, payload: bytes, count: int) -> None:
        self.attempts += 1
        if not self.healed:
            raise OSError(errno.EROFS, "Read-only file system")
        self.payloads.append(payload)

    spill = export

    def tick(self) -> None:
        pass

    def after_fork(self, instance_id: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


def loss_records(payloads: Sequence[bytes]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, record attributes) of every loss report in the payloads."""
    found = []
    for payload in payloads:
        request = ExportLogsServiceRequest.FromString(payload)
        for resource_logs in request.resource_logs:
            resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    if record.event_name == ev.LOSS_EVENT_NAME:
                        found.append((resource, {kv.key: _value(kv.value) for kv in record.attributes}))
    return found


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def spooled_payloads(directory: Path) -> list[bytes]:
    payloads = []
    for segment in claim_segments(directory):
        payloads += [f.payload for f in segment.frames() if isinstance(f, Frame)]
        segment.release()
    return payloads


# -- hole 1: nothing leaves the queue before it is written; drops only at the byte bound ----------


def test_events_over_the_queue_limit_stay_in_memory_while_nothing_can_be_written() -> None:
    disk = BrokenDisk()
    recorder = Recorder(builder().encode_batch, disk, flush_interval_ms=20, max_queue=600)
    for exchange in exchanges(1, 3000):
        recorder.record(exchange)
    assert disk.attempts > 0
    disk.healed = True
    recorder.shutdown()
    assert seqs(disk.payloads) == list(range(1, 3001))
    assert recorder.account.cells[c.SLOT_DROPPED] == 0


def test_over_the_byte_bound_with_nothing_writable_the_newest_are_dropped_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = BrokenDisk()
    reader = InMemoryMetricReader()
    account = LossAccount(resource=RESOURCE, meter=MeterProvider(metric_readers=[reader]).get_meter("t"))
    size = estimated_size(exchanges(1, 1)[0])
    bound = 300 * size
    recorder = Recorder(
        builder().encode_batch,
        disk,
        flush_interval_ms=20,
        max_queue=100,
        max_queue_bytes=bound,
        account=account,
    )
    caplog.set_level(logging.DEBUG, logger="usagelog")
    for exchange in exchanges(1, 3000):
        recorder.record(exchange)
    # An estimate (the queue at the sampled average size of an exchange), so within a few percent.
    assert recorder.held_bytes <= bound * 1.05
    dropped = account.cells[c.SLOT_DROPPED]
    assert dropped > 2000
    disk.healed = True
    recorder.shutdown()

    stored = seqs(disk.payloads)
    assert len(stored) + dropped == 3000 and len(set(stored)) == len(stored)
    ((resource, report),) = loss_records(disk.payloads)
    assert resource == RESOURCE
    assert report[ev.LOSS_REASON] == ev.LOSS_DROPPED
    assert report[ev.LOSS_COUNT] == dropped
    assert report[ev.LOSS_REPORT_ID] == f"i-1/dropped/{dropped}"
    lost = sorted(set(range(1, 3001)) - set(stored))
    assert (report[ev.LOSS_FIRST_SEQ], report[ev.LOSS_LAST_SEQ]) == (lost[0], lost[-1])
    assert account.complete()
    # One warning per kind, not one per event, and no traceback at warning level.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 4, [r.getMessage() for r in warnings]
    assert all(r.exc_info is None for r in warnings)
    assert any("dropped" in r.getMessage() for r in warnings)
    metrics = reader.get_metrics_data()
    points = [
        point.value
        for rm in metrics.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "usagelog.events.dropped"
        for point in metric.data.data_points
    ]
    assert points == [dropped]


def test_a_batch_the_exporter_refuses_is_retried_never_dropped() -> None:
    disk = BrokenDisk()
    recorder = Recorder(builder().encode_batch, disk, flush_interval_ms=10_000, max_queue=10_000)
    for exchange in exchanges(1, 50):
        recorder.record(exchange)
    with pytest.raises(OSError):
        recorder.flush()
    disk.healed = True
    recorder.flush()
    assert seqs(disk.payloads) == list(range(1, 51))


# -- hole 4: the final flush fails --------------------------------------------------------------------


def test_a_failed_final_flush_is_logged_with_its_count_and_left_in_the_counter_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Runtime(Settings(exporter="spool", spool_dir=str(tmp_path), flush_interval_ms=60_000))
    path = runtime.account.counters.path
    assert path is not None and path.exists()
    runtime.recorder.exporter = BrokenDisk()  # the disk is full from now on
    for _ in range(510):
        runtime.record(Exchange(None, runtime.next_seq()))
    runtime.shutdown()
    assert any("510 events" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert path.exists()
    assert reap_orphans(tmp_path) == 1
    assert not path.exists()
    reports = {r[ev.LOSS_REASON]: r for _, r in loss_records(spooled_payloads(tmp_path))}
    assert reports[ev.LOSS_WRITE_FAILED][ev.LOSS_COUNT] == 510
    assert (
        reports[ev.LOSS_WRITE_FAILED][ev.LOSS_FIRST_SEQ],
        reports[ev.LOSS_WRITE_FAILED][ev.LOSS_LAST_SEQ],
    ) == (
        1,
        510,
    )
    assert "final flush failed" in reports[ev.LOSS_WRITE_FAILED][ev.LOSS_DETAIL]
    assert reports[ev.LOSS_TAIL][ev.LOSS_COUNT] == 0
    assert reports[ev.LOSS_TAIL][ev.LOSS_ALLOCATED_SEQ] == 510


def test_a_clean_exit_with_everything_written_removes_the_counter_file(tmp_path: Path) -> None:
    runtime = Runtime(Settings(exporter="spool", spool_dir=str(tmp_path)))
    path = runtime.account.counters.path
    assert path is not None and path.exists()
    for _ in range(20):
        runtime.record(Exchange(None, runtime.next_seq()))
    runtime.shutdown()
    assert not path.exists()
    assert reap_orphans(tmp_path) == 0
    assert len(seqs(spooled_payloads(tmp_path))) == 20


# -- hole 2: the counter file of a killed process ----------------------------------------------------

_KILLED_APP = textwrap.dedent(
    """
    import sys, time
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.exchange import Exchange
    from usagelog.instrumentation.runtime import Runtime
    runtime = Runtime(Settings(exporter="spool", spool_dir=sys.argv[1], flush_interval_ms=60_000))
    for _ in range(30):
        runtime.record(Exchange(None, runtime.next_seq()))
    runtime.flush()                      # 1..30 written
    for _ in range(12):
        runtime.record(Exchange(None, runtime.next_seq()))   # 31..42 queued only
    for _ in range(3):
        runtime.next_seq()               # 43..45 in flight
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_the_counter_file_of_a_killed_process_becomes_a_tail_report(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_APP, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert reap_orphans(tmp_path) == 0  # alive: its file is locked
        assert list(claim_orphans(tmp_path)) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    (counter_file,) = tmp_path.glob("*" + c.SUFFIX)
    assert reap_orphans(tmp_path) == 1
    assert not counter_file.exists()
    payloads = spooled_payloads(tmp_path)
    assert seqs(payloads) == list(range(1, 31))
    ((resource, tail),) = loss_records(payloads)
    assert resource[ev.PROCESS_PID] == proc.pid and resource[ev.SERVICE_NAME]
    assert resource[ev.SERVICE_INSTANCE_ID] in tail[ev.LOSS_REPORT_ID]
    assert tail[ev.LOSS_REASON] == ev.LOSS_TAIL
    assert tail[ev.LOSS_REPORT_ID] == f"{resource[ev.SERVICE_INSTANCE_ID]}/tail/45"
    assert (tail[ev.LOSS_COUNT], tail[ev.LOSS_FIRST_SEQ], tail[ev.LOSS_LAST_SEQ]) == (15, 31, 45)
    assert tail[ev.LOSS_ALLOCATED_SEQ] == 45
    # Emitted == stored + counted loss.
    assert len(seqs(payloads)) + tail[ev.LOSS_COUNT] == tail[ev.LOSS_ALLOCATED_SEQ]
    assert reap_orphans(tmp_path) == 0


def test_reaping_at_runtime_start_reports_a_dead_instance(tmp_path: Path) -> None:
    dead = Counters.create(tmp_path, "dead-1", {"resource": {**RESOURCE, "service.instance.id": "dead-1"}})
    dead.cells[c.SLOT_ALLOCATED] = 7
    dead.cells[c.SLOT_WRITTEN] = 5
    dead.cells[c.SLOT_LOW] = 6
    dead.close(remove=False)  # as a kill would leave it: unlocked, not removed
    runtime = Runtime(Settings(exporter="spool", spool_dir=str(tmp_path)))
    try:
        ((resource, tail),) = loss_records(spooled_payloads(tmp_path))
        assert resource["service.instance.id"] == "dead-1"
        assert (tail[ev.LOSS_COUNT], tail[ev.LOSS_FIRST_SEQ], tail[ev.LOSS_LAST_SEQ]) == (2, 6, 7)
        assert [p.name for p in tmp_path.glob("*" + c.SUFFIX)] == [runtime.account.counters.path.name]  # type: ignore[union-attr]
    finally:
        runtime.shutdown()


def test_a_forked_child_keeps_its_own_counter_file(tmp_path: Path) -> None:
    runtime = Runtime(Settings(exporter="spool", spool_dir=str(tmp_path), flush_interval_ms=60_000))
    try:
        runtime.next_seq()
        parent_file = runtime.account.counters.path
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a new instance with its own sequence and file
            try:
                seq = runtime.next_seq()
                path = runtime.account.counters.path
                ok = seq == 1 and path is not None and path != parent_file and path.exists()
                # Nothing in the child holds the parent's file (and with it the parent's lock).
                held = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
                ok = ok and str(parent_file) not in held
                os.write(write, b"ok" if ok else b"no")
            finally:
                os._exit(0)
        os.close(write)
        assert os.read(read, 2) == b"ok"
        os.close(read)
        os.waitpid(pid, 0)
        # The parent's file is still its own (locked), its count untouched by the child.
        assert runtime.account.cells[c.SLOT_ALLOCATED] == 1
        orphans = list(claim_orphans(tmp_path))
        assert [o.path for o in orphans] != [parent_file] and all(o.path != parent_file for o in orphans)
        for orphan in orphans:
            orphan.release()
    finally:
        runtime.shutdown()


# -- hole 5: no half frame after a failed write ------------------------------------------------------


def test_a_write_that_fails_part_way_leaves_no_half_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usagelog.instrumentation import spool

    writer = spool.SpoolWriter(tmp_path, "i", fsync=False)
    writer.append(b"before")
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:7]))  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(spool.os, "write", full_disk)
    with pytest.raises(OSError):
        writer.append(b"lost-for-now" * 10)
    monkeypatch.setattr(spool.os, "write", real_write)
    writer.append(b"after")
    writer.seal()
    (segment,) = list_segments(tmp_path)
    frames = list(spool.read_frames(segment))
    assert all(isinstance(f, Frame) for f in frames), frames
    assert [f.payload for f in frames] == [b"before", b"after"]  # type: ignore[union-attr]


# -- hole 3: the journal (USAGELOG_JOURNAL) ----------------------------------------------------------


def test_with_the_journal_a_killed_process_loses_no_recorded_event(tmp_path: Path) -> None:
    script = _KILLED_APP.replace('exporter="spool",', 'exporter="spool", journal=True,')
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert list(tmp_path.glob("*.journal"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert reap_orphans(tmp_path) == 1
    assert list(tmp_path.glob("*.journal")) == []
    payloads = spooled_payloads(tmp_path)
    assert sorted(set(seqs(payloads))) == list(range(1, 43))  # all recorded; 43..45 never finished
    ((_, tail),) = loss_records(payloads)
    assert (tail[ev.LOSS_COUNT], tail[ev.LOSS_ALLOCATED_SEQ]) == (15, 45)
    assert "journal" in tail[ev.LOSS_DETAIL]


def test_journal_files_are_rotated_deleted_once_written_and_removed_at_a_clean_exit(tmp_path: Path) -> None:
    runtime = Runtime(
        Settings(exporter="spool", spool_dir=str(tmp_path), journal=True, flush_interval_ms=60_000)
    )
    journal = runtime.recorder.journal
    assert journal is not None
    journal.rotate_bytes = 2000
    for _ in range(3):
        for _ in range(20):
            runtime.record(Exchange(None, runtime.next_seq()))
        runtime.flush()
    assert len(list(tmp_path.glob("*.journal"))) <= 2
    runtime.shutdown()
    assert list(tmp_path.glob("*.journal")) == []
    assert sorted(seqs(spooled_payloads(tmp_path))) == list(range(1, 61))


def test_a_counter_file_left_half_created_is_removed_once_stale(tmp_path: Path) -> None:
    stale = tmp_path / ("dead-9" + c.NEW_SUFFIX)
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    fresh = tmp_path / ("being-made-1" + c.NEW_SUFFIX)
    fresh.write_bytes(b"")
    assert reap_orphans(tmp_path) == 0
    assert not stale.exists() and fresh.exists()
