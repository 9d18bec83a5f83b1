"""Decoding OTLP payloads into ``usage_events`` rows: real events in, verified rows or reasons out."""

from __future__ import annotations

import base64
import json
import random
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from usagelog.ingest.decode import COLUMNS, Decoded, DecodeError, decode_payload
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.builder import EventBuilder, set_value
from usagelog.instrumentation.config import load_settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import AttrValue, Identity
from usagelog.instrumentation.userid import UserResolver

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
START_NS = 1_700_000_000_123_456_789

RESOURCE: dict[str, AttrValue] = {
    ev.SERVICE_NAME: "orders-api",
    ev.SERVICE_INSTANCE_ID: "6c1f6f0e-1111-4222-8333-444455556666",
    ev.HOST_NAME: "web-1",
    ev.HOST_ID: "machine-abc",
    ev.PROCESS_PID: 4321,
    ev.CLUSTER: "prod-eu",
    ev.REGION: "eu-west-1",
    "deployment.environment": "production",
    "telemetry.sdk.name": "opentelemetry",
}


def bearer(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"Bearer eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


@pytest.fixture
def builder() -> EventBuilder:
    settings = load_settings(
        {}, capture_body="all", monitor=["user:alice"], user_id_from=["jwt:sub", "basic"]
    )
    return EventBuilder(settings, UserResolver(settings.user_id_from), Identity(dict(RESOURCE)), "0.1.0")


def make_exchange(**changes: Any) -> Exchange:
    x = Exchange({}, seq=7)
    x.start_ns = START_NS
    x.duration_ns = 1_234_567
    x.method = "POST"
    x.route = "/orders/<int:order_id>"
    x.path = "/orders/42"
    x.query = "page=2&api_key=K-SECRET"
    x.status = "201 CREATED"
    x.status_code = 201
    x.client_address = "203.0.113.9"
    x.user_agent = "curl/8.5.0"
    x.request_body = bytearray(b'{"item": "book", "card_number": "4111111111111111"}')
    x.request_content_type = "application/json"
    x.request_size = len(x.request_body)
    x.response_body = [b'{"id": 42, ', b'"token": "T-SECRET"}']
    x.response_content_type = "application/json"
    x.response_size = sum(len(c) for c in x.response_body)
    x.request_headers = [("Authorization", "Bearer x"), ("X-Request-Id", "req-1")]
    x.user_headers = {"HTTP_AUTHORIZATION": bearer({"sub": "alice"})}
    x.trace_id, x.span_id, x.trace_flags = TRACE_ID, SPAN_ID, 1
    for name, value in changes.items():
        setattr(x, name, value)
    return x


def payload_of(
    builder: EventBuilder, *exchanges: Exchange, extra_records: tuple[LogRecord, ...] = ()
) -> bytes:
    payload, count = builder.encode_batch(exchanges)
    assert count == len(exchanges)
    if not extra_records:
        return payload
    request = ExportLogsServiceRequest.FromString(payload)
    request.resource_logs[0].scope_logs[0].log_records.extend(extra_records)
    return request.SerializeToString()


def rewrite(payload: bytes, change: Any) -> bytes:
    """Parse with the official classes, let ``change`` edit the first log record, re-serialise."""
    request = ExportLogsServiceRequest.FromString(payload)
    change(request.resource_logs[0].scope_logs[0].log_records[0], request)
    return request.SerializeToString()


def set_attribute(record: Any, key: str, **value: Any) -> None:
    for kv in record.attributes:
        if kv.key == key:
            kv.value.Clear()
            for field_name, v in value.items():
                setattr(kv.value, field_name, v)
            return
    raise KeyError(key)


def checksum_of(row: dict[str, Any]) -> str:
    return ev.checksum(row)


# -- a real event --------------------------------------------------------------------------------


def test_real_event_decodes_to_one_row_with_every_column(builder: EventBuilder) -> None:
    before = time.time_ns()
    decoded = decode_payload(payload_of(builder, make_exchange()))
    assert decoded.rejected == [] and decoded.ignored == 0
    (row,) = decoded.rows
    assert set(row) == set(COLUMNS)
    assert len(row["event_id"]) == 32 and int(row["event_id"], 16) >= 0
    assert row["timestamp"] == START_NS
    assert before <= row["observed_timestamp"] <= time.time_ns()
    assert row["duration_ns"] == 1_234_567
    assert row["user_id"] == "alice"
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert row["span_id"] == "b7ad6b7169203331"
    assert row["service_name"] == "orders-api"
    assert row["service_instance_id"] == "6c1f6f0e-1111-4222-8333-444455556666"
    assert row["host_name"] == "web-1"
    assert row["host_id"] == "machine-abc"
    assert row["process_pid"] == 4321
    assert row["cluster"] == "prod-eu"
    assert row["region"] == "eu-west-1"
    assert row["method"] == "POST"
    assert row["route"] == "/orders/<int:order_id>"
    assert row["path"] == "/orders/42"
    assert row["query"] == "page=2&api_key=[REDACTED]"
    assert row["status_code"] == 201
    assert row["error_type"] == ""
    assert row["client_address"] == "203.0.113.9"
    assert row["user_agent"] == "curl/8.5.0"
    assert json.loads(row["request_body"]) == {"item": "book", "card_number": "[REDACTED]"}
    assert json.loads(row["response_body"]) == {"id": 42, "token": "[REDACTED]"}
    assert row["request_size"] == len(b'{"item": "book", "card_number": "4111111111111111"}')
    assert row["response_size"] == len(b'{"id": 42, "token": "T-SECRET"}')
    assert row["seq"] == 7
    assert row["monitored"] is True
    assert row["checksum"] == checksum_of(row)
    assert row["attributes"] == {
        ev.REQUEST_HEADERS: '{"x-request-id": "req-1"}',
        "resource.deployment.environment": "production",
    }


def test_event_without_trace_user_or_bodies_decodes_with_empty_values(builder: EventBuilder) -> None:
    x = make_exchange(
        trace_id=0,
        span_id=0,
        trace_flags=0,
        user_headers={},
        request_body=None,
        response_body=None,
        request_headers=None,
        query="",
        status_code=500,
        error_type="builtins.ValueError",
        client_aborted=True,
    )
    (row,) = decode_payload(payload_of(builder, x)).rows
    assert row["trace_id"] == "" and row["span_id"] == ""
    assert row["user_id"] == "" and row["monitored"] is False
    assert row["request_body"] == "" and row["response_body"] == ""
    assert row["query"] == ""
    assert row["status_code"] == 500 and row["error_type"] == "builtins.ValueError"
    assert row["attributes"] == {ev.CLIENT_ABORTED: "true", "resource.deployment.environment": "production"}


def test_zeros_and_false_are_left_out_of_the_record_and_read_back(builder: EventBuilder) -> None:
    x = make_exchange(
        method="GET", request_body=None, request_size=0, response_body=None, response_size=0, user_headers={}
    )
    record = (
        ExportLogsServiceRequest.FromString(payload_of(builder, x))
        .resource_logs[0]
        .scope_logs[0]
        .log_records[0]
    )
    keys = {kv.key for kv in record.attributes}
    assert {ev.BY_COLUMN[c].attribute for c in ("request_size", "response_size", "monitored")}.isdisjoint(
        keys
    )
    assert ev.BY_COLUMN["status_code"].attribute in keys
    decoded = decode_payload(payload_of(builder, x))
    assert decoded.rejected == []  # the checksum covers the values, written or not
    (row,) = decoded.rows
    assert (row["request_size"], row["response_size"], row["monitored"]) == (0, 0, False)


def test_several_events_in_one_payload_each_get_their_own_row(builder: EventBuilder) -> None:
    exchanges = [make_exchange(seq=n, path=f"/orders/{n}") for n in range(1, 6)]
    rows = decode_payload(payload_of(builder, *exchanges)).rows
    assert [(r["seq"], r["path"]) for r in rows] == [(n, f"/orders/{n}") for n in range(1, 6)]
    assert len({r["event_id"] for r in rows}) == 5


def test_other_log_records_are_ignored_and_counted(builder: EventBuilder) -> None:
    other = LogRecord(time_unix_nano=1, observed_time_unix_nano=2, event_name="app.audit")
    set_value(other.attributes.add(), ev.EVENT_ID, "not-a-usage-event")
    unnamed = LogRecord(time_unix_nano=1, observed_time_unix_nano=2)
    decoded = decode_payload(payload_of(builder, make_exchange(), extra_records=(other, unnamed)))
    assert len(decoded.rows) == 1
    assert decoded.ignored == 2
    assert decoded.rejected == []


def test_empty_payload_has_no_rows() -> None:
    decoded = decode_payload(b"")
    assert decoded == Decoded()


# -- rejection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (ev.STATUS, {"int_value": 500}),
        (ev.USER_ID, {"string_value": "mallory"}),
        (ev.MONITORED, {"bool_value": False}),
        (ev.QUERY, {"string_value": "page=3&api_key=[REDACTED]"}),
        (ev.DURATION_NS, {"int_value": 1}),
        (ev.SEQ, {"int_value": 8}),
    ],
)
def test_tampered_attribute_is_rejected_as_checksum_mismatch(
    builder: EventBuilder, key: str, value: dict[str, Any]
) -> None:
    payload = payload_of(builder, make_exchange())
    (original,) = decode_payload(payload).rows
    decoded = decode_payload(rewrite(payload, lambda rec, _: set_attribute(rec, key, **value)))
    assert decoded.rows == []
    (rejected,) = decoded.rejected
    assert rejected.reason.startswith("checksum mismatch")
    assert original["checksum"] in rejected.reason  # what the event claimed
    assert rejected.event_id == original["event_id"]
    assert rejected.detail["checksum"] == original["checksum"]


