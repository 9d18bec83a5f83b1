"""Scenario 2: ClickHouse unavailable for a while under load. With chDB, another process (not
usagelog) opens the workers' data directory and holds it, as a second engine, a backup tool or
an operator's session would: the engine's own lock keeps the workers out. They wait without
committing any offset, then catch up: every answered request is stored once."""

from __future__ import annotations

import sys
import time

import pytest

from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack
from usagelog.process import Child

pytestmark = pytest.mark.slow

RATE = 60.0
HOLD_SECONDS = 15.0

# Opens the chDB directory (retrying while a worker has it), says so, and keeps it until stdin closes.
HOLDER = """
import sys, time
from chdb import session
while True:
    try:
        held = session.Session(sys.argv[1])
        break
    except Exception:
        time.sleep(0.05)
held.query("SELECT 1")
open(sys.argv[2], "w").write("held")
sys.stdin.read()
held.close()
"""


def test_workers_wait_for_a_held_chdb_directory_without_committing_then_catch_up(stack: Stack) -> None:
    import subprocess

    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    time.sleep(8)
    marker = stack.workdir / "held"
    holder = Child.start(
        [sys.executable, "-c", HOLDER, str(stack.workdir / "chdb"), str(marker)],
        log=stack.workdir / "holder.log",
        name="chDB holder",
        stdin=subprocess.PIPE,
    )
    holder.wait_until(marker.exists, 60, "the chDB directory to be held")
    held = time.monotonic()
    time.sleep(3)  # a batch stored just before the directory was taken is committed by now
    before = stack.committed()
    time.sleep(max(0.0, held + HOLD_SECONDS - time.monotonic()))
    after = stack.committed()
    lag_while_held = stack.kafka_lag()
    assert holder.popen is not None and holder.popen.stdin is not None
    holder.popen.stdin.close()  # the other process lets go of the directory
    assert holder.wait(timeout=30) == 0, holder.log_tail()
    cleared, backlog = time.monotonic(), load.answered
    assert after == before, "no offset may be committed while nothing can be stored"
    stack.wait_recovered(backlog, stack.ends(), timeout=180)  # caught up with the moment it cleared
    recovery = time.monotonic() - cleared
    time.sleep(max(0.0, cleared + 8 - time.monotonic()))
    tally = load.stop()
    stack.wait_stored(load.answered, timeout=120)
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.assert_complete(tally)
    waited = [w for w in stack.workers.values() if "waiting for the chDB directory" in w.log()]
    assert waited, "the workers should have said that they wait for the directory"
    Report.of(
        "chDB directory held by another process",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"chDB data directory opened and held by a foreign process for {cleared - held:.0f}s",
        recovery_seconds=recovery,
        kafka_lag_at_release=lag_while_held,
    ).publish()
