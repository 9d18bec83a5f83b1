"""The hand-written OTLP encoder, checked against the official ``opentelemetry-proto`` classes."""

from __future__ import annotations

import math

import pytest
from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from usagelog.instrumentation import wire


def parse_any(value: wire.AttrValue) -> AnyValue:
    return AnyValue.FromString(wire.any_value(value))


# -- varints -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
        (2**64 - 1, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    ],
)
def test_varint_boundaries(value: int, encoded: bytes) -> None:
    assert wire.varint(value) == encoded
    decoded, end = _DecodeVarint(encoded, 0)
    assert (decoded, end) == (value, len(encoded))


# -- AnyValue ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "GET", "zoë ☃ 中文 \U0001f600", "x" * 127, "x" * 128, "é" * 100, "y" * 16384, "\x00nul"],
)
def test_string_values_round_trip_including_multibyte_lengths(text: str) -> None:
    parsed = parse_any(text)
    assert parsed.WhichOneof("value") == "string_value"
    assert parsed.string_value == text


def test_long_string_uses_a_multibyte_length_prefix() -> None:
    encoded = wire.any_value("é" * 100)  # 200 bytes of UTF-8
    assert encoded[:3] == b"\x0a\xc8\x01"


@pytest.mark.parametrize("flag", [True, False])
def test_bool_values_round_trip(flag: bool) -> None:
    parsed = parse_any(flag)
    assert parsed.WhichOneof("value") == "bool_value"
    assert parsed.bool_value is flag


@pytest.mark.parametrize(
    "number", [0, 1, 127, 128, 200, 16384, -1, -2, -(2**31), -(2**63), 2**31, 2**62, 2**63 - 1]
)
def test_int_values_round_trip_including_negative_and_large(number: int) -> None:
    parsed = parse_any(number)
    assert parsed.WhichOneof("value") == "int_value"
    assert parsed.int_value == number


@pytest.mark.parametrize("number", [0.0, -0.0, 1.5, -2.25e-300, 1e308, math.inf, -math.inf])
def test_float_values_round_trip(number: float) -> None:
    parsed = parse_any(number)
    assert parsed.WhichOneof("value") == "double_value"
    assert parsed.double_value == number
    assert math.copysign(1, parsed.double_value) == math.copysign(1, number)


def test_nan_round_trips_as_nan() -> None:
    assert math.isnan(parse_any(math.nan).double_value)


def test_any_value_matches_the_official_serialisation() -> None:
    for value, expected in [
        ("héllo", AnyValue(string_value="héllo")),
        (True, AnyValue(bool_value=True)),
        (-7, AnyValue(int_value=-7)),
        (2.5, AnyValue(double_value=2.5)),
    ]:
        assert wire.any_value(value) == expected.SerializeToString()


@pytest.mark.parametrize("bad", [None, b"bytes", [1], {"a": 1}])
def test_unsupported_value_types_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        wire.any_value(bad)  # type: ignore[arg-type]


# -- KeyValue ------------------------------------------------------------------------------------


def test_key_cache_encodes_repeated_key_values_identically() -> None:
    keys = wire.KeyCache()
    first = keys.key_value("http.route", "/users/<id>")
    second = keys.key_value("http.route", "/users/<id>")
    assert first == second
    # Field 6 of LogRecord wrapping one KeyValue.
    record = LogRecord.FromString(first)
    assert len(record.attributes) == 1
    assert record.attributes[0] == KeyValue(key="http.route", value=AnyValue(string_value="/users/<id>"))


def test_key_cache_long_non_ascii_keys() -> None:
    key = "ключ." * 40  # > 127 bytes
    record = LogRecord.FromString(wire.KeyCache().attributes([(key, 1)]))
    assert record.attributes[0].key == key
    assert record.attributes[0].value.int_value == 1


# -- a full request ------------------------------------------------------------------------------

RESOURCE = [
    ("service.name", "orders-api"),
    ("service.instance.id", "3f0e6a0e-0000-4000-8000-000000000001"),
    ("host.name", "hôst-1"),
    ("process.pid", 4321),
    ("sampled", True),
    ("load", 0.75),
]

