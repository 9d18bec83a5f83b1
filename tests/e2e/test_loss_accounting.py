"""Losing nothing silently, with a real API process under ``opentelemetry-instrument``: what a
spool that cannot be written or a SIGKILL costs is counted and reported (``usagelog.loss``
records in the spool), so that emitted == stored + counted loss."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.pipeline import http_get, wait_for
from usagelog.demo.run import INSTANCES, start_instances, stop_instances
from usagelog.instrumentation import counters
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.losses import reap_orphans
from usagelog.instrumentation.spool import DamagedFrame, Frame, list_segments, read_frames

pytestmark = pytest.mark.slow


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def spooled(
    directory: Path, torn_tail: bool = False
) -> tuple[list[int], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Sequence numbers of the usage events in a spool, and its loss reports (resource, attributes).

    Any damaged frame fails, except with ``torn_tail`` a torn last frame of an ``.open`` segment:
    a SIGKILL can land while a frame is being written (its events are in the tail report)."""
    seqs: list[int] = []
    losses = []
    for segment in list_segments(directory):
        frames = list(read_frames(segment))
        if torn_tail and segment.suffix == ".open" and frames and isinstance(frames[-1], DamagedFrame):
            assert frames[-1].reason.startswith("torn frame"), frames[-1].reason
            frames.pop()
        for frame in frames:
            assert isinstance(frame, Frame), f"damaged frame in {segment}: {frame}"
            request = ExportLogsServiceRequest.FromString(frame.payload)
            for resource_logs in request.resource_logs:
                resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        attrs = {kv.key: _value(kv.value) for kv in record.attributes}
                        if record.event_name == ev.LOSS_EVENT_NAME:
                            losses.append((resource, attrs))
                        else:
                            seqs.append(attrs[ev.SEQ])
    return seqs, losses


def ingest(spool: Path, tmp_path: Path) -> dict[str, Any]:
    url = "chdb://" + str(tmp_path / "chdb")
    command = ["ingest", "--spool", str(spool), "--clickhouse", url, "--format", "json"]
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)[0]
    return summary


