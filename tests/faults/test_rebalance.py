"""Scenario 3: consumer-group rebalances while batches are being inserted. Under load a third
worker joins, one worker is stopped (SIGTERM: it stores and commits its batch, then leaves) and one
is SIGKILLed while it is storing a batch (its partitions move once its session expires, the new
owner reads the uncommitted batch again and storage skips what is there); a fourth worker joins
and finalizes the dead one's staged archive files. Every answered request is stored once."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack
from tests.pipeline import WorkerProcess, wait_for

pytestmark = pytest.mark.slow

RATE = 60.0


def _storing(stack: Stack, into: float = 0.15) -> WorkerProcess:
    """A live worker that has been storing a batch for ``into`` seconds (past opening chDB, so most
    likely writing rows: a kill then leaves stored rows whose offsets were never committed)."""
    since: dict[str, float] = {}
    found: list[WorkerProcess] = []

    def storing() -> bool:
        now = time.monotonic()
        for name, worker in stack.workers.items():
            process = worker.process
            if process is None or not process.running() or not stack.holds_store(process.pid):
                since.pop(name, None)
                continue
            if now - since.setdefault(name, now) >= into:
                found.append(worker)
                return True
        return False

    try:
        wait_for(storing, 15, f"a worker to be storing a batch for {into}s", interval=0.002)
    except AssertionError:  # batches this quick: any worker storing will do
        into = 0.0
        wait_for(storing, 30, "a worker to be storing a batch", interval=0.002)
    return found[0]


def test_workers_joining_leaving_and_killed_mid_insert_lose_and_duplicate_nothing(stack: Stack) -> None:
    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    time.sleep(6)
    stack.start_worker("w3")  # joins: partitions move to it (cooperative rebalance)
    time.sleep(6)
    leaving = _storing(stack)
    assert leaving.stop(timeout=60) == 0  # SIGTERM mid-batch: stores, commits and leaves; a rebalance
    time.sleep(6)
    victim = _storing(stack)
    victim.kill()  # SIGKILL in the middle of storing a batch
    killed, backlog = time.monotonic(), load.answered
    stack.start_worker("w4")  # at start it finalizes the killed worker's staged archive chunks
    stack.wait_recovered(backlog, stack.ends(), timeout=180)  # caught up with the moment it cleared
    recovery = time.monotonic() - killed
    time.sleep(max(0.0, killed + 8 - time.monotonic()))
    tally = load.stop()
    stack.wait_stored(load.answered, timeout=120)
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.assert_complete(tally)
    Report.of(
        "consumer-group rebalance while inserting",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"w3 joined; {leaving.worker_id} SIGTERMed and {victim.worker_id} SIGKILLed, each while "
        "storing a batch; w4 joined",
        recovery_seconds=recovery,
        redelivered=stack.redelivered(),
    ).publish()
