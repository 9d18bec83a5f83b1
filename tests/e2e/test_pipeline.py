"""The real pipeline end to end: API processes under ``opentelemetry-instrument`` → the collector
binary → Kafka (3 partitions) → two ingest workers → ClickHouse (chDB), with faults injected."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import (
    Collector,
    WorkerProcess,
    broker_module,
    count_events,
    serve_demo_with_gunicorn,
    wait_for,
)
from usagelog.demo.driver import User, drive, make_users
from usagelog.demo.run import INSTANCES, start_instances, stop_instances
from usagelog.ingest.archive import read_archive
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def _api_env(collector: Collector, spool: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    common = {
        "USAGELOG_EXPORTER": "otlp",
        "USAGELOG_SPOOL_DIR": str(spool),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    # One instance speaks OTLP/HTTP, the others gRPC: both transports carry usage events.
    per_instance = [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.http_port}",
        },
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ]
    for env, attrs in zip(per_instance, INSTANCES, strict=True):
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(f"{k}={v}" for k, v in attrs.items())
    return common, per_instance


def _cli_json(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _workers(tmp_path: Path, brokers: str, topic: str, url: str) -> list[WorkerProcess]:
    return [WorkerProcess(tmp_path, brokers, topic, url, f"w{i}", max_idle=10).start() for i in (1, 2)]


def _finish(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.log()[-3000:]


def _assert_complete(users: list[User], url: str, archive: Path) -> None:
    sent = sum(len(u.sent) for u in users)
    assert count_events(url) == (sent, sent)
    for user in users:
        timeline = _cli_json("timeline", user.name, "--clickhouse", url)
        assert [e["path"] for e in timeline] == [s.path.split("?")[0] for s in user.sent]
        assert [e["trace_id"] for e in timeline] == [s.trace_id for s in user.sent]
        assert [e["status"] for e in timeline] == [s.expected_status for s in user.sent]
        assert [e["error_type"] for e in timeline] == [s.error_type for s in user.sent]
        assert [e["region"] for e in timeline] == [INSTANCES[s.instance]["cloud.region"] for s in user.sent]
    audit = _cli_json("audit", "--clickhouse", url)
    assert len(audit) == 3
    for instance in audit:
        assert (instance["gaps"], instance["duplicates"], instance["checksum_failures"]) == (0, 0, 0)
    with connect(url) as store:
        _, ids = store.query("SELECT event_id FROM usagelog.usage_events")
    assert {r["event_id"] for r in read_archive(str(archive))} == {r[0] for r in ids}


@pytest.fixture
def stack(
    kafka: Any, topics: dict[str, str], collector_bin: Path, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    collector = Collector(
        collector_bin, tmp_path / "collector", kafka.bootstrap, topics["events"], topics["monitored"]
    )
    yield {"collector": collector, "url": "chdb://" + str(tmp_path / "chdb"), "spool": tmp_path / "spool"}
    collector.kill()


def test_every_request_reaches_clickhouse_once_through_collector_and_kafka(
    kafka: Any, topics: dict[str, str], stack: dict[str, Any], tmp_path: Path
) -> None:
    collector: Collector = stack["collector"].start()
    workers = _workers(tmp_path, kafka.bootstrap, topics["events"], stack["url"])
    common, per_instance = _api_env(collector, stack["spool"])
    instances = start_instances(stack["spool"], tmp_path / "logs", common, per_instance_env=per_instance)
    try:
        users = drive([i.port for i in instances], make_users(4), rounds=2)
    finally:
        stop_instances(instances)
    _finish(workers)
    _assert_complete(users, stack["url"], tmp_path / "archive")
    with connect(stack["url"]) as store:
        _, hosts = store.query("SELECT DISTINCT host_name, cluster, region FROM usagelog.usage_events")
        _, monitored = store.query("SELECT count() FROM usagelog.monitored_events")
        _, expected = store.query("SELECT count() FROM usagelog.usage_events WHERE monitored")
    assert {tuple(h) for h in hosts} == {
        (i["host.name"], i["k8s.cluster.name"], i["cloud.region"]) for i in INSTANCES
    }
    assert monitored == expected and expected[0][0] > 0
    assert not list(stack["spool"].glob("*.seg")), "nothing should have needed the spool"


def test_collector_down_for_part_of_the_run_loses_nothing(
    kafka: Any, topics: dict[str, str], stack: dict[str, Any], tmp_path: Path
) -> None:
    collector: Collector = stack["collector"]  # not started yet: the APIs find nobody listening
    workers = _workers(tmp_path, kafka.bootstrap, topics["events"], stack["url"])
    common, per_instance = _api_env(collector, stack["spool"])
    instances = start_instances(stack["spool"], tmp_path / "logs", common, per_instance_env=per_instance)
    try:
        people = make_users(3)
        drive([i.port for i in instances], people, rounds=1)
        wait_for(
            lambda: list(stack["spool"].glob("*.seg")), 30, "events to be spooled while the collector is down"
        )
        collector.start()
        drive([i.port for i in instances], people, rounds=1)
        wait_for(
            lambda: not list(stack["spool"].glob("*.seg")) and not list(stack["spool"].glob("*.open")),
            120,
            "the spool to drain once the collector is back",
        )
    finally:
        stop_instances(instances)
    _finish(workers)
    _assert_complete(people, stack["url"], tmp_path / "archive")
    assert any("collector unavailable" in i.log_path.read_text() for i in instances)


def test_collector_killed_with_a_full_queue_loses_nothing(
    topics: dict[str, str], collector_bin: Path, tmp_path: Path
) -> None:
    broker = broker_module().KafkaBroker(tmp_path / "kafka", partitions=3).start()
    try:
        broker.create_topics([topics["events"], topics["monitored"]], partitions=3)
        collector = Collector(
            collector_bin, tmp_path / "collector", broker.bootstrap, topics["events"], topics["monitored"]
        ).start()
        url = "chdb://" + str(tmp_path / "chdb")
        common, per_instance = _api_env(collector, tmp_path / "spool")
        instances = start_instances(
            tmp_path / "spool", tmp_path / "logs", common, per_instance_env=per_instance
        )
        try:
            people = make_users(3)
            drive([i.port for i in instances], people, rounds=1)
            broker.stop()  # Kafka goes away: the collector keeps accepting into its on-disk queue
            drive([i.port for i in instances], people, rounds=1)
            time.sleep(3)  # the APIs' background threads hand the last batches to the collector
            assert not list((tmp_path / "spool").glob("*.seg")), (
                "the collector should have accepted everything"
            )
            collector.kill()  # SIGKILL with a non-empty queue
            broker.start()
            collector.start()  # same storage directory: the queue is still there
            wait_for(
                lambda: not list((tmp_path / "spool").glob("*.seg")), 120, "any spooled events to be replayed"
            )
        finally:
            stop_instances(instances)
        workers = _workers(tmp_path, broker.bootstrap, topics["events"], url)
        _finish(workers)
        _assert_complete(people, url, tmp_path / "archive")
        collector.stop()
    finally:
        broker.stop()


def test_a_frozen_collector_never_blocks_requests_and_loses_nothing(
    kafka: Any, topics: dict[str, str], stack: dict[str, Any], tmp_path: Path
) -> None:
    """SIGSTOP leaves the collector's sockets open but silent: exports time out. Requests must not
    wait for that; the in-memory queue stays capped and the overflow goes to the spool."""
    import http.client
    import os
    import signal

    collector: Collector = stack["collector"].start()
    common, per_instance = _api_env(collector, stack["spool"])
    common.update(
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "3", "USAGELOG_MAX_QUEUE": "20", "OTEL_TRACES_EXPORTER": "none"}
    )
    instances = start_instances(
        stack["spool"], tmp_path / "logs", common, count=1, per_instance_env=per_instance
    )
    port = instances[0].port
    slowest = 0.0
    try:
        assert collector.process is not None
        os.kill(collector.process.pid, signal.SIGSTOP)
        for i in range(300):
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/api/items/{i % 20 + 1}", headers={"X-Seq": str(i)})
            assert conn.getresponse().status == 200
            conn.close()
            slowest = max(slowest, time.monotonic() - started)
        wait_for(lambda: list(stack["spool"].glob("*.seg")), 30, "the overflow to reach the spool")
        os.kill(collector.process.pid, signal.SIGCONT)
        wait_for(lambda: not list(stack["spool"].glob("*.seg")), 120, "the spool to drain")
    finally:
        if collector.process is not None:
            os.kill(collector.process.pid, signal.SIGCONT)
        stop_instances(instances)
    assert slowest < 2.0, f"a request waited {slowest:.2f}s: export must never block requests"
    workers = _workers(tmp_path, kafka.bootstrap, topics["events"], stack["url"])
    _finish(workers)
    assert count_events(stack["url"]) == (300, 300)
    audit = _cli_json("audit", "--clickhouse", stack["url"])
    assert [(a["events"], a["gaps"], a["duplicates"]) for a in audit] == [(300, 0, 0)]


def test_gunicorn_workers_export_over_grpc_after_fork(
    kafka: Any, topics: dict[str, str], stack: dict[str, Any], tmp_path: Path
) -> None:
    """Pre-forking server + gRPC: each worker opens its own channel after the fork."""
    import os

    collector: Collector = stack["collector"].start()
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "gunicorn-api",
        "OTEL_PYTHON_DISTRO": "usagelog",
        "OTEL_PYTHON_CONFIGURATOR": "usagelog",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "USAGELOG_EXPORTER": "otlp",
        "USAGELOG_SPOOL_DIR": str(stack["spool"]),
    }
    serve_demo_with_gunicorn(tmp_path, env, workers=2, requests=100)
    workers = _workers(tmp_path, kafka.bootstrap, topics["events"], stack["url"])
    _finish(workers)
    assert count_events(stack["url"]) == (101, 101)
    audit = _cli_json("audit", "--clickhouse", stack["url"])
    assert len(audit) >= 1 and all((a["gaps"], a["duplicates"]) == (0, 0) for a in audit)
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()