RECORDS = [
    {
        "time_unix_nano": 1_700_000_000_123_456_789,
        "observed_time_unix_nano": 1_700_000_000_223_456_789,
        "event_name": "usagelog.request",
        "attributes": [
            ("http.request.method", "GET"),
            ("http.response.status_code", 200),
            ("usagelog.monitored", False),
            ("usagelog.duration_ns", 2**40 + 3),
            ("usagelog.request.body", '{"q":"' + "ü" * 300 + '"}'),
            ("score", -1.5),
            ("delta", -42),
        ],
        "trace_id": bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        "span_id": bytes.fromhex("b7ad6b7169203331"),
        "flags": 1,
    },
    {
        "time_unix_nano": 1,
        "observed_time_unix_nano": 2**64 - 1,
        "event_name": "other.event",
        "attributes": [],
        "trace_id": b"",
        "span_id": b"",
        "flags": 0,
    },
    {
        "time_unix_nano": 0,
        "observed_time_unix_nano": 5,
        "event_name": "usagelog.request",
        "attributes": [("user.id", "ユーザー"), ("usagelog.monitored", True)],
        "trace_id": bytes(range(16)),
        "span_id": bytes(range(8, 16)),
        "flags": 0x1FF,  # only the low byte is kept (W3C trace flags)
    },
]


def _encode_records(records: list[dict[str, object]] = RECORDS) -> bytes:
    keys = wire.KeyCache()
    encoded = [
        wire.log_record(
            time_unix_nano=r["time_unix_nano"],  # type: ignore[arg-type]
            observed_time_unix_nano=r["observed_time_unix_nano"],  # type: ignore[arg-type]
            event_name=r["event_name"],  # type: ignore[arg-type]
            encoded_attributes=keys.attributes(r["attributes"]),  # type: ignore[arg-type]
            trace_id=r["trace_id"],  # type: ignore[arg-type]
            span_id=r["span_id"],  # type: ignore[arg-type]
            flags=r["flags"],  # type: ignore[arg-type]
        )
        for r in records
    ]
    resource, scope = wire.resource_prefix(RESOURCE, "usagelog", "1.2.3")
    return wire.export_logs_request(resource, scope, encoded)


def _attr_value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value"))


def test_export_logs_request_parses_with_the_official_classes_field_by_field() -> None:
    request = ExportLogsServiceRequest.FromString(_encode_records())
    assert len(request.resource_logs) == 1
    resource_logs = request.resource_logs[0]
    assert [(kv.key, _attr_value(kv.value)) for kv in resource_logs.resource.attributes] == RESOURCE
    assert [kv.value.WhichOneof("value") for kv in resource_logs.resource.attributes] == [
        "string_value",
        "string_value",
        "string_value",
        "int_value",
        "bool_value",
        "double_value",
    ]
    assert len(resource_logs.scope_logs) == 1
    scope_logs = resource_logs.scope_logs[0]
    assert scope_logs.scope.name == "usagelog"
    assert scope_logs.scope.version == "1.2.3"
    assert len(scope_logs.log_records) == len(RECORDS)
    for parsed, expected in zip(scope_logs.log_records, RECORDS, strict=True):
        assert parsed.time_unix_nano == expected["time_unix_nano"]
        assert parsed.observed_time_unix_nano == expected["observed_time_unix_nano"]
        assert parsed.severity_number == wire.SEVERITY_INFO == 9
        assert parsed.severity_text == "INFO"
        assert parsed.event_name == expected["event_name"]
        assert parsed.trace_id == expected["trace_id"]
        assert parsed.span_id == expected["span_id"]
        assert parsed.flags == expected["flags"] & 0xFF
        assert [(kv.key, _attr_value(kv.value)) for kv in parsed.attributes] == expected["attributes"]
        for kv, (_, value) in zip(parsed.attributes, expected["attributes"], strict=True):
            assert type(_attr_value(kv.value)) is type(value)
        assert not parsed.HasField("body")
        assert parsed.dropped_attributes_count == 0


def test_export_logs_request_is_byte_identical_to_the_official_serialisation() -> None:
    """With no zero-valued fields (which proto3 omits), the official serialiser gives our bytes."""
    ours = _encode_records(RECORDS[:1])
    assert ExportLogsServiceRequest.FromString(ours).SerializeToString(deterministic=True) == ours


def test_empty_request_and_empty_scope_version_parse() -> None:
    resource, scope = wire.resource_prefix([], "usagelog", "")
    request = ExportLogsServiceRequest.FromString(wire.export_logs_request(resource, scope, []))
    assert len(request.resource_logs) == 1
    assert request.resource_logs[0].scope_logs[0].scope.name == "usagelog"
    assert list(request.resource_logs[0].scope_logs[0].log_records) == []
