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
# A record's tag and length by its length, as records are met (bodies off: a few hundred bytes).
RECORD_HEADS_UP_TO = 4096
_RECORD_HEADS: dict[int, bytes] = {}


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


# Values the builder works out and hands to the attribute writer, in this order. Every other
# source names an Exchange attribute; the writer works the checksum out itself, last.
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
SEPARATOR = ev.CHECKSUM_SEPARATOR

# The log record's own fields the checksum covers, and the text of each (an Exchange attribute).
_LOG_TEXTS = {
    "timestamp": "str(x.start_ns)",
    "trace_id": "f'{x.trace_id:032x}' if x.trace_id else ''",
    "span_id": "f'{x.span_id:016x}' if x.span_id else ''",
}

REMEMBERED = 512  # encodings of a repeating attribute's values kept, at most (then forgotten, all)


def _remembered(key: wire.Key) -> tuple[dict[str, bytes], Callable[[str], bytes]]:
    """A repeating attribute's encodings by value, and the function that encodes a value not
    there yet and keeps it. Request threads writing a backlog batch may use them at the same
    time as the background thread: a value is encoded the same whoever stores it."""
    known: dict[str, bytes] = {}

    def remember(value: str) -> bytes:
        encoded = key.string(value)
        if len(known) >= REMEMBERED:
            known.clear()
        known[value] = encoded
        return encoded

    return known, remember


# Appends the record attributes of one event, its checksum last, to a bytearray:
# (out, exchange, *the _WRITTEN_DERIVED values) -> None.
AttributeWriter = Callable[..., None]


def attribute_writer(fields: Iterable[ev.Field], resource_texts: dict[int, str]) -> AttributeWriter:
    """The function that writes ``fields`` (record attributes) into a log record's bytes, and
    after them the checksum attribute.

    Generated from the declaration once per builder and process identity, as
    :mod:`dataclasses` generates ``__init__``: one straight line of code per field, with its
    value's source and its attribute's precomputed heads
    (:class:`usagelog.instrumentation.wire.Key`) written in. Each field's checksum text is a
    local variable, and the checksum's text one ``join`` of them in checksum order, with the
    emitter's texts (``resource_texts``, by position: fixed for the process) written in as
    constants. A loop over the declaration that looks these up for every event costs about a
    microsecond more per event, in the API's process.
    Empty strings, zeros and false are left out: an absent attribute reads back as its field's
    default (empty, 0, false), and its checksum text is the value's either way. A GET's request
    size and an unmonitored event's flag cost no bytes.
    """
    lines = [f"def write(out, x, {', '.join(_WRITTEN_DERIVED)}):"]
    namespace: dict[str, Any] = {"SMALL": wire.SMALL, "checksum_of_joined": ev.checksum_of_joined}
    texts: dict[int, str] = {}  # checksum position -> the expression of its text
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
            # Durations and sequence numbers take three or four: appended here too.
            for length in (1, 2, 3, 4):
                namespace[f"int{length}_{i}"] = key.int_heads[length]
            lines += [
                "    if v:",
                f"        if 0 < v < 128: out += int1_{i}; out.append(v)",
                f"        elif 0 < v < 16384: out += int2_{i}; out.append(v & 127 | 128); out.append(v >> 7)",
                f"        elif 0 < v < 2097152: out += int3_{i}; out.append(v & 127 | 128); "
                "out.append(v >> 7 & 127 | 128); out.append(v >> 14)",
                f"        elif 0 < v < 268435456: out += int4_{i}; "
                "out += bytes((v & 127 | 128, v >> 7 & 127 | 128, v >> 14 & 127 | 128, v >> 21))",
                f"        else: out += key{i}.integer(v)",
            ]
            text = "str(v)"
        elif f.arrow == "string" and f.repeats:
            namespace[f"known{i}"], namespace[f"remember{i}"] = _remembered(key)
            lines += [
                "    if v != '':",
                f"        e = known{i}.get(v)",
                f"        out += remember{i}(v) if e is None else e",
            ]
            text = "v"
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
            lines.append(f"    t{f.checksum} = {text}")
            texts[f.checksum] = f"t{f.checksum}"
    for column, expression in _LOG_TEXTS.items():
        position = ev.BY_COLUMN[column].checksum
        if position is None:
            raise ValueError(f"the checksum must cover {column}")
        lines.append(f"    t{position} = {expression}")
        texts[position] = f"t{position}"
    # In checksum order; the emitter's neighbouring texts joined once, here.
    parts: list[str] = []
    run: list[str] = []
    for position in range(len(ev.CHECKSUM_FIELDS)):
        if position in resource_texts:
            run.append(resource_texts[position])
            continue
        if run:
            parts.append(repr(SEPARATOR.join(run)))
            run = []
        if position not in texts:
            raise ValueError(f"checksum position {position}: no field of the record or the resource")
        parts.append(texts[position])
    if run:
        parts.append(repr(SEPARATOR.join(run)))
    # The checksum is 32 hex digits: its head is fixed.
    namespace["checksum_head"] = wire.Key(ev.CHECKSUM).string_head(ev.CHECKSUM_HEX_DIGITS)
    lines += [
        f"    text = {SEPARATOR!r}.join(({', '.join(parts)},))",
        "    out += checksum_head",
        "    out += checksum_of_joined(text).encode('ascii')",
    ]
    exec(compile("\n".join(lines), "<usagelog.event attributes>", "exec"), namespace)
    return namespace["write"]  # type: ignore[no-any-return]


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
        self._headers_key = wire.Key(ev.REQUEST_HEADERS)
        self._aborted = wire.Key(ev.CLIENT_ABORTED).true
        self.set_identity(identity)

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self._resource = wire.field(wire.FIRST, resource_message(identity.attributes).SerializeToString())
        # The checksum's texts of the emitter, fixed for the process, written into the writer.
        resource_texts = {
            f.checksum: ev.canonical_value(identity.attributes.get(f.attribute, f.default))
            for f in ev.RESOURCE_FIELDS
            if f.checksum is not None
        }
        # Every record attribute, the checksum written last.
        self._write_attributes = attribute_writer(
            (f for f in ev.RECORD_FIELDS if f.column != "checksum"), resource_texts
        )

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
            n = len(scope_logs) - start
            head = _RECORD_HEADS.get(n)
            if head is None:
                head = wire.SECOND + wire.varint(n)
                if n < RECORD_HEADS_UP_TO:
                    _RECORD_HEADS[n] = head
            scope_logs[start:start] = head
            count += 1
        # ExportLogsServiceRequest{ResourceLogs{resource, ScopeLogs}}: the heads worked out from
        # the lengths, and the batch's bytes copied once.
        scope_head = wire.SECOND + wire.varint(len(scope_logs))
        inner = len(self._resource) + len(scope_head) + len(scope_logs)
        head = wire.FIRST + wire.varint(inner) + self._resource + scope_head
        return b"".join((head, scope_logs)), count

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
        self._write_attributes(
            out,
            x,
            # Unique without a random draw per event: a random per-process prefix and the sequence.
            self.identity.event_id_prefix + f"{x.seq:016x}",
            user_id,
            claimed,
            redactor.redact_query(x.query) if x.query else "",
            request_body,
            response_body,
            monitored,
        )
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
