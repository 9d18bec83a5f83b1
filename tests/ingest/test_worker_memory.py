"""A Kafka ingest worker's memory bound (``USAGELOG_WORKER_MAX_MEMORY_MB``), against a real broker
and chDB: past it the worker executes itself again in place and goes on consuming."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.faults.observe import MemorySampler, own_bytes
from tests.pipeline import WorkerProcess, count_events, in_process_worker_settings, produce, wait_for
from tests.spoolfill import make_payloads

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
HEADROOM_MB = 24  # the bound is this far above the worker's own size after its first batches
WARM = 3  # batches stored before the worker's size is taken
# What one batch, the close before a restart and the restarted program's start may add beyond the
# bound (the size is checked after each batch); on a loaded machine one run reached bound + 81 MiB.
# The restarts themselves are proven by the log lines and the same worker consuming again.
MARGIN = 128 * MIB


def test_a_worker_past_its_memory_bound_restarts_in_place_and_stores_everything_once(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    topic = topics["events"]
    # A session opened for every batch: the memory chDB keeps per session grows fastest that way.
    env = {"USAGELOG_BATCH_MAX_MESSAGES": "1", "USAGELOG_WORKER_STORE_SLICE_SECONDS": "0"}

    # The worker's size once it stored a batch, on this machine, without a bound.
    produce(kafka.bootstrap, topic, make_payloads(WARM, 2, instance="first"))
    first = WorkerProcess(
        tmp_path, kafka.bootstrap, topic, url, "w1", {**env, "USAGELOG_WORKER_MAX_MEMORY_MB": "0"}
    )
    first.start()
    wait_for(lambda: count_events(url)[0] == 2 * WARM, 60, "the first batches stored")
    assert first.process is not None
    base = own_bytes(first.process.pid)
    assert base is not None and first.stop() == 0
    bound_mb = base // MIB + HEADROOM_MB

    payloads = []
    for i in range(3):  # keyed by instance: spread over the three partitions
        payloads += make_payloads(10, 2, instance=f"inst-{i}")
    produce(kafka.bootstrap, topic, payloads, [f"inst-{i // 10}".encode() for i in range(len(payloads))])
    worker = WorkerProcess(
        tmp_path,
        kafka.bootstrap,
        topic,
        url,
        "w1",
        {**env, "USAGELOG_WORKER_MAX_MEMORY_MB": str(bound_mb)},
        max_idle=6,
    ).start()
    assert worker.process is not None
    pid = worker.process.pid
    sampler = MemorySampler(lambda: {"worker": pid}, interval=0.2, measure=own_bytes).start()
    log_start = len(first.log())
    try:
        assert worker.wait(timeout=240) == 0, worker.log()[-3000:]
    finally:
        samples = sampler.stop()["worker"]
        if worker.process.running():
            worker.kill()
    log = worker.log()[log_start:]

    restarts = log.count(f"past USAGELOG_WORKER_MAX_MEMORY_MB={bound_mb}: batch stored, restarting in place")
    assert restarts >= 1, log[-3000:]
    assert log.count("worker w1 consuming") == restarts + 1  # the same worker, started afresh each time
    assert count_events(url) == (2 * WARM + 2 * len(payloads),) * 2
    assert max(samples) <= bound_mb * MIB + MARGIN, f"{max(samples) / MIB:.0f} MiB, bound {bound_mb} MB"


def test_a_stop_asked_for_while_the_worker_restarts_ends_it_cleanly(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    produce(kafka.bootstrap, topics["events"], make_payloads(20, 2, instance="a"))
    env = {
        "USAGELOG_BATCH_MAX_MESSAGES": "1",
        "USAGELOG_WORKER_MAX_MEMORY_MB": "1",  # below any worker's size: a restart after every batch
    }
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", env).start()
    assert worker.process is not None
    try:
        wait_for(lambda: "restarting in place" in worker.log(), 120, "a restart")
        worker.process.send_signal(signal.SIGTERM)  # while it closes, executes itself, or starts again
        assert worker.wait(timeout=60) == 0, worker.log()[-3000:]
    finally:
        if worker.process.running():
            worker.kill()
    assert "Traceback" not in worker.log()
    rows, distinct = count_events(url)
    assert rows == distinct and rows % 2 == 0  # whole batches, none twice


def test_a_batch_ends_at_its_byte_bound_whatever_the_message_count(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(12, 1500, instance="big")  # ~700 kB a message
    produce(kafka.bootstrap, topics["events"], payloads)
    size = max(len(p) for p in payloads)
    # The twelve are in the topic before the worker starts: its first consume (up to 1000 messages
    # or 1 s) returns them all, and without the byte bound they would make one batch.
    env = {
        "USAGELOG_BATCH_MAX_BYTES": str(2 * size),
        "USAGELOG_HEALTH_INTERVAL_SECONDS": "1",
    }
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", env, max_idle=5).start()
    try:
        assert worker.wait(timeout=120) == 0, worker.log()[-3000:]
    finally:
        if worker.process is not None and worker.process.running():
            worker.kill()
    batches = sum(int(n) for n in re.findall(r"batches=(\d+)", worker.log()))
    assert batches >= 12 // 3, worker.log()[-3000:]  # a batch ends with the message that passes the bound
    assert count_events(url) == (12 * 1500, 12 * 1500)


def test_a_worker_past_its_bound_after_a_batch_cut_by_bytes_restarts_and_reads_the_rest_again(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(8, 1500, instance="cut")
    produce(kafka.bootstrap, topics["events"], payloads)
    env = {
        "USAGELOG_BATCH_MAX_BYTES": str(2 * max(len(p) for p in payloads)),
        "USAGELOG_WORKER_MAX_MEMORY_MB": "1",  # below any worker's size: a restart after every batch
    }
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", env, max_idle=5).start()
    try:
        assert worker.wait(timeout=180) == 0, worker.log()[-3000:]
    finally:
        if worker.process is not None and worker.process.running():
            worker.kill()
    # The messages one consume returned beyond the cut batch were not committed: read again after
    # each restart, stored once.
    assert worker.log().count("restarting in place") >= 2, worker.log()[-3000:]
    assert count_events(url) == (8 * 1500, 8 * 1500)


def test_one_consume_takes_no_more_than_the_batch_bytes_hold_whatever_the_backlog(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    """consume() moves messages out of librdkafka's bounded queue into the worker until it has the
    count it asked for: asked for a batch's 1000 messages with a backlog of large ones, it returned
    hundreds of MB at once. The worker asks for what fits in the batch's bytes."""
    from usagelog.ingest.worker import Worker

    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(40, 1000, instance="backlog")  # ~470 kB a message, ~19 MB in all
    produce(kafka.bootstrap, topics["events"], payloads)
    bound = 2 * max(len(p) for p in payloads)
    settings = in_process_worker_settings(
        kafka.bootstrap, topics["events"], url, USAGELOG_BATCH_MAX_BYTES=str(bound)
    )
    worker = Worker(settings)
    returned: list[int] = []  # bytes each consume() handed over

    class Counting:  # the real consumer, with what consume() returns counted
        def __init__(self, consumer: Any) -> None:
            self._consumer = consumer

        def __getattr__(self, name: str) -> Any:
            return getattr(self._consumer, name)

        def consume(self, *args: Any, **kwargs: Any) -> Any:
            messages = self._consumer.consume(*args, **kwargs)
            returned.append(sum(len(m.value() or b"") for m in messages))
            return messages

    worker.consumer = Counting(worker.consumer)
    try:
        worker.run(max_idle_seconds=3)
    finally:
        worker.close()
    assert count_events(url) == (40 * 1000, 40 * 1000)
    # What is left of a batch's bytes, plus one message of the largest size seen.
    assert max(returned) <= bound + max(len(p) for p in payloads), (max(returned), bound)
