"""The read side of the CLI and the Python API: timelines, top lists, exports, audit, error rates.

Every value a user gives (a user ID, a route, a status, a time) reaches ClickHouse as a query
parameter, never as SQL text.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:
    from .audit import InstanceAudit

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


@dataclass(frozen=True)
class Filters:
    """What a read narrows to; every field optional. ``status`` is ``404``, ``4xx`` or ``400-499``."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    user: str | None = None
    route: str | None = None
    status: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """A WHERE clause (without the keyword) and its parameters."""
        parts: list[str] = ["1"]
        params: dict[str, Any] = {}
        if self.start is not None:
            parts.append("timestamp >= {start:DateTime64(9, 'UTC')}")
            params["start"] = self.start
        if self.end is not None:
            parts.append("timestamp < {end:DateTime64(9, 'UTC')}")
            params["end"] = self.end
        if self.user is not None:
            parts.append("user_id = {user:String}")
            params["user"] = self.user
        if self.route is not None:
            parts.append("route = {route:String}")
            params["route"] = self.route
        if self.status is not None:
            low, high = parse_status(self.status)
            parts.append("status_code BETWEEN {status_low:UInt16} AND {status_high:UInt16}")
            params.update(status_low=low, status_high=high)
        return " AND ".join(parts), params


def parse_status(text: str) -> tuple[int, int]:
    """``404`` → (404, 404); ``4xx`` → (400, 499); ``500-599`` → (500, 599)."""
    value = text.strip().lower()
    if re.fullmatch(r"[1-5]xx", value):
        base = int(value[0]) * 100
        return base, base + 99
    match = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", value)
    if not match:
        raise ValueError(f"--status {text!r}: expected a code (404), a class (5xx) or a range (400-499)")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if high < low:
        raise ValueError(f"--status {text!r}: the range ends before it starts")
    return low, high


