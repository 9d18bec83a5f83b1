"""The read side of the CLI and report: timelines, audit, error rates."""

from __future__ import annotations

from typing import Any

from usagelog.instrumentation.event import CANONICAL_FIELDS

from .store import Store

TIMELINE_COLUMNS = (
    "formatDateTime(timestamp, '%Y-%m-%d %H:%i:%S.%f', 'UTC') AS time",
    "service_instance_id AS instance",
    "seq",
    "method",
    "route",
    "path",
    "concat(path, if(query = '', '', concat('?', query))) AS uri",
    "status_code AS status",
    "error_type",
    "round(duration_ns / 1e6, 3) AS ms",
    "region",
    "cluster",
    "trace_id",
    "monitored",
)


def timeline(store: Store, user_id: str, limit: int = 0) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One user's events in order: timestamp, then instance, then sequence number."""
    sql = (
        f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM {store.database}.usage_events FINAL "
        "WHERE user_id = {user:String} ORDER BY timestamp, service_instance_id, seq"
    )
    if limit > 0:
        sql += f" LIMIT {int(limit)}"
    return store.query(sql, {"user": user_id})


def _checksum_sql(prefix: str = "") -> str:
    """The event checksum recomputed in SQL, exactly as ``usagelog.instrumentation.event.checksum``."""
    parts = []
    for column, _ in CANONICAL_FIELDS:
        if column == "timestamp_ns":
            parts.append(f"toString(toUnixTimestamp64Nano({prefix}timestamp))")
        elif column == "monitored":
            parts.append(f"toString(toUInt8({prefix}monitored))")
        else:
            parts.append(f"toString({prefix}{column})")
    return f"lower(substring(hex(SHA256(concatWithSeparator('\\x1f', {', '.join(parts)}))), 1, 32))"


def audit(store: Store) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Per instance: events stored, sequence gaps, duplicates and checksum failures.

    ``gaps`` counts sequence numbers missing between 1 and the highest one seen;
    ``duplicates`` counts stored copies beyond the first of an event ID, plus sequence numbers
    used by more than one event; ``checksum_failures`` recomputes every stored row's checksum
    and adds the events dead-lettered for a bad one.
    """
    db = store.database
    sql = f"""
    SELECT
        e.service_instance_id AS instance,
        any(e.service_name) AS service,
        any(e.host_name) AS host,
        any(e.region) AS region,
        count() AS events,
        max(e.seq) AS max_seq,
        toInt64(max(e.seq)) - toInt64(uniqExact(e.seq)) AS gaps,
        (count() - uniqExact(e.event_id)) + (uniqExact(e.event_id) - uniqExact(e.seq)) AS duplicates,
        countIf(e.checksum != {_checksum_sql("e.")}) + any(ifNull(d.bad, 0)) AS checksum_failures
    FROM {db}.usage_events AS e
    LEFT JOIN (
        SELECT service_instance_id, count() AS bad FROM {db}.dead_letters
        WHERE reason LIKE 'checksum%' GROUP BY service_instance_id
    ) AS d ON d.service_instance_id = e.service_instance_id
    GROUP BY e.service_instance_id
    ORDER BY service, instance
    """
    return store.query(sql)


def error_rates(store: Store) -> tuple[list[str], list[tuple[Any, ...]]]:
    db = store.database
    return store.query(
        f"""
        SELECT if(route = '', '(no route)', route) AS route, count() AS requests,
               countIf(status_code >= 400 AND status_code < 500) AS client_errors,
               countIf(status_code >= 500 OR error_type != '') AS server_errors,
               round(100 * countIf(status_code >= 500 OR error_type != '') / count(), 1) AS server_error_pct,
               round(quantile(0.95)(duration_ns) / 1e6, 2) AS p95_ms
        FROM {db}.usage_events FINAL GROUP BY route ORDER BY requests DESC, route
        """
    )
