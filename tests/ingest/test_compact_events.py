"""usage_events' compact stored form (migration 010, ``usagelog.ingest.stored``): a store written before
it converts to the same logical rows, the conversion survives a crash at any statement, and both
ingest paths (Python rows, SQL from the staging table) store an event the same way and read it back."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.ingest.test_decode_properties import _set
from tests.spoolfill import make_payloads
from usagelog.ingest import queries, stored
from usagelog.ingest.decode import decode_payload
from usagelog.ingest.engine_decode import EngineDecoder
from usagelog.ingest.store import Store, _statements, connect, migrations
from usagelog.instrumentation import event as ev

COMPACT = 10
LOGICAL = ", ".join([*ev.COLUMNS, "inserted_at"])


@functools.cache
def _built() -> tuple[dict[str, Any], ...]:
    """Real encoded events (canonical IDs), and IDs of every other form with valid checksums."""
    rows = [row for p in make_payloads(2, 40, instance="i-real") for row in decode_payload(p).rows]
    odd = []
    # Observed time is stored after timestamp + duration: the extremes wrap and come back exact.
    first = rows[0]
    for seq, event_id, trace, span, duration, observed in (
        (1, "ABCDEF0123456789" + "0000000000000001", "", "", 5, first["observed_timestamp"]),  # upper case
        (
            2,
            "0123456789abcdef" + "0000000000000005",
            "ab" * 16,
            "cd" * 8,
            2**64 - 1,
            0,
        ),  # ends with another seq
        (3, "short-id", "", "01" * 8, 0, 2**63 - 1),
        (4, "0000000000000000" + "0000000000000004", "00" * 15 + "01", "", 2**63, 1),  # zero prefix
        (5, "ffffffffffffffff" + "0000000000000005", "", "", 7, first["timestamp"] - 1),
    ):
        row = dict(
            first, service_instance_id="i-odd", seq=seq, event_id=event_id, trace_id=trace, span_id=span
        )
        row["duration_ns"], row["observed_timestamp"] = duration, observed
        row["checksum"] = ev.checksum(row)
        odd.append(row)
    return tuple(rows + odd)


def _events() -> list[dict[str, Any]]:
    return [dict(row) for row in _built()]


def _logical(store: Store) -> list[tuple[Any, ...]]:
    return store.query(f"SELECT {LOGICAL} FROM {store.database}.usage_events ORDER BY event_id")[1]


def _before(url: str) -> list[tuple[Any, ...]]:
    """A store under migrations 1-9 holding the events; their logical rows."""
    with connect(url, migrate_schema=False) as store:
        store.migrate(upto=COMPACT - 1)
        assert not store.compact("usage_events")
        assert store.insert_events(_events()) == (85, 0)
        return _logical(store)


def _check_converted(store: Store, before: list[tuple[Any, ...]]) -> None:
    assert store.compact("usage_events")
    after = _logical(store)
    checksum = LOGICAL.split(", ").index("checksum")
    # The same rows; the checksum keeps its first 64 bits.
    assert [r[:checksum] + r[checksum + 1 :] for r in after] == [
        r[:checksum] + r[checksum + 1 :] for r in before
    ]
    assert [r[checksum] for r in after] == [r[checksum][:16] for r in before]
    for instance in queries.audit_instances(store):
        assert (instance.checksum_failures, instance.duplicates, instance.gaps) == (0, 0, 0), instance
    # The canonical IDs are derived, the others kept whole.
    _, [(derived, whole)] = store.query(
        "SELECT countIf(event_id_other = ''), countIf(event_id_other != '') FROM usagelog.usage_events"
    )
    assert (derived, whole) == (82, 3)


def test_migration_010_converts_a_store_written_before_it(chdb_url: str) -> None:
    before = _before(chdb_url)
    with connect(chdb_url, migrate_schema=False) as store:
        assert store.migrate(upto=COMPACT) == ["010_compact_events.sql"]
        _check_converted(store, before)
        # Ingest goes on in the new form: the same events again are all duplicates.
        assert store.insert_events(_events()) == (0, 85)
        # The views kept on usage_events still see new events.
        row = dict(_events()[0], service_instance_id="i-new", user_id="new-user", seq=1, event_id="x-1")
        assert store.insert_events([row]) == (1, 0)
        _, [(consumers,)] = store.query("SELECT count() FROM usagelog.consumers WHERE user_id = 'new-user'")
        _, [(instances,)] = store.query(
            "SELECT count() FROM usagelog.instances WHERE service_instance_id = 'i-new'"
        )
        assert (consumers, instances) == (1, 1)


def test_migration_010_leaves_a_table_that_is_already_compact_alone(chdb_url: str) -> None:
    # As a cluster's operator creates it (replicated) before the first worker starts.
    with connect(chdb_url) as store:
        assert store.insert_events(_events()) == (85, 0)
        _, [(uuid,)] = store.query("SELECT uuid FROM system.tables WHERE name = 'usage_events'")
        store.client.command("DELETE FROM usagelog.schema_migrations WHERE version = 10")
    with connect(chdb_url) as store:
        _, [(again,)] = store.query("SELECT uuid FROM system.tables WHERE name = 'usage_events'")
        assert again == uuid
        assert store.query("SELECT count() FROM usagelog.usage_events")[1] == [(85,)]
        assert store.schema_version() == migrations()[-1][0]


@pytest.mark.parametrize("crashed_after", [1, 2, 3, 4])
def test_migration_010_runs_again_after_a_crash_at_any_statement(chdb_url: str, crashed_after: int) -> None:
    before = _before(chdb_url)
    [(_, _, sql)] = [m for m in migrations() if m[0] == COMPACT]
    with connect(chdb_url, migrate_schema=False) as store:
        for statement in _statements(sql.replace("${DATABASE}", "usagelog"))[:crashed_after]:
            store.client.command(statement)
        assert store.migrate(upto=COMPACT) == ["010_compact_events.sql"]
        _check_converted(store, before)


def test_both_ingest_paths_store_an_event_alike_and_read_it_back(chdb_url: str) -> None:
    events = _events()
    with connect(chdb_url) as store:
        db = store.database
        store.client.command(f"CREATE TABLE {db}.by_sql AS {db}.usage_events")
        store.client.command(
            f"CREATE TABLE {db}.logical ENGINE = Memory AS SELECT {LOGICAL} FROM {db}.usage_events"
        )
        # The Python path, and the SQL path from a table of logical columns (as the engine's stage).
        store.insert_events(events)
        store.client.insert(
            f"{db}.logical", [[r[c] for c in ev.COLUMNS] for r in events], column_names=ev.COLUMNS
        )
        store.client.command(
            f"INSERT INTO {db}.by_sql ({', '.join(stored.stored_columns(True))}) "
            f"SELECT {stored.select_sql(True)} FROM {db}.logical"
        )
        physical = "* EXCEPT (inserted_offset_ms)"
        by_python = store.query(
            f"SELECT {physical}, {', '.join(ev.COLUMNS)} FROM {db}.usage_events ORDER BY event_id"
        )
        by_sql = store.query(f"SELECT {physical}, {', '.join(ev.COLUMNS)} FROM {db}.by_sql ORDER BY event_id")
        assert by_python == by_sql
        # Every logical column reads back as it arrived (the checksum's first 16 hex digits).
        times = (
            "toUnixTimestamp64Nano(timestamp) AS ts, toUnixTimestamp64Nano(observed_timestamp) AS observed"
        )
        names, rows = store.query(
            f"SELECT {', '.join(ev.COLUMNS)}, {times} FROM {db}.usage_events ORDER BY event_id"
        )
        want = sorted(events, key=lambda r: r["event_id"])
        for row, event in zip(rows, want, strict=True):
            got = dict(zip(names, row, strict=True))
            assert got["checksum"] == event["checksum"][:16]
            for column in ("event_id", "trace_id", "span_id", "seq", "user_id", "path"):
                assert got[column] == event[column], column
            assert (got["ts"], got["observed"]) == (event["timestamp"], event["observed_timestamp"])


@pytest.mark.parametrize(
    ("column", "value"),
    [("trace_id", b"\x01\x02"), ("trace_id", bytes(16)), ("span_id", b"\x01" * 9), ("span_id", bytes(8))],
    ids=["short trace", "zero trace", "long span", "zero span"],
)
def test_ids_that_do_not_fit_their_bytes_are_dead_lettered_by_both_decoders(
    chdb_url: str, column: str, value: bytes
) -> None:
    request = ExportLogsServiceRequest.FromString(make_payloads(1, 3, instance="i-ids")[0])
    record = request.resource_logs[0].scope_logs[0].log_records[1]
    setattr(record, column, value)
    # A checksum that matches the odd ID: only its size can be wrong.
    row = dict(decode_payload(request.SerializeToString()).rejected[0].detail)
    _set(record.attributes, ev.CHECKSUM, AnyValue(string_value=ev.checksum(row)))
    payload = request.SerializeToString()
    decoded = decode_payload(payload)
    assert [r.reason.split(" (")[0] for r in decoded.rejected] == [f"usage event with an invalid {column}"]
    assert len(decoded.rows) == 2
    with connect(chdb_url) as store:
        staged = EngineDecoder(store).stage([payload])
        assert staged is not None and staged.leftover == [0]  # left to the reference decoder