def audit(tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    """``usagelog audit --format json`` on the store :func:`ingest` filled: exit code, instances."""
    url = "chdb://" + str(tmp_path / "chdb")
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--clickhouse", url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr
    instances: list[dict[str, Any]] = json.loads(result.stdout)
    return result.returncode, instances


def hammer(port: int, requests: int, threads: int = 4) -> list[int]:
    """GET /api/items ``requests`` times from ``threads`` threads; the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()
    left = iter(range(requests))

    def run() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            status = http_get(port, "/api/items")
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return statuses


def test_an_unwritable_spool_over_the_memory_bound_drops_counts_and_reports_every_event(
    tmp_path: Path,
) -> None:
    # The spool's parent is a file: nothing can be created or written there (whoever runs this).
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    spool = blocked / "spool"
    env = {"USAGELOG_MAX_QUEUE": "600", "USAGELOG_MAX_QUEUE_BYTES": "500000"}
    (instance,) = start_instances(spool, tmp_path / "logs", extra_env=env, count=1)
    try:
        statuses = hammer(instance.port, 3000)
        assert statuses.count(200) == 3000
        blocked.unlink()  # writable again
        # The API process's spool may create it first (it retries its writes): either will do.
        blocked.mkdir(exist_ok=True)

        def reported() -> bool:
            if not spool.is_dir():
                return False
            try:
                return bool(spooled(spool)[1])
            except AssertionError:
                # The live writer is part way through a frame of its .open segment: look again.
                return False

        wait_for(reported, 60, "the loss report of the dropped events")
    finally:
        stop_instances([instance])
    seqs, losses = spooled(spool)
    ((resource, report),) = losses
    assert report[ev.LOSS_REASON] == ev.LOSS_DROPPED
    dropped = report[ev.LOSS_COUNT]
    assert dropped > 0
    assert len(seqs) == len(set(seqs))
    assert len(seqs) + dropped == 3000  # emitted == stored + counted loss
    assert sorted(set(range(1, 3001)) - set(seqs))[0] >= report[ev.LOSS_FIRST_SEQ]
    assert report[ev.LOSS_LAST_SEQ] <= 3000 and report[ev.LOSS_ALLOCATED_SEQ] <= 3000
    assert report[ev.LOSS_REPORT_ID] == f"{resource[ev.SERVICE_INSTANCE_ID]}/dropped/{dropped}"
    assert resource[ev.SERVICE_NAME] == "demo-api"
    assert resource[ev.HOST_NAME] == INSTANCES[0]["host.name"]
    assert resource[ev.REGION] == INSTANCES[0]["cloud.region"]
    assert resource[ev.PROCESS_PID] == instance.process.pid or resource[ev.PROCESS_PID] > 0
    # A clean exit with every event written or reported: no counter file is left behind.
    assert list(spool.glob("*" + counters.SUFFIX)) == []
    # A few warnings with counts, never one line (or a traceback) per event.
    log = instance.log_path.read_text()
    assert "Traceback" not in log
    assert sum("usagelog:" in line for line in log.splitlines()) < 12, log[-3000:]
    assert ingest(spool, tmp_path)["stored"] == len(seqs)


def test_a_sigkill_under_load_leaves_a_tail_report_with_what_was_never_written(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (instance,) = start_instances(spool, tmp_path / "logs", count=1)
    answered: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                if http_get(instance.port, "/api/items", timeout=5) == 200:
                    answered.append(1)
            except Exception:
                pass

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        wait_for(lambda: len(answered) >= 300, 60, "300 answered requests")
        (counter_file,) = spool.glob("*" + counters.SUFFIX)
        assert reap_orphans(spool) == 0  # alive: the file is its own
        os.kill(instance.process.pid, signal.SIGKILL)
        instance.process.wait(timeout=30)
    finally:
        stop.set()
        for w in workers:
            w.join()
        stop_instances([instance])
    kept = tmp_path / "copy"
    shutil.copytree(spool, kept)
    assert counter_file.exists()
    assert reap_orphans(spool) == 1
    assert not counter_file.exists()
    seqs, losses = spooled(spool, torn_tail=True)
    ((resource, tail),) = losses
    assert tail[ev.LOSS_REASON] == ev.LOSS_TAIL
    allocated = tail[ev.LOSS_ALLOCATED_SEQ]
    assert tail[ev.LOSS_REPORT_ID] == f"{resource[ev.SERVICE_INSTANCE_ID]}/tail/{allocated}"
    assert resource[ev.PROCESS_PID] == instance.process.pid
    assert len(answered) <= allocated
    assert len(seqs) == len(set(seqs)) and max(seqs) <= allocated
    # Emitted == stored + lost, and every lost number is in the report's range. The report's
    # count may exceed the loss by the last batch written in the instant before the kill, before
    # the process counted it (audit takes the exact loss from what was stored).
    missing = set(range(1, allocated + 1)) - set(seqs)
    assert len(missing) <= tail[ev.LOSS_COUNT]
    if missing:
        assert tail[ev.LOSS_FIRST_SEQ] <= min(missing) and max(missing) <= tail[ev.LOSS_LAST_SEQ] == allocated
    # usagelog ingest reaps by itself too: on the copy taken before reaping, the same result.
    started = time.monotonic()
    summary = ingest(kept, tmp_path)
    assert summary["stored"] == len(seqs), (summary, time.monotonic() - started)
    assert list(kept.glob("*" + counters.SUFFIX)) == []
    # Audit proves it: the exact loss, at the tail, and a non-zero exit when there is any.
    code, instances = audit(tmp_path)
    (found,) = [i for i in instances if i["instance"] == resource[ev.SERVICE_INSTANCE_ID]]
    assert found["allocated_seq"] == allocated
    assert found["lost"] == len(missing)
    assert found["gaps"] + found["tail_lost"] == len(missing)
    assert code == (1 if missing else 0)


def test_a_killed_gunicorn_worker_is_reported_by_the_worker_that_replaces_it(tmp_path: Path) -> None:
    from usagelog.demo.run import instrument_command
    from usagelog.process import Child, free_port

    spool = tmp_path / "spool"
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "gunicorn-api",
        "OTEL_PYTHON_DISTRO": "usagelog",
        "OTEL_PYTHON_CONFIGURATOR": "usagelog",
        "USAGELOG_EXPORTER": "spool",
        "USAGELOG_SPOOL_DIR": str(spool),
    }
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    server = Child.start(
        [
            instrument_command(),
            gunicorn,
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "usagelog.demo.app:create_app()",
        ],
        log=tmp_path / "gunicorn.log",
        name="gunicorn",
        env=env,
    )
    try:
        server.wait_until(lambda: http_get(port, "/api/items") == 200, 60, "gunicorn to serve")
        assert hammer(port, 200).count(200) == 200

        def worker_files() -> dict[int, Path]:
            files = {int(p.stem.rsplit("-", 1)[1]): p for p in spool.glob("*" + counters.SUFFIX)}
            return {pid: path for pid, path in files.items() if pid != server.pid}

        wait_for(lambda: len(worker_files()) == 2, 30, "a counter file per worker")
        victim, victim_file = sorted(worker_files().items())[0]
        os.kill(victim, signal.SIGKILL)
        # gunicorn starts a new worker; on its first request it reaps the one that was killed.
        wait_for(lambda: http_get(port, "/api/items") == 200 and not victim_file.exists(), 60, "the reaping")
    finally:
        server.stop(timeout=60)
    assert list(spool.glob("*" + counters.SUFFIX)) == []  # the others exited cleanly
    seqs_by_pid: dict[int, int] = {}
    for segment in list_segments(spool):
        for frame in read_frames(segment):
            assert isinstance(frame, Frame)
            for resource_logs in ExportLogsServiceRequest.FromString(frame.payload).resource_logs:
                resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        if record.event_name == ev.EVENT_NAME:
                            pid = resource[ev.PROCESS_PID]
                            seqs_by_pid[pid] = seqs_by_pid.get(pid, 0) + 1
    _, losses = spooled(spool)
    ((resource, tail),) = losses
    assert resource[ev.PROCESS_PID] == victim and tail[ev.LOSS_REASON] == ev.LOSS_TAIL
    stored = seqs_by_pid.get(victim, 0)  # killed right after the load: maybe before its first flush
    assert stored + tail[ev.LOSS_COUNT] >= tail[ev.LOSS_ALLOCATED_SEQ] >= stored
    assert tail[ev.LOSS_ALLOCATED_SEQ] > 0
    assert "gunicorn" not in str(resource.get(ev.SERVICE_INSTANCE_ID, ""))


def test_a_disk_full_for_ever_then_sigterm_counts_what_the_final_flush_could_not_write(
    tmp_path: Path,
) -> None:
    from usagelog.demo.run import instrument_command
    from usagelog.process import Child, free_port

    # A file size limit plays the full disk: writes past 32 KiB fail (part way, then EFBIG). It
    # holds for the API's log file too, so few enough requests that their log lines fit.
    spool = tmp_path / "spool"
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "full-disk-api",
        "OTEL_PYTHON_DISTRO": "usagelog",
        "OTEL_PYTHON_CONFIGURATOR": "usagelog",
        "USAGELOG_EXPORTER": "spool",
        "USAGELOG_SPOOL_DIR": str(spool),
        "USAGELOG_SPOOL_SEGMENT_SECONDS": "3600",  # one segment, full for ever
    }
    port = free_port()
    command = [instrument_command(), sys.executable, "-m", "usagelog.demo.app", "--port", str(port)]
    api = Child.start(
        ["prlimit", "--fsize=32768", *command],
        log=tmp_path / "api.log",
        name="API on a full disk",
        env=env,
    )
    try:
        api.wait_listening(port, timeout=60)
        # A first batch fits, then writes fail part way: the half frames must not stay.
        assert [http_get(port, "/api/items") for _ in range(20)] == [200] * 20
        wait_for(lambda: any(p.stat().st_size for p in spool.glob("*.open")), 30, "a first batch written")
        assert hammer(port, 280).count(200) == 280
    finally:
        api.stop(timeout=60)  # SIGTERM: the final flush fails
    log = (tmp_path / "api.log").read_text()
    assert "final flush failed" in log and "could not be written anywhere" in log, log[-3000:]
    (counter_file,) = spool.glob("*" + counters.SUFFIX)  # left for audit
    assert reap_orphans(spool) == 1 and not counter_file.exists()
    seqs, losses = spooled(spool)  # asserts that no frame is damaged: no half frame was left
    reports = {attrs[ev.LOSS_REASON]: attrs for _, attrs in losses}
    failed = reports[ev.LOSS_WRITE_FAILED]
    assert failed[ev.LOSS_COUNT] > 0 and len(seqs) >= 20
    assert f"{failed[ev.LOSS_COUNT]} events" in log
    assert len(seqs) == len(set(seqs))
    assert len(seqs) + failed[ev.LOSS_COUNT] + reports[ev.LOSS_TAIL][ev.LOSS_COUNT] == 300
    assert reports[ev.LOSS_TAIL][ev.LOSS_ALLOCATED_SEQ] == 300
    assert ingest(spool, tmp_path)["dead_letters"] == 0
