"""The engine decoder stores exactly what the reference decoder stores: the same rows, dead letters,
loss reports and counts, for real events, for every kind of damage, and for generated attributes
(hypothesis). Each case goes through the pipeline twice on one chDB engine: once with
``decoder="engine"`` into database ``e``, once with ``decoder="python"`` into ``p``."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.ingest.test_decode import make_exchange, payload_of, rewrite, set_attribute
from tests.ingest.test_decode_properties import (
    RECORD_ATTRIBUTES,
    RESOURCE_ATTRIBUTES,
    _any_value,
    _builder,
    _set,
    values,
)
from tests.lossreports import loss_payload, loss_record
from tests.spoolfill import make_payloads
from usagelog.ingest.archive import Archive, read_archive
from usagelog.ingest.decode import decode_payload
from usagelog.ingest.engine_decode import EngineDecoder, EngineResult, decoder_setting
from usagelog.ingest.errors import ArchiveError, SettingsError
from usagelog.ingest.pipeline import Item, Pipeline, Result
from usagelog.ingest.store import Store, connect
from usagelog.instrumentation import event as ev

BUILDER = _builder()


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Store, Store]]:
    directory = tempfile.mkdtemp(prefix="engine-decode-")
    try:
        with connect("chdb://" + directory + "/chdb", database="e") as engine_store:
            python_store = Store(engine_store.client, "p")
            python_store.migrate()
            yield engine_store, python_store
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _clear(store: Store) -> None:
    for table in ("usage_events", "monitored_events", "dead_letters", "losses"):
        store.client.command(f"TRUNCATE TABLE {store.database}.{table}")


def _contents(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    db = store.database
    # usage_events: the stored columns (both paths store the same bytes) and the logical ones.
    logical = ", ".join(ev.COLUMNS)
    return {
        table: store.query(f"SELECT {columns} FROM {db}.{table} ORDER BY {order}")[1]
        for table, columns, order in (
            ("usage_events", f"* EXCEPT (inserted_offset_ms), {logical}", "event_id"),
            ("monitored_events", "* EXCEPT (inserted_at)", "event_id"),
            ("dead_letters", "* EXCEPT (received_at)", "location, reason, event_id"),
            ("losses", "* EXCEPT (received_at)", "report_id"),
        )
    }


_AHEAD: dict[int, tuple[Store, Store]] = {}


def ahead_stores(engine_store: Store) -> tuple[Store, Store]:
    """A store ``a`` on the same engine, and a database ``s`` to stage batches ahead in (a worker
    stages ahead in an engine of its own; here another database of the same engine stands in)."""
    key = id(engine_store.client)
    if key not in _AHEAD:
        ahead = Store(engine_store.client, "a")
        ahead.migrate()
        engine_store.client.command("CREATE DATABASE IF NOT EXISTS s")
        _AHEAD[key] = (ahead, Store(engine_store.client, "s"))
    return _AHEAD[key]


def staged_ahead(items: list[Item], store: Store, stager: Store, directory: str, **pipeline: Any) -> Result:
    """``items`` staged ahead in ``stager``'s database, then stored in ``store``, as a worker does
    while another holds the store; the staged file is gone after."""
    staged = Pipeline(decoder="engine", **pipeline).stage_ahead(items, stager, directory)
    try:
        return Pipeline(decoder="engine", **pipeline).process([], store, staged)
    finally:
        staged.discard()


def both(stores: tuple[Store, Store], *batches: list[bytes]) -> tuple[list[Result], dict[str, Any]]:
    """Run each batch through both decoders, and through the engine staged ahead; assert equal
    results and contents; return them."""
    engine_store, python_store = stores
    ahead_store, stager = ahead_stores(engine_store)
    for store in (*stores, ahead_store):
        _clear(store)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="staged-ahead-") as directory:
        for batch in batches:
            items = [Item("kafka", f"t/0@{n}", payload) for n, payload in enumerate(batch)]
            by_engine = Pipeline(decoder="engine").process(items, engine_store)
            by_python = Pipeline(decoder="python").process(items, python_store)
            by_ahead = staged_ahead(items, ahead_store, stager, directory)
            assert by_engine == by_python == by_ahead
            results.append(by_engine)
        assert list(Path(directory).iterdir()) == []
    contents = _contents(engine_store)
    assert contents == _contents(python_store) == _contents(ahead_store)
    return results, contents


def test_real_events_are_stored_by_the_engine_as_by_the_reference_decoder(
    stores: tuple[Store, Store],
) -> None:
    batch = [
        payload_of(BUILDER, make_exchange(seq=1), make_exchange(seq=2, user_headers={})),
        *make_payloads(3, 50, instance="bulk", monitor="user:user-3"),
        *make_payloads(2, 100, instance="traffic", traffic=True),
    ]
    results, contents = both(stores, batch, batch)  # the second time: every event a duplicate
    assert [(r.events, r.stored, r.duplicates) for r in results] == [(352, 352, 0), (352, 0, 352)]
    assert len(contents["usage_events"]) == 352 and contents["monitored_events"]
    assert contents["dead_letters"] == [] and contents["losses"] == []


def test_events_stored_at_either_end_of_a_batch_s_sequence_range_are_found(
    stores: tuple[Store, Store],
) -> None:
    """The lookup of stored events is skipped when no stored event lies in any instance's range
    of the batch's sequence numbers: the ends of the range count (a duplicate there is found)."""
    events = make_payloads(40, 1, instance="edge")  # one event each, sequence numbers 1..40
    others = make_payloads(2, 5, instance="other")
    results, contents = both(stores, events[10:20], [*events[0:11], *others], events[19:30])
    assert [(r.events, r.stored, r.duplicates) for r in results] == [(10, 10, 0), (21, 20, 1), (11, 10, 1)]
    assert len(contents["usage_events"]) == 40