def timeline(
    store: Store, user_id: str, limit: int = 0, filters: Filters | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One user's events in order: timestamp, then instance, then sequence number."""
    return store.query(*timeline_query(store, user_id, limit, filters))


def timeline_query(
    store: Store, user_id: str, limit: int = 0, filters: Filters | None = None
) -> tuple[str, dict[str, Any]]:
    where, params = (filters or Filters()).where()
    sql = (
        f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM {store.database}.usage_events FINAL "
        f"WHERE user_id = {{user:String}} AND {where} ORDER BY timestamp, service_instance_id, seq"
    )
    if limit > 0:
        sql += " LIMIT {limit:UInt64}"
        params["limit"] = limit
    return sql, {**params, "user": user_id}


TOP = ("users", "routes", "errors")


def top(
    store: Store, what: str, filters: Filters, limit: int = 20
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The busiest consumers (``users``), routes (``routes``), or failures (``errors``: by route,
    status and error type) in the time range."""
    return store.query(*top_query(store, what, filters, limit))


def top_query(store: Store, what: str, filters: Filters, limit: int = 20) -> tuple[str, dict[str, Any]]:
    where, params = filters.where()
    params["limit"] = limit
    db = store.database
    shares = (
        "round(100 * countIf(status_code >= 500) / count(), 2) AS server_error_pct, "
        "round(100 * countIf(status_code >= 400 AND status_code < 500) / count(), 2) AS client_error_pct, "
        "round(quantile(0.95)(duration_ns) / 1e6, 2) AS p95_ms"
    )
    if what == "users":
        sql = (
            f"SELECT user_id AS user, count() AS requests, {shares}, uniq(route) AS routes, "
            "max(timestamp) AS last_seen "
            f"FROM {db}.usage_events WHERE {where} AND user_id != '' "
            "GROUP BY user_id ORDER BY requests DESC, user LIMIT {limit:UInt64}"
        )
    elif what == "routes":
        sql = (
            "SELECT service_name AS service, method, if(route = '', '(no route)', route) AS route, "
            f"count() AS requests, {shares}, uniqIf(user_id, user_id != '') AS users "
            f"FROM {db}.usage_events WHERE {where} GROUP BY service_name, method, route "
            "ORDER BY requests DESC, service, route, method LIMIT {limit:UInt64}"
        )
    elif what == "errors":
        sql = (
            "SELECT service_name AS service, if(route = '', '(no route)', route) AS route, "
            "status_code AS status, error_type, count() AS requests, "
            "uniqIf(user_id, user_id != '') AS users, max(timestamp) AS last_seen "
            f"FROM {db}.usage_events WHERE {where} AND (status_code >= 400 OR error_type != '') "
            "GROUP BY service_name, route, status_code, error_type "
            "ORDER BY requests DESC, service, route, status, error_type LIMIT {limit:UInt64}"
        )
    else:
        raise ValueError(f"top {what!r}: expected one of {', '.join(TOP)}")
    return sql, params


# Every stored column but the internal ones, in table order: what an export writes.
EXPORT_COLUMNS = (
    "event_id", "timestamp", "duration_ns", "user_id", "trace_id", "span_id", "service_name",
    "service_instance_id", "host_name", "host_id", "process_pid", "cluster", "region", "method", "route",
    "path", "query", "status_code", "error_type", "client_address", "user_agent", "request_body",
    "response_body", "request_size", "response_size", "seq", "monitored", "checksum",
    "observed_timestamp", "user_id_claimed", "attributes", "inserted_at",
)  # fmt: skip


def events_query(
    store: Store, filters: Filters, columns: tuple[str, ...] = EXPORT_COLUMNS
) -> tuple[str, dict[str, Any]]:
    """The events matching ``filters``, each once, in timeline order (user, time, instance, seq)."""
    where, params = filters.where()
    unknown = [c for c in columns if c not in EXPORT_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r}; columns are {', '.join(EXPORT_COLUMNS)}")
    sql = (
        f"SELECT {', '.join(columns)} FROM {store.database}.usage_events FINAL WHERE {where} "
        "ORDER BY user_id, timestamp, service_instance_id, seq"
    )
    return sql, params


def count_events(store: Store, filters: Filters) -> int:
    where, params = filters.where()
    _, rows = store.query(f"SELECT count() FROM {store.database}.usage_events FINAL WHERE {where}", params)
    return int(rows[0][0])


def _checksum_sql(prefix: str = "", digits: int = 32) -> str:
    """The event checksum recomputed in SQL, exactly as ``usagelog.instrumentation.event.checksum``:
    its first ``digits`` hex digits (32, all of it; ``usage_events`` keeps 16, see ``stored.py``)."""
    return f"lower(substring(hex(SHA256({_checksum_input(prefix)})), 1, {digits}))"


def _checksum_input(prefix: str) -> str:
    """What the checksum is the SHA-256 of: the checksummed fields as text, in their order."""
    from usagelog.instrumentation.event import CHECKSUM_FIELDS  # the audit's alone

    parts = []
    for f in CHECKSUM_FIELDS:
        if f.arrow == "timestamp_ns":
            parts.append(f"toString(toUnixTimestamp64Nano({prefix}{f.column}))")
        elif f.arrow == "bool":
            parts.append(f"toString(toUInt8({prefix}{f.column}))")
        else:
            parts.append(f"toString({prefix}{f.column})")
    return f"concatWithSeparator('\\x1f', {', '.join(parts)})"


def audit(store: Store) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Per instance: events stored, events lost and where, dead letters, duplicates and checksum
    failures (:mod:`usagelog.ingest.audit` says how each is found); one row per instance."""
    from . import audit as audit_module

    instances = audit_instances(store)
    return list(audit_module.COLUMNS), [i.row() for i in instances]


def audit_instances(store: Store) -> list[InstanceAudit]:
    """The audit of every instance, with the missing ranges, loss reports and dead letters."""
    from . import audit as audit_module
    from .stored import COMPACT_CHECKSUM_HEX

    # usage_events keeps the checksum's first 64 bits (ingest verified all 128 on arrival) as a
    # big-endian UInt64: compared with the SHA-256's first bytes read the same way.
    recomputed = f"SHA256({_checksum_input('e.')})"
    first = f"reinterpretAsUInt64(reverse(substring({recomputed}, 1, {COMPACT_CHECKSUM_HEX // 2})))"
    return audit_module.audit(store, f"e.checksum64 != {first}")


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
