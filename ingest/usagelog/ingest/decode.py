"""Decoding OTLP log payloads into ``usage_events`` rows, for the spool and for Kafka alike.

A payload is one ``ExportLogsServiceRequest`` (the spool's frames and the collector's
``otlp_proto`` Kafka messages are both that). Usage events become ``usage_events`` rows; loss
reports (records named ``usagelog.loss``) become ``losses`` rows; other log records are
ignored. A usage event whose checksum does not match, or that lacks its ID, and a loss report
with a count or sequence number that is not a number, are rejected with a reason; a payload
that is not OTLP at all raises :class:`DecodeError`. Callers dead-letter both and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from usagelog.instrumentation import event as ev

# Derived from the one declaration of the event (usagelog.instrumentation.event.FIELDS).
# Columns filled from log record attributes, and from resource attributes: (column, attribute, default).
_ATTRIBUTE_COLUMNS: tuple[tuple[str, str, Any], ...] = tuple(
    (f.column, f.attribute, f.default) for f in ev.RECORD_FIELDS
)
_RESOURCE_COLUMNS: tuple[tuple[str, str, Any], ...] = tuple(
    (f.column, f.attribute, f.default) for f in ev.RESOURCE_FIELDS
)
_KNOWN_ATTRIBUTES = frozenset(a for _, a, _ in _ATTRIBUTE_COLUMNS)
_KNOWN_RESOURCE = frozenset(a for _, a, _ in _RESOURCE_COLUMNS)

COLUMNS: tuple[str, ...] = ev.COLUMNS

# Unsigned column widths in ClickHouse (and the archive): larger values cannot be stored.
_WIDTHS = {"uint16": 2**16, "uint32": 2**32, "uint64": 2**64}
_RANGES: tuple[tuple[str, int], ...] = tuple(
    (f.column, _WIDTHS[f.arrow])
    for f in ev.FIELDS
    if f.arrow in _WIDTHS and f.place in (ev.RECORD, ev.RESOURCE)
)
_BOOLEANS: tuple[str, ...] = tuple(f.column for f in ev.RECORD_FIELDS if f.arrow == "bool")
_TEXTS: tuple[str, ...] = tuple(
    f.column for f in ev.FIELDS if f.arrow == "string" and f.place in (ev.RECORD, ev.RESOURCE)
)


# Trace and span IDs: none, or this many bytes (W3C trace context; all zeros is invalid there too).
_ID_SIZES: tuple[tuple[str, int], ...] = (("trace_id", 16), ("span_id", 8))


class DecodeError(ValueError):
    """The payload is not an OTLP ``ExportLogsServiceRequest``."""


@dataclass
class Rejected:
    """A usage event that decoded but cannot be trusted."""

    reason: str
    event_id: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: int = 0
    losses: list[dict[str, Any]] = field(default_factory=list)  # ``losses`` rows, without location


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return None


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def dead_letter(source: str, location: str, reason: str, payload: Any, **extra: str) -> dict[str, Any]:
    """A ``dead_letters`` row: where it came from, why, and what it was."""
    return {"source": source, "location": location, "reason": reason, "payload": payload, **extra}


def decode_or_dead_letter(payload: bytes, source: str, location: str) -> tuple[Decoded, list[dict[str, Any]]]:
    """Decode one payload for storage: the good rows, and dead letters for what cannot be stored
    (a payload that is not OTLP, events that fail their checks). Never raises for bad input."""
    try:
        decoded = decode_payload(payload)
    except DecodeError as exc:
        return Decoded(), [dead_letter(source, location, str(exc), payload)]
    letters = [
        dead_letter(
            source,
            location,
            rejected.reason,
            repr(rejected.detail),
            event_id=rejected.event_id,
            service_instance_id=str(rejected.detail.get("service_instance_id", "")),
        )
        for rejected in decoded.rejected
    ]
    return decoded, letters


def decode_payload(payload: bytes) -> Decoded:
    """Rows (as dicts keyed by column) for every usage event in one OTLP payload."""
    try:
        request = ExportLogsServiceRequest.FromString(payload)
    except (_ProtobufDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"not an OTLP logs payload: {exc}") from exc
    result = Decoded()
    for resource_logs in request.resource_logs:
        resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
        identity = {col: resource.get(attr, default) for col, attr, default in _RESOURCE_COLUMNS}
        extra_resource = {
            f"resource.{k}": _as_text(v)
            for k, v in resource.items()
            if k not in _KNOWN_RESOURCE and not k.startswith("telemetry.sdk.")
        }
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                if record.event_name == ev.LOSS_EVENT_NAME:
                    _loss(record, identity, result)
                    continue
                if record.event_name != ev.EVENT_NAME:
                    result.ignored += 1
                    continue
                attrs = {kv.key: _value(kv.value) for kv in record.attributes}
                row: dict[str, Any] = {
                    col: attrs.get(attr, default) for col, attr, default in _ATTRIBUTE_COLUMNS
                }
                row.update(identity)
                row["timestamp"] = record.time_unix_nano
                row["observed_timestamp"] = record.observed_time_unix_nano
                row["trace_id"] = record.trace_id.hex()
                row["span_id"] = record.span_id.hex()
                extra = {k: _as_text(v) for k, v in attrs.items() if k not in _KNOWN_ATTRIBUTES}
                extra.update(extra_resource)
                row["attributes"] = extra
                reason = _check(row)
                if reason:
                    result.rejected.append(Rejected(reason, str(row.get("event_id", "")), row))
                else:
                    result.rows.append(row)
    return result


LOSS_COLUMNS: tuple[str, ...] = (
    "report_id", "reported_at", "service_name", "service_instance_id", "host_name", "reason", "count",
    "first_seq", "last_seq", "allocated_seq", "detail", "location",
)  # fmt: skip
_LOSS_NUMBERS = (
    ("count", ev.LOSS_COUNT),
    ("first_seq", ev.LOSS_FIRST_SEQ),
    ("last_seq", ev.LOSS_LAST_SEQ),
    ("allocated_seq", ev.LOSS_ALLOCATED_SEQ),
)


def _loss(record: Any, identity: dict[str, Any], result: Decoded) -> None:
    """A ``losses`` row for one ``usagelog.loss`` record, or a rejection saying why not."""
    attrs = {kv.key: _value(kv.value) for kv in record.attributes}
    row: dict[str, Any] = {
        "reported_at": record.time_unix_nano or record.observed_time_unix_nano,
        "service_name": _as_text(identity.get("service_name")),
        "service_instance_id": _as_text(identity.get("service_instance_id")),
        "host_name": _as_text(identity.get("host_name")),
        "reason": _as_text(attrs.get(ev.LOSS_REASON)),
        "detail": _as_text(attrs.get(ev.LOSS_DETAIL)),
    }
    problem = ""
    for column, attribute in _LOSS_NUMBERS:
        try:
            row[column] = int(attrs.get(attribute) or 0)
        except (TypeError, ValueError, OverflowError):
            problem = f"loss report with a non-numeric {attribute} ({attrs.get(attribute)!r})"
            row[column] = 0
        else:
            if not 0 <= row[column] < 2**64:
                problem = f"loss report with {attribute} out of range ({row[column]})"
    if not 0 <= row["reported_at"] < 2**63:
        problem = "loss report with a timestamp out of range"
    # A report without its ID still says something was lost: keep it, under an ID derived from
    # its content, so that a redelivery folds into the same row.
    report_id = _as_text(attrs.get(ev.LOSS_REPORT_ID))
    row["report_id"] = report_id or "derived:" + ev.checksum_of(
        [str(row[c]) for c in LOSS_COLUMNS if c not in ("report_id", "location")]
    )
    if problem:
        # Dead-lettered with the instance, so audit still counts it against the instance.
        result.rejected.append(Rejected(problem, "", row))
    else:
        result.losses.append(row)


def _check(row: dict[str, Any]) -> str:
    # A text column takes text only: any other value would fail the whole batch's insert. An
    # attribute present without a value is as good as absent (the checksum reads both as empty).
    for column in _TEXTS:
        if row[column] is None:
            row[column] = ""
        elif not isinstance(row[column], str):
            return f"usage event with a non-text {column} ({type(row[column]).__name__})"
    if not row["event_id"]:
        return "usage event without usagelog.event_id"
    for column, size in _ID_SIZES:
        # Stored as bytes (usage_events.trace_bin/span_bin), zeros meaning none.
        if len(row[column]) not in (0, 2 * size) or row[column] == "0" * 2 * size:
            return f"usage event with an invalid {column} ({row[column][:64]!r}: {size} bytes, not all zero)"
    try:
        for column, _ in _RANGES:
            row[column] = int(row[column])
        for column in _BOOLEANS:
            row[column] = bool(row[column])
    except (TypeError, ValueError, OverflowError):
        return "usage event with a non-numeric numeric field"
    for column, limit in _RANGES:
        if not 0 <= row[column] < limit:
            return f"usage event with {column} out of range ({row[column]})"
    if not 0 <= row["timestamp"] < 2**63 or not 0 <= row["observed_timestamp"] < 2**63:
        return "usage event with a timestamp out of range"
    expected = ev.checksum(row)
    if row["checksum"] != expected:
        return f"checksum mismatch (event says {row['checksum'] or 'none'}, content gives {expected})"
    return ""
