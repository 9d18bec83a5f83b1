"""The usage event: its attribute names, its canonical form and checksum.

A usage event is an OpenTelemetry log record named ``usagelog.request``, emitted in the
server span's context (so it carries the trace and span IDs), whose timestamp is the
request start. Fields follow the HTTP semantic conventions where one exists; the rest are
under ``usagelog.*``. The emitter's identity (service, instance, host, process, cluster,
region) is on the resource.

The checksum covers the canonical fields below in a fixed order; ingest recomputes it to
detect any event altered or damaged on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

EVENT_NAME = "usagelog.request"
SCOPE_NAME = "usagelog"

# Log record attributes.
METHOD = "http.request.method"
ROUTE = "http.route"
PATH = "url.path"
QUERY = "url.query"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
CLIENT_ADDRESS = "client.address"
USER_AGENT = "user_agent.original"
USER_ID = "user.id"
REQUEST_SIZE = "http.request.body.size"
RESPONSE_SIZE = "http.response.body.size"
EVENT_ID = "usagelog.event_id"
SEQ = "usagelog.seq"
DURATION_NS = "usagelog.duration_ns"
MONITORED = "usagelog.monitored"
CHECKSUM = "usagelog.checksum"
REQUEST_BODY = "usagelog.request.body"
RESPONSE_BODY = "usagelog.response.body"
REQUEST_HEADERS = "usagelog.request.headers"
CLIENT_ABORTED = "usagelog.client_aborted"

# Resource attributes (the emitter's identity).
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"
HOST_NAME = "host.name"
HOST_ID = "host.id"
PROCESS_PID = "process.pid"
CLUSTER = "k8s.cluster.name"
REGION = "cloud.region"

# Canonical field order for the checksum: (column name, source attribute).
CANONICAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("event_id", EVENT_ID),
    ("timestamp_ns", "time_unix_nano"),
    ("duration_ns", DURATION_NS),
    ("user_id", USER_ID),
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("service_name", SERVICE_NAME),
    ("service_instance_id", SERVICE_INSTANCE_ID),
    ("host_name", HOST_NAME),
    ("process_pid", PROCESS_PID),
    ("cluster", CLUSTER),
    ("region", REGION),
    ("method", METHOD),
    ("route", ROUTE),
    ("path", PATH),
    ("query", QUERY),
    ("status_code", STATUS),
    ("error_type", ERROR_TYPE),
    ("request_size", REQUEST_SIZE),
    ("response_size", RESPONSE_SIZE),
    ("request_body", REQUEST_BODY),
    ("response_body", RESPONSE_BODY),
    ("seq", SEQ),
    ("monitored", MONITORED),
)


def _canonical_value(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def checksum(fields: Mapping[str, Any]) -> str:
    """SHA-256 (first 128 bits, hex) over the canonical fields, keyed by column name.

    Missing fields count as empty, so emitter and decoder agree whether or not an
    optional attribute (a body, say) was present on the wire.
    """
    canonical = "\x1f".join(_canonical_value(fields.get(name)) for name, _ in CANONICAL_FIELDS)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def error_type_of(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its fully qualified class name (builtins unqualified)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
