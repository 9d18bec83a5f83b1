"""Turns captured exchanges into usage events, off the request path, as OTLP messages.

Everything costly happens here, in the background thread: resolving the user ID from
headers, redaction, the monitored decision, body rendering, the event ID, the checksum and
the encoding. The events are ``opentelemetry-proto``'s own ``LogRecord`` messages, filled in
place inside an ``ExportLogsServiceRequest``; which attributes they carry, and what the
checksum covers in which order, comes from :data:`usagelog.instrumentation.event.FIELDS`.
"""

from __future__ import annotations

import codecs
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
from .privacy import Pseudonymiser, client_address
from .redact import Redactor
from .userid import UserResolver

SEVERITY_INFO = 9


def _utf8(text: str) -> str:
    """``text`` made encodable as UTF-8 (OTLP strings must be): lone surrogates, which JSON
    escapes and JWT claims can carry, become U+FFFD before the checksum is taken."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _percent_escape(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(f"%{b:02X}" for b in bad), error.end


codecs.register_error("usagelog-percent", _percent_escape)


def wsgi_text(text: str) -> str:
    """A WSGI environ string as the text the client sent.

    WSGI hands over request bytes decoded as latin-1 (PEP 3333), so ``/p/caf%C3%A9`` arrives as
    ``/p/cafÃ©``. The bytes are decoded again as UTF-8; bytes that are not UTF-8 are written
    percent-encoded (``/p/%E9``) instead of raising or turning into replacement characters.
    """
    if text.isascii():
        return text
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return _utf8(text)  # not a latin-1 WSGI string (a server already decoded it)
    return raw.decode("utf-8", "usagelog-percent")


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


# Values the builder works out and hands to the attribute writer, in this order; the checksum
# it works out last. Every other source names an Exchange attribute.
_WRITTEN_DERIVED = (
    "event_id",
    "user_id",
    "user_id_claimed",
    "query",
    "request_body",
    "response_body",
    "monitored",
)
_DERIVED = frozenset(_WRITTEN_DERIVED) | {"checksum"}

# Writes the record attributes of one event and their checksum texts:
# (attributes.add, exchange, checksum texts by position, *the _WRITTEN_DERIVED values) -> None.
AttributeWriter = Callable[..., None]


def attribute_writer(fields: Iterable[ev.Field]) -> AttributeWriter:
    """The function that writes ``fields`` (record attributes) into a log record.

    Generated from the declaration once per builder, as :mod:`dataclasses` generates
    ``__init__``: one straight line of code per field, with its value's source, its proto
    type and its checksum position written in. A loop over the declaration that looks these
    up for every event costs about a microsecond more per event, in the API's process.
    Empty strings, zeros and false are left out: an absent attribute reads back as its field's
    default (empty, 0, false), and its checksum text is the value's either way. A GET's request
    size and an unmonitored event's flag cost no bytes and no protobuf ``KeyValue``.
    """
    lines = [f"def write(add, x, canon, {', '.join(_WRITTEN_DERIVED)}):"]
    for f in fields:
        if not f.source.isidentifier() or (f.source in _DERIVED and f.source not in _WRITTEN_DERIVED):
            raise ValueError(f"field {f.column}: source {f.source!r} is not an Exchange attribute")
        lines.append(f"    v = {f.source if f.source in _DERIVED else 'x.' + f.source}")
        if f.arrow == "bool":
            kind, text = "bool_value", "'1' if v else '0'"
        elif f.number:
            kind, text = "int_value", "str(v)"
        else:
            kind, text = "string_value", "v"
        write = f"kv = add(); kv.key = {f.attribute!r}; kv.value.{kind} = v"
        lines.append(f"    if v != '': {write}" if kind == "string_value" else f"    if v: {write}")
        if f.checksum is not None:
            lines.append(f"    canon[{f.checksum}] = {text}")
    if len(lines) == 1:
        lines.append("    pass")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<usagelog.event attributes>", "exec"), namespace)
    return namespace["write"]  # type: ignore[no-any-return]


def _position(column: str) -> int:
    position = ev.BY_COLUMN[column].checksum
    if position is None:
        raise ValueError(f"the checksum must cover {column}")
    return position


class EventBuilder:
    def __init__(
        self, settings: Settings, resolver: UserResolver, identity: Identity, version: str = ""
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.monitor = MonitorRules(settings.monitor)
        self.redactor = Redactor(settings.redact_fields)
        self.pseudonym = Pseudonymiser(settings.user_id_hmac_key) if settings.user_id_hmac_key else None
        self.scope = InstrumentationScope(name=ev.SCOPE_NAME, version=version)
        # Every record attribute but the checksum, which is written last.
        self._write_attributes = attribute_writer(f for f in ev.RECORD_FIELDS if f.column != "checksum")
        # Checksum positions of the fields the log record itself carries.
        self._at_timestamp, self._at_trace_id, self._at_span_id = (
            _position(column) for column in ("timestamp", "trace_id", "span_id")
        )
        self.set_identity(identity)

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self.resource = resource_message(identity.attributes)
        # The checksum's texts with the emitter's part, fixed for the process, filled in.
        canon = [""] * len(ev.CHECKSUM_FIELDS)
        for f in ev.RESOURCE_FIELDS:
            if f.checksum is not None:
                canon[f.checksum] = ev.canonical_value(identity.attributes.get(f.attribute, f.default))
        self._canon = canon

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
        x.path, x.query, x.user_agent = wsgi_text(x.path), wsgi_text(x.query), wsgi_text(x.user_agent)
        user_id, claimed = self.resolver.identify(x.user_headers, x.context_users, x.status_code)
        user_id, claimed = _utf8(user_id), _utf8(claimed)
        monitored = self.monitor.matches(user_id, x.route, x.path)
        if self.pseudonym is not None:
            user_id, claimed = self.pseudonym(user_id), self.pseudonym(claimed)
        if settings.client_ip != "full":
            x.client_address = client_address(x.client_address, settings.client_ip)
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
        add = record.attributes.add
        canon = self._canon.copy()
        self._write_attributes(
            add,
            x,
            canon,
            # Unique without a random draw per event: a random per-process prefix and the sequence.
            self.identity.event_id_prefix + f"{x.seq:016x}",
            user_id,
            claimed,
            redactor.redact_query(x.query) if x.query else "",
            request_body,
            response_body,
            monitored,
        )
        canon[self._at_timestamp] = str(x.start_ns)
        if x.trace_id:
            canon[self._at_trace_id] = f"{x.trace_id:032x}"
        if x.span_id:
            canon[self._at_span_id] = f"{x.span_id:016x}"
        kv = add()
        kv.key = ev.CHECKSUM
        kv.value.string_value = ev.checksum_of(canon)
        if capture and x.request_headers:
            headers = redactor.redact_headers((k, wsgi_text(v)) for k, v in x.request_headers)
            set_value(add(), ev.REQUEST_HEADERS, json.dumps(headers, sort_keys=True))
        if x.client_aborted:
            set_value(add(), ev.CLIENT_ABORTED, True)
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
