"""The usage events' bytes, written without the protobuf classes, are the bytes those classes
write: attribute by attribute at every varint boundary, and batch by batch for generated
exchanges (parsed with the official classes and serialised again, nothing changes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.ingest.test_decode import make_exchange
from usagelog.ingest.decode import decode_payload
from usagelog.instrumentation import event as ev
from usagelog.instrumentation import wire
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import load_settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.userid import UserResolver

# Lengths and numbers on either side of each varint length.
LENGTHS = (0, 1, 126, 127, 128, 129, 16_383, 16_384, 70_000)
NUMBERS = (1, 127, 128, 300, 16_383, 16_384, 2**21, 2**35, 2**56, 2**63 - 1, 2**64 - 1, -1, -(2**63))


def _official(key: str, **value: Any) -> bytes:
    return LogRecord(attributes=[KeyValue(key=key, value=AnyValue(**value))]).SerializeToString()


@pytest.mark.parametrize("key", [ev.PATH, "k", "ключ" * 40])
def test_attributes_are_the_bytes_the_protobuf_classes_write(key: str) -> None:
    attribute = wire.Key(key)
    for n in LENGTHS:
        text = ("é" * n)[: n // 2] + "x" * (n - n // 2)
        assert attribute.string(text) == _official(key, string_value=text), n
    for number in NUMBERS:
        signed = number - 2**64 if number >= 2**63 else number  # int_value is int64
        assert attribute.integer(number) == _official(key, int_value=signed), number
    assert attribute.true == _official(key, bool_value=True)


def test_numbers_outside_64_bits_are_refused() -> None:
    for number in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match="does not fit"):
            wire.varint(number)


def _builder(capture_body: str = "all") -> EventBuilder:
    config = load_settings({}, capture_body=capture_body, user_id_from=["jwt:sub", "basic"])
    identity = Identity({ev.SERVICE_NAME: "orders-api", ev.SERVICE_INSTANCE_ID: "i-1", ev.PROCESS_PID: 7})
    return EventBuilder(config, UserResolver(config.user_id_from), identity, "0.1.0")


BUILDERS = {mode: _builder(mode) for mode in ("all", "none")}
text = st.text(max_size=300)
number = st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def exchanges(draw: Any) -> Exchange:
    return make_exchange(
        seq=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        start_ns=draw(number),
        duration_ns=draw(number),
        method=draw(st.sampled_from(["GET", "POST", ""])),
        route=draw(text),
        path=draw(text),
        query=draw(text),
        status_code=draw(st.integers(min_value=0, max_value=999)),
        error_type=draw(text),
        client_address=draw(text),
        user_agent=draw(text),
        request_size=draw(number),
        response_size=draw(number),
        response_body=[draw(st.binary(max_size=400))],
        trace_id=draw(st.integers(min_value=0, max_value=2**128 - 1)),
        span_id=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        trace_flags=draw(st.integers(min_value=0, max_value=255)),
        client_aborted=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(exchanges(), max_size=6), st.sampled_from(sorted(BUILDERS)))
def test_a_batch_is_what_the_protobuf_classes_write_for_what_it_holds(
    batch: list[Exchange], capture_body: str
) -> None:
    expected = [(x.seq, x.start_ns, x.duration_ns, x.response_size, x.trace_id, x.span_id) for x in batch]
    failed: list[Exchange] = []
    payload, count = BUILDERS[capture_body].encode_batch(batch, failed.append)
    request = ExportLogsServiceRequest.FromString(payload)
    assert request.SerializeToString() == payload
    records = request.resource_logs[0].scope_logs[0].log_records
    assert count == len(records) == len(batch) - len(failed)
    kept = [(e, x) for e, x in zip(expected, batch, strict=True) if x not in failed]
    for ((seq, start, duration, size, trace_id, span_id), x), record in zip(kept, records, strict=True):
        attributes = {kv.key: kv.value for kv in record.attributes}
        # Values whose encodings the builder keeps: each the exchange's own.
        for f in ev.RECORD_FIELDS:
            if f.repeats and f.source != "user_id":
                written = attributes[f.attribute].string_value if f.attribute in attributes else ""
                assert written == getattr(x, f.source), f.column
        assert attributes[ev.SEQ].int_value == seq
        assert record.time_unix_nano == start
        assert (attributes[ev.DURATION_NS].int_value if duration else 0) == duration
        assert (attributes[ev.RESPONSE_SIZE].int_value if size else 0) == size
        assert int.from_bytes(record.trace_id or b"\0", "big") == trace_id
        assert int.from_bytes(record.span_id or b"\0", "big") == span_id
        assert record.event_name == ev.EVENT_NAME


def test_an_exchange_that_fails_midway_leaves_no_bytes_in_the_batch() -> None:
    # A route that cannot be UTF-8 fails after the attributes before it were written.
    batch = [make_exchange(seq=1), make_exchange(seq=2, route="/bad/\ud800"), make_exchange(seq=3)]
    failed: list[Exchange] = []
    payload, count = BUILDERS["none"].encode_batch(batch, failed.append)
    records = ExportLogsServiceRequest.FromString(payload).resource_logs[0].scope_logs[0].log_records
    assert count == 2 and failed == [batch[1]]
    assert [{kv.key: kv.value for kv in r.attributes}[ev.SEQ].int_value for r in records] == [1, 3]
    # Bytes left behind would parse as unknown fields of the ScopeLogs; none are there.
    clean, _ = BUILDERS["none"].encode_batch([make_exchange(seq=1), make_exchange(seq=3)])
    assert len(payload) == len(clean)


def test_kept_encodings_of_repeating_values_stay_each_values_own() -> None:
    """Past the number of encodings kept, they are forgotten and made again: every event still
    carries its own route and user agent, and its checksum covers them."""
    from usagelog.instrumentation.builder import REMEMBERED

    builder = _builder("none")
    batch = [
        make_exchange(seq=n + 1, route=f"/r/{n % (REMEMBERED + 7)}", user_agent=f"ua-{n % 3}")
        for n in range(3 * REMEMBERED)
    ]
    payload, count = builder.encode_batch(batch)
    decoded = decode_payload(payload)  # checks each event's checksum
    assert count == len(decoded.rows) == len(batch) and decoded.rejected == []
    for x, row in zip(batch, decoded.rows, strict=True):
        assert (row["seq"], row["route"], row["user_agent"]) == (x.seq, x.route, x.user_agent)


def test_numbers_the_writer_appends_itself_read_back_at_every_varint_length() -> None:
    """The writer appends numbers of up to four varint bytes itself (durations, sizes, sequence
    numbers): each length's edges read back through the protobuf classes as written."""
    edges = sorted({n for k in range(1, 10) for n in (2 ** (7 * k) - 1, 2 ** (7 * k), 2 ** (7 * k) + 1)})
    edges = [n for n in edges if n < 2**63]  # int_value is an int64
    batch = [make_exchange(seq=n, duration_ns=n, response_size=n, request_size=n) for n in edges]
    payload, count = _builder("none").encode_batch(batch)
    request = ExportLogsServiceRequest.FromString(payload)
    assert request.SerializeToString() == payload and count == len(edges)
    for n, record in zip(edges, request.resource_logs[0].scope_logs[0].log_records, strict=True):
        attributes = {kv.key: kv.value.int_value for kv in record.attributes}
        assert [attributes[k] for k in (ev.SEQ, ev.DURATION_NS, ev.RESPONSE_SIZE, ev.REQUEST_SIZE)] == [n] * 4
    assert decode_payload(payload).rejected == []  # and every checksum holds