def test_tampered_timestamp_trace_or_resource_is_rejected(builder: EventBuilder) -> None:
    payload = payload_of(builder, make_exchange())

    def bump_time(rec: Any, _: Any) -> None:
        rec.time_unix_nano += 1

    def other_trace(rec: Any, _: Any) -> None:
        rec.trace_id = bytes(16 * [1])

    def other_service(_: Any, request: Any) -> None:
        for kv in request.resource_logs[0].resource.attributes:
            if kv.key == ev.SERVICE_NAME:
                kv.value.string_value = "impostor"

    for change in (bump_time, other_trace, other_service):
        decoded = decode_payload(rewrite(payload, change))
        assert decoded.rows == []
        assert decoded.rejected[0].reason.startswith("checksum mismatch"), change.__name__


def test_missing_event_id_is_rejected(builder: EventBuilder) -> None:
    def drop_event_id(rec: Any, _: Any) -> None:
        keep = [kv for kv in rec.attributes if kv.key != ev.EVENT_ID]
        del rec.attributes[:]
        rec.attributes.extend(keep)

    decoded = decode_payload(rewrite(payload_of(builder, make_exchange()), drop_event_id))
    assert decoded.rows == []
    (rejected,) = decoded.rejected
    assert rejected.reason == "usage event without usagelog.event_id"
    assert rejected.event_id == ""


