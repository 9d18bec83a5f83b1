"""A worker holding a chDB directory over a slice of batches lets a waiting process in after the
current batch, not at the end of the slice (real broker, real worker, the CLI as the reader)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import WorkerProcess, count_events, in_process_worker_settings, produce, wait_for
from tests.spoolfill import make_payloads

pytestmark = pytest.mark.slow


def test_a_query_waiting_for_the_directory_gets_it_after_one_batch_not_a_slice(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    topic = topics["events"]
    # A slice far longer than the reader is willing to wait, and messages arriving all the time,
    # so the worker never finds the topic empty (which also closes the store).
    env = {"USAGELOG_WORKER_STORE_SLICE_SECONDS": "120", "USAGELOG_BATCH_MAX_SECONDS": "0.5"}
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topic, url, "w1", env).start()
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        first = 1
        while not stop.is_set():
            produce(kafka.bootstrap, topic, make_payloads(1, 20, instance="steady", first_seq=first))
            first += 20
            sent[0] += 20
            time.sleep(0.2)

    feeder = threading.Thread(target=load, daemon=True)
    feeder.start()
    try:
        wait_for(lambda: "assigned" in worker.log(), 60, "the worker's partitions")
        time.sleep(3)  # the worker is inside its slice, storing a batch every half second
        reader_env = {**os.environ, "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "20"}
        query = [sys.executable, "-m", "usagelog.cli", "query", "--clickhouse", url,
                 "SELECT count() FROM usagelog.usage_events"]  # fmt: skip
        answer = subprocess.run(query, capture_output=True, text=True, timeout=60, env=reader_env)
        assert answer.returncode == 0, answer.stderr
        assert "in use by another usagelog process" not in answer.stderr
    finally:
        stop.set()
        feeder.join(timeout=30)
    wait_for(lambda: count_events(url)[0] == sent[0], 60, "every event stored")
    assert worker.stop() == 0
    assert count_events(url) == (sent[0], sent[0])


def test_a_worker_draining_a_backlog_keeps_its_store_open_from_batch_to_batch(
    kafka: Any, topics: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch cut by bytes empties the pending list with messages still waiting: the store stays
    open for the next batch (opening a chDB session and recomputing the rollups at each close cost
    more than the batch's insert). It closes when a consume() finds nothing."""
    from usagelog.ingest import worker as worker_module

    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(12, 500, instance="backlog")
    produce(kafka.bootstrap, topics["events"], payloads)
    opened: list[str] = []
    real_connect = worker_module.connect

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(worker_module, "connect", counting_connect)
    settings = in_process_worker_settings(
        kafka.bootstrap,
        topics["events"],
        url,
        USAGELOG_BATCH_MAX_BYTES=str(2 * max(len(p) for p in payloads)),
        USAGELOG_WORKER_STORE_SLICE_SECONDS="600",
    )
    worker = worker_module.Worker(settings)
    try:
        worker.run(max_idle_seconds=3)
    finally:
        worker.close()
    assert count_events(url) == (12 * 500, 12 * 500)
    assert worker._stored >= 4  # several batches cut by bytes ...
    assert opened == [url]  # ... in one session


def _owned(log: str) -> set[int]:
    """The partitions a worker owns now, from its log's "assigned" and "revoked" lines (cooperative
    rebalancing: each line names what it adds or takes away)."""
    owned: set[int] = set()
    for change, listed in re.findall(r"(assigned|revoked) \[([\d, ]*)\]", log):
        partitions = {int(p) for p in listed.split(",") if p.strip()}
        owned = owned | partitions if change == "assigned" else owned - partitions
    return owned


