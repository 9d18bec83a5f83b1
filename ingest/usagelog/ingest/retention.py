"""How long each table keeps its rows: TTLs from ``USAGELOG_RETENTION_*`` variables.

Whole days; ``0`` keeps rows forever. ``usagelog ingest`` (spool or Kafka) applies them at
start, changing a table's TTL only where it differs, so the variables are the one place
retention is set; commands that only read never change it.

- ``USAGELOG_RETENTION_EVENTS_DAYS`` (default ``0``, forever): ``usage_events``
- ``USAGELOG_RETENTION_MONITORED_DAYS`` (default ``7``): ``monitored_events``
- ``USAGELOG_RETENTION_ROLLUP_DAYS`` (default ``0``, forever): ``usage_rollup_1m`` and ``usage_rollup_1h``
- ``USAGELOG_RETENTION_DEAD_LETTERS_DAYS`` (default ``30``): ``dead_letters``
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .store import Store


@dataclass(frozen=True)
class Retention:
    variable: str
    default_days: int
    tables: tuple[tuple[str, str], ...]  # (table, the DateTime expression its TTL counts from)


RETENTIONS = (
    Retention("USAGELOG_RETENTION_EVENTS_DAYS", 0, (("usage_events", "toDateTime(timestamp)"),)),
    Retention("USAGELOG_RETENTION_MONITORED_DAYS", 7, (("monitored_events", "toDateTime(timestamp)"),)),
    Retention(
        "USAGELOG_RETENTION_ROLLUP_DAYS", 0, (("usage_rollup_1m", "minute"), ("usage_rollup_1h", "hour"))
    ),
    Retention("USAGELOG_RETENTION_DEAD_LETTERS_DAYS", 30, (("dead_letters", "toDateTime(received_at)"),)),
)


class RetentionError(ValueError):
    """A ``USAGELOG_RETENTION_*`` variable is not a whole number of days."""


def retention_days(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Days per table (0: forever); every bad variable is reported at once."""
    env = os.environ if environ is None else environ
    days: dict[str, int] = {}
    problems = []
    for retention in RETENTIONS:
        raw = env.get(retention.variable, "").strip()
        value = retention.default_days
        if raw:
            try:
                value = int(raw)
                if value < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{retention.variable}={raw!r}: expected whole days (0 keeps rows forever)")
        for table, _ in retention.tables:
            days[table] = value
    if problems:
        raise RetentionError("; ".join(problems))
    return days


def _expression(column: str, days: int) -> str:
    return f"{column} + toIntervalDay({days})"


def current_ttl(store: Store, table: str) -> str:
    """The table's TTL expression as the engine prints it, or '' when it has none."""
    _, rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        {"db": store.database, "table": table},
    )
    if not rows:
        return ""
    match = re.search(r"\bTTL (.*?)(?: SETTINGS |$)", str(rows[0][0]))
    return match.group(1).strip() if match else ""


def apply_retention(store: Store, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set each table's TTL from the environment; returns the tables changed and their new TTL."""
    days = retention_days(environ)
    changed = {}
    for retention in RETENTIONS:
        for table, column in retention.tables:
            wanted = _expression(column, days[table]) if days[table] else ""
            if current_ttl(store, table) == wanted:
                continue
            if wanted:
                store.client.command(f"ALTER TABLE {store.database}.{table} MODIFY TTL {wanted}")
            else:
                store.client.command(f"ALTER TABLE {store.database}.{table} REMOVE TTL")
            changed[table] = wanted or "(none)"
    return changed
