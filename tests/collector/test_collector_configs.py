"""The collector distribution (collector/) against the real usagelog-otelcol binary.

The binary comes from collector/build.sh: the first run compiles it (several minutes),
later runs reuse the copy cached outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.pipeline import collector_binary as build_collector
from usagelog.process import Child, ProcessError, free_port

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "collector"
CONFIG_DIR = COLLECTOR_DIR / "config"
BUILD_SCRIPT = COLLECTOR_DIR / "build.sh"
VALIDATE_SCRIPT = COLLECTOR_DIR / "validate.sh"

# A first build compiles the whole collector; on a 2-core machine that takes a while.
BUILD_TIMEOUT_S = 60 * 60
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Overlays layered on base.yaml; collector/validate.sh checks the same set.
COMBINATIONS: list[tuple[str, ...]] = [
    (),
    ("monitored",),
    ("clickhouse",),
    ("monitored", "auth"),
    ("tls",),
    ("monitored", "clickhouse", "auth", "tls"),
    ("monitored", "kafka-sasl"),
    ("monitored", "clickhouse", "auth", "tls", "kafka-sasl"),
]

TOKEN = "test-token-0123456789"

# OTLP/JSON for one usage event marked monitored; the HTTP receiver takes JSON as well
# as protobuf, which keeps this file free of generated protobuf classes.
MONITORED_EVENT = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "collector-test"}},
                    {"key": "service.instance.id", "value": {"stringValue": "instance-1"}},
                ]
            },
            "scopeLogs": [
                {
                    "scope": {"name": "usagelog"},
                    "logRecords": [
                        {
                            "timeUnixNano": "1700000000000000000",
                            "body": {"stringValue": "GET /items"},
                            "attributes": [
                                {"key": "usagelog.monitored", "value": {"boolValue": True}},
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}


def label(overlays: tuple[str, ...]) -> str:
    return "+".join(("base", *overlays))


def config_args(overlays: tuple[str, ...]) -> list[str]:
    args = ["--config", str(CONFIG_DIR / "base.yaml")]
    for overlay in overlays:
        args += ["--config", str(CONFIG_DIR / f"{overlay}.yaml")]
    return args


@pytest.fixture(scope="module")
def collector_binary() -> Path:
    """Path of the built usagelog-otelcol (built by collector/build.sh on first use)."""
    binary = build_collector()
    assert binary.is_file() and os.access(binary, os.X_OK), f"build.sh printed no binary: {binary}"
    return binary


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate and key for 127.0.0.1/localhost."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate for tls.yaml"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=True,
    )
    return cert, key


@pytest.fixture
def collector_env(tmp_path: Path, tls_files: tuple[Path, Path]) -> dict[str, str]:
    """Environment with every variable the configs read; Kafka at an address nothing listens on."""
    cert, key = tls_files
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGELOG_", "OTEL_"))}
    env.update(
        {
            "USAGELOG_KAFKA_BROKERS": "localhost:1",
            "USAGELOG_COLLECTOR_STORAGE_DIR": str(tmp_path / "storage"),
            "USAGELOG_COLLECTOR_CLICKHOUSE_ENDPOINT": "tcp://localhost:1",
            "USAGELOG_COLLECTOR_TOKEN": TOKEN,
            "USAGELOG_KAFKA_SASL_USERNAME": "collector",
            "USAGELOG_KAFKA_SASL_PASSWORD": "collector-password",
            "USAGELOG_COLLECTOR_TLS_CERT_FILE": str(cert),
            "USAGELOG_COLLECTOR_TLS_KEY_FILE": str(key),
            "USAGELOG_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
            "USAGELOG_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
            "USAGELOG_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{free_port()}",
            "USAGELOG_COLLECTOR_METRICS_HOST": "127.0.0.1",
            "USAGELOG_COLLECTOR_METRICS_PORT": str(free_port()),
        }
    )
    return env


@dataclass
class RunningCollector:
    process: Child
    env: Mapping[str, str]

    @property
    def otlp_http(self) -> str:
        return self.env["USAGELOG_OTLP_HTTP_ENDPOINT"]

    @property
    def otlp_grpc(self) -> str:
        return self.env["USAGELOG_OTLP_GRPC_ENDPOINT"]

    @property
    def health_url(self) -> str:
        return f"http://{self.env['USAGELOG_COLLECTOR_HEALTH_ENDPOINT']}/"

    def log(self) -> str:
        return self.process.log()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                body = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        assert "Server available" in body, body
        return bool(response.status == 200)


@contextmanager
def running_collector(
    binary: Path, overlays: tuple[str, ...], env: Mapping[str, str], log_path: Path
) -> Iterator[RunningCollector]:
    """Start the collector, wait until its health check reports healthy, stop it afterwards."""
    process = Child.start([str(binary), *config_args(overlays)], log=log_path, name="collector", env=env)
    collector = RunningCollector(process, env)
    try:
        try:
            process.wait_until(collector.healthy, START_TIMEOUT_S, "the health check to report healthy")
        except ProcessError as exc:
            pytest.fail(str(exc))
        yield collector
    finally:
        status = process.stop(timeout=STOP_TIMEOUT_S)
        if status == -signal.SIGKILL:
            pytest.fail(f"collector ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{collector.log()}")


def post_logs(
    url: str,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """POST to the OTLP/HTTP logs endpoint; returns (status, body) for errors as well."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("overlays", COMBINATIONS, ids=label)
