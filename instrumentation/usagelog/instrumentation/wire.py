"""OTLP protobuf encoding of usage events (``ExportLogsServiceRequest``), written directly.

The request path budget is a few microseconds, and building one generated protobuf message
per attribute costs far more than the event itself, so the background thread writes the
OTLP wire format by hand. Only the handful of field types a usage event uses are supported.
The output is plain OTLP: collectors, Kafka consumers and ``usagelog.ingest.decode`` read it
with the official ``opentelemetry-proto`` classes, and the tests check it against them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

AttrValue = str | bool | int | float

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]

SEVERITY_INFO = 9


def varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, length, payload."""
    n = len(payload)
    return bytes((tag,)) + (_SMALL[n] if n < 128 else varint(n)) + payload


def any_value(value: AttrValue) -> bytes:
    """The bytes of an ``AnyValue`` message."""
    kind = type(value)
    if kind is str:
        return _field(0x0A, value.encode("utf-8"))  # type: ignore[union-attr]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)  # type: ignore[operator]
    if kind is float:
        return b"\x21" + _pack_double(value)
    raise TypeError(f"unsupported attribute value type {kind.__name__}")


class KeyCache:
    """Pre-encoded ``KeyValue.key`` fields: attribute names repeat in every event."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def key_value(self, key: str, value: AttrValue) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = _field(0x0A, key.encode("utf-8"))
            if len(self._keys) < 1024:
                self._keys[key] = encoded
        return _field(0x32, encoded + _field(0x12, any_value(value)))

    def _prefix(self, key: str) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = _field(0x0A, key.encode("utf-8"))
            if len(self._keys) < 1024:
                self._keys[key] = encoded
        return encoded

    # The three helpers below are the hot path: one attribute in one expression when every
    # length fits in a single byte (short keys and values), the general encoder otherwise.
    def str_kv(self, key: str, value: str) -> bytes:
        prefix = self._keys.get(key) or self._prefix(key)
        data = value.encode("utf-8")
        n = len(data)
        body = len(prefix) + n + 4
        if body < 128:
            return b"\x32" + _SMALL[body] + prefix + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n] + data
        return self.key_value(key, value)

    def int_kv(self, key: str, value: int) -> bytes:
        prefix = self._keys.get(key) or self._prefix(key)
        av = b"\x18" + (_SMALL[value] if 0 <= value < 128 else varint(value & 0xFFFFFFFFFFFFFFFF))
        body = len(prefix) + len(av) + 2
        if body < 128:
            return b"\x32" + _SMALL[body] + prefix + b"\x12" + _SMALL[len(av)] + av
        return self.key_value(key, value)

    def bool_kv(self, key: str, value: bool) -> bytes:
        prefix = self._keys.get(key) or self._prefix(key)
        body = len(prefix) + 4
        if body < 128:
            return b"\x32" + _SMALL[body] + prefix + (b"\x12\x02\x10\x01" if value else b"\x12\x02\x10\x00")
        return self.key_value(key, value)

    def attributes(self, attrs: Iterable[tuple[str, AttrValue]]) -> bytes:
        """Repeated ``KeyValue`` at field 6 of ``LogRecord`` (tag 0x32)."""
        kv = self.key_value
        return b"".join([kv(k, v) for k, v in attrs])


def log_record(
    *,
    time_unix_nano: int,
    observed_time_unix_nano: int,
    event_name: str,
    encoded_attributes: bytes,
    trace_id: bytes,
    span_id: bytes,
    flags: int,
) -> bytes:
    """The bytes of one ``LogRecord`` message (attributes already encoded as field 6)."""
    parts = [
        b"\x09" + _pack_fixed64(time_unix_nano),
        b"\x10" + _SMALL[SEVERITY_INFO],
        _field(0x1A, b"INFO"),
        encoded_attributes,
        b"\x45" + _pack_fixed32(flags & 0xFF),
    ]
    if trace_id:
        parts.append(_field(0x4A, trace_id))
    if span_id:
        parts.append(_field(0x52, span_id))
    parts.append(b"\x59" + _pack_fixed64(observed_time_unix_nano))
    parts.append(_field(0x62, event_name.encode("utf-8")))
    return b"".join(parts)


def _plain_attributes(tag: int, attrs: Iterable[tuple[str, AttrValue]]) -> bytes:
    return b"".join(
        _field(tag, _field(0x0A, k.encode("utf-8")) + _field(0x12, any_value(v))) for k, v in attrs
    )


def resource_prefix(
    resource_attrs: Sequence[tuple[str, AttrValue]], scope_name: str, scope_version: str
) -> tuple[bytes, bytes]:
    """Encoded ``Resource`` and ``InstrumentationScope`` for a process (computed once)."""
    resource = _plain_attributes(0x0A, resource_attrs)
    scope = _field(0x0A, scope_name.encode()) + _field(0x12, scope_version.encode())
    return resource, scope


def export_logs_request(resource: bytes, scope: bytes, records: Sequence[bytes]) -> bytes:
    """The bytes of an ``ExportLogsServiceRequest`` holding ``records`` under one resource and scope."""
    scope_logs = _field(0x0A, scope) + b"".join(_field(0x12, r) for r in records)
    resource_logs = _field(0x0A, resource) + _field(0x12, scope_logs)
    return _field(0x0A, resource_logs)
