"""Per-minute and per-hour rollups of ``usage_events``, recomputed exactly for the windows a batch touched.

A plain materialized view adds every inserted block to its rollup, so a batch that reaches
storage twice (at-least-once delivery) would be counted twice there, although
``usage_events`` folds it. Here ingest recomputes each touched minute from ``usage_events``
itself, counting each event once, and inserts the result with a newer ``version``;
``ReplacingMergeTree(version)`` keeps the newest row per key and readers use ``FINAL``. The
hours holding those minutes are then recomputed from the minute rollup the same way.

Against a ClickHouse server two workers can store one event at once (a Kafka redelivery racing
the first delivery) until a merge folds the copies, so the recompute keeps one row per event ID
(``LIMIT 1 BY event_id``: about two thirds of its CPU, and ~180 MiB per million events of a
minute). In chDB ingest stores each event once (:func:`usagelog.ingest.stored.copies_possible`),
so the rows are counted as they are.

Events only ever join a minute, never leave it, so the newest recompute of a minute is complete:
it saw every event stored before it began, and an event stored later triggers a later recompute.
Ingest notes the minutes a batch touched in ``rollup_pending`` (:func:`note`) before it gives up
the batch's source (deletes the spool segment, commits the Kafka offsets), and recomputes the
noted minutes (:func:`refresh_pending`) at most every :data:`~usagelog.ingest.pipeline.ROLLUP_SECONDS`
and when it closes its session; a crash in between leaves the notes for the next run.

While ingest runs, a minute is recomputed once it has ended (:data:`GRACE_SECONDS` after its end,
for the events still on their way), not while it is filling: every recompute reads each event of
the minute again, so a minute recomputed every few seconds while it filled had each of its events
read many times over. An event arriving later notes the minute again. A minute noted for
:data:`MAX_DEFER_SECONDS` is recomputed anyway (events stamped ahead of the engine's clock), and
a source that stops (or runs out of work) recomputes every noted minute.
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
# One INSERT ... SELECT covers at most this many touched minutes (the IN list stays small).
_CHUNK = 2000
# A minute is due for its recompute this long after its end, by the engine's clock (events reach
# storage a few seconds after their request: the export interval, then Kafka or the spool).
GRACE_SECONDS = 10
# ... or once noted this long ago, whatever its time (an instance whose clock runs ahead).
MAX_DEFER_SECONDS = 300


def minutes_of(rows: Sequence[dict[str, Any]]) -> set[int]:
    """Start (epoch seconds) of every minute the rows' timestamps (ns) fall in."""
    return {int(row["timestamp"]) // 60_000_000_000 * 60 for row in rows}


def refresh(store: Store, minutes: Iterable[int], *, copies: bool | None = None) -> int:
    """Recompute the minute rollup for ``minutes`` (epoch seconds, minute-aligned) and the hour
    rollup for the hours holding them; returns how many minutes were recomputed. ``copies``:
    whether to count each event ID once (default: whether ``usage_events`` can hold copies,
    :func:`usagelog.ingest.stored.copies_possible`)."""
    copies = copies_possible(store) if copies is None else copies
    touched = sorted({int(m) // 60 * 60 for m in minutes})
    for start in range(0, len(touched), _CHUNK):
        _refresh_minutes(store, touched[start : start + _CHUNK], copies)
    hours = sorted({m // 3600 * 3600 for m in touched})
    for start in range(0, len(hours), _CHUNK):
        _refresh_hours(store, hours[start : start + _CHUNK])
    return len(touched)


def note(store: Store, minutes: Iterable[int]) -> None:
    """Note ``minutes`` (epoch seconds) for the next :func:`refresh_pending`; durable on return."""
    # Rollup minutes are DateTime (seconds, up to 2106): an event stamped later has no minute there.
    touched = sorted(m for m in {int(m) // 60 * 60 for m in minutes} if 0 <= m < 2**32)
    if touched:
        rows = [[m] for m in touched]
        store.client.insert(f"{store.database}.rollup_pending", rows, column_names=["minute"])


def refresh_pending(store: Store, *, everything: bool = True) -> int:
    """Recompute the noted minutes that are due (every noted minute with ``everything``), then
    forget the notes it covered; returns the minutes done.

    Due: ended :data:`GRACE_SECONDS` ago or more, or first noted :data:`MAX_DEFER_SECONDS` ago or
    more. A note made while this runs (by another writer on a server) is newer than the cutoff
    and stays; so do the notes of the minutes not due.
    """
    db = store.database
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
    done = refresh(store, (int(m) for m in minutes))
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
    """Recompute the rollups of every stored event (after a migration, or to repair)."""
    db = store.database
    result = store.client.query(
        f"SELECT DISTINCT toUnixTimestamp(toStartOfMinute(timestamp)) FROM {db}.usage_events"
    )
    return refresh(store, (int(r[0]) for r in result.result_rows))


def _refresh_minutes(store: Store, minutes: list[int], copies: bool) -> None:
    db = store.database
    dims = ", ".join(DIMENSIONS)
    once = "LIMIT 1 BY event_id" if copies else ""
    # The time bounds let the engine read only those minutes (through the by_time projection);
    # the IN list keeps sparse sets of minutes from pulling in everything between them. The bounds
    # are DateTime64, as the column: compared with a DateTime (seconds), `timestamp < bound` skips
    # the rows of a part or granule lying wholly within the second before the bound wherever
    # timestamp is in the sorting key (by_time's, the table's; chDB 26.9; `timestamp > t` likewise
    # the second after t), and a minute lost the events of its last second.
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1m
        SELECT toStartOfMinute(timestamp) AS minute, {dims},
               count() AS requests, countIf(error_type != '') AS exceptions,
               sum(request_size) AS request_bytes, sum(response_size) AS response_bytes,
               sum(duration_ns) AS duration_ns_sum, max(duration_ns) AS duration_ns_max,
               quantilesTDigestState({_LEVELS})(duration_ns) AS duration_q, now64(6) AS version
        FROM (
            SELECT timestamp, {dims}, error_type, request_size, response_size, duration_ns
            FROM {db}.usage_events
            WHERE timestamp >= toDateTime64({{low:Int64}}, 9, 'UTC')
              AND timestamp < toDateTime64({{high:Int64}}, 9, 'UTC')
              AND toUnixTimestamp(toStartOfMinute(timestamp)) IN {{minutes:Array(Int64)}}
            {once}
        )
        GROUP BY minute, {dims}
        """,
        parameters={"low": minutes[0], "high": minutes[-1] + 60, "minutes": minutes},
    )


def _refresh_hours(store: Store, hours: list[int]) -> None:
    db = store.database
    dims = ", ".join(DIMENSIONS)
    store.client.command(
        f"""
        INSERT INTO {db}.usage_rollup_1h
        SELECT toStartOfHour(minute) AS hour, {dims},
               sum(requests), sum(exceptions), sum(request_bytes), sum(response_bytes),
               sum(duration_ns_sum), max(duration_ns_max),
               quantilesTDigestMergeState({_LEVELS})(duration_q), now64(6)
        FROM {db}.usage_rollup_1m FINAL
        WHERE minute >= toDateTime({{low:Int64}}, 'UTC') AND minute < toDateTime({{high:Int64}}, 'UTC')
          AND toUnixTimestamp(toStartOfHour(minute)) IN {{hours:Array(Int64)}}
        GROUP BY hour, {dims}
        """,
        parameters={"low": hours[0], "high": hours[-1] + 3600, "hours": hours},
    )
