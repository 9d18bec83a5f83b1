"""Kafka ingest workers against a real broker and the real ClickHouse engine (chDB)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import WorkerProcess, count_events, produce, wait_for
from tests.spoolfill import make_payloads
from usagelog.ingest.archive import read_archive
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_two_workers_share_partitions_and_store_each_event_once(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = []
    for i in range(6):  # six instances, keyed so they spread over the three partitions
        payloads += make_payloads(10, 20, instance=f"inst-{i}")
    keys = [f"inst-{i // 10}".encode() for i in range(len(payloads))]
    produce(kafka.bootstrap, topics["events"], payloads, keys)
    workers = [
        WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, f"w{i}", max_idle=6).start()
        for i in (1, 2)
    ]
    for worker in workers:
        assert worker.wait(timeout=180) == 0, worker.log()[-3000:]
    assert count_events(url) == (1200, 1200)
    logs = "".join(w.log() for w in workers)
    assert "assigned" in logs and "health worker=" in logs
    archived = read_archive(str(tmp_path / "archive"))
    with connect(url) as store:
        _, ids = store.query("SELECT event_id FROM usagelog.usage_events")
    assert sorted(r["event_id"] for r in archived) == sorted(r[0] for r in ids)


def test_poison_messages_are_dead_lettered_and_the_rest_stored(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    from confluent_kafka import Consumer

    url = "chdb://" + str(tmp_path / "chdb")
    good = make_payloads(3, 10, instance="good")
    tampered = bytearray(make_payloads(1, 1, instance="tampered", first_seq=100)[0])
    at = tampered.index(b"/items/100")
    tampered[at + 1] = ord("X")  # changes url.path: the checksum no longer matches
    poison = [b"\x00\x01 definitely not protobuf \xff", bytes(tampered), b"\x0a\x05hello"]
    produce(
        kafka.bootstrap,
        topics["events"],
        [good[0], poison[0], good[1], poison[1], poison[2], good[2]],
        [b"k"] * 6,
    )
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "poison", max_idle=5).start()
    assert worker.wait(timeout=120) == 0, worker.log()[-3000:]
    assert count_events(url) == (30, 30)
    with connect(url) as store:
        _, letters = store.query(
            "SELECT source, location, reason FROM usagelog.dead_letters ORDER BY location"
        )
    assert len(letters) == 3
    assert all(
        source == "kafka" and location.startswith(topics["events"] + "/") for source, location, _ in letters
    )
    reasons = sorted(reason.split(" (")[0].split(":")[0] for _, _, reason in letters)
    assert reasons == ["checksum mismatch", "not an OTLP logs payload", "not an OTLP logs payload"]

    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": "dlq-check", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topics["deadletter"]])
    received = []
    deadline = time.monotonic() + 30
    while len(received) < 3 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received.append(dict(message.headers() or []))
    consumer.close()
    assert len(received) == 3 and all("usagelog.reason" in h and "usagelog.source" in h for h in received)


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = []
    for i in range(3):
        payloads += make_payloads(60, 50, instance=f"inst-{i}")
    produce(
        kafka.bootstrap,
        topics["events"],
        payloads,
        [f"inst-{i // 60}".encode() for i in range(len(payloads))],
    )
    env = {"USAGELOG_BATCH_MAX_MESSAGES": "20"}
    often = {**env, "USAGELOG_HEALTH_INTERVAL_SECONDS": "0.2"}
    first = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "a", often).start()
    other = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "b", env, max_idle=15).start()
    wait_for(
        lambda: max(map(int, re.findall(r"health worker=a .* stored=(\d+)", first.log())), default=0) > 0,
        120,
        "the first worker to store a batch",
    )
    first.kill()  # SIGKILL, between or inside the batches that follow
    restarted = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "a", env, max_idle=15).start()
    assert other.wait(timeout=300) == 0, other.log()[-3000:]
    assert restarted.wait(timeout=300) == 0, restarted.log()[-3000:]
    assert count_events(url) == (9000, 9000)
    archived = read_archive(str(tmp_path / "archive"))
    assert len({r["event_id"] for r in archived}) == 9000


def test_replay_restores_what_went_missing_and_is_safe_to_repeat(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 5))
    produce(kafka.bootstrap, topics["events"], make_payloads(12, 25, instance="r"))
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "r", max_idle=5).start()
    assert worker.wait(timeout=120) == 0
    with connect(url) as store:
        store.client.command(
            "ALTER TABLE usagelog.usage_events DELETE WHERE seq % 3 = 0 SETTINGS mutations_sync = 1"
        )
    assert count_events(url) == (200, 200)
    source = f"kafka://{kafka.bootstrap}/{topics['events']}"
    first = _cli("replay", "--from", source, "--since", since, "--clickhouse", url, "--format", "json")
    assert first.returncode == 0, first.stderr
    assert "replay: 12 messages read, 100 events stored" in first.stderr
    assert json.loads(first.stdout)[0]["stored"] == 100
    assert count_events(url) == (300, 300)
    again = _cli(
        "replay", "--from", source, "--offsets", "0:0-,1:0-,2:0-", "--clickhouse", url, "--format", "json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0] == {
        "messages": 12,
        "stored": 0,
        "duplicates": 300,
        "dead_letters": 0,
        "loss_reports": 0,
    }


def test_a_worker_taking_over_a_quiet_committed_topic_reports_no_lag(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    payloads = make_payloads(6, 5, instance="quiet")
    produce(kafka.bootstrap, topics["events"], payloads, [f"k{i}".encode() for i in range(6)])
    first = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "q1", max_idle=4).start()
    assert first.wait(timeout=120) == 0, first.log()[-3000:]
    assert count_events(url) == (30, 30)
    # Everything is read and committed: the next owner has nothing to read yet, and says so.
    often = {"USAGELOG_HEALTH_INTERVAL_SECONDS": "0.3"}
    second = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "q2", often, max_idle=3).start()
    assert second.wait(timeout=120) == 0, second.log()[-3000:]
    lags = re.findall(r"health worker=q2 lag=(\d+)", second.log())
    assert len(lags) >= 3 and set(lags) == {"0"}, lags
    # Messages that arrive while no worker runs are the lag of the next one, before it has
    # fetched anything (no position yet: it starts at the committed offsets).
    produce(kafka.bootstrap, topics["events"], make_payloads(4, 5, instance="later"))
    from confluent_kafka import TopicPartition

    from usagelog.ingest.settings import load_worker_settings
    from usagelog.ingest.worker import Worker

    settings = load_worker_settings(
        source=f"kafka://{kafka.bootstrap}/{topics['events']}",
        clickhouse=url,
        worker_id="q3",
        environ={"USAGELOG_ARCHIVE_URL": "none"},
    )
    worker = Worker(settings)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(3)]
        worker.consumer.assign(partitions)
        worker._on_assign(worker.consumer, partitions)
        worker._update_lag()
        assert worker.health.lag == 4
    finally:
        worker.close()


def test_replay_fails_when_kafka_stops_delivering_before_the_end(tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from tests.pipeline import broker_module
    from usagelog.ingest.errors import KafkaError
    from usagelog.ingest.replay import replay
    from usagelog.ingest.settings import load_worker_settings

    url = "chdb://" + str(tmp_path / "chdb")
    broker = broker_module().KafkaBroker(tmp_path / "kafka", partitions=1).start()
    try:
        broker.create_topics(["stall.events"], partitions=1)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        for payload in make_payloads(30, 2, instance="stall"):
            producer.produce("stall.events", value=payload)
            producer.flush(30)  # one record batch each, so that fetches stay small
        settings = load_worker_settings(
            source=f"kafka://{broker.bootstrap}/stall.events",
            clickhouse=url,
            environ={
                "USAGELOG_BATCH_MAX_MESSAGES": "2",
                # Read ahead as little as librdkafka allows: what is not fetched before the
                # broker dies cannot be read.
                "USAGELOG_KAFKA_CONFIG": "message.max.bytes=1000,fetch.max.bytes=1000,"
                "max.partition.fetch.bytes=1,queued.max.messages.kbytes=1,queued.min.messages=1",
            },
        )
        progress: list[int] = []

        def report(totals: dict[str, int], remaining: int) -> None:
            if remaining < 30 and broker.is_running():
                broker.kill()  # once something was read
            progress.append(remaining)

        with pytest.raises(KafkaError, match="still to replay"):
            replay(settings, offsets="0:0-", progress=report, stall_seconds=3)
        assert 0 < progress[-1] < 30, progress
        stored, _ = count_events(url)
        assert 0 < stored < 60
    finally:
        broker.stop()


def test_tail_follows_monitored_events_live(kafka: Any, topics: dict[str, str]) -> None:
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "tail",
            "--from",
            f"kafka://{kafka.bootstrap}",
            "--user",
            "user-3",
            "--format",
            "json",
            "--max-events",
            "2",
            "--timeout",
            "60",
        ],
        env={**__import__("os").environ, "USAGELOG_KAFKA_MONITORED_TOPIC": topics["monitored"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stderr is not None
    said = ""
    while "following" not in said:  # it says so once it holds the end of every partition
        line = tail.stderr.readline()
        assert line, said  # it exited
        said += line
    produce(kafka.bootstrap, topics["monitored"], make_payloads(1, 14, instance="t", monitor="user:user-3"))
    out, err = tail.communicate(timeout=90)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["user_id"] for line in lines] == ["user-3", "user-3"], err
    assert [line["path"] for line in lines] == ["/items/3", "/items/10"]


def test_worker_settings_errors_name_every_variable(tmp_path: Path) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "ingest", "--from", "kafka://127.0.0.1:1/t"],
        env={**os.environ, "USAGELOG_BATCH_MAX_SECONDS": "soon", "USAGELOG_ARCHIVE_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "USAGELOG_BATCH_MAX_SECONDS" in result.stderr and "USAGELOG_ARCHIVE_FORMAT" in result.stderr
