"""ClickHouse storage: migrations, idempotent inserts, the SQL checksum, sharing chDB between processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.spoolfill import make_payloads, write_spool
from usagelog.ingest import queries
from usagelog.ingest.errors import QueryError, SettingsError, StoreError
from usagelog.ingest.recycle import give_back_arrow_memory, memory_bytes
from usagelog.ingest.spool_ingest import GROUP_BYTES, ingest_spool
from usagelog.ingest.store import connect, migrations


def test_migrations_apply_once_and_record_their_version(chdb_url: str) -> None:
    with connect(chdb_url, migrate_schema=False) as store:
        applied = store.migrate()
        assert applied == [name for _, name, _ in migrations()]
        assert store.migrate() == []
        assert store.schema_version() == migrations()[-1][0]
        _, rows = store.query(
            "SELECT sorting_key, partition_key FROM system.tables "
            "WHERE database = 'usagelog' AND name = 'usage_events'"
        )
    assert rows[0][0].startswith("user_id, timestamp")
    assert rows[0][1] in ("", "tuple()")  # no partitions: a consumer's year is one key range


def test_give_back_memory_returns_the_engines_free_pages(chdb_url: str) -> None:
    """What a worker does past its memory bound before it restarts: the pages the engine's
    allocator kept after a large query leave the process's own memory."""
    with connect(chdb_url) as store:
        store.client.query("SELECT length(groupArray(toString(number))) FROM numbers(10000000)")
        before = memory_bytes()
        store.give_back_memory()
        after = memory_bytes()
    assert before is not None and after is not None
    assert before - after > 200 * 1024 * 1024, (before, after)  # ~500 MiB here


