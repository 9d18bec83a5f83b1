"""Properties of the OTLP decoder over generated input (hypothesis): whatever arrives, decoding
gives rows, rejections or :class:`DecodeError`, never another exception; the rows it gives
verify and fit their columns; ``decode_or_dead_letter`` never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.ingest.test_decode import make_exchange, payload_of
from usagelog.ingest.decode import COLUMNS, Decoded, DecodeError, decode_or_dead_letter, decode_payload
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import load_settings
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.userid import UserResolver

PYTHON_TYPE = {"string": str, "uint16": int, "uint32": int, "uint64": int, "bool": bool, "timestamp_ns": int}


def _builder() -> EventBuilder:
    config = load_settings({}, capture_body="all", monitor=["user:alice"], user_id_from=["jwt:sub", "basic"])
    identity = Identity({ev.SERVICE_NAME: "orders-api", ev.SERVICE_INSTANCE_ID: "i-1", ev.PROCESS_PID: 7})
    return EventBuilder(config, UserResolver(config.user_id_from), identity, "0.1.0")


VALID = payload_of(_builder(), make_exchange(seq=1), make_exchange(seq=2, user_headers={}))


def check_outcome(payload: bytes) -> None:
    """The decoder's contract for one payload, whatever it holds."""
    try:
        decoded: Decoded | None = decode_payload(payload)
    except DecodeError:
        decoded = None
    stored, letters = decode_or_dead_letter(payload, "kafka", "t/0@1")
    if decoded is None:
        assert stored.rows == [] and len(letters) == 1 and letters[0]["payload"] == payload
        return
    assert len(letters) == len(decoded.rejected)
    for letter in letters:
        assert letter["reason"] and letter["source"] == "kafka" and letter["location"] == "t/0@1"
    for row in decoded.rows:
        assert set(COLUMNS) <= set(row)
        assert row["event_id"] and row["checksum"] == ev.checksum(row)
        for field in ev.FIELDS:
            if field.arrow in PYTHON_TYPE:
                assert type(row[field.column]) is PYTHON_TYPE[field.arrow], (field.column, row[field.column])
        assert all(type(k) is str and type(v) is str for k, v in row["attributes"].items())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_dead_letter_and_never_raise_anything_else(payload: bytes) -> None:
    check_outcome(payload)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[at : at + draw(st.integers(1, 24))]
    return bytes(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_valid_payloads_only_give_verified_rows_rejections_or_decode_error(payload: bytes) -> None:
    check_outcome(payload)


# -- well-formed OTLP whose attributes hold anything, checksums made to match -----------------------

scalars = st.one_of(
    st.text(max_size=20).map(lambda s: {"string_value": s}),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: {"int_value": i}),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"double_value": f}),
    st.booleans().map(lambda b: {"bool_value": b}),
    st.binary(max_size=12).map(lambda b: {"bytes_value": b}),
)


def _any_value(spec: dict[str, Any]) -> AnyValue:
    value = AnyValue()
    for kind, content in spec.items():
        if kind == "array_value":
            value.array_value.values.extend(_any_value(v) for v in content)
        elif kind == "kvlist_value":
            for key, v in content:
                kv = value.kvlist_value.values.add()
                kv.key = key
                kv.value.CopyFrom(_any_value(v))
        else:
            setattr(value, kind, content)
    return value


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: {"array_value": items}),
        st.lists(st.tuples(st.text(max_size=6), inner), max_size=3).map(lambda kvs: {"kvlist_value": kvs}),
    ),
    max_leaves=6,
)
RECORD_ATTRIBUTES = [f.attribute for f in ev.RECORD_FIELDS if f.column not in ("event_id", "checksum")]
RESOURCE_ATTRIBUTES = [f.attribute for f in ev.RESOURCE_FIELDS]


def _set(attributes: Any, key: str, value: AnyValue) -> None:
    for kv in attributes:
        if kv.key == key:
            kv.value.CopyFrom(value)
            return
    kv = attributes.add()
    kv.key = key
    kv.value.CopyFrom(value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from([*RECORD_ATTRIBUTES, "x.extra", "y"]), values, max_size=6),
    st.dictionaries(st.sampled_from([*RESOURCE_ATTRIBUTES, "deployment.environment"]), values, max_size=4),
    st.integers(0, 2**64 - 1),
)
def test_any_attribute_value_with_a_matching_checksum_gives_rows_that_fit_their_columns(
    record_values: dict[str, dict[str, Any]], resource_values: dict[str, dict[str, Any]], time_ns: int
) -> None:
    request = ExportLogsServiceRequest.FromString(VALID)
    resource = request.resource_logs[0].resource
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.time_unix_nano = time_ns
    for key, spec in record_values.items():
        _set(record.attributes, key, _any_value(spec))
    for key, spec in resource_values.items():
        _set(resource.attributes, key, _any_value(spec))
    payload = request.SerializeToString()
    # Whoever sends an event can compute its checksum: make it match, so the rows get through.
    first = decode_payload(payload)
    for rejected in first.rejected:
        if rejected.reason.startswith("checksum mismatch"):
            _set(record.attributes, ev.CHECKSUM, AnyValue(string_value=ev.checksum(rejected.detail)))
    check_outcome(request.SerializeToString())