def test_two_workers_sharing_a_directory_take_turns_by_slices(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    """A worker finding the directory held stages its batches ahead (decoded in an engine of its
    own) and says so; the one holding it lets it in at the end of its slice (it stages ahead
    itself before opening it again). Both store their partitions' events, each once."""
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(36, 500, instance="pair")
    env = {
        "USAGELOG_WORKER_STORE_SLICE_SECONDS": "1",
        "USAGELOG_BATCH_MAX_BYTES": str(2 * max(len(p) for p in payloads)),
        "USAGELOG_WORKER_MAX_MEMORY_MB": "0",
    }
    workers = []
    for name in ("w1", "w2"):
        (tmp_path / name).mkdir()
        workers.append(
            WorkerProcess(tmp_path / name, kafka.bootstrap, topics["events"], url, name, env, max_idle=5)
        )
    for worker in workers:
        worker.start()
    # The events arrive once each worker owns partitions: a worker alone in the group drains all
    # three before the other joins.
    wait_for(lambda: all(_owned(w.log()) for w in workers), 60, "partitions for both workers")
    produce(kafka.bootstrap, topics["events"], payloads)
    for worker in workers:
        assert worker.wait(timeout=240) == 0, worker.log()[-3000:]
    assert count_events(url) == (36 * 500, 36 * 500)
    # A worker's health lines count what it stored since it started: the last one, all of it.
    shares = [int(re.findall(r"health worker=\S+ .* stored=(\d+)", w.log())[-1]) for w in workers]
    assert sum(shares) == 36 * 500, shares
    assert min(shares) >= 0.1 * 36 * 500, shares  # three partitions: about a third and two thirds
    assert any("staging up to 16 batches ahead" in w.log() for w in workers)
    # What was staged ahead was stored; its files and engine went with the worker.
    for name in ("w1", "w2"):
        staged = tmp_path / name / "state" / "stage-ahead"
        assert not staged.exists() or list(staged.iterdir()) == []


def test_waiting_for_the_store_is_not_idle_time(kafka: Any, topics: dict[str, str], tmp_path: Path) -> None:
    """``--max-idle`` counts time without messages: a worker that waited longer than that for a
    directory another process held still stores what waits in the topic before it leaves."""
    from usagelog.ingest.store import connect

    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(10, 500, instance="held")
    # Two messages a batch, cut by count: a batch's consume() takes no more than it holds.
    env = {"USAGELOG_BATCH_MAX_MESSAGES": "2", "USAGELOG_WORKER_MAX_MEMORY_MB": "0"}
    produce(kafka.bootstrap, topics["events"], payloads[:2])
    # Idle from its first batch until the rest arrives, which takes seconds on a loaded machine
    # (reading the count, taking the directory, producing): the idle limit leaves room for that.
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", env, max_idle=8).start()
    wait_for(lambda: count_events(url)[0] == 1000, 60, "the first batch")
    with connect(url):  # held while the rest arrives: the worker stages it ahead, then waits
        produce(kafka.bootstrap, topics["events"], payloads[2:])
        time.sleep(12)
    assert worker.wait(timeout=120) == 0, worker.log()[-3000:]
    assert count_events(url) == (10 * 500, 10 * 500)
    assert "staging up to 16 batches ahead" in worker.log()


def test_a_worker_with_its_batches_staged_ahead_waits_for_the_store_when_it_has_staged_enough(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    """``USAGELOG_WORKER_STAGE_AHEAD_BATCHES`` bounds what waits: past it the worker waits for the
    directory (and says so), then stores every event once."""
    from usagelog.ingest.store import connect

    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(12, 500, instance="bounded")
    env = {
        "USAGELOG_BATCH_MAX_MESSAGES": "2",
        "USAGELOG_WORKER_MAX_MEMORY_MB": "0",
        "USAGELOG_WORKER_STAGE_AHEAD_BATCHES": "2",
        "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "60",
    }
    produce(kafka.bootstrap, topics["events"], payloads[:2])
    # Idle until the rest arrives (see above): room for a loaded machine.
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", env, max_idle=8).start()
    wait_for(lambda: count_events(url)[0] == 1000, 60, "the first batch")
    with connect(url):
        produce(kafka.bootstrap, topics["events"], payloads[2:])
        wait_for(lambda: "waiting for the chDB directory" in worker.log(), 60, "the worker to wait")
        assert "staging up to 2 batches ahead" in worker.log()
    assert worker.wait(timeout=120) == 0, worker.log()[-3000:]
    assert count_events(url) == (12 * 500, 12 * 500)


def test_staging_ahead_takes_a_directory_of_its_own_and_clears_those_of_workers_gone(tmp_path: Path) -> None:
    """Each worker stages ahead in its own directory under the state directory, locked while it
    runs; a new one removes the directories of workers gone (what they staged was not committed)
    and leaves those of running workers alone."""
    from usagelog.ingest.worker import _stage_directory

    running_area = _stage_directory(str(tmp_path), "w/1")
    gone_area = _stage_directory(str(tmp_path), "w2")
    (gone_area.directory / "batch.native").write_bytes(b"staged")
    gone_area.release()  # as when its process ends
    mine_area = _stage_directory(str(tmp_path), "w3")
    running, mine = running_area.directory, mine_area.directory
    root = tmp_path / "stage-ahead"
    left = sorted(p.name for p in root.iterdir() if p.suffix == ".d")
    assert left == sorted([Path(running).name, Path(mine).name])
    assert Path(running).name.startswith("w_1-") and Path(mine).parent == root
    for area in (running_area, mine_area):
        area.release()
