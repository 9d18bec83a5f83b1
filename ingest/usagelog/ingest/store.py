"""ClickHouse storage through ``clickhouse-connect``: connection, schema migrations, idempotent inserts.

``USAGELOG_CLICKHOUSE_URL`` (or ``--clickhouse``) selects the engine:

- ``chdb:///path/to/dir`` (default ``chdb://<cwd>/.usagelog/chdb``): the embedded chDB engine.
  chDB admits one process per data directory, so usagelog opens it briefly, under a lock file
  next to the directory (``<dir>.lock``), and waits its turn when another usagelog process
  holds it; a process outside usagelog holding the directory is retried the same way. After
  ``USAGELOG_CLICKHOUSE_WAIT_SECONDS`` (default 60) it gives up with a clear message.
- ``http(s)://user:password@host:port``: a ClickHouse server or cluster; concurrent writers are fine.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from usagelog.wait import wait_until

from .errors import QueryError, StoreError, UsagelogError
from .redact import redact, redact_url
from .settings import (
    DEFAULT_DATABASE,
    DEFAULT_WAIT_SECONDS,
    chdb_path,
    check_clickhouse,
    default_url,
    wait_seconds,
)

# Kept importable from here, where they were defined before settings.py and errors.py existed.
__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_WAIT_SECONDS",
    "QueryError",
    "Store",
    "StoreError",
    "chdb_path",
    "connect",
    "default_url",
    "migrations",
    "redact_url",
]

# Beside a chDB directory's lock, touched by a process waiting for it: a reader (the CLI, a
# dashboard), or another worker.
WANTED = ".wanted"
WANTED_BY_WORKER = ".wanted-by-worker"
ROLLUP_MIGRATION = 5
ROLLUPS_RECOMPUTED_MIGRATION = 12  # rollups recomputed once the minute's bounds were DateTime64
COMPACT_MIGRATION = 10  # converts usage_events to its compact form (usagelog.ingest.stored)
ROLLUPS_ADDED_MIGRATION = 13  # in chDB, rollups added from each insert (usagelog.ingest.rollup)
# The tables (and views) a migration creates, and every table it names, in its SQL.
_CREATED = re.compile(
    r"CREATE\s+(?:TABLE|(?:MATERIALIZED\s+)?VIEW)\s+IF\s+NOT\s+EXISTS\s+\$\{DATABASE\}\.(\w+)", re.IGNORECASE
)
_NAMED = re.compile(r"\$\{DATABASE\}\.(\w+)")
_ENGINE_BUSY = re.compile(r"Cannot lock file|already running|different path", re.IGNORECASE)


def try_lock(fd: int, path: str, announce: str = "") -> bool:
    """Take the lock of ``fd`` (the file ``path``) if no other process holds it; never waits.
    If one does and ``announce`` is set, says that this one wants it (see :func:`wanted_since`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if announce:
            _say_wanted(path, announce)
        return False
    return True


@contextmanager
def _file_lock(path: str, wait: float, what: str, announce: str = WANTED) -> Iterator[None]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        taken = wait_until(
            lambda: try_lock(fd, path, announce),
            wait,
            interval=0.05,
            on_wait=lambda: print(
                f"usagelog: waiting for {what} (used by another usagelog process)...", file=sys.stderr
            ),
        )
        if not taken:
            raise StoreError(
                f"{what} is in use by another usagelog process (lock {path}); "
                f"gave up after {wait:.0f}s. Try again when it has finished, or raise "
                "USAGELOG_CLICKHOUSE_WAIT_SECONDS."
            )
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _say_wanted(lock: str, marker: str) -> None:
    """Tell the process holding ``lock`` that another one waits (see :func:`wanted_since`)."""
    try:
        Path(lock + marker).touch()
    except OSError:  # a read-only directory: the holder lets go at the end of its slice anyway
        pass


def wanted_since(url: str, since: float, marker: str = WANTED) -> bool:
    """Whether another process has waited for the chDB directory of ``url`` since ``since``
    (``time.time()``): a worker holding it over a slice of batches lets go after the current
    batch, so a CLI query or a dashboard waits one batch, not a slice. With ``marker``
    :data:`WANTED_BY_WORKER`: whether another worker did (it waits for the end of the slice)."""
    path = chdb_path(url)
    if path is None:
        return False
    try:
        return os.stat(path + ".lock" + marker).st_mtime >= since
    except OSError:
        return False


def held_by_another(url: str, announce: str = WANTED) -> bool:
    """Whether another usagelog process holds the chDB directory of ``url`` right now (its turn
    lock; never waits). If so, says that this one wants it (``announce``, see :func:`wanted_since`)."""
    path = chdb_path(url)
    if path is None:
        return False
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        return not try_lock(fd, lock, announce)
    finally:
        os.close(fd)  # also lets go of the lock, if it was taken


def _engine_busy(path: str) -> bool:
    """Whether a process (usagelog or not) runs a ClickHouse engine on ``path`` right now.

    The engine holds an exclusive lock on ``<path>/status`` while it runs.
    """
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases our probe lock
    return False


def _open_client(url: str, database: str | None, wait: float) -> Any:
    import clickhouse_connect

    path = chdb_path(url)
    if path is not None:
        from .chdb_import import import_chdb_state

        import_chdb_state()
    failure: Exception | None = None  # why the last try failed; None: a foreign engine ran

    def try_open() -> Any:
        nonlocal failure
        failure = None
        if path is not None and _engine_busy(path):
            return None
        try:
            if path is not None:
                return clickhouse_connect.get_client(dsn="chdb://" + path, database=database)
            return clickhouse_connect.get_client(dsn=url, database=database)
        except Exception as exc:
            # Another process took the directory between the probe and the open: wait on.
            if path is not None and (_ENGINE_BUSY.search(str(exc)) or _engine_busy(path)):
                failure = exc
                return None
            raise StoreError(f"cannot open ClickHouse at {redact_url(url)}: {redact(str(exc))}") from exc

    client = wait_until(
        try_open,
        wait,
        interval=0.1,
        on_wait=lambda: print(
            f"usagelog: waiting for the chDB directory {path} (used by another process)...",
            file=sys.stderr,
        ),
    )
    if client is not None:
        return client
    if failure is not None:
        raise StoreError(f"cannot open ClickHouse at {redact_url(url)}: {redact(str(failure))}") from failure
    raise StoreError(
        f"the chDB directory {path} is in use by another process (not usagelog's lock); "
        f"gave up after {wait:.0f}s"
    )


@contextmanager
def connect(
    url: str,
    *,
    database: str = DEFAULT_DATABASE,
    wait: float | None = None,
    migrate_schema: bool = True,
    announce: str = WANTED,
) -> Iterator[Store]:
    """Open the store for a short while (``with connect(url) as store: ...``).

    While it waits for a chDB directory another process holds, it says so (``announce``, a
    marker; see :func:`wanted_since`): workers holding it let go after their batch. Workers
    announce with :data:`WANTED_BY_WORKER` instead, so workers sharing a directory take turns by
    slices: the one holding it lets the waiting one in at the end of its slice.

    ``wait`` defaults to ``USAGELOG_CLICKHOUSE_WAIT_SECONDS``. A bad URL or database name raises
    :class:`SettingsError`; ClickHouse unreachable or a chDB directory kept busy,
    :class:`StoreError`; a statement ClickHouse refuses, :class:`QueryError`.
    """
    check_clickhouse(url, database)
    wait = wait_seconds() if wait is None else wait
    path = chdb_path(url)
    # A server takes concurrent clients; a chDB directory one process at a time.
    what = f"the chDB directory {path}"
    turn = nullcontext() if path is None else _file_lock(path + ".lock", wait, what, announce)
    with turn:
        client = _Client(_open_client(url, None, wait), url)
        # With implicit projections on, the engine (26.9) miscounts count() over a time range that
        # covers part of a usage_events partition: it adds an exact count taken from the primary key
        # (user_id, timestamp, ...) to a read of the same rows. deploy/clickhouse/users.sql sets
        # the same for Grafana's and the CLI's users.
        client.set_client_setting("optimize_use_implicit_projections", "0")
        try:
            store = Store(client, database)
            if migrate_schema:
                store.migrate()
            yield store
        finally:
            client.close()


class _Client:
    """The clickhouse-connect client, raising usagelog's errors instead of the library's.

    Every call goes through here — :class:`Store`'s own and those of the modules that use
    ``store.client`` directly — so no ``clickhouse_connect`` exception leaves usagelog.
    Streams (``query_arrow_stream``) are translated when opened, not while read.
    """

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url
        self.embedded = chdb_path(url) is not None  # chDB, in this process

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except UsagelogError:
                raise
            except Exception as exc:
                translated = _translate(exc, self._url)
                if translated is None:
                    raise
                raise translated from exc

        return call


def _translate(exc: Exception, url: str) -> UsagelogError | None:
    """usagelog's error for a clickhouse-connect exception (None for any other exception)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    if not isinstance(exc, ClickHouseError):
        return None
    message = redact(" ".join(str(exc).split()))  # one line: the HTTP driver's messages span several
    if isinstance(exc, OperationalError) and chdb_path(url) is None:
        # The HTTP driver's word for "the request did not get through" (refused, timed out).
        return StoreError(f"ClickHouse at {redact_url(url)}: {message}")
    return QueryError(message)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every numbered migration, in order."""
    return list(_read_migrations())


@functools.cache
def _read_migrations() -> tuple[tuple[int, str, str], ...]:
    # Read once a process: every open checks them, some twice.
    from importlib import resources

    found = []
    for entry in resources.files("usagelog.ingest").joinpath("migrations").iterdir():
        match = re.match(r"^(\d+)_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return tuple(sorted(found))


class Store:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._compact: dict[str, bool] = {}

    # -- schema -------------------------------------------------------------------------
    def migrate(self, upto: int | None = None) -> list[str]:
        """Apply migrations not applied yet (up to version ``upto``); returns their names."""
        db = self.database
        wanted = {version for version, _, _ in migrations() if upto is None or version <= upto}
        present = self._tables()
        recorded = self._applied_versions(present)
        if wanted <= recorded and not self._to_heal(recorded, present)[1]:
            # Nothing to do, learned by reading alone: a read-only user (the CLI's and Grafana's,
            # deploy/clickhouse/users.sql) opens the store too, and ClickHouse refuses even
            # CREATE ... IF NOT EXISTS to it.
            return []
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        done = {
            row[0] for row in self.client.query(f"SELECT version FROM {db}.schema_migrations").result_rows
        }
        applied = self._heal(done)
        for version, name, sql in migrations():
            if version in done or (upto is not None and version > upto):
                continue
            self._run_migration(version, sql)
            self.client.insert(f"{db}.schema_migrations", [[version, name]], column_names=["version", "name"])
            applied.append(name)
        self._compact.clear()
        return applied

    def _has_compact_events(self) -> bool:
        self._compact.pop("usage_events", None)
        return self.compact("usage_events")

    def compact(self, table: str) -> bool:
        """Whether ``table`` has the compact stored form (:mod:`usagelog.ingest.stored`); read once."""
        if table not in self._compact:
            from .stored import COMPACT_MARKER

            _, rows = self.query(
                "SELECT count() FROM system.columns WHERE database = {db:String} AND table = {t:String} "
                "AND name = {c:String}",
                {"db": self.database, "t": table, "c": COMPACT_MARKER},
            )
            self._compact[table] = bool(rows[0][0])
        return self._compact[table]

    def _tables(self) -> set[str]:
        """The tables (and views) of the database, by reading only."""
        _, rows = self.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", {"db": self.database}
        )
        return {row[0] for row in rows}

    def _applied_versions(self, present: set[str]) -> set[int]:
        if "schema_migrations" not in present:
            return set()
        _, rows = self.query(f"SELECT version FROM {self.database}.schema_migrations")
        return {int(row[0]) for row in rows}

    def _run_migration(self, version: int, sql: str) -> None:
        statements = _statements(sql.replace("${DATABASE}", self.database))
        if version == COMPACT_MIGRATION and self._has_compact_events():
            # Already compact: converted before a crash, or created so by hand (a cluster's
            # replicated table, which a rebuild here would replace with a single-node one).
            statements = [f"DROP TABLE IF EXISTS {self.database}.usage_events_new"]
        for statement in statements:
            self.client.command(statement)
        if version == ROLLUPS_ADDED_MIGRATION and getattr(self.client, "embedded", False):
            from .rollup import added_view_sql

            self.client.command(f"ALTER TABLE {self.database}.usage_events DROP PROJECTION IF EXISTS by_time")
            self.client.command(added_view_sql(self.database))
        if version in (ROLLUP_MIGRATION, ROLLUPS_RECOMPUTED_MIGRATION):
            # Rollups of the events stored before the rollup tables existed (or before their
            # recompute read every event of a minute: migration 012).
            from .rollup import rebuild

            rebuild(self)

    def _to_heal(
        self, done: set[int], present: set[str] | None = None
    ) -> tuple[set[str], list[tuple[int, str, str]]]:
        """The tables applied migrations (``done``) created that are gone from ``present`` (default:
        read now), and the migrations to run again for them."""
        if present is None:
            present = self._tables()
        missing: set[str] = set()
        again = []
        for version, name, sql in migrations():
            if version not in done:
                continue
            creates = set(_CREATED.findall(sql))
            missing |= creates - present
            if missing & (creates | set(_NAMED.findall(sql))):
                again.append((version, name, sql))
        return missing, again

    def _heal(self, done: set[int]) -> list[str]:
        """Re-run the applied migrations whose tables are gone (dropped by hand, say), and the
        later ones that alter those tables (projections, settings): without this, a table
        dropped after its migration was recorded would fail every ingest from then on.
        Returns the names re-run."""
        missing, again = self._to_heal(done)
        if again:
            print(
                f"usagelog: {', '.join(sorted(missing))} missing from {self.database}; running "
                f"{', '.join(name for _, name, _ in again)} again",
                file=sys.stderr,
            )
        for version, _, sql in again:
            self._run_migration(version, sql)
        healed = [name for _, name, _ in again]
        return healed

    def give_back_memory(self) -> None:
        """On chDB, return the engine allocator's free pages to the system (``SYSTEM JEMALLOC
        PURGE``, a few ms): after a batch they are tens of MiB of the process's memory. A server:
        nothing (its memory is not this process's)."""
        if getattr(self.client, "embedded", False):
            self.client.command("SYSTEM JEMALLOC PURGE")

    def merging_bytes(self) -> int:
        """On chDB, the memory the engine's background merges hold right now (a merge of
        ``usage_events`` takes tens of MiB while it runs, more where its projections are rebuilt:
        :func:`usagelog.ingest.retention.projection_merges`); a server: 0."""
        if not getattr(self.client, "embedded", False):
            return 0
        rows = self.client.query("SELECT sum(memory_usage) FROM system.merges").result_rows
        return int(rows[0][0] or 0) if rows else 0

    def schema_version(self) -> int:
        rows = self.client.query(f"SELECT max(version) FROM {self.database}.schema_migrations").result_rows
        return int(rows[0][0] or 0)

    # -- writes -------------------------------------------------------------------------
    def existing_ids(self, rows: Sequence[dict[str, Any]], table: str = "usage_events") -> set[str]:
        """The event IDs among ``rows`` that ``table`` holds already: looked up by (instance, seq),
        compared whole (:func:`usagelog.ingest.stored.seen_sql`)."""
        if not rows:
            return set()
        from .stored import seen_sql

        pairs = sorted({(r["service_instance_id"], int(r["seq"])) for r in rows})
        result = self.client.query(
            seen_sql(self.database, table, "{pairs:Array(Tuple(String, UInt64))}", "{ids:Array(String)}"),
            parameters={"pairs": pairs, "ids": [r["event_id"] for r in rows]},
        )
        return {row[0] for row in result.result_rows}

    def insert_events(self, rows: Sequence[dict[str, Any]], table: str = "usage_events") -> tuple[int, int]:
        """Insert rows whose event ID is not stored yet; returns (inserted, skipped as duplicates).

        ``rows`` hold the event's logical columns; they are stored in ``table``'s form
        (:mod:`usagelog.ingest.stored`). Exact when writers take turns (chDB, under its lock);
        against a server with concurrent writers the check narrows duplicates and
        ``ReplacingMergeTree`` folds the rest.
        """
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["event_id"], row)
        from .stored import stored_columns, stored_rows

        existing = self.existing_ids(list(unique.values()), table)
        fresh = [row for event_id, row in unique.items() if event_id not in existing]
        if fresh:
            compact = self.compact(table)
            self.client.insert(
                f"{self.database}.{table}",
                stored_rows(compact, fresh),
                column_names=stored_columns(compact),
            )
        return len(fresh), len(rows) - len(fresh)

    def insert_losses(self, losses: Sequence[dict[str, Any]]) -> None:
        """Loss reports; a report stored before folds into one row by its ID (read with FINAL)."""
        if not losses:
            return
        from .decode import LOSS_COLUMNS

        self.client.insert(
            f"{self.database}.losses",
            [[loss[c] for c in LOSS_COLUMNS] for loss in losses],
            column_names=list(LOSS_COLUMNS),
        )

    def insert_dead_letters(self, letters: Sequence[dict[str, Any]]) -> None:
        if not letters:
            return
        columns = ["source", "location", "reason", "event_id", "service_instance_id", "payload"]
        self.client.insert(
            f"{self.database}.dead_letters",
            [
                [_clip(letter.get(c, "")) if c == "payload" else letter.get(c, "") for c in columns]
                for letter in letters
            ],
            column_names=columns,
        )

    # -- reads --------------------------------------------------------------------------
    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        result = self.client.query(sql, parameters=parameters or {})
        return list(result.column_names), [tuple(r) for r in result.result_rows]


DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024


def _clip(payload: Any) -> bytes:
    """Dead-letter payloads are stored as bytes (a column takes one type), at most 64 KiB."""
    data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "replace")
    return data[:DEAD_LETTER_PAYLOAD_LIMIT]


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
