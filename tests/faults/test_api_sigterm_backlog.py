"""Scenario 4: an API process is SIGTERMed with a backlog. The collector is stopped first, so
every API process spools what it cannot deliver; then one of them gets SIGTERM (its queue is
flushed to the spool on the way out); then the collector and that API process start again on the
same spool directory. Everything answered is delivered, the dead process's segments included."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack
from tests.pipeline import wait_for

pytestmark = pytest.mark.slow

RATE = 60.0


def test_api_process_sigtermed_with_a_spooled_backlog_loses_nothing_after_restart(stack: Stack) -> None:
    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    time.sleep(6)
    stack.collector.stop()  # SIGTERM: the APIs find nobody listening and spool
    down = time.monotonic()
    victim = stack.apis[0]
    mine = f"-{victim.process.pid}-"

    def segments() -> list[str]:
        return sorted(
            p.name for p in stack.spool.glob("*") if mine in p.name and p.suffix in (".open", ".seg")
        )

    wait_for(segments, 30, "the API process to spool its events")
    time.sleep(5)
    load.retarget(stack.ports[1:])  # no request of the victim's left unanswered by the signal
    answered_by_victim = sum(1 for port in load.tally.answered.values() if port == victim.port)
    status = victim.process.stop(timeout=30)
    assert status is not None and status != -9, "the API process must exit on SIGTERM by itself"
    left = segments()
    assert left and all(name.endswith(".seg") for name in left), left
    spooled = sum((stack.spool / name).stat().st_size for name in left)
    time.sleep(3)
    stack.collector.start()  # same storage directory
    cleared, backlog = time.monotonic(), load.answered
    restarted = stack.restart_api(0)  # same spool directory: replays what the dead process left
    load.retarget(stack.ports)
    stack.wait_recovered(backlog, stack.ends(), timeout=180)  # caught up with the moment it cleared
    recovery = time.monotonic() - cleared
    time.sleep(max(0.0, cleared + 8 - time.monotonic()))
    tally = load.stop()
    stack.wait_stored(load.answered, timeout=120)
    assert segments() == []
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.assert_complete(tally)
    assert verdict.instances == 4  # three processes, one of them twice
    Report.of(
        "API process SIGTERMed with a backlog in its spool and queue",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"collector stopped for {cleared - down:.0f}s; meanwhile one API process SIGTERMed with "
        f"{len(left)} segments ({spooled} bytes) spooled, after answering {answered_by_victim} requests; "
        "collector and API process restarted on the same spool",
        recovery_seconds=recovery,
        restarted_port=restarted.port,
    ).publish()
