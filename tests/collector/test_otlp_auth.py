"""The in-app OTLP exporter against the real collector serving auth.yaml + tls.yaml: a client
without the bearer token is refused (gRPC UNAUTHENTICATED, HTTP 401), keeps the batch in its
spool instead of dropping it, and hands it over once OTEL_EXPORTER_OTLP_HEADERS carries the
token. The collector's own metrics count what its receiver accepted and refused.

The whole path with real API processes, Kafka and the workers is tests/e2e/test_secure_pipeline.py.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.collector.test_collector_configs import (  # noqa: F401  (fixtures)
    TOKEN,
    collector_binary,
    collector_env,
    running_collector,
    tls_files,
)

EVENTS = 7


def _payload() -> bytes:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for i in range(EVENTS):
        scope.log_records.append(
            LogRecord(time_unix_nano=1_700_000_000_000_000_000 + i, body=AnyValue(string_value="x"))
        )
    return request.SerializeToString()


def _receiver_count(metrics_url: str, name: str, transport: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"otelcol_receiver_{name}_log_records") and f'transport="{transport}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_client_without_the_token_spools_until_the_token_is_set(
    collector_binary: Path,  # noqa: F811
    collector_env: dict[str, str],  # noqa: F811
    tls_files: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    protocol: str,
) -> None:
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.otlp import Destination, OtlpExporter

    cert, _ = tls_files
    spool = tmp_path / "spool"
    settings = Settings(spool_dir=str(spool))
    with running_collector(
        collector_binary, ("auth", "tls"), collector_env, tmp_path / "collector.log"
    ) as collector:
        address = collector.otlp_grpc if protocol == "grpc" else collector.otlp_http
        sdk = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://{address}",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert),
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
        }
        metrics = (
            f"http://{collector_env['USAGELOG_COLLECTOR_METRICS_HOST']}:"
            f"{collector_env['USAGELOG_COLLECTOR_METRICS_PORT']}/metrics"
        )
        transport = "grpc" if protocol == "grpc" else "http"

        refused = OtlpExporter(settings, "i-refused", Destination.from_environment(sdk))
        refused.export(_payload(), EVENTS)
        assert (refused.sent, refused.spooled) == (0, EVENTS)
        assert refused.collector_down  # backing off, not retrying in a loop
        refused.shutdown()  # seals the segment; a refused replay leaves it in place
        assert list(spool.glob("*.seg")), "the refused batch must be in the spool"
        assert _receiver_count(metrics, "accepted", transport) == 0

        with_token = {**sdk, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}"}
        fixed = OtlpExporter(settings, "i-fixed", Destination.from_environment(with_token))
        assert fixed.replay() is True
        assert fixed.replayed_batches == 1
        fixed.shutdown()
        assert not list(spool.glob("*.seg")) and not list(spool.glob("*.open"))
        accepted = _receiver_count(metrics, "accepted", transport)
        assert accepted == EVENTS, collector.log()


def test_the_token_is_read_as_the_sdk_reads_otel_exporter_otlp_headers() -> None:
    from usagelog.instrumentation.otlp import Destination

    destination = Destination.from_environment(
        {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=t1"}
    )
    # gRPC metadata keys must be lower case; the SDK's parser makes them so.
    assert dict(destination.headers) == {"authorization": "Bearer abc", "x-tenant": "t1"}
    assert re.fullmatch(r"https?://localhost:4317", destination.endpoint)
