"""The pipeline with every network hop secured, on the real components: API processes export
OTLP over TLS with a bearer token (the SDK's ``OTEL_EXPORTER_OTLP_*`` variables) → the
collector binary (``auth.yaml`` + ``tls.yaml`` + ``kafka-sasl.yaml``) → a Kafka broker that
speaks only SASL_SSL (SCRAM-SHA-512, ``kafka/broker.py`` with ``scram_users``) → an ingest
worker logging in with its own user (``USAGELOG_KAFKA_SASL_*``) → ClickHouse (chDB).

The secured broker is this module's own (not the session's plaintext one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import Collector, WorkerProcess, broker_module, count_events, http_get, wait_for
from usagelog.demo.driver import drive, make_users
from usagelog.demo.run import start_instances, stop_instances

pytestmark = pytest.mark.slow

TOKEN = "otlp-token-5f1c2a9e"
USERS = {"collector": "collector-pw-8d2b71", "worker": "worker-pw-3c9e04"}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of this module's own whose only client listener is SASL_SSL."""
    broker = broker_module().KafkaBroker(tmp_path_factory.mktemp("secure-kafka"), scram_users=USERS)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def otlp_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away certificate and key for the collector's receivers (127.0.0.1/localhost)."""
    folder = tmp_path_factory.mktemp("otlp-tls")
    cert, key = folder / "otlp.crt", folder / "otlp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return cert, key


def _worker_env(broker: Any, password: str) -> dict[str, str]:
    return {
        "USAGELOG_KAFKA_SASL_USERNAME": "worker",
        "USAGELOG_KAFKA_SASL_PASSWORD": password,
        "USAGELOG_KAFKA_CA_FILE": str(broker.ca_file),
    }


def _segments(spool: Path) -> list[Path]:
    return list(spool.glob("*.seg")) + list(spool.glob("*.open"))


def test_secured_broker_refuses_plaintext_and_wrong_passwords(secure_kafka: Any) -> None:
    """Only a client with TLS and a known SCRAM user and password gets its messages in."""
    from confluent_kafka import Producer

    topic = "secure-refusals"
    secure_kafka.create_topics([topic], partitions=1)

    def deliver(config: dict[str, Any]) -> str | None:
        errors: list[str] = []
        producer = Producer({**config, "message.timeout.ms": 4000, "log_level": 0})
        producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(str(err) if err else ""))
        producer.flush(10)
        return errors[0] if errors else "no delivery report"

    assert deliver(secure_kafka.client_config("worker", USERS["worker"])) == ""
    assert deliver(secure_kafka.client_config("worker", "not-the-password")) != ""
    assert deliver({"bootstrap.servers": secure_kafka.bootstrap}) != ""  # PLAINTEXT to a TLS port
    no_ca = {k: v for k, v in secure_kafka.client_config("worker", USERS["worker"]).items() if "ca" not in k}
    assert deliver(no_ca) != ""  # the broker's certificate is not trusted without its CA


