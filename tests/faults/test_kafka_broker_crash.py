"""Scenario 1: the Kafka broker is SIGKILLed under load and started again on the same port and data
directory. The collector keeps accepting into its on-disk queue and the workers reconnect by
themselves: every answered request is stored once."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack

pytestmark = pytest.mark.slow

RATE = 60.0  # requests per second over the three API processes


def test_broker_killed_and_restarted_under_load_loses_nothing(stack: Stack) -> None:
    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    time.sleep(8)
    stack.broker.kill()  # SIGKILL: no controlled shutdown, the data directory as the crash left it
    killed = time.monotonic()
    time.sleep(10)
    stack.broker.start()  # same port, cluster id and data
    cleared, backlog = time.monotonic(), load.answered
    stack.wait_recovered(backlog, stack.ends(), timeout=180)  # caught up with the moment it cleared
    recovery = time.monotonic() - cleared
    time.sleep(max(0.0, cleared + 8 - time.monotonic()))
    tally = load.stop()
    stack.wait_stored(load.answered, timeout=120)
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.assert_complete(tally)
    Report.of(
        "Kafka broker SIGKILL, restarted on the same port and data",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"broker SIGKILLed, down {cleared - killed:.0f}s (restart included)",
        recovery_seconds=recovery,
    ).publish()
