"""Per-minute and per-hour rollups of ``usage_events``, each event counted once.

A plain materialized view adds every inserted block to its rollup, so a batch that reaches
storage twice (at-least-once delivery) would be counted twice there, although
``usage_events`` folds it. Rollups are kept exact in one of two ways, chosen by the store:

**Added from each batch** (chDB, where ingest stores each event once:
:func:`usagelog.ingest.stored.copies_possible`). A materialized view (:data:`ADDED_VIEW`, created
by the store's migration 013) aggregates the rows of every insert into ``usage_events`` —
ingest inserts only events not stored before — into :data:`ADDED`, in the same statement as
the insert. :func:`fold` adds those sums to the minute rollup (the minute's row as it was plus
the new ones, inserted with a newer ``version``; ``ReplacingMergeTree(version)`` keeps the
newest row per key and readers use ``FINAL``), recomputes the hours from the minutes, and
empties :data:`ADDED`. No event is read again, so ``usage_events`` needs no copy ordered by time.
A crash can still part an insert from its sums, or fold sums twice (between the fold's insert
and the emptying): ingest notes the minutes of a batch in ``rollup_pending`` (:func:`note`)
*before* it stores it and forgets the notes only when everything noted was folded; notes left
when a source starts (:func:`recover`) or after a batch failed are recomputed from the events
(a scan of ``usage_events``: only after a crash).

**Recomputed** (a ClickHouse server, where two workers can store one event at once — a Kafka
redelivery racing the first delivery — until a merge folds the copies). Ingest recomputes each
noted minute from ``usage_events`` itself through its ``by_time`` projection, keeping one row per
event ID (``LIMIT 1 BY event_id``), and inserts the result with a newer ``version``; the hours
follow from the minutes. Events only ever join a minute, never leave it, so the newest recompute
of a minute is complete: it saw every event stored before it began, and an event stored later
triggers a later recompute. A minute is recomputed once it has ended (:data:`GRACE_SECONDS` after
its end, for the events still on their way), not while it is filling (every recompute reads each
event of the minute again); an event arriving later notes the minute again. A minute noted for
:data:`MAX_DEFER_SECONDS` is recomputed anyway (events stamped ahead of the engine's clock), and a
source that stops (or runs out of work) recomputes every noted minute.

Either way the noted minutes are handled (:func:`refresh_pending`) at most every
:data:`~usagelog.ingest.pipeline.ROLLUP_SECONDS` and when a source closes its session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .stored import copies_possible


class Store(Protocol):
    """What the rollups need of ``usagelog.ingest.store.Store`` (which, in turn, runs ``rebuild``
    after the migration that adds them: hence no import of it here)."""

    client: Any
    database: str


QUANTILES = (0.5, 0.9, 0.95, 0.99)
_LEVELS = ", ".join(str(q) for q in QUANTILES)
DIMENSIONS = ("service_name", "route", "method", "status_code", "region", "cluster", "service_instance_id")
_DIMS = ", ".join(DIMENSIONS)
# A minute's sums over events, and the sums of sums (over minutes, or over parts of a minute).
_MEASURES = (
    "requests, exceptions, request_bytes, response_bytes, duration_ns_sum, duration_ns_max, duration_q"
)
_OVER_EVENTS = (
    "count() AS requests, countIf(error_type != '') AS exceptions, sum(request_size) AS request_bytes, "
    "sum(response_size) AS response_bytes, sum(duration_ns) AS duration_ns_sum, "
    f"max(duration_ns) AS duration_ns_max, quantilesTDigestState({_LEVELS})(duration_ns) AS duration_q"
)
_OVER_SUMS = (
    "sum(requests), sum(exceptions), sum(request_bytes), sum(response_bytes), sum(duration_ns_sum), "
    f"max(duration_ns_max), quantilesTDigestMergeState({_LEVELS})(duration_q)"
)
# Rollup minutes are DateTime (seconds, 1970 to 2106): an event stamped outside has no minute there.
_IN_RANGE = "timestamp >= toDateTime64(0, 9, 'UTC') AND timestamp < toDateTime64(4294967296, 9, 'UTC')"
# The sums of each insert's new events, per minute and dimensions, not yet folded (migration 013).
ADDED = "rollup_added"
ADDED_VIEW = "rollup_added_mv"
# One INSERT ... SELECT covers at most this many touched minutes (the IN list stays small).
_CHUNK = 2000
# A minute is due for its recompute this long after its end, by the engine's clock (events reach
# storage a few seconds after their request: the export interval, then Kafka or the spool).
GRACE_SECONDS = 10
# ... or once noted this long ago, whatever its time (an instance whose clock runs ahead).
MAX_DEFER_SECONDS = 300
# A rebuild of a store whose rollups are added from batches reads usage_events once, grouping on
# disk beyond this much memory.
_REBUILD_GROUP_BYTES = 256 << 20


def added_view_sql(db: str) -> str:
    """The materialized view adding each insert's events to :data:`ADDED` (migration 013, chDB)."""
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{ADDED_VIEW} TO {db}.{ADDED} AS "
        f"SELECT toStartOfMinute(timestamp) AS minute, {_DIMS}, {_OVER_EVENTS} "
        f"FROM {db}.usage_events WHERE {_IN_RANGE} GROUP BY minute, {_DIMS}"
    )