def test_a_batch_from_more_instances_than_ranges_are_checked_for_is_looked_up_whole(
    stores: tuple[Store, Store],
) -> None:
    many = [payload for n in range(300) for payload in make_payloads(1, 1, instance=f"i-{n}")]
    results, contents = both(stores, many, many)
    assert [(r.stored, r.duplicates) for r in results] == [(300, 0), (0, 300)]
    assert len(contents["usage_events"]) == 300


@pytest.mark.parametrize("staging", ["staging", "st*g?ng{1,2}"])  # file() reads *?{} as a pattern
def test_the_engine_writes_the_archive_chunks_the_reference_decoder_archives(
    stores: tuple[Store, Store], tmp_path: Path, staging: str
) -> None:
    hour_ns = 3600 * 10**9
    start = 1_700_000_000 * 10**9 // hour_ns * hour_ns + hour_ns - 50  # the batch spans two hours
    batch = [
        *make_payloads(2, 50, instance="a", at_ns=start),
        *make_payloads(1, 30, instance="b", at_ns=start + 7),
        *make_payloads(1, 40, instance="c", at_ns=start + 3, traffic=True),
        # Bodies, unicode, extra attributes (the map column).
        payload_of(BUILDER, make_exchange(seq=1, start_ns=start + 20, path="/ordres/ü/42")),
    ]
    items = [Item("kafka", f"t/0@{n}", payload) for n, payload in enumerate(batch)]
    archived = {}
    ahead_store, stager = ahead_stores(stores[0])
    for decoder, store in (("engine", stores[0]), ("python", stores[1]), ("ahead", ahead_store)):
        _clear(store)
        staging_dir = tmp_path / f"{decoder}-{staging}"
        archive = Archive(str(tmp_path / decoder), staging_dir=staging_dir, worker_id="w")
        if decoder == "ahead":
            result = staged_ahead(items, store, stager, str(tmp_path), archive=archive)
        else:
            result = Pipeline(archive=archive, decoder=decoder).process(items, store)
        assert result.events == 171 and len(archive.close()) == 2
        archived[decoder] = read_archive(str(tmp_path / decoder))
    assert len(archived["engine"]) == 171
    assert any(row["attributes"] and row["request_body"] for row in archived["engine"])
    assert archived["engine"] == archived["python"] == archived["ahead"]


