"""Rollups: equal to the aggregates of the raw events, also when a batch reaches storage twice;
kept by both ingest paths, built for events stored before them; retention from the environment."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rollups import assert_rollups_exact
from tests.spoolfill import make_payloads
from usagelog.demo import history
from usagelog.ingest import rollup
from usagelog.ingest.pipeline import Item, Pipeline
from usagelog.ingest.retention import (
    RetentionError,
    apply_retention,
    current_ttl,
    match_projection_merges,
    retention_days,
)
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import Store, connect, migrations
from usagelog.instrumentation.spool import SpoolWriter


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return store.query(sql)[1]


def _small_history() -> history.History:
    return history.generate(weeks=1, scale=0.05, consumers=40, incidents=False)


def test_rollups_equal_the_aggregates_of_the_raw_events(chdb_url: str) -> None:
    events = _small_history()
    with connect(chdb_url) as store:
        history.load(store, events)
        assert_rollups_exact(store)
        _, [(total,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1h FINAL")
        assert total == len(events)
        # Latency quantiles merged from the hourly states stay close to the exact ones.
        _, pairs = store.query(
            """
            SELECT r.p95, e.p95 FROM (
                SELECT service_name, quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(duration_q)[3] AS p95
                FROM usagelog.usage_rollup_1h FINAL GROUP BY service_name) AS r
            INNER JOIN (
                SELECT service_name, quantileExact(0.95)(duration_ns) AS p95
                FROM usagelog.usage_events GROUP BY service_name) AS e USING (service_name)
            """
        )
    assert len(pairs) == 2
    for merged, exact in pairs:
        assert merged == pytest.approx(exact, rel=0.05)


def test_a_batch_stored_twice_does_not_inflate_the_rollups(chdb_url: str) -> None:
    """Two writers storing the same batch at once (a Kafka redelivery racing the first delivery on a
    ClickHouse server) put each event in usage_events twice until a merge folds it; the rollups,
    recomputed from the events counted once, stay exact where a plain materialized view would not."""
    events = _small_history()
    hour = events.start + 30 * 3600
    in_hour = int(events.mask(hour, hour + 3600).sum())
    assert in_hour > 10
    with connect(chdb_url) as store:
        store.client.command(
            "CREATE MATERIALIZED VIEW usagelog.naive_counts ENGINE = SummingMergeTree ORDER BY minute AS "
            "SELECT toStartOfMinute(timestamp) AS minute, count() AS requests FROM usagelog.usage_events "
            "GROUP BY minute"
        )
        history.load(store, events)
        # The same rows again, checksums included: copied from the table, as a second writer has them.
        store.client.command(
            "INSERT INTO usagelog.usage_events SELECT * "
            "FROM usagelog.usage_events WHERE toStartOfHour(timestamp) = toDateTime({hour:Int64}, 'UTC')",
            parameters={"hour": hour},
        )
        _, [(stored, distinct)] = store.query(
            "SELECT count(), uniqExact(event_id) FROM usagelog.usage_events"
        )
        assert stored == len(events) + in_hour and distinct == len(events)
        _, [(naive,)] = store.query("SELECT sum(requests) FROM usagelog.naive_counts")
        assert naive == len(events) + in_hour, "a plain materialized view counts the batch twice"
        # As against a server, where such copies can be stored (chDB stores each event once).
        rollup.refresh(store, range(hour, hour + 3600, 60), copies=True)
        assert_rollups_exact(store)
        _, [(total,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1m FINAL")
        assert total == len(events)


def _minute_now() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp()) // 60 * 60


def _pending(store: Store) -> list[int]:
    return [
        m
        for (m,) in _rows(
            store, "SELECT DISTINCT toUnixTimestamp(minute) AS m FROM usagelog.rollup_pending ORDER BY m"
        )
    ]


def _rolled_up(store: Store) -> list[int]:
    sql = "SELECT DISTINCT toUnixTimestamp(minute) AS m FROM usagelog.usage_rollup_1m ORDER BY m"
    return [m for (m,) in _rows(store, sql)]


def _as_on_a_server(store: Store) -> None:
    """Rollups recomputed from the events, as a ClickHouse server keeps them (no view adding each
    insert's sums: there two writers can store one event at once)."""
    store.client.command(f"DROP VIEW usagelog.{rollup.ADDED_VIEW}")
    assert not rollup.added_from_batches(store)


def test_while_ingest_runs_a_minute_is_rolled_up_once_it_has_ended(chdb_url: str) -> None:
    """Where rollups are recomputed, recomputing a minute while it fills reads its events again
    each time: a minute that has not ended (here, one stamped ahead) waits, noted, while ended ones
    are recomputed; a source that stops recomputes every noted minute."""
    ended, ahead = _minute_now() - 3600, _minute_now() + 180
    old = make_payloads(2, 20, at_ns=ended * 10**9 + 5)
    filling = make_payloads(2, 20, first_seq=41, at_ns=ahead * 10**9 + 5)
    pipeline = Pipeline()
    with connect(chdb_url) as store:
        _as_on_a_server(store)
        pipeline.process([Item("spool", f"s@{i}", p) for i, p in enumerate(old + filling)], store)
        assert _rolled_up(store) == [ended] and _pending(store) == [ahead]
        pipeline.refresh_rollups(store, force=True)  # as at the end of a slice: the minute waits
        assert _rolled_up(store) == [ended] and _pending(store) == [ahead]
        # Another batch of the ended minute is recomputed at the next refresh, the other stays noted.
        again = make_payloads(1, 20, first_seq=81, at_ns=ended * 10**9 + 10**9)
        pipeline.process([Item("spool", "t@0", again[0])], store)
        pipeline.refresh_rollups(store, force=True)
        assert _rolled_up(store) == [ended] and _pending(store) == [ahead]
        _, [(requests,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1m FINAL")
        assert requests == 60
        pipeline.refresh_rollups(store, everything=True)  # the source stops
        assert _rolled_up(store) == [ended, ahead] and _pending(store) == []
        assert_rollups_exact(store)


def test_a_minute_noted_long_ago_is_rolled_up_whatever_its_time(chdb_url: str) -> None:
    ahead = _minute_now() + 600  # an instance whose clock runs ten minutes ahead
    with connect(chdb_url) as store:
        _as_on_a_server(store)
        Pipeline().process(
            [Item("spool", f"s@{i}", p) for i, p in enumerate(make_payloads(2, 20, at_ns=ahead * 10**9))],
            store,
        )
        assert _pending(store) == [ahead] and _rolled_up(store) == []
        assert rollup.refresh_pending(store, everything=False) == 0
        store.client.command(
            "INSERT INTO usagelog.rollup_pending (minute, noted_at) "
            "VALUES (toDateTime({m:Int64}, 'UTC'), now64(6) - toIntervalSecond({age:Int64}))",
            parameters={"m": ahead, "age": rollup.MAX_DEFER_SECONDS + 1},
        )
        assert rollup.refresh_pending(store, everything=False) == 1
        assert _pending(store) == [] and _rolled_up(store) == [ahead]
        assert_rollups_exact(store)


def _added(store: Store) -> int:
    return int(_rows(store, f"SELECT count() FROM usagelog.{rollup.ADDED}")[0][0])


def _by_time(store: Store) -> bool:
    _, [(n,)] = store.query(
        "SELECT count() FROM system.projections WHERE database = 'usagelog' AND table = 'usage_events' "
        "AND name = 'by_time'"
    )
    return bool(n)


def _items(name: str, minute: int, first_seq: int, events: int = 20) -> list[Item]:
    payloads = make_payloads(2, events // 2, first_seq=first_seq, at_ns=minute * 10**9 + 5)
    return [Item("spool", f"{name}@{i}", p) for i, p in enumerate(payloads)]


def _total(store: Store) -> int:
    return int(_rows(store, "SELECT sum(requests) FROM usagelog.usage_rollup_1m FINAL")[0][0])


def test_in_chdb_each_batch_adds_its_sums_and_every_minute_is_rolled_up_at_once(chdb_url: str) -> None:
    """chDB stores each event once: the view adds each insert's new events to rollup_added and a
    refresh folds them in, a filling minute's too (no event is read again); usage_events keeps no
    copy ordered by time."""
    ended, ahead = _minute_now() - 3600, _minute_now() + 180
    pipeline = Pipeline()
    with connect(chdb_url) as store:
        assert rollup.added_from_batches(store) and not _by_time(store)
        first = _items("s", ended, 1, 40) + _items("t", ahead, 41, 40)
        pipeline.process(first, store)
        assert _rolled_up(store) == [ended, ahead] and _pending(store) == [] and _added(store) == 0
        assert_rollups_exact(store)
        # More events of both minutes, and the first batch again: the sums of the new events only.
        pipeline.process(_items("u", ended, 81) + _items("v", ahead, 101) + first, store)
        assert _added(store) > 0 and _pending(store) == [ended, ahead]  # the refresh is not due yet
        pipeline.refresh_rollups(store, force=True)
        assert _added(store) == 0 and _pending(store) == []
        assert_rollups_exact(store)
        assert _total(store) == 120


def _stored_by_a_crashed_ingest(store: Store, minute: int, crash: str) -> None:
    """A batch noted and stored, then the crash: its sums lost (the view's part never written), or
    folded but left in rollup_added (the crash came between the fold and the emptying)."""
    from usagelog.ingest.decode import decode_or_dead_letter

    rows = []
    for item in _items("c", minute, 1001, 30):
        rows += decode_or_dead_letter(item.payload, item.source, item.location)[0].rows
    rollup.note(store, [minute])
    store.insert_events(rows)
    assert _added(store) > 0
    if crash == "sums lost":
        store.client.command(f"TRUNCATE TABLE usagelog.{rollup.ADDED}")
    else:
        store.client.command(f"CREATE TABLE usagelog.kept AS usagelog.{rollup.ADDED}")
        store.client.command(f"INSERT INTO usagelog.kept SELECT * FROM usagelog.{rollup.ADDED}")
        rollup.fold(store)
        store.client.command(f"INSERT INTO usagelog.{rollup.ADDED} SELECT * FROM usagelog.kept")


@pytest.mark.parametrize("crash", ["sums lost", "sums folded"])
def test_what_a_crash_leaves_noted_is_recomputed_when_ingest_starts_again(chdb_url: str, crash: str) -> None:
    """The batch's minutes were noted before it was stored: the next ingest recomputes them from
    the events before it stores anything, then goes on adding sums."""
    minute, later = _minute_now() - 7200, _minute_now() - 3600
    with connect(chdb_url) as store:
        Pipeline().process(_items("s", minute, 1), store)
        _stored_by_a_crashed_ingest(store, minute, crash)
        # As the crash left them: the batch's 30 events missing, or their sums due to be added again.
        assert (_total(store), _added(store) > 0) == ((20, False) if crash == "sums lost" else (50, True))
        Pipeline().process(_items("t", later, 41), store)  # the next run
        assert _pending(store) == [] and _added(store) == 0
        assert_rollups_exact(store)
        assert _total(store) == 70


def test_a_batch_that_failed_part_way_has_its_minutes_recomputed(chdb_url: str) -> None:
    """Storage failed after the events were stored (here the dead letters' insert, the view's sums
    lost with it): the minutes stay noted and the next refresh recomputes them."""
    minute = _minute_now() - 3600
    pipeline = Pipeline()
    with connect(chdb_url) as store:
        pipeline.process(_items("s", minute, 1), store)

        def failing(letters: Any) -> None:
            store.client.command(f"TRUNCATE TABLE usagelog.{rollup.ADDED}")
            raise RuntimeError("storage failed")

        store.insert_dead_letters = failing  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="storage failed"):
            pipeline.process(_items("t", minute, 41), store)
        del store.insert_dead_letters
        assert _pending(store) == [minute] and _total(store) == 20
        pipeline.refresh_rollups(store, force=True)  # as when the source closes the store
        assert _pending(store) == []
        assert_rollups_exact(store)
        assert _total(store) == 40


def test_migration_013_moves_a_chdb_store_to_sums_added_from_batches(chdb_url: str) -> None:
    events = _small_history()
    with connect(chdb_url, migrate_schema=False) as store:
        store.migrate(upto=12)
        history.load(store, events)
        assert _by_time(store) and not rollup.added_from_batches(store)
        assert_rollups_exact(store)
        assert [name.split("_")[0] for name in store.migrate()] == ["013"]
        assert rollup.added_from_batches(store) and not _by_time(store)
        assert_rollups_exact(store)
        minute = int(events.start) + 3 * 3600
        Pipeline().process(_items("s", minute, 10**9), store)
        assert_rollups_exact(store)
        assert _total(store) == len(events) + 20


def _spool_with_monitored(directory: Path, batches: int, per_batch: int) -> int:
    writer = SpoolWriter(directory, "bulk", segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for payload in make_payloads(batches, per_batch, monitor="user:user-1"):
        writer.append(payload)
        writer.seal()
    return batches * per_batch


def test_spool_ingest_keeps_rollups_and_monitored_events_also_when_a_spool_is_ingested_twice(
    tmp_path: Path, chdb_url: str
) -> None:
    spool = tmp_path / "spool"
    total = _spool_with_monitored(spool, batches=6, per_batch=50)
    shutil.copytree(spool, tmp_path / "again")
    ingest_spool(str(spool), chdb_url, "usagelog")
    stats = ingest_spool(str(tmp_path / "again"), chdb_url, "usagelog")
    assert stats.duplicates == total and stats.inserted == 0
    with connect(chdb_url) as store:
        assert_rollups_exact(store)
        _, [(rolled,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1m FINAL")
        _, [(monitored, users)] = store.query(
            "SELECT count(), groupUniqArray(user_id) FROM usagelog.monitored_events FINAL"
        )
    assert rolled == total
    assert monitored == sum(1 for seq in range(1, total + 1) if seq % 7 == 1) and users == ["user-1"]


@pytest.mark.parametrize("second", [0.0, 30.0, 59.5, 59.999])
def test_a_minute_keeps_the_events_of_each_of_its_seconds(
    tmp_path: Path, chdb_url: str, second: float
) -> None:
    """Each batch a part of its own, lying within one second of its minute: the last second's
    part was left out of the minute's recompute when its bounds were DateTime (seconds)."""
    minute = int(dt.datetime(2026, 11, 2, 10, 17, tzinfo=dt.timezone.utc).timestamp())
    writer = SpoolWriter(tmp_path / "spool", "bulk", segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for n, at in enumerate((minute + 20.0, minute + second)):  # 200 events 1 ns apart each
        for payload in make_payloads(1, 200, first_seq=1 + 200 * n, at_ns=int(at * 1e9)):
            writer.append(payload)
        writer.seal()
    # One segment a group: a batch, a part.
    assert ingest_spool(str(tmp_path / "spool"), chdb_url, "usagelog", group_bytes=1).inserted == 400
    with connect(chdb_url) as store:
        _, [(parts,)] = store.query(
            "SELECT count() FROM system.parts WHERE database = 'usagelog' AND table = 'usage_events' "
            "AND active AND level = 0"
        )
        assert parts == 2
        assert_rollups_exact(store)
        _, [(rolled,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1m FINAL")
    assert rolled == 400


def test_migration_012_recomputes_rollups_that_lack_events(chdb_url: str) -> None:
    events = _small_history()
    with connect(chdb_url) as store:
        history.load(store, events)
        assert_rollups_exact(store)
        # What a store kept from before: minutes whose rollup lacked events (here all of them).
        store.client.command("TRUNCATE TABLE usagelog.usage_rollup_1m")
        store.client.command("TRUNCATE TABLE usagelog.usage_rollup_1h")
        store.client.command("DELETE FROM usagelog.schema_migrations WHERE version = 12")
    with connect(chdb_url) as store:
        assert store.schema_version() == migrations()[-1][0]
        assert_rollups_exact(store)


def test_the_rollup_migration_builds_rollups_for_events_stored_before_it(chdb_url: str) -> None:
    events = _small_history()
    with connect(chdb_url, migrate_schema=False) as store:
        store.migrate(upto=3)
        history.load_events(store, events)
        applied = store.migrate()
        assert [name.split("_")[0] for name in applied] == [f"{v:03d}" for v, _, _ in migrations() if v > 3]
        assert_rollups_exact(store)
        _, [(consumers,)] = store.query("SELECT uniqExact(user_id) FROM usagelog.consumers")
        _, [(users,)] = store.query("SELECT uniqExact(user_id) FROM usagelog.usage_events")
        assert consumers == users


def _projection_merges(store: Store) -> str:
    _, [(value,)] = store.query(
        "SELECT extract(engine_full, 'deduplicate_merge_projection_mode = .(\\w+).') FROM system.tables "
        "WHERE database = 'usagelog' AND name = 'usage_events'"
    )
    return str(value)


def _part_rows(store: Store) -> dict[str, int]:
    """Rows in the active parts of usage_events ('') and of each of its projections."""
    _, rows = store.query(
        "SELECT '', sum(rows) FROM system.parts WHERE database = 'usagelog' AND table = 'usage_events' "
        "AND active UNION ALL SELECT name, sum(rows) FROM system.projection_parts "
        "WHERE database = 'usagelog' AND table = 'usage_events' AND active GROUP BY name"
    )
    return {str(name): int(n) for name, n in rows}


def test_ingest_into_chdb_merges_the_projections_without_rebuilding_them_and_they_stay_whole(
    chdb_url: str,
) -> None:
    """In chDB, ingest stores each event once (a batch holding copies too), so merges keep every
    row and the projections are merged like the table; they hold what the table holds."""
    payloads = make_payloads(6, 200)
    with connect(chdb_url) as store:
        assert _projection_merges(store) == "rebuild"  # as created (a server's too)
        store.client.command("SYSTEM STOP MERGES usagelog.usage_events")
        pipeline = Pipeline()
        for n, payload in enumerate(payloads):
            # every payload twice in its batch, and the previous payload again: copies of stored events
            items = [payload, payload, *payloads[max(0, n - 1) : n]]
            pipeline.process([Item("spool", f"s{n}@{i}", p) for i, p in enumerate(items)], store)
        assert _projection_merges(store) == "ignore"
        assert _part_rows(store) == {"": 1200, "by_instance": 1200}
        store.client.command("SYSTEM START MERGES usagelog.usage_events")
        store.client.command("OPTIMIZE TABLE usagelog.usage_events FINAL")
        _, [(parts,)] = store.query(
            "SELECT count() FROM system.parts "
            "WHERE database = 'usagelog' AND table = 'usage_events' AND active"
        )
        assert parts == 1
        assert _part_rows(store) == {"": 1200, "by_instance": 1200}
        # The same rows, read from each projection's own parts.
        columns = "sum(seq), groupBitXor(event_prefix), uniqExact(service_instance_id, seq)"
        table = store.query(f"SELECT {columns} FROM usagelog.usage_events")[1]
        projection = "mergeTreeProjection(usagelog, usage_events, by_instance)"
        assert store.query(f"SELECT {columns} FROM {projection}")[1] == table


def test_retention_variables_set_each_tables_ttl_and_old_partitions_go(chdb_url: str) -> None:
    assert retention_days({})["usage_events"] == 0
    with pytest.raises(RetentionError, match="USAGELOG_RETENTION_EVENTS_DAYS='a week'"):
        retention_days({"USAGELOG_RETENTION_EVENTS_DAYS": "a week", "USAGELOG_RETENTION_ROLLUP_DAYS": "-1"})
    env = {"USAGELOG_RETENTION_EVENTS_DAYS": "30", "USAGELOG_RETENTION_ROLLUP_DAYS": "400"}
    now = dt.datetime.now(dt.timezone.utc)
    recent = history.generate(
        weeks=1, scale=0.02, consumers=10, incidents=False, end=int(now.timestamp()) // 3600 * 3600
    )
    old = history.generate(
        weeks=1,
        scale=0.02,
        consumers=10,
        incidents=False,
        seed=8,
        end=int(now.timestamp()) // 3600 * 3600 - 90 * 86400,
    )
    with connect(chdb_url) as store:
        history.load(store, recent)
        history.load(store, old)
        # chDB without a TTL: merges need not rebuild the projections (no merge drops a row) ...
        assert match_projection_merges(store) == "ignore" == _projection_merges(store)
        assert apply_retention(store, env) == {
            "usage_events": "toDateTime(timestamp) + toIntervalDay(30)",
            "usage_rollup_1m": "minute + toIntervalDay(400)",
            "usage_rollup_1h": "hour + toIntervalDay(400)",
        }
        assert apply_retention(store, env) == {}, "applying the same retention again changes nothing"
        assert current_ttl(store, "monitored_events") == "toDateTime(timestamp) + toIntervalDay(7)"
        # ... with one they must: the merge that drops expired rows drops them from the projections.
        assert _projection_merges(store) == "rebuild"
        store.client.command("OPTIMIZE TABLE usagelog.usage_events FINAL")
        _, [(count, oldest)] = store.query("SELECT count(), min(timestamp) FROM usagelog.usage_events")
        assert count == len(recent)
        assert _part_rows(store) == {"": count, "by_instance": count}
        assert oldest >= (now - dt.timedelta(days=31)).replace(tzinfo=None)
        # Rollups keep the older history: ranges beyond raw retention still have their numbers.
        _, [(rolled,)] = store.query("SELECT sum(requests) FROM usagelog.usage_rollup_1h FINAL")
        assert rolled == len(recent) + len(old)
        assert apply_retention(store, {}) == {
            "usage_events": "(none)",
            "usage_rollup_1m": "(none)",
            "usage_rollup_1h": "(none)",
        }
        assert _projection_merges(store) == "ignore"


def test_ingest_refuses_a_bad_retention_variable_naming_it(tmp_path: Path, chdb_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "ingest",
            "--spool",
            str(tmp_path),
            "--clickhouse",
            chdb_url,
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "USAGELOG_RETENTION_DEAD_LETTERS_DAYS": "30d"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "USAGELOG_RETENTION_DEAD_LETTERS_DAYS='30d'" in result.stderr


def test_rollups_rebuild_recomputes_every_stored_minute(chdb_url: str) -> None:
    events = _small_history()
    with connect(chdb_url) as store:
        history.load_events(store, events)  # events only: as after a restore of usage_events
        _, [(before,)] = store.query("SELECT count() FROM usagelog.usage_rollup_1m")
    assert before == 0
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "rollups",
            "rebuild",
            "--clickhouse",
            chdb_url,
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    minutes = int(result.stdout.splitlines()[1].split(",")[0])
    assert minutes == len(set((events.columns["timestamp"] // (60 * 10**9)).tolist()))
    with connect(chdb_url) as store:
        assert_rollups_exact(store)