def test_events_cross_the_secured_pipeline_and_a_refused_app_spools_until_its_token_is_fixed(
    secure_kafka: Any, collector_bin: Path, otlp_tls: tuple[Path, Path], tmp_path: Path
) -> None:
    """An API with the token and the collector's CA delivers over TLS; one without the token is
    refused (HTTP 401), keeps its events in its spool, and delivers them all once restarted with
    the token. A worker with its own Kafka user stores every event exactly once."""
    topics = {name: f"secure.{name}" for name in ("events", "monitored", "events.deadletter")}
    secure_kafka.create_topics(list(topics.values()), partitions=3)
    collector = Collector(
        collector_bin,
        tmp_path / "collector",
        secure_kafka.bootstrap,
        topics["events"],
        topics["monitored"],
        overlays=("monitored", "auth", "tls", "kafka-sasl"),
    )
    cert, key = otlp_tls
    collector.env.update(
        {
            "USAGELOG_COLLECTOR_TOKEN": TOKEN,
            "USAGELOG_COLLECTOR_TLS_CERT_FILE": str(cert),
            "USAGELOG_COLLECTOR_TLS_KEY_FILE": str(key),
            "USAGELOG_KAFKA_SASL_USERNAME": "collector",
            "USAGELOG_KAFKA_SASL_PASSWORD": USERS["collector"],
            "USAGELOG_KAFKA_CA_FILE": str(secure_kafka.ca_file),
            "USAGELOG_KAFKA_AUTO_CREATE_TOPICS": "false",
        }
    )
    collector.start()
    sdk = {
        "USAGELOG_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    with_token = {
        **sdk,
        "USAGELOG_SPOOL_DIR": str(tmp_path / "spool-ok"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{collector.grpc_port}",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}",
    }
    refused_spool = tmp_path / "spool-refused"
    without_token = {
        **sdk,
        "USAGELOG_SPOOL_DIR": str(refused_spool),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{collector.http_port}",
    }
    try:
        instances = start_instances(
            tmp_path / "spool-ok", tmp_path / "logs", count=2, per_instance_env=[with_token, without_token]
        )
        try:
            users = drive([i.port for i in instances], make_users(2), rounds=1)
            wait_for(lambda: _segments(refused_spool), 30, "the refused app to spool its events")
            wait_for(lambda: "HTTP 401" in instances[1].log_path.read_text(), 30, "the refusal to be logged")
        finally:
            stop_instances(instances)
        assert _segments(refused_spool), "events refused by the collector must stay in the spool"
        assert not _segments(tmp_path / "spool-ok"), "the app with the token should not need its spool"

        # The same app, its token fixed, replays what it spooled.
        fixed = {**without_token, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}"}
        again = start_instances(refused_spool, tmp_path / "logs-fixed", count=1, per_instance_env=[fixed])
        try:
            # The exporter's thread starts with the first request the app serves: until then an
            # idle process leaves its spool alone (`usagelog ingest --spool` can read it instead).
            assert http_get(again[0].port, "/api/items/1") == 200
            wait_for(lambda: not _segments(refused_spool), 60, "the spool to drain once the token is right")
        finally:
            stop_instances(again)

        url = "chdb://" + str(tmp_path / "chdb")
        worker = WorkerProcess(
            tmp_path,
            secure_kafka.bootstrap,
            topics["events"],
            url,
            "secure-w1",
            extra_env=_worker_env(secure_kafka, USERS["worker"]),
            max_idle=8,
        ).start()
        assert worker.wait(timeout=180) == 0, worker.log()[-3000:]

        # `usagelog tail` logs in the same way (the monitored copy of the admin requests).
        tail = subprocess.run(
            [sys.executable, "-m", "usagelog.cli", "tail", "--from-beginning", "--max-events", "1",
             "--timeout", "60", "--format", "json", "--from", f"kafka://{secure_kafka.bootstrap}/{topics['monitored']}"],
            env={**os.environ, **_worker_env(secure_kafka, USERS["worker"])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert tail.returncode == 0 and '"path": "/admin/' in tail.stdout, tail.stderr[-2000:]
    finally:
        collector.stop()
    sent = sum(len(u.sent) for u in users) + 1  # + the request that woke the fixed app
    assert sent > 1
    assert count_events(url) == (sent, sent), collector.log()[-3000:]
    assert "SASL_SSL (SCRAM-SHA-512 as worker)" in worker.log()
    for log in (worker.log(), collector.log()):
        assert USERS["worker"] not in log and USERS["collector"] not in log and TOKEN not in log


def test_a_worker_with_a_wrong_password_reports_the_login_failure_without_the_password(
    secure_kafka: Any, tmp_path: Path
) -> None:
    secure_kafka.create_topics(["secure.wrong-password"], partitions=1)
    password = "wrong-pw-71c0d3"
    worker = WorkerProcess(
        tmp_path,
        secure_kafka.bootstrap,
        "secure.wrong-password",
        "chdb://" + str(tmp_path / "chdb"),
        "secure-wrong",
        extra_env=_worker_env(secure_kafka, password),
    ).start()
    try:
        wait_for(lambda: "uthentication" in worker.log(), 60, "the worker to report the failed login")
    finally:
        worker.stop()
    assert password not in worker.log()
