"""usagelog from Python (a notebook, a script): events, a consumer's timeline, top lists.

Each function opens the store for the call (so it shares a chDB directory politely with ingest),
runs read-only, and returns an Arrow table, or a pandas DataFrame with ``as_pandas=True``::

    import usagelog.analytics as ul

    ul.timeline("alice", since="7d").to_pandas()
    ul.top("routes", since="24h", as_pandas=True)
    ul.events(since="1h", status="5xx", columns=("timestamp", "user_id", "route", "status_code"))
    ul.query("SELECT route, count() FROM usagelog.usage_events GROUP BY route")

``url`` and ``database`` default to ``USAGELOG_CLICKHOUSE_URL`` / ``USAGELOG_CLICKHOUSE_DATABASE``
(else the embedded store in ``./.usagelog/chdb`` and ``usagelog``). Times are ``24h`` / ``7d``
(back from now), ``now-1h``, ISO-8601 or epoch milliseconds.

Read-only means the engine's ``readonly = 1`` on the session (:mod:`usagelog.ingest.readonly`):
nothing can change a table (DROP, INSERT, ALTER, TRUNCATE are refused), nor a setting, and
table functions that reach outside the store (``file()``, ``url()``, ``s3()``) are refused too.
``query(..., table_functions=True)`` runs with ``readonly = 2`` instead, to read archive files in
place with ``file()`` or ``s3()`` (and use ``SETTINGS``): tables still cannot change, but such a
query can write a file (``INSERT INTO FUNCTION file(...)``), so do not hand it SQL from people who
should not write files as the user running it. On chDB, ``query()`` takes one statement at a
time and refuses ``INTO OUTFILE`` (which the embedded engine would write whatever ``readonly``
says).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from usagelog.ingest import queries
from usagelog.ingest.readonly import READ_ONLY, TABLE_FUNCTIONS, ReadOnlyStore
from usagelog.ingest.settings import load_settings
from usagelog.ingest.store import Store, connect
from usagelog.ingest.timerange import time_range

__all__ = ["events", "query", "timeline", "top"]


@contextmanager
def _open(url: str | None, database: str | None, level: int = READ_ONLY) -> Iterator[ReadOnlyStore]:
    settings = load_settings(clickhouse=url, database=database, names={"clickhouse": "url"})
    with connect(settings.clickhouse_url, database=settings.database, wait=settings.wait_seconds) as store:
        yield ReadOnlyStore(store, level)


def _run(store: Store, sql: str, parameters: dict[str, Any], as_pandas: bool) -> Any:
    if as_pandas:
        return store.client.query_df(sql, parameters=parameters)
    return store.client.query_arrow(sql, parameters=parameters)


def _filters(since: str, until: str, **fields: Any) -> queries.Filters:
    start, end = time_range(since, until, names=("since", "until"))
    return queries.Filters(start, end, **fields)


def events(
    since: str = "24h",
    until: str = "now",
    *,
    user: str | None = None,
    route: str | None = None,
    status: str | None = None,
    columns: tuple[str, ...] = queries.EXPORT_COLUMNS,
    limit: int | None = None,
    url: str | None = None,
    database: str | None = None,
    as_pandas: bool = False,
) -> Any:
    """Stored events in the time range (each once), in timeline order; ``status`` is ``404``,
    ``5xx`` or ``400-499``. For more rows than fit in memory, use ``usagelog export``."""
    with _open(url, database) as store:
        sql, params = queries.events_query(
            store, _filters(since, until, user=user, route=route, status=status), columns
        )
        if limit is not None:
            sql += " LIMIT {limit:UInt64}"
            params["limit"] = limit
        return _run(store, sql, params, as_pandas)


def timeline(
    user: str,
    since: str = "30d",
    until: str = "now",
    *,
    route: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    url: str | None = None,
    database: str | None = None,
    as_pandas: bool = False,
) -> Any:
    """One consumer's requests in order (time, then instance, then sequence number)."""
    filters = _filters(since, until, route=route, status=status)
    with _open(url, database) as store:
        sql, params = queries.timeline_query(store, user, limit or 0, filters)
        return _run(store, sql, params, as_pandas)


def top(
    what: str,
    since: str = "24h",
    until: str = "now",
    *,
    limit: int = 20,
    url: str | None = None,
    database: str | None = None,
    as_pandas: bool = False,
) -> Any:
    """The busiest ``users``, ``routes``, or the most frequent ``errors`` in the time range."""
    with _open(url, database) as store:
        sql, params = queries.top_query(store, what, _filters(since, until), limit)
        return _run(store, sql, params, as_pandas)


def query(
    sql: str,
    parameters: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    database: str | None = None,
    as_pandas: bool = False,
    table_functions: bool = False,
) -> Any:
    """Any read-only SQL statement (``{name:Type}`` placeholders filled from ``parameters``);
    ``table_functions`` allows ``file()``, ``s3()``, ``url()`` and ``SETTINGS`` (``readonly = 2``)."""
    with _open(url, database, TABLE_FUNCTIONS if table_functions else READ_ONLY) as store:
        store.check_statement(sql, parameters)
        return _run(store, sql, parameters or {}, as_pandas)
