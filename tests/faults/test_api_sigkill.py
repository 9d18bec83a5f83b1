"""Scenario 5: API processes SIGKILLed under load. What a process held in memory and had not yet
handed to the collector is gone: a window of answered requests at the tail of its sequence. It is
not lost silently: the process restarted on the same spool directory reaps the dead one's counter
file into a ``tail`` loss report, which travels the pipeline like an event (spool → collector →
Kafka → workers → ``losses``), and ``usagelog audit`` reports the killed instance's tail loss.

Checked here, for each of two kills: audit's loss for the killed instance equals the window
measured by the load (its answered requests that were not stored, matched by trace ID), all at the
tail (no gap); every other instance is clean; nothing is stored twice; audit exits 1 (0 if no
window happened to be lost). The victim is taken out of the load the instant before the kill, so
that every request it received was answered: a request in flight would have a sequence number
(counted by audit) but no answer to match it with."""

from __future__ import annotations

import time

import pytest

from tests.faults.accounting import answered_by_port, audit, instance_of, loss_reports, missing_by_port
from tests.faults.load import Load
from tests.faults.report import Report
from tests.faults.stack import Stack
from tests.pipeline import wait_for

pytestmark = pytest.mark.slow

RATE = 60.0
KILLED = (0, 1)  # the API processes killed, one after the other


def test_api_process_sigkilled_under_load_loses_its_tail_and_audit_reports_it_exactly(stack: Stack) -> None:
    stack.start(workers=2)
    load = Load(stack.ports, RATE).start()
    victims: list[tuple[str, int]] = []  # (instance, port) of each killed process
    for index in KILLED:
        time.sleep(5)
        victim = stack.apis[index]
        instance = instance_of(stack.spool, victim.process.pid)
        load.retarget([port for port in stack.ports if port != victim.port])  # nothing in flight to it
        victim.process.kill()  # SIGKILL: its queue (up to one 200 ms flush interval) is gone
        victims.append((instance, victim.port))
        stack.restart_api(index)  # same spool directory: reaps the killed instance's counter file
        load.retarget(stack.ports)
    killed = time.monotonic()
    time.sleep(4)
    tally = load.stop()
    of_victims = sum(answered_by_port(tally)[port] for _, port in victims)
    stack.wait_settled(len(tally.answered) - of_victims, timeout=120)
    reported = {instance for instance, _ in victims}
    wait_for(
        lambda: reported <= {r["service_instance_id"] for r in loss_reports(stack) if r["reason"] == "tail"},
        60,
        "the tail reports of the killed instances to be stored",
        interval=1.0,
    )
    settled = time.monotonic() - killed
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.verify(tally)
    assert verdict.unexplained == []
    assert verdict.stored == verdict.distinct and verdict.duplicates == 0
    assert verdict.instances == 3 + len(KILLED)  # each killed process restarted as a new instance
    missing = missing_by_port(verdict, tally)
    assert set(missing) <= {port for _, port in victims}, "only the killed processes may lose events"
    code, instances = audit(stack)
    windows = []
    for instance, port in victims:
        found = instances[instance]
        window = missing[port]
        windows.append(window)
        assert found["allocated_seq"] > 0, found  # its tail report arrived
        assert found["lost"] == found["tail_lost"] == window, (found, window)
        assert found["gaps"] == 0, "what is stored of a killed process is a prefix of its sequence"
        assert found["events"] == answered_by_port(tally)[port] - window
    for instance, found in instances.items():
        if instance not in reported:
            assert found["ok"] and found["lost"] == 0, found
    assert code == (1 if sum(windows) else 0)
    Report.of(
        "API processes SIGKILLed under load",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected=f"{len(KILLED)} API processes SIGKILLed one after the other (out of the load the instant "
        "before, so nothing in flight), each restarted on the same spool",
        recovery_seconds=settled,
        recovery_from="the last kill until the stored count settled and the tail reports were stored",
        windows=f"{windows} answered requests lost per kill, each reported exactly by audit (exit {code})",
    ).publish()
