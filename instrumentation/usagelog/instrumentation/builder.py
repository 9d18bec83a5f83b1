"""Turns captured exchanges into usage events, off the request path, as OTLP messages.

Everything costly happens here, in the background thread: resolving the user ID from
headers, redaction, the monitored decision, body rendering, the event ID, the checksum and
the encoding. A batch is an ``ExportLogsServiceRequest`` holding one OTLP ``LogRecord`` per
event; which attributes they carry, and what the checksum covers in which order, comes from
:data:`usagelog.instrumentation.event.FIELDS`.

The resource and scope are ``opentelemetry-proto`` messages serialised once per process; each
event's record is written straight into the batch's bytes (:mod:`usagelog.instrumentation.wire`),
which costs the API's process about a third less per event than filling ``LogRecord`` messages and
gives the same bytes.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from . import event as ev
from . import wire
from .config import Settings
from .exchange import Exchange
from .identity import AttrValue, Identity
from .monitor import MonitorRules
from .privacy import Pseudonymiser, client_address
from .redact import Redactor
from .userid import UserResolver

SEVERITY_INFO = 9
# A usage event's record up to its attributes, after its time: severity 9, "INFO".
_SEVERITY = wire.SEVERITY_NUMBER + wire.varint(SEVERITY_INFO) + wire.field(wire.SEVERITY_TEXT, b"INFO")
_EVENT_NAME = wire.field(wire.EVENT_NAME, ev.EVENT_NAME.encode("utf-8"))
# The record's fixed-width fields, as names of this module: read once per event each.
_TIME, _FLAGS, _TRACE_ID, _SPAN_ID = wire.TIME_UNIX_NANO, wire.FLAGS, wire.TRACE_ID, wire.SPAN_ID
_OBSERVED = wire.OBSERVED_TIME_UNIX_NANO
_fixed64, _fixed32, _time_ns = wire.fixed64, wire.fixed32, time.time_ns


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

# Appends the record attributes of one event to a bytearray and fills in their checksum texts:
# (out, exchange, checksum texts by position, *the _WRITTEN_DERIVED values) -> None.
AttributeWriter = Callable[..., None]


def attribute_writer(fields: Iterable[ev.Field]) -> AttributeWriter:
    """The function that writes ``fields`` (record attributes) into a log record's bytes.

    Generated from the declaration once per builder, as :mod:`dataclasses` generates
    ``__init__``: one straight line of code per field, with its value's source, its
    attribute's precomputed heads (:class:`usagelog.instrumentation.wire.Key`) and its checksum
    position written in. A loop over the declaration that looks these up for every event
    costs about a microsecond more per event, in the API's process.
    Empty strings, zeros and false are left out: an absent attribute reads back as its field's
    default (empty, 0, false), and its checksum text is the value's either way. A GET's request
    size and an unmonitored event's flag cost no bytes.
    """
    lines = [f"def write(out, x, canon, {', '.join(_WRITTEN_DERIVED)}):"]
    namespace: dict[str, Any] = {"SMALL": wire.SMALL}
    for i, f in enumerate(fields):
        if not f.source.isidentifier() or (f.source in _DERIVED and f.source not in _WRITTEN_DERIVED):
            raise ValueError(f"field {f.column}: source {f.source!r} is not an Exchange attribute")
        key = namespace[f"key{i}"] = wire.Key(f.attribute)
        lines.append(f"    v = {f.source if f.source in _DERIVED else 'x.' + f.source}")
        if f.arrow == "bool":
            namespace[f"true{i}"] = key.true
            lines.append(f"    if v: out += true{i}")
            text = "'1' if v else '0'"
        elif f.number:
            # Statuses and most sizes take one or two varint bytes, appended here as they are.
            namespace[f"int{i}"], namespace[f"int2_{i}"] = key.int_heads[1], key.int_heads[2]
            lines += [
                "    if v:",
                f"        if 0 < v < 128: out += int{i}; out.append(v)",
                f"        elif 0 < v < 16384: out += int2_{i}; out.append(v & 127 | 128); out.append(v >> 7)",
                f"        else: out += key{i}.integer(v)",
            ]
            text = "str(v)"
        elif f.arrow == "string":
            namespace[f"heads{i}"] = key.string_heads
            lines += [
                "    if v != '':",
                "        b = v.encode('utf-8')",
                "        n = len(b)",
                f"        out += heads{i}[n] if n < SMALL else key{i}.string_head(n)",
                "        out += b",
            ]
            text = "v"
        else:
            raise ValueError(f"field {f.column}: a record attribute cannot be of type {f.arrow}")
        if f.checksum is not None:
            lines.append(f"    canon[{f.checksum}] = {text}")
    if len(lines) == 1:
        lines.append("    pass")
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
        # The settings fill() asks about every event, answered once.
        self._client_ip = "" if settings.client_ip == "full" else settings.client_ip
        self._capture_all = settings.capture_body == "all"
        self._capture_monitored = settings.capture_body == "monitored"
        self._scope = wire.field(
            wire.FIRST, InstrumentationScope(name=ev.SCOPE_NAME, version=version).SerializeToString()
        )
        # Every record attribute but the checksum, which is written last.
        self._write_attributes = attribute_writer(f for f in ev.RECORD_FIELDS if f.column != "checksum")
        self._checksum_key = wire.Key(ev.CHECKSUM)
        self._headers_key = wire.Key(ev.REQUEST_HEADERS)
        self._aborted = wire.Key(ev.CLIENT_ABORTED).true
        # Checksum positions of the fields the log record itself carries.
        self._at_timestamp, self._at_trace_id, self._at_span_id = (
            _position(column) for column in ("timestamp", "trace_id", "span_id")
        )
        self.set_identity(identity)

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self._resource = wire.field(wire.FIRST, resource_message(identity.attributes).SerializeToString())
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
        scope_logs = bytearray(self._scope)
        count = 0
        for exchange in exchanges:
            start = len(scope_logs)
            try:
                self.fill(scope_logs, exchange)
            except Exception:
                del scope_logs[start:]
                if on_error is None:
                    raise
                on_error(exchange)
                continue
            # The record's tag and length go before it, once its length is known.
            scope_logs[start:start] = wire.SECOND + wire.varint(len(scope_logs) - start)
            count += 1
        resource_logs = self._resource + wire.field(wire.SECOND, scope_logs)
        return wire.field(wire.FIRST, resource_logs), count

    def fill(self, out: bytearray, x: Exchange) -> None:
        """Append the usage event of one exchange to ``out``: a ``LogRecord``'s fields, in
        field number order."""
        redactor = self.redactor
        if not x.path.isascii():
            x.path = wsgi_text(x.path)
        if not x.query.isascii():
            x.query = wsgi_text(x.query)
        if not x.user_agent.isascii():
            x.user_agent = wsgi_text(x.user_agent)
        user_id, claimed = self.resolver.identify(x.user_headers, x.context_users, x.status_code)
        if not user_id.isascii():
            user_id = _utf8(user_id)
        if not claimed.isascii():
            claimed = _utf8(claimed)
        monitored = self.monitor.active and self.monitor.matches(user_id, x.route, x.path)
        if self.pseudonym is not None:
            user_id, claimed = self.pseudonym(user_id), self.pseudonym(claimed)
        if self._client_ip:
            x.client_address = client_address(x.client_address, self._client_ip)
        capture = self._capture_all or (monitored and self._capture_monitored)
        request_body = response_body = ""
        if capture:
            limit = self.settings.body_max_bytes
            if x.request_body is not None:
                request_body = redactor.body(
                    bytes(x.request_body), x.request_content_type, x.request_size, limit
                )
            if x.response_body is not None:
                response_body = redactor.body(
                    b"".join(x.response_body), x.response_content_type, x.response_size, limit
                )
            request_body, response_body = _utf8(request_body), _utf8(response_body)
        if x.start_ns:
            out += _TIME
            out += _fixed64(x.start_ns)
        out += _SEVERITY
        canon = self._canon.copy()
        self._write_attributes(
            out,
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
        out += self._checksum_key.string(ev.checksum_of(canon))
        if capture and x.request_headers:
            headers = redactor.redact_headers((k, wsgi_text(v)) for k, v in x.request_headers)
            out += self._headers_key.string(json.dumps(headers, sort_keys=True))
        if x.client_aborted:
            out += self._aborted
        flags = x.trace_flags & 0xFF
        if flags:
            out += _FLAGS
            out += _fixed32(flags)
        if x.trace_id:
            out += _TRACE_ID
            out += x.trace_id.to_bytes(16, "big")
        if x.span_id:
            out += _SPAN_ID
            out += x.span_id.to_bytes(8, "big")
        out += _OBSERVED
        out += _fixed64(_time_ns())
        out += _EVENT_NAME
