"""The usage event, declared once: every field's attribute, column, types and checksum position.

A usage event is an OpenTelemetry log record named ``usagelog.request``, emitted in the
server span's context (so it carries the trace and span IDs), whose timestamp is the request
start. Fields follow the HTTP semantic conventions where one exists; the rest are under
``usagelog.*``. The emitter's identity (service, instance, host, process, cluster, region) is
on the resource.

:data:`FIELDS` is the one declaration. Everything else is derived from it: the attributes the
builder writes and the order of its checksum, the columns the decoder fills, the Arrow types
of the archive, what ``usagelog tail`` prints and the checksum ``usagelog audit`` recomputes in
SQL; a test compares it with the table the migrations create. Adding a field means adding it
here and adding its column in a migration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
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
USER_ID_CLAIMED = "usagelog.user_id_claimed"  # claimed by a request the app rejected (401) or unverified
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

# Loss reports: a log record named ``usagelog.loss`` (same resource as the instance's usage
# events) says that events of that instance were lost or may have been, and which. The in-app
# side emits them (events dropped at the memory bound, a final flush that failed, the tail a
# killed process left unwritten, found later through its counter file); ingest stores them in
# ``losses`` and ``usagelog audit`` reconciles them with the stored sequence.
LOSS_EVENT_NAME = "usagelog.loss"
LOSS_REPORT_ID = "usagelog.loss.report_id"  # unique per report: storage keeps one copy
LOSS_REASON = "usagelog.loss.reason"  # one of LOSS_REASONS
LOSS_COUNT = "usagelog.loss.count"  # events lost (for "tail": allocated but never handed over)
LOSS_FIRST_SEQ = "usagelog.loss.first_seq"  # lowest sequence number concerned (0: unknown)
LOSS_LAST_SEQ = "usagelog.loss.last_seq"  # highest sequence number concerned (0: unknown)
LOSS_ALLOCATED_SEQ = "usagelog.seq.allocated"  # highest sequence number the instance allocated
LOSS_DETAIL = "usagelog.loss.detail"  # free text for people (an error message, a file)
LOSS_DROPPED = "dropped"  # taken from memory past the byte/entry bound while nothing could write
LOSS_WRITE_FAILED = "write_failed"  # the final flush at exit could not write them anywhere
LOSS_TAIL = "tail"  # the process died; allocated sequence numbers beyond what it handed over
# A spool frame the in-app replay could not read (how many events it held is unknown: count 0;
# the detail says which segment and offset). Audit fails on it like on a dead letter.
LOSS_DAMAGED = "damaged"
LOSS_REASONS = (LOSS_DROPPED, LOSS_WRITE_FAILED, LOSS_TAIL, LOSS_DAMAGED)

# Resource attributes (the emitter's identity).
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"
HOST_NAME = "host.name"
HOST_ID = "host.id"
PROCESS_PID = "process.pid"
CLUSTER = "k8s.cluster.name"
REGION = "cloud.region"

# Where a field travels in OTLP.
RECORD = "record"  # an attribute of the log record
RESOURCE = "resource"  # an attribute of the resource
LOG = "log"  # a field of the log record itself (time, trace and span IDs)
EXTRA = "extra"  # every other attribute, kept as a map
STORAGE = "storage"  # set by storage, not carried by the event


@dataclass(frozen=True)
class Field:
    """One field of the usage event.

    ``source`` is where the builder takes a record attribute's value from: the name of an
    :class:`~usagelog.instrumentation.exchange.Exchange` attribute, or of a value the builder
    derives (``user_id``, ``event_id``, ...). ``checksum`` is the field's position in the
    checksum (None: not covered). ``tail``: shown by ``usagelog tail``. ``repeats``: a record
    attribute whose values recur from event to event (a method, a route, a user), whose
    encodings the builder keeps.
    """

    column: str
    attribute: str
    place: str
    clickhouse: str
    arrow: str  # string, uint16, uint32, uint64, bool, timestamp_ns, timestamp_ms, map
    default: Any = ""
    checksum: int | None = None
    source: str = ""
    tail: bool = False
    repeats: bool = False

    @property
    def number(self) -> bool:
        return self.arrow.startswith("uint")


FIELDS: tuple[Field, ...] = (
    Field("event_id", EVENT_ID, RECORD, "String", "string", checksum=0, source="event_id"),
    Field("timestamp", "time_unix_nano", LOG, "DateTime64(9, 'UTC')", "timestamp_ns", 0, 1, tail=True),
    Field("duration_ns", DURATION_NS, RECORD, "UInt64", "uint64", 0, 2, "duration_ns", tail=True),
    Field("user_id", USER_ID, RECORD, "String", "string", "", 3, "user_id", True, True),
    Field("trace_id", "trace_id", LOG, "String", "string", checksum=4),
    Field("span_id", "span_id", LOG, "String", "string", checksum=5),
    Field("service_name", SERVICE_NAME, RESOURCE, "LowCardinality(String)", "string", checksum=6),
    Field("service_instance_id", SERVICE_INSTANCE_ID, RESOURCE, "String", "string", checksum=7, tail=True),
    Field("host_name", HOST_NAME, RESOURCE, "LowCardinality(String)", "string", checksum=8),
    Field("host_id", HOST_ID, RESOURCE, "String", "string"),
    Field("process_pid", PROCESS_PID, RESOURCE, "UInt32", "uint32", 0, 9),
    Field("cluster", CLUSTER, RESOURCE, "LowCardinality(String)", "string", checksum=10),
    Field("region", REGION, RESOURCE, "LowCardinality(String)", "string", checksum=11),
    Field("method", METHOD, RECORD, "LowCardinality(String)", "string", "", 12, "method", True, True),
    Field("route", ROUTE, RECORD, "String", "string", checksum=13, source="route", repeats=True),
    Field("path", PATH, RECORD, "String", "string", checksum=14, source="path", tail=True),
    Field("query", QUERY, RECORD, "String", "string", checksum=15, source="query"),
    Field("status_code", STATUS, RECORD, "UInt16", "uint16", 0, 16, "status_code", tail=True),
    Field(
        "error_type", ERROR_TYPE, RECORD, "LowCardinality(String)", "string", "", 17, "error_type", True, True
    ),
    Field(
        "client_address", CLIENT_ADDRESS, RECORD, "String", "string", source="client_address", repeats=True
    ),
    Field("user_agent", USER_AGENT, RECORD, "String", "string", source="user_agent", repeats=True),
    Field("request_body", REQUEST_BODY, RECORD, "String", "string", checksum=20, source="request_body"),
    Field("response_body", RESPONSE_BODY, RECORD, "String", "string", checksum=21, source="response_body"),
    Field("request_size", REQUEST_SIZE, RECORD, "UInt64", "uint64", 0, 18, "request_size"),
    Field("response_size", RESPONSE_SIZE, RECORD, "UInt64", "uint64", 0, 19, "response_size"),
    Field("seq", SEQ, RECORD, "UInt64", "uint64", 0, 22, "seq"),
    Field("monitored", MONITORED, RECORD, "Bool", "bool", False, 23, "monitored"),
    Field("checksum", CHECKSUM, RECORD, "String", "string", source="checksum"),
    Field("observed_timestamp", "observed_time_unix_nano", LOG, "DateTime64(9, 'UTC')", "timestamp_ns", 0),
    Field("user_id_claimed", USER_ID_CLAIMED, RECORD, "String", "string", source="user_id_claimed"),
    Field("attributes", "", EXTRA, "Map(String, String)", "map", None),
    Field("inserted_at", "", STORAGE, "DateTime64(3, 'UTC')", "timestamp_ms", None),
)  # fmt: skip

# Derived from FIELDS by _derive() below (and again should FIELDS change before the modules
# that read them are imported, as a test of adding a field does).
BY_COLUMN: dict[str, Field]
COLUMNS: tuple[str, ...]  # what an event carries (every column storage does not set), in table order
RECORD_FIELDS: tuple[Field, ...]
RESOURCE_FIELDS: tuple[Field, ...]
CHECKSUM_FIELDS: tuple[Field, ...]  # the checksum's fields, in its order
TAIL_COLUMNS: tuple[str, ...]


def _derive() -> None:
    global BY_COLUMN, COLUMNS, RECORD_FIELDS, RESOURCE_FIELDS, CHECKSUM_FIELDS, TAIL_COLUMNS
    BY_COLUMN = {f.column: f for f in FIELDS}
    if len(BY_COLUMN) != len(FIELDS):
        raise ValueError("a column is declared twice")
    COLUMNS = tuple(f.column for f in FIELDS if f.place != STORAGE)
    RECORD_FIELDS = tuple(f for f in FIELDS if f.place == RECORD)
    RESOURCE_FIELDS = tuple(f for f in FIELDS if f.place == RESOURCE)
    CHECKSUM_FIELDS = tuple(
        sorted((f for f in FIELDS if f.checksum is not None), key=lambda f: f.checksum or 0)
    )
    positions = [f.checksum for f in CHECKSUM_FIELDS]
    if positions != list(range(len(positions))):
        raise ValueError(f"checksum positions must be 0..n-1 without gaps, got {positions}")
    TAIL_COLUMNS = tuple(f.column for f in FIELDS if f.tail)


_derive()


def canonical_value(value: Any) -> str:
    """A field's text in the checksum: booleans as ``1``/``0``, absent as empty."""
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def checksum(fields: Mapping[str, Any]) -> str:
    """SHA-256 (first 128 bits, hex) over the checksum's fields, keyed by column name
    (``timestamp`` in nanoseconds, trace and span IDs in hex).

    Missing fields count as empty, so emitter and decoder agree whether or not an
    optional attribute (a body, say) was present on the wire.
    """
    return checksum_of([canonical_value(fields.get(f.column)) for f in CHECKSUM_FIELDS])


CHECKSUM_SEPARATOR = "\x1f"  # between the fields' texts
CHECKSUM_HEX_DIGITS = 32  # of the SHA-256 digest in hex: its first 128 bits


def checksum_of(texts: list[str]) -> str:
    """The checksum of the fields' texts (:func:`canonical_value`), in checksum order."""
    return checksum_of_joined(CHECKSUM_SEPARATOR.join(texts))


def checksum_of_joined(text: str) -> str:
    """The checksum of the fields' texts already joined with :data:`CHECKSUM_SEPARATOR`."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:CHECKSUM_HEX_DIGITS]


def error_type_of(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its fully qualified class name (builtins unqualified)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