def test_non_numeric_numeric_field_is_rejected(builder: EventBuilder) -> None:
    payload = rewrite(
        payload_of(builder, make_exchange()), lambda rec, _: set_attribute(rec, ev.STATUS, string_value="OK")
    )
    (rejected,) = decode_payload(payload).rejected
    assert rejected.reason == "usage event with a non-numeric numeric field"


def test_one_bad_event_does_not_reject_its_neighbours(builder: EventBuilder) -> None:
    payload = payload_of(builder, make_exchange(seq=1), make_exchange(seq=2), make_exchange(seq=3))
    request = ExportLogsServiceRequest.FromString(payload)
    set_attribute(request.resource_logs[0].scope_logs[0].log_records[1], ev.STATUS, int_value=418)
    decoded = decode_payload(request.SerializeToString())
    assert [r["seq"] for r in decoded.rows] == [1, 3]
    assert len(decoded.rejected) == 1


@pytest.mark.parametrize("column_attr", [ev.STATUS, ev.DURATION_NS, ev.SEQ])
def test_infinite_double_in_a_numeric_field_is_rejected_not_raised(
    builder: EventBuilder, column_attr: str
) -> None:
    payload = rewrite(
        payload_of(builder, make_exchange()),
        lambda rec, _: set_attribute(rec, column_attr, double_value=float("inf")),
    )
    decoded = decode_payload(payload)
    assert decoded.rows == []
    assert decoded.rejected[0].reason == "usage event with a non-numeric numeric field"


