"""Loss reports as the in-app side sends them: OTLP log records named ``usagelog.loss`` on the
lost instance's resource, crafted with the opentelemetry-proto classes."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from usagelog.instrumentation import event as ev

REPORTED_NS = 1_700_000_000_000_000_000


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=str(value))


def loss_record(
    report_id: str | None,
    reason: str = ev.LOSS_DROPPED,
    count: Any = 0,
    first_seq: Any = 0,
    last_seq: Any = 0,
    allocated_seq: Any = 0,
    detail: str = "",
    time_ns: int = REPORTED_NS,
) -> LogRecord:
    """One report; ``report_id`` None leaves the attribute out."""
    attributes = {
        ev.LOSS_REASON: reason,
        ev.LOSS_COUNT: count,
        ev.LOSS_FIRST_SEQ: first_seq,
        ev.LOSS_LAST_SEQ: last_seq,
        ev.LOSS_ALLOCATED_SEQ: allocated_seq,
        ev.LOSS_DETAIL: detail,
    }
    if report_id is not None:
        attributes[ev.LOSS_REPORT_ID] = report_id
    return LogRecord(
        time_unix_nano=time_ns,
        observed_time_unix_nano=time_ns,
        event_name=ev.LOSS_EVENT_NAME,
        attributes=[KeyValue(key=k, value=_any(v)) for k, v in attributes.items()],
    )


def loss_payload(instance: str, records: list[LogRecord], service: str = "bulk", host: str = "h") -> bytes:
    """An ExportLogsServiceRequest carrying ``records`` for one instance (the resource as on its
    usage events)."""
    resource = Resource(
        attributes=[
            KeyValue(key=ev.SERVICE_NAME, value=_any(service)),
            KeyValue(key=ev.SERVICE_INSTANCE_ID, value=_any(instance)),
            KeyValue(key=ev.HOST_NAME, value=_any(host)),
            KeyValue(key=ev.PROCESS_PID, value=_any(1)),
        ]
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource,
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=ev.SCOPE_NAME), log_records=records)],
            )
        ]
    )
    return request.SerializeToString()
