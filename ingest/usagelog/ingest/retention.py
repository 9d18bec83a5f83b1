"""How long each table keeps its rows: TTLs from ``USAGELOG_RETENTION_*`` variables.

Whole days; ``0`` keeps rows forever. ``usagelog ingest`` (spool or Kafka) applies them at
start, changing a table's TTL only where it differs, so the variables are the one place
retention is set; commands that only read never change it. The variables are read, with every
other setting, by :mod:`usagelog.ingest.settings`.

- ``USAGELOG_RETENTION_EVENTS_DAYS`` (default ``0``, forever): ``usage_events``
- ``USAGELOG_RETENTION_MONITORED_DAYS`` (default ``7``): ``monitored_events``
- ``USAGELOG_RETENTION_ROLLUP_DAYS`` (default ``0``, forever): ``usage_rollup_1m`` and ``usage_rollup_1h``
- ``USAGELOG_RETENTION_DEAD_LETTERS_DAYS`` (default ``30``): ``dead_letters``
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SettingsError
from .settings import RETENTION_DAYS, load_retention
from .stored import copies_possible

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True)
class Retention:
    variable: str  # its default is in settings.RETENTION_DAYS
    tables: tuple[tuple[str, str], ...]  # (table, the DateTime expression its TTL counts from)

    @property
    def default_days(self) -> int:
        return RETENTION_DAYS[self.variable]


RETENTIONS = (
    Retention("USAGELOG_RETENTION_EVENTS_DAYS", (("usage_events", "toDateTime(timestamp)"),)),
    Retention("USAGELOG_RETENTION_MONITORED_DAYS", (("monitored_events", "toDateTime(timestamp)"),)),
    Retention("USAGELOG_RETENTION_ROLLUP_DAYS", (("usage_rollup_1m", "minute"), ("usage_rollup_1h", "hour"))),
    Retention("USAGELOG_RETENTION_DEAD_LETTERS_DAYS", (("dead_letters", "toDateTime(received_at)"),)),
)

# A bad USAGELOG_RETENTION_* variable is a bad setting like any other.
RetentionError = SettingsError


def retention_days(
    environ: Mapping[str, str] | None = None, *, days: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Days per table (0: forever), from ``days`` per variable (as in ``Settings.retention``)
    or else the environment; every bad variable is reported at once (:class:`SettingsError`)."""
    by_variable = load_retention(environ) if days is None else days
    return {table: by_variable[r.variable] for r in RETENTIONS for table, _ in r.tables}


def _expression(column: str, days: int) -> str:
    return f"{column} + toIntervalDay({days})"


def _engine_full(store: Store, table: str) -> str:
    _, rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        {"db": store.database, "table": table},
    )
    return str(rows[0][0]) if rows else ""


def _ttl(engine_full: str) -> str:
    match = re.search(r"\bTTL (.*?)(?: SETTINGS |$)", engine_full)
    return match.group(1).strip() if match else ""


def current_ttl(store: Store, table: str) -> str:
    """The table's TTL expression as the engine prints it, or '' when it has none."""
    return _ttl(_engine_full(store, table))


# How merges of usage_events (a ReplacingMergeTree) treat its projections (by_time, by_instance).
PROJECTION_MERGES = "deduplicate_merge_projection_mode"


def projection_merges(store: Store) -> str:
    """The value of :data:`PROJECTION_MERGES` for ``usage_events`` that keeps its projections
    equal to its rows.

    ``rebuild`` (a merge sorts the projections' rows afresh from the merged rows: about half of a
    merge's CPU, and ~300 MiB per million events while it runs) wherever a merge can drop rows:
    where the table can hold copies of an event until a merge folds them (a ClickHouse server,
    :func:`usagelog.ingest.stored.copies_possible`), and with a TTL. ``ignore`` (the projections'
    parts are merged like the table's) in chDB without a TTL, where no merge drops a row.
    """
    rebuild = copies_possible(store) or current_ttl(store, "usage_events")
    return "rebuild" if rebuild else "ignore"


def match_projection_merges(store: Store, mode: str | None = None) -> str:
    """Set :data:`PROJECTION_MERGES` of ``usage_events`` to ``mode`` (default:
    :func:`projection_merges`) where it differs; returns the mode. Ingest calls it on every store it
    opens, and :func:`apply_retention` before and after it changes the table's TTL."""
    mode = mode or projection_merges(store)
    match = re.search(PROJECTION_MERGES + r" = '(\w+)'", _engine_full(store, "usage_events"))
    if match is None or match.group(1) != mode:
        store.client.command(
            f"ALTER TABLE {store.database}.usage_events MODIFY SETTING {PROJECTION_MERGES} = '{mode}'"
        )
    return mode


def apply_retention(
    store: Store, environ: Mapping[str, str] | None = None, *, days: Mapping[str, int] | None = None
) -> dict[str, str]:
    """Set each table's TTL from ``days`` per variable, or else the environment; returns the
    tables changed and their new TTL."""
    per_table = retention_days(environ, days=days)
    changed = {}
    for retention in RETENTIONS:
        for table, column in retention.tables:
            wanted = _expression(column, per_table[table]) if per_table[table] else ""
            if current_ttl(store, table) == wanted:
                continue
            if table == "usage_events":
                # Merges that drop expired rows must rebuild the projections: before the TTL is.
                match_projection_merges(store, "rebuild")
            if wanted:
                store.client.command(f"ALTER TABLE {store.database}.{table} MODIFY TTL {wanted}")
            else:
                store.client.command(f"ALTER TABLE {store.database}.{table} REMOVE TTL")
            changed[table] = wanted or "(none)"
    if "usage_events" in changed:
        match_projection_merges(store)
    return changed