def test_event_of_a_client_with_a_lone_surrogate_in_its_jwt_subject_is_still_recorded(
    builder: EventBuilder,
) -> None:
    body = base64.urlsafe_b64encode(b'{"sub": "\\ud800mallory"}').decode().rstrip("=")
    x = make_exchange(user_headers={"HTTP_AUTHORIZATION": f"Bearer h.{body}.s"})
    (row,) = decode_payload(payload_of(builder, x)).rows
    assert "mallory" in row["user_id"]


# -- not OTLP: errors and fuzzing ----------------------------------------------------------------


def _decode_or_error(payload: bytes) -> Decoded | None:
    """``decode_payload`` may return or raise ``DecodeError``; anything else fails the test."""
    try:
        return decode_payload(payload)
    except DecodeError:
        return None


def test_invalid_protobuf_raises_decode_error() -> None:
    for payload in (b"\xff", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\x0f", b"not a protobuf message at all"):
        with pytest.raises(DecodeError, match="not an OTLP logs payload"):
            decode_payload(payload)
    assert issubclass(DecodeError, ValueError)


def test_random_bytes_raise_decode_error_or_give_no_rows() -> None:
    rng = random.Random(1234)
    errors = 0
    for _ in range(300):
        payload = rng.randbytes(rng.randrange(1, 200))
        decoded = _decode_or_error(payload)
        if decoded is None:
            errors += 1
        else:
            assert decoded.rows == []
    assert errors > 200  # most random bytes are not valid protobuf at all


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:
        del data[rng.randrange(1, len(data)) :]
    elif kind == 3:
        pos = rng.randrange(len(data))
        data[pos:pos] = rng.randbytes(rng.randrange(1, 8))
    else:
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 16)]
    return bytes(data)


def test_fuzzed_payloads_only_raise_decode_error_and_rows_always_verify(builder: EventBuilder) -> None:
    """Flipped, overwritten, inserted, deleted and truncated bytes: never a crash, never a bad row."""
    rng = random.Random(987654)
    valid = payload_of(builder, make_exchange(seq=1), make_exchange(seq=2, user_headers={}))
    outcomes = {"error": 0, "rows": 0, "rejected": 0}
    for n in range(2000):
        payload = _mutate(rng, valid) if n % 4 else rng.randbytes(rng.randrange(0, 400))
        decoded = _decode_or_error(payload)
        if decoded is None:
            outcomes["error"] += 1
            continue
        assert isinstance(decoded, Decoded)
        for row in decoded.rows:
            assert row["event_id"]
            assert row["checksum"] == checksum_of(row)
            outcomes["rows"] += 1
        outcomes["rejected"] += len(decoded.rejected)
    # The fuzzer reached every outcome, so the loop above tested something.
    assert all(count > 0 for count in outcomes.values()), outcomes
