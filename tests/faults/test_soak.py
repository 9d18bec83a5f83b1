"""Scenario 7: a soak. Several API processes at a steady rate through the whole pipeline for
``USAGELOG_SOAK_SECONDS`` (default 75; lengthen it by hand for a longer soak): the memory of every
process stays flat, the lag stays bounded, nothing is lost. The run ends by itself. A worker's memory
is bounded instead: chDB keeps memory for each session a worker opens (chdb-io/chdb#298), so a worker
restarts in place past ``USAGELOG_WORKER_MAX_MEMORY_MB`` (its samples are a saw, and a worker that
takes over partitions grows to its working size, so "flat" for a worker is "under its bound"); the
restarts are reported."""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.load import Load
from tests.faults.observe import MemorySampler, own_bytes, thirds
from tests.faults.report import Report
from tests.faults.stack import Stack, env_seconds
from usagelog.ingest.settings import WorkerSettings

pytestmark = pytest.mark.slow

RATE = 60.0
MIB = 1024 * 1024
# Flat: the median RSS of the last third of the samples within this of the first third's.
FLAT_RATIO, FLAT_SLACK = 1.2, 32 * MIB
# A worker (USAGELOG_WORKER_MAX_MEMORY_MB at its default) checks its size after each batch, so it may
# pass the bound by a batch's growth and what closing takes (archive files written) before it restarts.
# On a loaded machine a batch read after a slow one holds more messages: one such run peaked at
# bound + 83 MiB before its restart, hence the margin.
WORKER_MARGIN = 128 * MIB
WORKER_BOUND = WorkerSettings.max_memory_mb * MIB + WORKER_MARGIN


def test_steady_load_for_minutes_keeps_memory_flat_lag_bounded_and_loses_nothing(stack: Stack) -> None:
    seconds = env_seconds("USAGELOG_SOAK_SECONDS", 75.0)
    stack.start(workers=2)
    sampler = MemorySampler(stack.pids).start()
    # What a worker's bound counts: its memory but the pages mapped from files (chDB's code).
    workers_own = MemorySampler(
        lambda: {r: p for r, p in stack.pids().items() if r.startswith("worker-")}, measure=own_bytes
    ).start()
    load = Load(stack.ports, RATE).start()
    lags: list[int] = []  # answered but not stored yet, events
    kafka_lags: list[int] = []  # produced but not committed by the workers, messages
    while load.seconds < seconds:
        time.sleep(5)
        answered = load.answered
        lags.append(answered - stack.stored())
        kafka_lags.append(stack.kafka_lag())
    tally = load.stop()
    drain = stack.wait_stored(load.answered, timeout=120)
    memory = sampler.stop()
    own = workers_own.stop()
    (stack.workdir / "rss.json").write_text(json.dumps(memory))  # the whole series, for a look after
    stack.stop_apis()
    stack.stop_workers()
    verdict = stack.assert_complete(tally)
    growth = {role: thirds(samples) for role, samples in memory.items()}
    Report.of(
        f"soak, {seconds:.0f}s",
        load,
        verdict,
        apis=len(stack.apis),
        workers=2,
        injected="nothing (steady load)",
        recovery_seconds=drain,
        recovery_from="the load stopped to stored == answered",
        max_lag_events=max(lags),
        max_kafka_lag_messages=max(kafka_lags),
        rss_mib={role: f"{a / MIB:.0f} -> {b / MIB:.0f}" for role, (a, b) in growth.items()},
        rss_max_mib={role: round(max(samples) / MIB) for role, samples in memory.items()},
        worker_own_max_mib={role: round(max(samples) / MIB) for role, samples in own.items()},
        worker_restarts={name: w.log().count("restarting in place") for name, w in stack.workers.items()},
    ).publish()
    assert max(lags) <= RATE * 30, f"the pipeline fell {max(lags)} events behind"
    grown = {
        role: f"{first / MIB:.0f} -> {last / MIB:.0f} MiB"
        for role, (first, last) in growth.items()
        if last > first * FLAT_RATIO + FLAT_SLACK and not role.startswith("worker-")
    }
    assert not grown, f"memory grew: {grown}"
    over = {
        role: f"{max(samples) / MIB:.0f} MiB" for role, samples in own.items() if max(samples) > WORKER_BOUND
    }
    assert not over, f"workers past their memory bound (+{WORKER_MARGIN // MIB} MiB): {over}"