def test_config_combination_validates(
    collector_binary: Path, collector_env: dict[str, str], overlays: tuple[str, ...]
) -> None:
    """`usagelog-otelcol validate` accepts base.yaml alone and with each supported overlay set."""
    result = subprocess.run(
        [str(collector_binary), "validate", *config_args(overlays)],
        env=collector_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{label(overlays)} rejected:\n{result.stderr}{result.stdout}"


def test_validate_script_checks_every_combination(collector_binary: Path) -> None:
    """collector/validate.sh validates the same combinations and exits 0 on its own placeholders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGELOG_")}
    env["USAGELOG_COLLECTOR_BIN"] = str(collector_binary)
    result = subprocess.run(
        ["bash", str(VALIDATE_SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    for overlays in COMBINATIONS:
        assert f"ok    {label(overlays)}\n" in result.stderr, result.stderr


@pytest.mark.slow
def test_collector_accepts_otlp_while_kafka_is_down(
    collector_binary: Path, collector_env: dict[str, str], tmp_path: Path
) -> None:
    """With base+monitored and no broker, the collector starts healthy, answers OTLP/HTTP
    with 200, and holds the accepted event in its on-disk queues."""
    storage = Path(collector_env["USAGELOG_COLLECTOR_STORAGE_DIR"])
    with running_collector(
        collector_binary, ("monitored",), collector_env, tmp_path / "collector.log"
    ) as collector:
        url = f"http://{collector.otlp_http}/v1/logs"
        # An empty ExportLogsServiceRequest serializes to zero protobuf bytes.
        status, body = post_logs(url, b"", "application/x-protobuf")
        assert status == 200, f"empty protobuf request got {status}: {body!r}\n{collector.log()}"

        status, body = post_logs(url, json.dumps(MONITORED_EVENT).encode(), "application/json")
        assert status == 200, f"monitored event got {status}: {body!r}\n{collector.log()}"

        # One persistent queue file per Kafka exporter: kafka (main topic), kafka/monitored.
        queues = sorted(p.name for p in storage.iterdir())
        assert any(name.startswith("exporter_kafka__") for name in queues), queues
        assert any(name.startswith("exporter_kafka_monitored") for name in queues), queues
    assert collector.process.returncode == 0, collector.log()


@pytest.mark.slow
def test_auth_and_tls_overlays_guard_the_otlp_http_receiver(
    collector_binary: Path, collector_env: dict[str, str], tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """With auth.yaml and tls.yaml, OTLP/HTTP is served over TLS and needs the bearer token."""
    cert, _ = tls_files
    context = ssl.create_default_context(cafile=str(cert))
    with running_collector(
        collector_binary, ("auth", "tls"), collector_env, tmp_path / "collector.log"
    ) as collector:
        url = f"https://{collector.otlp_http}/v1/logs"
        status, _ = post_logs(url, b"", "application/x-protobuf", context=context)
        assert status == 401, collector.log()
        status, _ = post_logs(
            url, b"", "application/x-protobuf", {"Authorization": "Bearer wrong-token"}, context
        )
        assert status == 401, collector.log()
        status, body = post_logs(
            url, b"", "application/x-protobuf", {"Authorization": f"Bearer {TOKEN}"}, context
        )
        assert status == 200, f"{status}: {body!r}\n{collector.log()}"

        # Plain HTTP is refused (a 400 from the TLS listener or a reset, never a 200).
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(
                urllib.request.Request(f"http://{collector.otlp_http}/v1/logs", data=b"", method="POST"),
                timeout=5,
            )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], capture_output=True, check=True)


@pytest.fixture(scope="module")
def client_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a client certificate it signed (for mutual TLS)."""
    folder = tmp_path_factory.mktemp("mtls")
    files = {name: folder / name for name in ("ca.crt", "ca.key", "client.crt", "client.key", "client.csr")}
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=usagelog test CA",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=orders-api",
        "-keyout", str(files["client.key"]), "-out", str(files["client.csr"]),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(files["client.csr"]), "-CA", str(files["ca.crt"]), "-CAkey",
        str(files["ca.key"]), "-CAcreateserial", "-days", "1", "-out", str(files["client.crt"]),
    )  # fmt: skip
    return files


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_otlp_exporter_honours_the_sdks_tls_client_and_compression_variables(
    collector_binary: Path,
    collector_env: dict[str, str],
    tls_files: tuple[Path, Path],
    client_ca: dict[str, Path],
    tmp_path: Path,
    protocol: str,
) -> None:
    """Against the real collector serving mutual TLS (tls.yaml with a client CA): the exporter
    delivers, gzip-compressed, with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/_CLIENT_KEY, and is
    refused without them."""
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.otlp import DeliveryError, Destination, OtlpExporter

    cert, _ = tls_files
    collector_env["USAGELOG_COLLECTOR_TLS_CLIENT_CA_FILE"] = str(client_ca["ca.crt"])
    with running_collector(
        collector_binary, ("tls",), collector_env, tmp_path / "collector.log"
    ) as collector:
        address = collector.otlp_grpc if protocol == "grpc" else collector.otlp_http
        env = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://{address}",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert),
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
        }
        anonymous = Destination.from_environment(env)
        trusted = Destination.from_environment(
            {
                **env,
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(client_ca["client.crt"]),
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY": str(client_ca["client.key"]),
            }
        )
        assert trusted.compression == "gzip" and trusted.timeout == 5.0 and not trusted.insecure
        settings = Settings(spool_dir=str(tmp_path / "spool"))
        payload = ExportLogsServiceRequest().SerializeToString()
        with pytest.raises(DeliveryError):
            OtlpExporter(settings, "i-anonymous", anonymous).transport.send(payload, 5)
        exporter = OtlpExporter(settings, "i-trusted", trusted)
        exporter.transport.send(payload, 5)
        exporter.transport.close()
        assert collector.process.running(), collector.log()
