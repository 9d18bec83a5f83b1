"""The local Kafka broker helper (kafka/broker.py), against a real Kafka 4 broker.

The first run resolves the Kafka jars through kafka/fetch.sh (Maven), later runs use the cache.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[2]
BROKER_SCRIPT = REPO / "kafka" / "broker.py"


def _load_broker_module() -> ModuleType:
    # kafka/ is a folder of scripts, not a package (and `kafka` is a client library's
    # import name), so the module is loaded from its path under a name of its own.
    spec = importlib.util.spec_from_file_location("usagelog_kafka_broker", BROKER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


broker_module = _load_broker_module()
KafkaBroker = broker_module.KafkaBroker
BrokerError = broker_module.BrokerError

pytestmark = pytest.mark.slow  # every test here runs at least one real broker JVM


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One broker shared by the tests that only produce and consume."""
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as shared:
        yield shared


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Any]:
    """A broker of the test's own, for tests that stop, kill or restart it."""
    started = KafkaBroker(tmp_path / "kafka").start()
    try:
        yield started
    finally:
        started.stop()


def produce(bootstrap: str, topic: str, count: int, prefix: str) -> set[int]:
    """Send ``count`` keyed messages with acks=all; return the partitions they landed on."""
    partitions: set[int] = set()
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            partitions.add(msg.partition())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"{prefix}-key-{i}", value=f"{prefix}-value-{i}", on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert errors == []
    return partitions


