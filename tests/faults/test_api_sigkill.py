"""Scenario 5: an API process SIGKILLed under load. What it held in memory and had not yet handed
to the collector (or the spool) is gone: a window of answered requests at the tail of its
sequence. Checked here: only the killed process loses anything, what is stored of it runs from
sequence 1 without a gap (the loss is its tail), nothing is stored twice, and the other processes
and the same process restarted lose nothing. The window is measured and reported."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack

pytestmark = pytest.mark.slow

RATE = 60.0


def test_api_process_sigkilled_under_load_loses_only_the_tail_of_its_sequence(stack: Stack) -> None:
    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    time.sleep(8)
    victim = stack.apis[0]
    victim.process.kill()  # SIGKILL with requests in flight and events in its queue
    killed = time.monotonic()
    load.retarget(stack.ports[1:])
    stack.restart_api(0)  # same spool directory
    load.retarget(stack.ports)
    time.sleep(6)
    tally = load.stop()
    of_victim = {trace for trace, port in tally.answered.items() if port == victim.port}
    stack.wait_settled(len(tally.answered) - len(of_victim), timeout=120)
    settled = time.monotonic() - killed
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.verify(tally)
    lost = set(verdict.missing)
    assert lost <= of_victim, "only the killed process may lose events"
    assert verdict.unexplained == []
    assert verdict.stored == verdict.distinct and verdict.duplicates == 0
    assert verdict.gaps == 0, "what is stored of the killed process must be a prefix of its sequence"
    assert verdict.instances == 4  # three processes, one of them twice
    Report.of(
        "API process SIGKILLed under load",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"one API process SIGKILLed after answering {len(of_victim)} requests "
        f"({len(tally.unsure)} in flight); restarted on the same spool",
        recovery_seconds=settled,
        recovery_from="the kill until the stored count settled (what is lost stays lost)",
        lost_window=f"{len(lost)} answered requests, the tail of the killed process's sequence",
    ).publish()
