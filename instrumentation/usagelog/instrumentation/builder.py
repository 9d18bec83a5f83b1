"""Turns captured exchanges into usage events, off the request path, as OTLP messages.

Everything costly happens here, in the background thread: resolving the user ID from
headers, redaction, the monitored decision, body rendering, the event ID, the checksum and
the encoding. The events are ``opentelemetry-proto``'s own ``LogRecord`` messages, filled in
place inside an ``ExportLogsServiceRequest``; which attributes they carry, and what the
checksum covers in which order, comes from :data:`usagelog.instrumentation.event.FIELDS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from . import event as ev
from .config import Settings
from .exchange import Exchange
from .identity import AttrValue, Identity
from .monitor import MonitorRules
from .redact import Redactor
from .userid import UserResolver

SEVERITY_INFO = 9
# Values the builder works out; every other source names an Exchange attribute.
_DERIVED = frozenset(
    {"event_id", "user_id", "query", "request_body", "response_body", "monitored", "checksum"}
)


def _utf8(text: str) -> str:
    """``text`` made encodable as UTF-8 (OTLP strings must be): lone surrogates, which JSON
    escapes and JWT claims can carry, become U+FFFD before the checksum is taken."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def set_value(kv: KeyValue, key: str, value: AttrValue) -> None:
    """One attribute, filled in place."""
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def resource_message(attributes: dict[str, AttrValue]) -> Resource:
    resource = Resource()
    for key, value in sorted(attributes.items()):
        set_value(resource.attributes.add(), key, value)
    return resource


class EventBuilder:
    def __init__(
        self, settings: Settings, resolver: UserResolver, identity: Identity, version: str = ""
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.monitor = MonitorRules(settings.monitor)
        self.redactor = Redactor(settings.redact_fields)
        self.scope = InstrumentationScope(name=ev.SCOPE_NAME, version=version)
        # (attribute, source, column) of every record attribute but the checksum, which comes last.
        self._attributes = [
            (f.attribute, f.source, f.column) for f in ev.RECORD_FIELDS if f.column != "checksum"
        ]
        self.set_identity(identity)

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self.resource = resource_message(identity.attributes)
        # The emitter's part of the checksum, fixed for the process.
        self._identity_values = {
            f.column: identity.attributes.get(f.attribute, f.default) for f in ev.RESOURCE_FIELDS
        }

    def encode_batch(
        self, exchanges: Iterable[Exchange], on_error: Callable[[Exchange], None] | None = None
    ) -> tuple[bytes, int]:
        """An ``ExportLogsServiceRequest`` with one usage event per exchange, and how many it holds.

        An exchange that cannot be built is left out and passed to ``on_error`` (raised without one).
        """
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.CopyFrom(self.resource)
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.CopyFrom(self.scope)
        records = scope_logs.log_records
        count = 0
        for exchange in exchanges:
            record = records.add()
            try:
                self.fill(record, exchange)
            except Exception:
                del records[-1]
                if on_error is None:
                    raise
                on_error(exchange)
                continue
            count += 1
        return request.SerializeToString(), count

    def fill(self, record: LogRecord, x: Exchange) -> None:
        """Make ``record`` the usage event of one exchange."""
        settings = self.settings
        redactor = self.redactor
        user_id = _utf8(self.resolver.resolve(x.user_headers, x.context_users))
        monitored = self.monitor.matches(user_id, x.route, x.path)
        capture = settings.capture_body == "all" or (settings.capture_body == "monitored" and monitored)
        request_body = response_body = ""
        if capture:
            if x.request_body is not None:
                request_body = redactor.body(
                    bytes(x.request_body), x.request_content_type, x.request_size, settings.body_max_bytes
                )
            if x.response_body is not None:
                response_body = redactor.body(
                    b"".join(x.response_body),
                    x.response_content_type,
                    x.response_size,
                    settings.body_max_bytes,
                )
            request_body, response_body = _utf8(request_body), _utf8(response_body)
        values: dict[str, Any] = {
            # Unique without a random draw per event: a random per-process prefix and the sequence.
            "event_id": self.identity.event_id_prefix + f"{x.seq:016x}",
            "user_id": user_id,
            "query": redactor.redact_query(x.query) if x.query else "",
            "request_body": request_body,
            "response_body": response_body,
            "monitored": monitored,
        }
        attributes = record.attributes
        for attribute, source, column in self._attributes:
            value = values[source] if source in _DERIVED else getattr(x, source)
            values[column] = value
            # Empty strings are left out: an absent attribute reads back as empty.
            if value != "":
                set_value(attributes.add(), attribute, value)
        values["timestamp"] = x.start_ns
        values["trace_id"] = f"{x.trace_id:032x}" if x.trace_id else ""
        values["span_id"] = f"{x.span_id:016x}" if x.span_id else ""
        values.update(self._identity_values)
        set_value(attributes.add(), ev.CHECKSUM, ev.checksum(values))
        if capture and x.request_headers:
            headers = redactor.redact_headers(x.request_headers)
            set_value(attributes.add(), ev.REQUEST_HEADERS, json.dumps(headers, sort_keys=True))
        if x.client_aborted:
            set_value(attributes.add(), ev.CLIENT_ABORTED, True)
        record.time_unix_nano = x.start_ns
        record.observed_time_unix_nano = time.time_ns()
        record.severity_number = SEVERITY_INFO  # type: ignore[assignment]
        record.severity_text = "INFO"
        record.event_name = ev.EVENT_NAME
        record.flags = x.trace_flags & 0xFF
        if x.trace_id:
            record.trace_id = x.trace_id.to_bytes(16, "big")
        if x.span_id:
            record.span_id = x.span_id.to_bytes(8, "big")