def consume(bootstrap: str, topic: str, expected: int) -> list[tuple[str, str, int]]:
    """Read ``topic`` from the start in a new consumer group until ``expected`` messages arrive.

    Polls once more afterwards so that duplicates would show up in the result.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[str, str, int]] = []

    def take(batch: list[Message]) -> None:
        for msg in batch:
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert key is not None and value is not None and partition is not None
            received.append((key.decode(), value.decode(), partition))

    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < expected and time.monotonic() < deadline:
            take(consumer.consume(num_messages=500, timeout=1.0))
        take(consumer.consume(num_messages=500, timeout=1.0))
    finally:
        consumer.close()
    return received


def partition_count(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a not yet reaped zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_keyed_messages_spread_over_three_partitions_and_come_back_exactly(broker: Any) -> None:
    broker.create_topics(["spread"], partitions=3)

    written = produce(broker.bootstrap, "spread", 300, "spread")
    received = consume(broker.bootstrap, "spread", 300)

    assert written == {0, 1, 2}
    assert len(received) == 300
    assert {(key, value) for key, value, _ in received} == {
        (f"spread-key-{i}", f"spread-value-{i}") for i in range(300)
    }
    assert {partition for _, _, partition in received} == {0, 1, 2}


def test_same_key_always_lands_on_the_same_partition(broker: Any) -> None:
    broker.create_topics(["by-key"], partitions=3)
    produce(broker.bootstrap, "by-key", 60, "a")
    produce(broker.bootstrap, "by-key", 60, "a")

    received = consume(broker.bootstrap, "by-key", 120)

    partitions_per_key: dict[str, set[int]] = {}
    for key, _, partition in received:
        partitions_per_key.setdefault(key, set()).add(partition)
    assert len(partitions_per_key) == 60
    assert all(len(partitions) == 1 for partitions in partitions_per_key.values())


def test_create_topics_leaves_an_existing_topic_as_it_is(broker: Any) -> None:
    broker.create_topics(["existing"], partitions=3)
    broker.create_topics(["existing"], partitions=5)

    assert partition_count(broker.bootstrap, "existing") == 3


def test_unknown_topic_is_auto_created_with_the_default_partition_count(broker: Any) -> None:
    produce(broker.bootstrap, "auto-created", 10, "auto")

    assert partition_count(broker.bootstrap, "auto-created") == broker.partitions == 3


def test_restart_keeps_data_ports_and_accepts_new_writes(own_broker: Any) -> None:
    own_broker.create_topics(["durable"], partitions=3)
    produce(own_broker.bootstrap, "durable", 100, "before")
    address, old_pid = own_broker.bootstrap, own_broker.pid

    own_broker.restart()
    produce(own_broker.bootstrap, "durable", 100, "after")
    received = consume(own_broker.bootstrap, "durable", 200)

    assert own_broker.bootstrap == address
    assert own_broker.pid != old_pid
    assert process_gone(old_pid)
    assert {key for key, _, _ in received} == {
        f"{prefix}-key-{i}" for prefix in ("before", "after") for i in range(100)
    }
    assert len(received) == 200


def test_kill_then_restart_keeps_acknowledged_messages(own_broker: Any) -> None:
    own_broker.create_topics(["crash"], partitions=3)
    produce(own_broker.bootstrap, "crash", 150, "crash")
    pid = own_broker.pid

    own_broker.kill()
    assert not own_broker.is_running()
    assert process_gone(pid)

    own_broker.restart()
    received = consume(own_broker.bootstrap, "crash", 150)
    assert {key for key, _, _ in received} == {f"crash-key-{i}" for i in range(150)}


def test_stop_ends_the_process_and_frees_both_ports(own_broker: Any) -> None:
    pid, ports = own_broker.pid, (own_broker.port, own_broker.controller_port)

    own_broker.stop()

    assert not own_broker.is_running()
    assert own_broker.pid is None
    assert process_gone(pid)
    assert all(port_is_free(port) for port in ports)
    own_broker.stop()  # stopping a stopped broker is a no-op


def test_start_on_a_taken_port_fails_with_the_cause_from_the_log(own_broker: Any) -> None:
    port = own_broker.port
    own_broker.stop()

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(BrokerError, match="Address already in use"):
            own_broker.start()

    assert not own_broker.is_running()


def test_without_python_client_readiness_and_topics_use_the_kafka_tools(tmp_path: Path) -> None:
    with KafkaBroker(tmp_path / "kafka", use_python_client=False) as plain:
        plain.create_topics(["via-tool"], partitions=2)
        plain.create_topics(["via-tool"], partitions=4)

        assert partition_count(plain.bootstrap, "via-tool") == 2


def test_cli_starts_detached_creates_topics_and_stops(tmp_path: Path) -> None:
    workdir = tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(BROKER_SCRIPT), "--workdir", str(workdir), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        state = json.loads((workdir / "state.json").read_text())
        assert bootstrap == state["bootstrap"] == f"127.0.0.1:{state['port']}"
        assert not process_gone(state["pid"])  # outlived the `start` command

        again = cli("start")
        assert again.returncode == 1
        assert "already running" in again.stderr

        created = cli("create-topics", "--partitions", "2", "cli-topic")
        assert created.returncode == 0, created.stderr
        assert partition_count(bootstrap, "cli-topic") == 2
    finally:
        stopped = cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert process_gone(state["pid"])
    assert json.loads((workdir / "state.json").read_text())["pid"] is None
    missing = cli("create-topics", "late")
    assert missing.returncode == 1
    assert "no broker running" in missing.stderr


def test_cli_with_scram_users_serves_sasl_ssl_only_and_administers_itself(tmp_path: Path) -> None:
    """`start --scram-user NAME=PASSWORD`: the client port speaks SASL_SSL (SCRAM-SHA-512) with
    the broker's own CA; topics are still created, by the CLI and through Kafka's own tools."""
    workdir = tmp_path / "secure"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(BROKER_SCRIPT), "--workdir", str(workdir), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    started = cli("start", "--scram-user", "app=app-secret-1")
    try:
        assert started.returncode == 0, started.stderr
        assert "SASL_SSL" in started.stderr
        assert cli("create-topics", "--partitions", "2", "secure-cli").returncode == 0
        attached = KafkaBroker(workdir, use_python_client=False)
        assert attached.security_protocol == "SASL_SSL" and attached.ca_file.is_file()
        attached.create_topics(["secure-tool"], partitions=1)  # TopicCommand --command-config

        def deliver(config: dict[str, Any], topic: str) -> str:
            errors: list[str] = []
            producer = Producer({**config, "message.timeout.ms": 4000, "log_level": 0})
            producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(str(err or "")))
            producer.flush(10)
            return errors[0] if errors else "no delivery report"

        for topic in ("secure-cli", "secure-tool"):
            assert deliver(attached.client_config("app", "app-secret-1"), topic) == ""
        # Refusals (plaintext, a wrong password, no CA): tests/e2e/test_secure_pipeline.py.
        assert "app-secret-1" not in (workdir / "state.json").read_text()
    finally:
        assert cli("stop").returncode == 0
