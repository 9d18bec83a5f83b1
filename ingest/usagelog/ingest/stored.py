"""How each events table stores the event's logical columns (``usagelog.instrumentation.event.COLUMNS``).

``usage_events`` is stored compactly (migration 010): trace and span IDs as bytes, the first 64 bits
of the checksum, the event ID as its per-process prefix when it ends with the event's sequence
number, the observed time as an offset from the request's end (timestamp + duration; Int64
arithmetic wraps both ways, so every value comes back exact), the insert time from its start.
ALIAS columns give every reader the logical columns back, so only writers need this module: both
ingest paths insert through it — :meth:`Store.insert_events` converts Python rows with
:func:`stored_rows`, the engine decoder converts its staging table in SQL with :func:`select_sql`.
``monitored_events`` (small, short-lived) keeps the logical columns as they are. Which form a table
has is read from the table (``Store.compact``): a store not migrated to 010 yet (or a test's,
migrated part way) has the logical form everywhere.

The duplicate check of the compact table looks up a batch's (instance, seq) pairs in its
``by_instance`` projection (constant time, whatever the table holds) and compares the full event ID
(the engine decoder only when something is stored within the batch's sequence ranges).
With it, a table in chDB holds each event once (:func:`copies_possible`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from usagelog.instrumentation import event as ev

# The checksum hex digits the compact table keeps (the wire and monitored_events keep 32).
COMPACT_CHECKSUM_HEX = 16

_CANONICAL = (
    "match(event_id, '^[0-9a-f]{32}$') AND substring(event_id, 17) = leftPad(lower(hex(seq)), 16, '0')"
)
_CANONICAL_ID = re.compile(r"[0-9a-f]{32}")

# Logical column -> the stored columns holding it, each with its SQL over the logical columns.
# The other logical columns are stored as they are.
_COMPACT_SQL: dict[str, tuple[tuple[str, str], ...]] = {
    "event_id": (
        (
            "event_prefix",
            f"if({_CANONICAL}, reinterpretAsUInt64(reverse(unhex(substring(event_id, 1, 16)))), 0)",
        ),
        ("event_id_other", f"if({_CANONICAL}, '', event_id)"),
    ),
    "trace_id": (("trace_bin", "toFixedString(substring(unhex(trace_id), 1, 16), 16)"),),
    "span_id": (("span_bin", "toFixedString(substring(unhex(span_id), 1, 8), 8)"),),
    "checksum": (("checksum64", "reinterpretAsUInt64(reverse(unhex(substring(checksum, 1, 16))))"),),
    "observed_timestamp": (
        (
            "observed_offset_ns",
            "toUnixTimestamp64Nano(observed_timestamp) - toUnixTimestamp64Nano(timestamp) "
            "- toInt64(duration_ns)",
        ),
    ),
    "inserted_at": (
        (
            "inserted_offset_ms",
            "toUnixTimestamp64Milli(inserted_at) - intDiv(toUnixTimestamp64Nano(timestamp), 1000000)",
        ),
    ),
}


# A stored column only the compact form has.
COMPACT_MARKER = "event_prefix"


def stored_columns(compact: bool, columns: Sequence[str] = ev.COLUMNS) -> list[str]:
    """The stored columns that hold the logical ``columns`` (in the compact form or not)."""
    if not compact:
        return list(columns)
    return [name for c in columns for name, _ in _COMPACT_SQL.get(c, ((c, c),))]


def select_sql(compact: bool, columns: Sequence[str] = ev.COLUMNS) -> str:
    """The ``SELECT`` list converting a source of logical ``columns`` into the stored columns
    (in :func:`stored_columns` order)."""
    if not compact:
        return ", ".join(columns)
    return ", ".join(f"{sql} AS {name}" for c in columns for name, sql in _COMPACT_SQL.get(c, ((c, c),)))


def _event_id(event_id: str, seq: int) -> tuple[int, str]:
    if _CANONICAL_ID.fullmatch(event_id) and event_id[16:] == f"{seq:016x}":
        return int(event_id[:16], 16), ""
    return 0, event_id


def _fixed(hex_text: str, size: int) -> bytes:
    try:
        data = bytes.fromhex(hex_text)
    except ValueError:
        data = b""
    return data[:size].ljust(size, b"\0")


def _int64(n: int) -> int:
    """``n`` as ClickHouse's Int64 arithmetic gives it (wrapping, two's complement)."""
    return (n + 2**63) % 2**64 - 2**63


def _checksum64(checksum: str) -> int:
    try:
        return int(checksum[:16], 16) if checksum else 0
    except ValueError:
        return 0


def stored_rows(
    compact: bool, rows: Sequence[dict[str, Any]], columns: Sequence[str] = ev.COLUMNS
) -> list[list[Any]]:
    """Rows of logical columns (hex text IDs, times in nanoseconds) as stored, in
    :func:`stored_columns` order; the same conversion as :func:`select_sql`."""
    if not compact:
        return [[row[c] for c in columns] for row in rows]
    out = []
    for row in rows:
        values: list[Any] = []
        for c in columns:
            if c == "event_id":
                values.extend(_event_id(row["event_id"], int(row["seq"])))
            elif c == "trace_id":
                values.append(_fixed(row["trace_id"], 16))
            elif c == "span_id":
                values.append(_fixed(row["span_id"], 8))
            elif c == "checksum":
                values.append(_checksum64(row["checksum"]))
            elif c == "observed_timestamp":
                end = int(row["timestamp"]) + int(row["duration_ns"])
                values.append(_int64(int(row["observed_timestamp"]) - end))
            elif c == "inserted_at":
                raise ValueError("inserted_at is set by the table")
            else:
                values.append(row[c])
        out.append(values)
    return out


def copies_possible(store: Any) -> bool:
    """Whether an events table of ``store`` can hold an event twice until a merge folds the copies.

    Against a ClickHouse server, yes: two workers can store one event at once (a Kafka redelivery
    racing the first delivery), each finding it not stored yet. In chDB, no: ingest holds the
    directory for the whole of a batch, its duplicate check then sees every event stored before,
    and a batch's own copies are left out (:meth:`usagelog.ingest.store.Store.insert_events`, the
    engine decoder's ``LIMIT 1 BY``). Rows inserted by hand are outside this."""
    return not getattr(store.client, "embedded", False)


def seen_sql(db: str, table: str, pairs: str, ids: str) -> str:
    """``SELECT event_id`` of the events stored in ``table`` among a batch: ``pairs`` is SQL giving the
    batch's (service_instance_id, seq) pairs (a subquery or a parameter), ``ids`` its event IDs."""
    # usage_events: by_instance holds every column this reads, ordered by (instance, seq), so this
    # reads a few granules per instance whatever the table holds; monitored_events is small.
    return (
        f"SELECT event_id FROM {db}.{table} WHERE (service_instance_id, seq) IN {pairs} AND event_id IN {ids}"
    )
