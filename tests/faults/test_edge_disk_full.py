"""Scenario 6: the edge's disk full, then freed. The collector is stopped, so the API processes must
spool, and the spool's filesystem (a small tmpfs of its own) is filled to the last byte by another
file, so every spool write fails with ENOSPC (part way, then not at all). The load goes on; the
API processes hold their events in memory. One API process has the default memory bound and stays
within it; the other two have a small one (``USAGELOG_MAX_QUEUE_BYTES``) that the load exceeds, so
they drop their newest events, count them and report them. Then the file is deleted and the
collector started again.

Checked here: the process within its bound loses nothing; for each of the others, what it lost by
the load's count (answered requests not stored, matched by trace ID) is exactly what ``usagelog
audit`` reports for it, and its ``dropped`` reports say as much; nothing else is lost or stored
twice; audit exits 1. Needs ``mount -t tmpfs`` (root); skipped where it is not allowed, but
failed under CI (``CI`` set), which must run every fault."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.accounting import answered_by_port, audit, instance_of, loss_reports, missing_by_port
from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack
from tests.pipeline import wait_for

pytestmark = pytest.mark.slow

RATE = 60.0
DISK = "4m"  # the edge filesystem; filled by another file anyway
SMALL_BOUND = 100_000  # USAGELOG_MAX_QUEUE_BYTES of the processes made to drop: ~80 events
FULL_SECONDS = 12.0  # the disk full with the collector down: ~240 events per process


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Path]:
    """A small filesystem of its own (tmpfs), unmounted at the end."""
    mount = tmp_path / "edge"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI"):  # CI runs every fault: a skip there would hide a missing step
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        # Lazily: the API processes may still hold files there; they go with the stack.
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until its filesystem is full (ENOSPC); the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    return written


def test_edge_disk_full_loses_only_past_the_memory_bound_and_audit_shows_exactly_that(
    stack: Stack, edge: Path
) -> None:
    stack.spool = edge / "spool"
    bounded = {"USAGELOG_MAX_QUEUE_BYTES": str(SMALL_BOUND)}
    stack.start(workers=2, each_api=[{}, bounded, bounded])
    instances = {api.port: instance_of(stack.spool, api.process.pid) for api in stack.apis}
    within, *over = stack.ports
    load = Load(stack.ports, RATE).start()
    time.sleep(5)
    stack.collector.stop()  # SIGTERM: the APIs find nobody listening and must spool
    filler = edge / "filler"
    filled = fill(filler)
    full = time.monotonic()
    time.sleep(FULL_SECONDS)
    filler.unlink()  # the disk freed
    freed = time.monotonic()
    time.sleep(2)
    stack.collector.start()  # same storage directory
    cleared, backlog = time.monotonic(), load.answered

    def dropped() -> int:
        return sum(int(r["count"]) for r in loss_reports(stack) if r["reason"] in ("dropped", "write_failed"))

    def recovered() -> bool:
        # Every request answered by the restart is stored, but for the drops the reports count.
        reported = {r["service_instance_id"] for r in loss_reports(stack)}
        return {instances[port] for port in over} <= reported and stack.stored() >= backlog - dropped()

    wait_for(recovered, 180, "the backlog stored and the drops reported", interval=1.0)
    recovery = time.monotonic() - cleared
    time.sleep(max(0.0, cleared + 6 - time.monotonic()))
    tally = load.stop()
    stack.wait_stored(len(tally.answered) - dropped(), timeout=120)
    stack.stop_apis()
    stack.stop_workers()
    for api in stack.apis:  # the disk was full for each: its writes failed with ENOSPC
        assert "No space left on device" in api.log_path.read_text(errors="replace"), api.log_path
    verdict = stack.verify(tally)
    assert verdict.unexplained == []
    assert verdict.stored == verdict.distinct and verdict.duplicates == 0
    assert verdict.instances == 3
    missing = missing_by_port(verdict, tally)
    assert missing[within] == 0, "within the memory bound nothing is lost"
    code, audited = audit(stack)
    assert audited[instances[within]]["ok"], audited[instances[within]]
    losses = []
    for port in over:
        found = audited[instances[port]]
        losses.append(missing[port])
        assert missing[port] > 0, "the load exceeded the small memory bound"
        assert found["lost"] == found["reported_lost"] == missing[port], (found, missing[port])
        assert found["events"] == answered_by_port(tally)[port] - missing[port]
        assert found["damaged"] == found["dead_letters"] == found["duplicates"] == 0, found
    assert sum(losses) == dropped() == verdict.lost
    assert code == 1
    Report.of(
        "Edge disk full, then freed",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"collector stopped; the spool's {DISK} tmpfs filled ({filled} bytes) for "
        f"{freed - full:.0f}s, then freed; collector restarted {cleared - freed:.0f}s later. Memory bound: "
        f"default on one API process, USAGELOG_MAX_QUEUE_BYTES={SMALL_BOUND} on two",
        recovery_seconds=recovery,
        recovery_from="the collector's restart until every request answered by then was stored or reported",
        dropped=f"{losses} answered requests dropped by the two bounded processes, each exactly "
        f"audit's loss (exit {code}); 0 by the one within its bound",
    ).publish()