def added_from_batches(store: Store) -> bool:
    """Whether the rollups of ``store`` are added from each batch (its :data:`ADDED_VIEW` exists)
    rather than recomputed from the stored events."""
    result = store.client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": store.database, "name": ADDED_VIEW},
    )
    return bool(result.result_rows[0][0])


def minutes_of(rows: Sequence[dict[str, Any]]) -> set[int]:
    """Start (epoch seconds) of every minute the rows' timestamps (ns) fall in."""
    return {int(row["timestamp"]) // 60_000_000_000 * 60 for row in rows}


def refresh(store: Store, minutes: Iterable[int], *, copies: bool | None = None) -> int:
    """Recompute the minute rollup for ``minutes`` (epoch seconds, minute-aligned) from the stored
    events and the hour rollup for the hours holding them (after folding what batches added, so
    the recompute is the newest); returns how many minutes were recomputed. ``copies``: whether
    to count each event ID once (default: whether ``usage_events`` can hold copies,
    :func:`usagelog.ingest.stored.copies_possible`)."""
    if added_from_batches(store):
        fold(store)
    return _recompute(store, minutes, copies)


def stored(store: Store, minutes: Iterable[int]) -> int:
    """Bring the rollups up to date after events of ``minutes`` were stored outside ingest (a
    history loaded, a restore): what their inserts added is folded where the store adds from
    batches, the minutes are recomputed where it does not. Returns the minutes done."""
    if added_from_batches(store):
        return fold(store)
    return _recompute(store, minutes, None)


def fold(store: Store) -> int:
    """Add the sums in :data:`ADDED` to the minute rollup, recompute the hours they fall in from
    the minutes, and empty :data:`ADDED`; returns the minutes folded."""
    db = store.database
    result = store.client.query(f"SELECT DISTINCT toUnixTimestamp(minute) FROM {db}.{ADDED}")
    minutes = sorted(int(row[0]) for row in result.result_rows)
    if not minutes:
        return 0
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1m
        SELECT minute, {_DIMS}, {_OVER_SUMS}, now64(6)
        FROM (
            SELECT minute, {_DIMS}, {_MEASURES} FROM {db}.usage_rollup_1m FINAL
            WHERE minute IN (SELECT minute FROM {db}.{ADDED})
            UNION ALL
            SELECT minute, {_DIMS}, {_MEASURES} FROM {db}.{ADDED}
        )
        GROUP BY minute, {_DIMS}
        """
    )
    _refresh_hours_of(store, minutes)
    store.client.command(f"TRUNCATE TABLE {db}.{ADDED}")
    return len(minutes)


def note(store: Store, minutes: Iterable[int]) -> None:
    """Note ``minutes`` (epoch seconds) for the next :func:`refresh_pending`; durable on return."""
    touched = sorted(m for m in {int(m) // 60 * 60 for m in minutes} if 0 <= m < 2**32)
    if touched:
        rows = [[m] for m in touched]
        store.client.insert(f"{store.database}.rollup_pending", rows, column_names=["minute"])


def recover(store: Store) -> int:
    """Where rollups are added from batches: recompute the minutes a crash left noted (before a
    source stores anything); returns the minutes recomputed. Elsewhere nothing to do: noted
    minutes are recomputed anyway."""
    if not added_from_batches(store):
        return 0
    return refresh_pending(store, clean=False)


def refresh_pending(store: Store, *, everything: bool = True, clean: bool = False) -> int:
    """Bring the rollups of the noted minutes up to date, then forget the notes it covered;
    returns the minutes done.

    Where rollups are added from batches: fold what batches added (:func:`fold`); with ``clean``
    false (before a source's first batch, :func:`recover`, or after a batch failed part way), also
    recompute every noted minute from the events. Otherwise recompute the noted minutes that are
    due (every noted minute with ``everything``). Due: ended :data:`GRACE_SECONDS` ago or more,
    or first noted :data:`MAX_DEFER_SECONDS` ago or more. A note made while this runs (by another
    writer on a server) is newer than the cutoff and stays; so do the notes of the minutes not due.
    """
    db = store.database
    if added_from_batches(store):
        folded = fold(store)
        result = store.client.query(f"SELECT DISTINCT toUnixTimestamp(minute) FROM {db}.rollup_pending")
        noted = sorted(int(row[0]) for row in result.result_rows)
        if not noted:
            return folded
        if not clean:
            _recompute(store, noted, None)
        # chDB: this process is the only writer while it holds the directory.
        store.client.command(f"TRUNCATE TABLE {db}.rollup_pending")
        return max(folded, 0 if clean else len(noted))
    result = store.client.query(
        f"""
        SELECT groupArrayIf(m, due), max(last), countIf(NOT due)
        FROM (
            SELECT toUnixTimestamp(minute) AS m, max(noted_at) AS last,
                   {{everything:Bool}}
                   OR minute <= now() - toIntervalSecond(60 + {{grace:UInt32}})
                   OR min(noted_at) <= now64(6) - toIntervalSecond({{defer:UInt32}}) AS due
            FROM {db}.rollup_pending
            GROUP BY minute
        )
        """,
        parameters={"everything": everything, "grace": GRACE_SECONDS, "defer": MAX_DEFER_SECONDS},
    )
    minutes, cutoff, deferred = result.result_rows[0]
    if not minutes:
        return 0
    done = _recompute(store, (int(m) for m in minutes), None)
    if not deferred and getattr(store.client, "embedded", False):
        # chDB: this process is the only writer while it holds the directory.
        store.client.command(f"TRUNCATE TABLE {db}.rollup_pending")
    else:
        store.client.command(
            f"""DELETE FROM {db}.rollup_pending
            WHERE noted_at <= {{cutoff:DateTime64(6, 'UTC')}}
              AND toUnixTimestamp(minute) IN {{minutes:Array(Int64)}}""",
            parameters={"cutoff": cutoff, "minutes": sorted(int(m) for m in minutes)},
        )
    return done


def rebuild(store: Store) -> int:
    """Recompute the rollups of every stored event (after a migration, or to repair); returns the
    minutes rebuilt."""
    db = store.database
    if not added_from_batches(store):
        result = store.client.query(
            f"SELECT DISTINCT toUnixTimestamp(toStartOfMinute(timestamp)) FROM {db}.usage_events"
        )
        return _recompute(store, (int(r[0]) for r in result.result_rows), None)
    # Without a copy of the events ordered by time every recompute of some minutes reads the whole
    # table: one pass instead, each event once (chDB stores each event once).
    fold(store)
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1m
        SELECT toStartOfMinute(timestamp) AS minute, {_DIMS}, {_OVER_EVENTS}, now64(6) AS version
        FROM {db}.usage_events WHERE {_IN_RANGE}
        GROUP BY minute, {_DIMS}
        SETTINGS max_bytes_before_external_group_by = {_REBUILD_GROUP_BYTES}
        """
    )
    result = store.client.query(
        f"SELECT DISTINCT toUnixTimestamp(toStartOfMinute(timestamp)) AS m FROM {db}.usage_events "
        f"WHERE {_IN_RANGE}"
    )
    minutes = sorted(int(r[0]) for r in result.result_rows)
    _refresh_hours_of(store, minutes)
    return len(minutes)


def _recompute(store: Store, minutes: Iterable[int], copies: bool | None) -> int:
    copies = copies_possible(store) if copies is None else copies
    touched = sorted({int(m) // 60 * 60 for m in minutes})
    for start in range(0, len(touched), _CHUNK):
        _refresh_minutes(store, touched[start : start + _CHUNK], copies)
    _refresh_hours_of(store, touched)
    return len(touched)


def _refresh_hours_of(store: Store, minutes: Sequence[int]) -> None:
    hours = sorted({m // 3600 * 3600 for m in minutes})
    for start in range(0, len(hours), _CHUNK):
        _refresh_hours(store, hours[start : start + _CHUNK])


def _refresh_minutes(store: Store, minutes: list[int], copies: bool) -> None:
    db = store.database
    once = "LIMIT 1 BY event_id" if copies else ""
    # The time bounds let the engine read only those minutes (through the by_time projection,
    # where the table has it); the IN list keeps sparse sets of minutes from pulling in everything
    # between them. The bounds are DateTime64, as the column: compared with a DateTime (seconds),
    # `timestamp < bound` skips the rows of a part or granule lying wholly within the second
    # before the bound wherever timestamp is in the sorting key (by_time's, the table's; chDB
    # 26.9; `timestamp > t` likewise the second after t), and a minute lost the events of its
    # last second.
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1m
        SELECT toStartOfMinute(timestamp) AS minute, {_DIMS}, {_OVER_EVENTS}, now64(6) AS version
        FROM (
            SELECT timestamp, {_DIMS}, error_type, request_size, response_size, duration_ns
            FROM {db}.usage_events
            WHERE timestamp >= toDateTime64({{low:Int64}}, 9, 'UTC')
              AND timestamp < toDateTime64({{high:Int64}}, 9, 'UTC')
              AND toUnixTimestamp(toStartOfMinute(timestamp)) IN {{minutes:Array(Int64)}}
            {once}
        )
        GROUP BY minute, {_DIMS}
        """,
        parameters={"low": minutes[0], "high": minutes[-1] + 60, "minutes": minutes},
    )


def _refresh_hours(store: Store, hours: list[int]) -> None:
    db = store.database
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1h
        SELECT toStartOfHour(minute) AS hour, {_DIMS}, {_OVER_SUMS}, now64(6)
        FROM {db}.usage_rollup_1m FINAL
        WHERE minute >= toDateTime({{low:Int64}}, 'UTC') AND minute < toDateTime({{high:Int64}}, 'UTC')
          AND toUnixTimestamp(toStartOfHour(minute)) IN {{hours:Array(Int64)}}
        GROUP BY hour, {_DIMS}
        """,
        parameters={"low": hours[0], "high": hours[-1] + 3600, "hours": hours},
    )
