"""Read-only stores: the engine's ``readonly`` setting refuses changes, settings and file access;
migrations heal tables dropped by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

import usagelog.analytics as ul
from tests.spoolfill import write_spool
from usagelog.ingest.errors import QueryError
from usagelog.ingest.readonly import TABLE_FUNCTIONS, ReadOnlyStore
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import Store, connect


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "secret.csv").write_text("a,b\n1,2\n")
    return tmp_path


def tables(store: Store) -> set[str]:
    _, rows = store.query("SELECT name FROM system.tables WHERE database = 'usagelog'")
    return {r[0] for r in rows}


# Everything a read-only store must refuse: changes to tables, settings, and the table functions
# that read or write outside the store.
REFUSED = [
    "DROP TABLE usagelog.usage_events",
    "TRUNCATE TABLE usagelog.usage_events",
    "ALTER TABLE usagelog.usage_events DELETE WHERE 1",
    "INSERT INTO usagelog.usage_events (user_id) SELECT 'x'",
    "CREATE TABLE usagelog.leak (a String) ENGINE = File(CSV, '{files}/secret.csv')",
    "SELECT * FROM file('{files}/secret.csv', CSVWithNames)",
    "INSERT INTO FUNCTION file('{files}/written.csv', CSV, 'a UInt8') VALUES (1)",
    "SELECT * FROM url('http://127.0.0.1:9/x.csv', CSV, 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', CSV, 'a String')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SET max_threads = 1",
    "SELECT 1 SETTINGS readonly = 0",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_read_only_store_refuses_changes_settings_and_table_functions(
    chdb_url: str, files: Path, sql: str
) -> None:
    with connect(chdb_url) as store:
        before = tables(store)
        reader = ReadOnlyStore(store)
        with pytest.raises(QueryError, match="readonly"):
            reader.query(sql.format(files=files))
        assert tables(reader) == before
    assert not (files / "written.csv").exists()


def test_table_functions_level_reads_files_but_changes_no_table(chdb_url: str, files: Path) -> None:
    with connect(chdb_url) as store:
        reader = ReadOnlyStore(store, TABLE_FUNCTIONS)
        assert reader.query(f"SELECT * FROM file('{files}/secret.csv', CSVWithNames)")[1] == [(1, 2)]
        with pytest.raises(QueryError, match="readonly"):
            reader.query("DROP TABLE usagelog.usage_events")


def test_read_only_session_cannot_be_lifted_and_leaves_other_stores_writable(chdb_url: str) -> None:
    with connect(chdb_url) as store:
        reader = ReadOnlyStore(store)
        with pytest.raises(QueryError, match="readonly"):
            reader.query("SET readonly = 0")
        with pytest.raises(QueryError):
            reader.client.command("DROP TABLE usagelog.usage_events")
        assert reader.query("SELECT getSetting('readonly')")[1] == [(1,)]
    with connect(chdb_url) as store:  # a new client in the same process: its own session
        store.client.command("CREATE TABLE usagelog.scratch (a UInt8) ENGINE = Memory")
        assert "scratch" in tables(store)


def test_statement_check_refuses_into_outfile_and_several_statements(chdb_url: str, files: Path) -> None:
    out = files / "out.csv"
    with connect(chdb_url) as store:
        reader = ReadOnlyStore(store)
        with pytest.raises(QueryError, match="INTO OUTFILE"):
            reader.check_statement(f"SELECT 1 INTO OUTFILE '{out}'")
        with pytest.raises(QueryError, match="INTO OUTFILE"):
            reader.check_statement(f"SELECT {{n:UInt8}} INTO OUTFILE '{out}' TRUNCATE", {"n": 1})
        with pytest.raises(QueryError, match="Multi-statements"):
            reader.check_statement(f"SELECT 1; SELECT 2 INTO OUTFILE '{out}'")
        reader.check_statement("SELECT 'INTO OUTFILE ''x''; SELECT 2' AS text")  # a literal is not a clause
        reader.check_statement("SHOW TABLES FROM usagelog")
    assert not out.exists()


def test_analytics_query_refuses_file_reads_unless_asked_for_table_functions(
    chdb_url: str, files: Path
) -> None:
    sql = f"SELECT * FROM file('{files}/secret.csv', CSVWithNames)"
    with pytest.raises(QueryError, match="readonly"):
        ul.query(sql, url=chdb_url)
    with pytest.raises(QueryError, match="INTO OUTFILE"):
        ul.query(f"SELECT 1 INTO OUTFILE '{files}/out.csv'", url=chdb_url)
    assert ul.query(sql, url=chdb_url, table_functions=True).to_pylist() == [{"a": 1, "b": 2}]
    assert not (files / "out.csv").exists()


def test_dashboards_store_refuses_file_reads(chdb_url: str, files: Path) -> None:
    from usagelog.dashboards.serve import ReadOnlyStore as DashboardStore

    with connect(chdb_url) as store, pytest.raises(QueryError, match="readonly"):
        DashboardStore(store).client.query(f"SELECT * FROM file('{files}/secret.csv', CSVWithNames)")


# -- migrations heal --------------------------------------------------------------------------


def test_tables_dropped_by_hand_are_recreated_with_their_projection_and_settings(chdb_url: str) -> None:
    with connect(chdb_url) as store:
        expected = tables(store)
        _, projections = store.query("SELECT name FROM system.projections WHERE table = 'usage_events'")
        store.client.command("DROP TABLE usagelog.usage_events")
        store.client.command("DROP TABLE usagelog.dead_letters")
    with connect(chdb_url) as store:
        assert tables(store) == expected
        assert (
            store.query("SELECT name FROM system.projections WHERE table = 'usage_events'")[1] == projections
        )
        _, ddl = store.query("SHOW CREATE TABLE usagelog.dead_letters")
        assert "ttl_only_drop_parts = 1" in ddl[0][0]
        # usage_events in its compact form again (010), whose month parts expire row by row.
        _, ddl = store.query("SHOW CREATE TABLE usagelog.usage_events")
        assert "ttl_only_drop_parts = 0" in ddl[0][0] and "trace_bin" in ddl[0][0]
        assert store.migrate() == []  # nothing left to heal


def test_ingest_recovers_after_the_events_table_was_dropped(tmp_path: Path, chdb_url: str) -> None:
    write_spool(tmp_path / "one", segments=1, per_segment=10)
    assert ingest_spool(str(tmp_path / "one"), chdb_url, "usagelog").inserted == 10
    with connect(chdb_url) as store:
        store.client.command("DROP TABLE usagelog.usage_events")
    write_spool(tmp_path / "two", segments=1, per_segment=12)
    stats = ingest_spool(str(tmp_path / "two"), chdb_url, "usagelog")
    assert (stats.inserted, stats.dead_letters) == (12, 0)
    with connect(chdb_url) as store:
        assert store.query("SELECT count() FROM usagelog.usage_events")[1] == [(12,)]
        # The views that keep consumers and instances follow the recreated table.
        assert store.query("SELECT count() FROM usagelog.instances FINAL")[1][0][0] >= 1