def test_a_batch_whose_events_the_archive_did_not_all_get_is_not_stored(
    stores: tuple[Store, Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine_store, _ = stores
    _clear(engine_store)
    hour_ns = 3600 * 10**9
    start = 1_700_000_000 * 10**9 // hour_ns * hour_ns + hour_ns - 50  # two hours
    items = [Item("kafka", f"t/0@{n}", p) for n, p in enumerate(make_payloads(1, 100, at_ns=start))]
    counted = EngineDecoder._count

    def one_hour_short(self: EngineDecoder) -> EngineResult:
        result = counted(self)
        result.minutes = {m for m in result.minutes if m < start // 10**9}  # the later hour lost
        return result

    monkeypatch.setattr(EngineDecoder, "_count", one_hour_short)
    archive = Archive(str(tmp_path / "archive"), staging_dir=tmp_path / "staging", worker_id="w")
    with pytest.raises(ArchiveError, match="50 of the batch's 100 events"):
        Pipeline(archive=archive, decoder="engine").process(items, engine_store)
    assert _contents(engine_store)["usage_events"] == []  # raised before the insert: read again
    archive.close()


def test_a_batch_holding_its_events_twice_stores_one_row_each_before_any_merge(
    stores: tuple[Store, Store],
) -> None:
    """The insert keeps one row per event ID itself (the table's replacing merge of the inserted
    block is off): no copy reaches the table, read without FINAL and with merges stopped."""
    payloads = make_payloads(2, 40, instance="twice", monitor="user:user-3")
    same = make_exchange(seq=1, start_ns=time.time_ns())  # within the monitored copies' retention
    batch = [*payloads, *payloads, payload_of(BUILDER, same, same)]  # and one event twice in a payload
    engine_store = stores[0]
    db = engine_store.database
    for table in ("usage_events", "monitored_events"):
        engine_store.client.command(f"SYSTEM STOP MERGES {db}.{table}")
    try:
        results, _ = both(stores, batch)
        assert (results[0].events, results[0].stored, results[0].duplicates) == (162, 81, 81)
        for table in ("usage_events", "monitored_events"):
            _, rows = engine_store.query(f"SELECT count(), uniqExact(event_id) FROM {db}.{table}")
            assert rows[0][0] == rows[0][1] > 0, table
    finally:
        for table in ("usage_events", "monitored_events"):
            engine_store.client.command(f"SYSTEM START MERGES {db}.{table}")


def test_the_engine_takes_regular_events_and_leaves_the_rest_to_the_reference_decoder(
    stores: tuple[Store, Store],
) -> None:
    good = payload_of(BUILDER, make_exchange(seq=3))

    def tamper(rec: Any, _: Any) -> None:
        set_attribute(rec, ev.PATH, string_value="/orders/43")

    def negative(rec: Any, _: Any) -> None:
        set_attribute(rec, ev.STATUS, int_value=-1)

    def text_as_number(rec: Any, _: Any) -> None:
        set_attribute(rec, ev.ROUTE, int_value=5)

    def no_id(rec: Any, _: Any) -> None:
        set_attribute(rec, ev.EVENT_ID, string_value="")

    other = LogRecord(event_name="app.log", time_unix_nano=1)
    batch = [
        good,
        rewrite(good, tamper),
        rewrite(good, negative),
        rewrite(good, text_as_number),
        rewrite(good, no_id),
        b"\x0a\xff\xff not protobuf",
        payload_of(BUILDER, make_exchange(seq=9), extra_records=(other,)),
        loss_payload("i-1", [loss_record("r-1", count=4, first_seq=10, last_seq=13)]),
    ]
    engine_store, _ = stores
    staged = EngineDecoder(engine_store).stage(batch)
    assert staged is None  # one payload the engine cannot read: the whole batch is the reference's
    readable = [p for p in batch if not p.startswith(b"\x0a\xff")]
    staged = EngineDecoder(engine_store).stage(readable)
    assert staged is not None and staged.leftover == [1, 2, 3, 4, 6]  # 6: the loss report
    results, contents = both(stores, batch)
    assert (results[0].events, results[0].ignored, results[0].losses) == (2, 1, 1)
    assert len(contents["dead_letters"]) == 5 and len(contents["losses"]) == 1
    results, _ = both(stores, readable)
    assert (results[0].events, results[0].dead_letters) == (2, 4)


def test_extra_attributes_of_other_types_and_repeated_keys_go_to_the_reference_decoder(
    stores: tuple[Store, Store],
) -> None:
    def extras(rec: Any, request: Any) -> None:
        for key, value in (("x.text", AnyValue(string_value="a")), ("x.n", AnyValue(int_value=-3))):
            _set(rec.attributes, key, value)
        _set(
            request.resource_logs[0].resource.attributes, "deployment.environment", AnyValue(string_value="p")
        )

    def double(rec: Any, _: Any) -> None:
        _set(rec.attributes, "x.ratio", AnyValue(double_value=0.1))

    def repeated(rec: Any, _: Any) -> None:
        kv = rec.attributes.add()
        kv.key, kv.value.string_value = "x.twice", "1"
        kv = rec.attributes.add()
        kv.key, kv.value.string_value = "x.twice", "2"

    good = payload_of(BUILDER, make_exchange(seq=4))
    batch = [rewrite(good, extras), rewrite(payload_of(BUILDER, make_exchange(seq=5)), double)]
    batch.append(rewrite(payload_of(BUILDER, make_exchange(seq=6)), repeated))
    staged = EngineDecoder(stores[0]).stage(batch)
    assert staged is not None and staged.leftover == [1, 2]
    _, contents = both(stores, batch)
    attributes = {
        row[0]: row[-1] for row in stores[0].query("SELECT event_id, attributes FROM e.usage_events")[1]
    }
    wanted = {"x.text": "a", "x.n": "-3", "resource.deployment.environment": "p"}
    assert any(wanted.items() <= a.items() for a in attributes.values())
    assert len(contents["usage_events"]) == 3


def test_the_sdk_s_resource_attributes_are_checked_as_extra_ones_and_never_kept(
    stores: tuple[Store, Store],
) -> None:
    def sdk(version: AnyValue) -> Any:
        def change(_: Any, request: Any) -> None:
            attributes = request.resource_logs[0].resource.attributes
            _set(attributes, "telemetry.sdk.version", version)
            _set(attributes, "telemetry.sdk.language", AnyValue(int_value=3))
            _set(attributes, "telemetry.sdk.other", AnyValue(string_value="x"))

        return change

    batch = [
        rewrite(payload_of(BUILDER, make_exchange(seq=7)), sdk(AnyValue(string_value="1.2"))),
        rewrite(payload_of(BUILDER, make_exchange(seq=8)), sdk(AnyValue(double_value=1.2))),
        payload_of(BUILDER, make_exchange(seq=9)),
    ]
    staged = EngineDecoder(stores[0]).stage(batch)
    assert staged is not None and staged.leftover == [1]  # a double is irregular, whatever the key
    _, contents = both(stores, batch)
    assert len(contents["usage_events"]) == 3
    stored = stores[0].query("SELECT seq, attributes FROM e.usage_events ORDER BY seq")[1]
    assert [(seq, {k: v for k, v in a.items() if "sdk" in k}) for seq, a in stored] == [
        (7, {}),
        (8, {}),
        (9, {}),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {"double_value": 0.5},
        {"bytes_value": b"\x00\x01"},
        {"array_value": [{"string_value": "a"}]},
        {"kvlist_value": [("k", {"int_value": 1})]},
        {},  # no member set
    ],
    ids=["double", "bytes", "array", "kvlist", "none"],
)
@pytest.mark.parametrize("place", ["record", "resource"])
def test_values_of_members_the_engine_does_not_read_go_to_the_reference_decoder(
    stores: tuple[Store, Store], spec: dict[str, Any], place: str
) -> None:
    """The engine reads only the string, bool and int members of a value; any other one (and a
    value with none set) sends its payload to the reference decoder, which stores it alike."""

    def other(rec: Any, request: Any) -> None:
        attributes = rec.attributes if place == "record" else request.resource_logs[0].resource.attributes
        _set(attributes, "x.other", _any_value(spec))

    batch = [
        payload_of(BUILDER, make_exchange(seq=7)),
        rewrite(payload_of(BUILDER, make_exchange(seq=8)), other),
    ]
    staged = EngineDecoder(stores[0]).stage(batch)
    assert staged is not None and staged.leftover == [1]
    results, contents = both(stores, batch)
    assert results[0].events == 2 and len(contents["usage_events"]) == 2


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.dictionaries(st.sampled_from([*RECORD_ATTRIBUTES, "x.extra", "y"]), values, max_size=6),
    st.dictionaries(st.sampled_from([*RESOURCE_ATTRIBUTES, "deployment.environment"]), values, max_size=4),
    st.integers(0, 2**64 - 1),
)
def test_any_attribute_values_are_stored_alike_by_both_decoders(
    stores: tuple[Store, Store],
    record_values: dict[str, dict[str, Any]],
    resource_values: dict[str, dict[str, Any]],
    time_ns: int,
) -> None:
    request = ExportLogsServiceRequest.FromString(payload_of(BUILDER, make_exchange(seq=11)))
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.time_unix_nano = time_ns
    for key, spec in record_values.items():
        _set(record.attributes, key, _any_value(spec))
    for key, spec in resource_values.items():
        _set(request.resource_logs[0].resource.attributes, key, _any_value(spec))
    for rejected in decode_payload(request.SerializeToString()).rejected:
        if rejected.reason.startswith("checksum mismatch"):  # a sender can make it match
            _set(record.attributes, ev.CHECKSUM, AnyValue(string_value=ev.checksum(rejected.detail)))
    both(stores, [request.SerializeToString(), payload_of(BUILDER, make_exchange(seq=12))])


def test_the_decoder_setting_names_the_variable_when_wrong() -> None:
    assert (
        decoder_setting({}) == "engine" and decoder_setting({"USAGELOG_INGEST_DECODER": "python"}) == "python"
    )
    with pytest.raises(SettingsError, match="USAGELOG_INGEST_DECODER"):
        decoder_setting({"USAGELOG_INGEST_DECODER": "fast"})


def test_an_event_stamped_after_2106_is_stored_without_a_rollup_minute(stores: tuple[Store, Store]) -> None:
    late = 2**33 * 10**9 + 123  # in 2242: past DateTime's range (2106), within DateTime64(9)'s (2262)
    results, contents = both(stores, [payload_of(BUILDER, make_exchange(seq=21, start_ns=late))])
    assert results[0].stored == 1 and len(contents["usage_events"]) == 1