def test_merging_bytes_is_the_memory_of_the_merges_running_now(chdb_url: str) -> None:
    """What a worker past its bound leaves out: a background merge's memory, held while it runs."""
    with connect(chdb_url) as store:
        deadline = time.monotonic() + 60
        # A fresh store merges the small parts its migrations wrote (schema_migrations) first.
        while store.query("SELECT count() FROM system.merges")[1][0][0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.merging_bytes() == 0
        store.client.command("CREATE TABLE usagelog.parts (k UInt64, s String) ENGINE = MergeTree ORDER BY k")
        for _ in range(8):  # eight parts: the engine merges them in the background
            store.client.command(
                "INSERT INTO usagelog.parts SELECT rand64(), randomPrintableASCII(64) FROM numbers(500000)"
            )
        seen = 0  # the most seen at once: a merge caught as it starts holds little yet
        while seen <= 1024 * 1024 and time.monotonic() < deadline:
            seen = max(seen, store.merging_bytes())
            time.sleep(0.01)
        assert seen > 1024 * 1024, seen
        while store.query("SELECT count() FROM system.merges")[1][0][0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.merging_bytes() == 0


def test_give_back_arrow_memory_returns_the_pages_the_archives_tables_left() -> None:
    """The other half of it: pyarrow's allocator keeps what a table used after it is gone (the
    archive's tables of every batch), until asked to give it back."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pa.array(range(4_000_000))
    table = pa.table({"n": numbers, "s": pc.cast(numbers, pa.string())}).sort_by([("s", "descending")])
    del numbers, table
    assert pa.total_allocated_bytes() == 0
    before = memory_bytes()
    give_back_arrow_memory()
    after = memory_bytes()
    assert before is not None and after is not None
    assert before - after > 100 * 1024 * 1024, (before, after)


def test_sql_checksum_matches_the_emitters_checksum(tmp_path: Path, chdb_url: str) -> None:
    write_spool(tmp_path / "spool", segments=1, per_segment=20)
    ingest_spool(str(tmp_path / "spool"), chdb_url, "usagelog")
    with connect(chdb_url) as store:
        _, rows = store.query(
            f"SELECT countIf(checksum = {queries._checksum_sql(digits=16)}) FROM usagelog.usage_events"
        )
        assert rows[0][0] == 20
        store.client.command(
            "ALTER TABLE usagelog.usage_events UPDATE status_code = 299 WHERE seq = 3 "
            "SETTINGS mutations_sync = 1"
        )
        columns, audit = queries.audit(store)
    assert audit[0][columns.index("checksum_failures")] == 1


def test_a_batch_is_stored_as_one_compact_part(tmp_path: Path, chdb_url: str) -> None:
    """A batch of the default size (segments of 2,500 events are taken until they hold 64 MiB of
    payloads, then the rest) is a part in the compact format, a few files instead of a couple per
    column: under the engine's default threshold (10 MiB of rows in memory) the first would be wide."""
    segments, per_segment = 100, 2500
    write_spool(tmp_path / "spool", segments=segments, per_segment=per_segment)
    held, first = 0, 0
    for payload in make_payloads(segments, per_segment):  # the same sizes as the spool's
        held, first = held + len(payload), first + per_segment
        if held >= GROUP_BYTES:
            break
    assert GROUP_BYTES == 64 * 1024 * 1024 and per_segment * 60 < first < segments * per_segment
    assert ingest_spool(str(tmp_path / "spool"), chdb_url, "usagelog").inserted == segments * per_segment
    with connect(chdb_url) as store:
        _, parts = store.query(
            "SELECT rows, part_type FROM system.parts WHERE database = 'usagelog' "
            "AND table = 'usage_events' AND active ORDER BY rows DESC"
        )
        _, settings = store.query(
            "SELECT table, extract(create_table_query, 'min_bytes_for_wide_part = (\\\\d+)') "
            "FROM system.tables WHERE database = 'usagelog' "
            "AND name IN ('usage_events', 'monitored_events') ORDER BY table"
        )
    assert parts == [(first, "Compact"), (segments * per_segment - first, "Compact")]
    assert settings == [("monitored_events", "134217728"), ("usage_events", "134217728")]


def _hold(url: str, seconds: float, raw: bool = False) -> subprocess.Popen[str]:
    """Another process keeping the chDB directory open (via usagelog, or chdb directly)."""
    if raw:
        path = url[len("chdb://") :]
        code = (
            f"import chdb, time; c = chdb.connect({path!r}); c.query('SELECT 1'); print('held', flush=True); "
            f"time.sleep({seconds})"
        )
    else:
        code = (
            "import time; from usagelog.ingest.store import connect\n"
            f"with connect({url!r}):\n    print('held', flush=True); time.sleep({seconds})"
        )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def _cli(*args: str, env_wait: str = "60") -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "USAGELOG_CLICKHOUSE_WAIT_SECONDS": env_wait}
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_waits_for_another_usagelog_process_then_succeeds(chdb_url: str) -> None:
    with connect(chdb_url):
        pass
    holder = _hold(chdb_url, 2.0)
    started = time.monotonic()
    result = _cli("query", "SELECT 41 + 1 AS answer", "--clickhouse", chdb_url, "--format", "csv")
    holder.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["answer", "42"]
    assert "waiting for the chDB directory" in result.stderr
    assert time.monotonic() - started >= 1.0


def test_cli_gives_a_clear_message_when_the_directory_stays_busy(chdb_url: str) -> None:
    holder = _hold(chdb_url, 20.0)
    try:
        result = _cli("audit", "--clickhouse", chdb_url, env_wait="1")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "in use by another usagelog process" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_retries_while_a_foreign_process_holds_chdb(chdb_url: str) -> None:
    holder = _hold(chdb_url, 2.0, raw=True)
    result = _cli("query", "SELECT 1 AS one", "--clickhouse", chdb_url, "--format", "csv")
    holder.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["one", "1"]


def test_a_refused_statement_raises_query_error_with_the_engines_message(chdb_url: str) -> None:
    with connect(chdb_url) as store:
        with pytest.raises(QueryError, match="no_such_table"):
            store.query("SELECT * FROM usagelog.no_such_table")
        with pytest.raises(QueryError, match="Syntax error"):
            store.client.command("CREATE TABEL x")  # modules that use the client directly too
        assert store.query("SELECT 1 AS one") == (["one"], [(1,)])  # the store is still usable


def test_an_unreachable_server_raises_store_error_and_bad_names_settings_error() -> None:
    unreachable = connect("http://u:secret@127.0.0.1:1")
    with pytest.raises(StoreError, match=r"cannot open ClickHouse at http://u:\*\*\*@127.0.0.1:1"):
        unreachable.__enter__()
    badly_named = connect("chdb:///tmp/unused", database="a-b")
    with pytest.raises(SettingsError, match="USAGELOG_CLICKHOUSE_DATABASE: 'a-b'"):
        badly_named.__enter__()
