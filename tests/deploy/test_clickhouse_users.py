"""ClickHouse least-privilege users (deploy/clickhouse/users.sql, rendered by initdb/users.sh)
and their wiring in deploy/compose.yaml.

chDB cannot run the SQL itself: its embedded engine has no writable access storage, so
CREATE USER / ROLE / GRANT are refused there ("no writeable access storage", or ACCESS_DENIED
for the default user). What chDB can check is checked with it: every rendered statement parses
with the engine's own parser (``formatQuery``, which also refuses unknown privilege names), and
a read-only session (``readonly = 2``, the readers' profile) opens a migrated store and reads
while every write is refused. The privileges themselves are checked against what the code runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.deploy.test_compose import environment
from usagelog.ingest.store import Store, _Client, _statements, connect, migrations

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read deploy/compose.yaml")

REPO = Path(__file__).resolve().parents[2]
USERS_SQL = REPO / "deploy" / "clickhouse" / "users.sql"
USERS_SH = REPO / "deploy" / "clickhouse" / "initdb" / "users.sh"
COMPOSE = REPO / "deploy" / "compose.yaml"

PASSWORDS = {
    "CLICKHOUSE_WORKER_PASSWORD": "worker'pw$(x)",
    "CLICKHOUSE_CLI_PASSWORD": "cli-pw\\n",
    "GRAFANA_CLICKHOUSE_PASSWORD": "grafana pw",
    "CLICKHOUSE_COLLECTOR_PASSWORD": "collector/pw&",
}
# Privileges that may change or delete stored data, manage access, or reach outside ClickHouse
# (table functions file(), url(), s3(), remote() need a source privilege).
FORBIDDEN = re.compile(
    r"\b(ALL|DROP|TRUNCATE|ALTER DELETE|ALTER UPDATE|ALTER TABLE|ALTER\s*(,|ON)|OPTIMIZE|SYSTEM|"
    r"ACCESS MANAGEMENT|ROLE ADMIN|INTROSPECTION|SOURCES|FILE|URL|S3|REMOTE|MYSQL|POSTGRES|HDFS|"
    r"CREATE TEMPORARY TABLE|CREATE FUNCTION|CREATE USER|KILL QUERY)\b",
    re.IGNORECASE,
)


def render(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKHOUSE_", "GRAFANA_", "USAGELOG_"))}
    return subprocess.run(
        ["bash", str(USERS_SH), "--print"],
        env={**base, **PASSWORDS, "USAGELOG_USERS_SQL": str(USERS_SQL), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [" ".join(s.split()) for s in "\n".join(lines).split(";") if s.strip()]


@pytest.fixture(scope="module")
def rendered() -> list[str]:
    result = render()
    assert result.returncode == 0, result.stderr
    return statements(result.stdout)


def grants_to(rendered: list[str], grantee: str) -> list[tuple[str, str]]:
    """(privileges, on) of every GRANT ... ON ... TO grantee."""
    found = []
    for statement in rendered:
        match = re.fullmatch(r"GRANT (.+) ON (\S+) TO (\w+)", statement)
        if match and match.group(3) == grantee:
            found.append((match.group(1), match.group(2)))
    return found


def roles_of(rendered: list[str], user: str) -> set[str]:
    return {m.group(1) for s in rendered if (m := re.fullmatch(rf"GRANT (\w+) TO {user}", s))}


def test_every_rendered_statement_parses_with_the_engines_own_parser(rendered: list[str]) -> None:
    import chdb

    assert len(rendered) >= 10
    for statement in rendered:
        formatted = str(chdb.query("SELECT formatQuery({q:String})", "TSV", params={"q": statement}))
        assert formatted.strip(), statement
    with pytest.raises(Exception, match="Syntax error"):  # the check does refuse a wrong privilege
        chdb.query("SELECT formatQuery({q:String})", "TSV", params={"q": "GRANT SELEKT ON a.* TO b"})


def test_chdb_has_no_access_storage_so_the_sql_cannot_run_there(rendered: list[str]) -> None:
    """Why the checks here parse rather than run: if chDB learns CREATE USER, run them instead."""
    import chdb

    create_user = next(s for s in rendered if s.startswith("CREATE USER"))
    with pytest.raises(Exception, match=r"ACCESS_DENIED|ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND"):
        chdb.query(create_user)


def test_passwords_reach_the_sql_only_as_sha256_digests(rendered: list[str]) -> None:
    import hashlib

    text = "\n".join(rendered)
    for password in PASSWORDS.values():
        assert password not in text
        assert hashlib.sha256(password.encode()).hexdigest() in text
    assert "${" not in text


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_a_missing_password_is_named_and_nothing_is_printed(missing: str) -> None:
    result = render({missing: ""})
    assert result.returncode != 0 and result.stdout == ""
    assert f"{missing} is not set" in result.stderr


def test_a_bad_database_name_is_named() -> None:
    result = render({"USAGELOG_CLICKHOUSE_DATABASE": "usagelog; DROP"})
    assert result.returncode != 0 and "USAGELOG_CLICKHOUSE_DATABASE=" in result.stderr


# The one exception: migration 010 rebuilds usage_events and exchanges it with its rebuilt copy.
MIGRATION_DROPS = {
    ("usagelog_writer", "DROP TABLE", "usagelog.usage_events"),
    ("usagelog_writer", "DROP TABLE", "usagelog.usage_events_new"),
}


def test_no_role_may_delete_data_manage_access_or_read_files_and_urls(rendered: list[str]) -> None:
    for role in ("usagelog_writer", "usagelog_reader", "usagelog_otel_writer"):
        grants = grants_to(rendered, role)
        assert grants, f"{role} has no grants"
        for privileges, on in grants:
            if (role, privileges, on) in MIGRATION_DROPS:
                continue
            assert not FORBIDDEN.search(privileges), f"{role}: {privileges}"
            assert on in ("usagelog.*", "usagelog_otel.*"), f"{role} reaches {on}"
    assert grants_to(rendered, "usagelog_reader") == [("SELECT", "usagelog.*")]


# What each kind of statement the workers run needs (ClickHouse's privilege names).
NEEDS = [
    (r"^CREATE DATABASE", "CREATE DATABASE"),
    (r"^CREATE TABLE", "CREATE TABLE"),
    (r"^CREATE MATERIALIZED VIEW", "CREATE VIEW"),
    (r"^ALTER TABLE \S+ ADD COLUMN", "ALTER ADD COLUMN"),
    (r"^ALTER TABLE \S+ MODIFY SETTING", "ALTER MODIFY SETTING"),
    (r"^ALTER TABLE \S+ ADD PROJECTION", "ALTER ADD PROJECTION"),
    (r"^ALTER TABLE \S+ MATERIALIZE PROJECTION", "ALTER MATERIALIZE PROJECTION"),
    (r"^ALTER TABLE \S+ (MODIFY|REMOVE) TTL", "ALTER MODIFY TTL"),
    (r"^INSERT INTO", "INSERT"),
    # Migration 010 rebuilds usage_events as usage_events_new and exchanges the two.
    (r"^DROP TABLE (IF EXISTS )?\S+\.usage_events_new$", "DROP TABLE"),
    (r"^EXCHANGE TABLES \S+\.usage_events AND \S+\.usage_events_new$", "DROP TABLE"),
    (r"^EXCHANGE TABLES", "CREATE TABLE"),
]
# Run by the code besides the migration files: store.migrate and retention.apply_retention.
RUNTIME_STATEMENTS = [
    "CREATE DATABASE IF NOT EXISTS usagelog",
    "CREATE TABLE IF NOT EXISTS usagelog.schema_migrations (version UInt32) ENGINE = MergeTree",
    "ALTER TABLE usagelog.usage_events MODIFY TTL toDateTime(timestamp) + toIntervalDay(30)",
    "ALTER TABLE usagelog.usage_events REMOVE TTL",
    "INSERT INTO usagelog.usage_events VALUES",
]


def test_the_writer_may_run_every_statement_the_migrations_and_retention_run(rendered: list[str]) -> None:
    granted = {
        p.strip() for privileges, _ in grants_to(rendered, "usagelog_writer") for p in privileges.split(",")
    }
    assert {"SELECT", "INSERT"} <= granted
    # DROP only where migration 010 needs it, never on the whole database.
    assert {on for privileges, on in grants_to(rendered, "usagelog_writer") if "DROP" in privileges} == {
        "usagelog.usage_events",
        "usagelog.usage_events_new",
    }
    run = RUNTIME_STATEMENTS + [
        " ".join(statement.split())
        for _, _, sql in migrations()
        for statement in _statements(sql.replace("${DATABASE}", "usagelog"))
    ]
    for body in run:
        needed = [privilege for pattern, privilege in NEEDS if re.search(pattern, body)]
        assert needed, f"no privilege is known for: {body[:120]} (add it to NEEDS and users.sql)"
        assert set(needed) <= granted, f"usagelog_writer cannot run: {body[:120]}"


def test_readers_have_the_read_only_profile_and_only_the_reader_role(rendered: list[str]) -> None:
    assert (
        "CREATE SETTINGS PROFILE OR REPLACE usagelog_read_only SETTINGS readonly = 2, allow_ddl = 0, "
        "optimize_use_implicit_projections = 0" in rendered
    )
    for user in ("usagelog_cli", "grafana"):
        create = next(s for s in rendered if s.startswith(f"CREATE USER OR REPLACE {user} "))
        assert create.endswith("SETTINGS PROFILE usagelog_read_only"), create
        assert roles_of(rendered, user) == {"usagelog_reader"}
    assert roles_of(rendered, "usagelog_worker") == {"usagelog_writer"}
    assert roles_of(rendered, "usagelog_collector") == {"usagelog_otel_writer"}


def test_a_read_only_session_opens_a_migrated_store_reads_and_cannot_write(tmp_path: Path) -> None:
    """The readers' readonly = 2 against chDB: opening the store must not attempt DDL once the
    schema is current (ClickHouse refuses even CREATE ... IF NOT EXISTS to a read-only user)."""
    import clickhouse_connect

    from usagelog.ingest.errors import QueryError

    url = "chdb://" + str(tmp_path / "chdb")
    with connect(url) as store:
        assert store.schema_version() == max(v for v, _, _ in migrations())
    client = _Client(clickhouse_connect.get_client(dsn=url, settings={"readonly": 2}), url)
    try:
        store = Store(client, "usagelog")
        assert store.migrate() == []
        assert store.query("SELECT count() FROM usagelog.usage_events")[1] == [(0,)]
        writes = [
            "INSERT INTO usagelog.schema_migrations (version, name) VALUES (99, 'x')",
            "DROP TABLE usagelog.usage_events",
            "TRUNCATE TABLE usagelog.dead_letters",
        ]
        for write in writes:
            with pytest.raises(QueryError, match="readonly"):
                client.command(write)
    finally:
        client.close()


# -- compose wiring ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _url_login(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    assert parsed.hostname == "clickhouse" and parsed.port == 8123, url
    return parsed.username or "", parsed.password or ""


def test_each_service_logs_in_as_its_own_user_with_the_password_clickhouse_was_given(
    services: dict[str, Any], rendered: list[str]
) -> None:
    clickhouse = environment(services["clickhouse"])
    logins = {
        "worker": _url_login(environment(services["worker"])["USAGELOG_CLICKHOUSE_URL"]),
        "cli": _url_login(environment(services["cli"])["USAGELOG_CLICKHOUSE_URL"]),
        "grafana": (
            environment(services["grafana"])["USAGELOG_GRAFANA_CLICKHOUSE_USER"],
            environment(services["grafana"])["USAGELOG_GRAFANA_CLICKHOUSE_PASSWORD"],
        ),
        "collector": (
            environment(services["collector"])["USAGELOG_COLLECTOR_CLICKHOUSE_USERNAME"],
            environment(services["collector"])["USAGELOG_COLLECTOR_CLICKHOUSE_PASSWORD"],
        ),
    }
    expected = {
        "worker": ("usagelog_worker", "CLICKHOUSE_WORKER_PASSWORD"),
        "cli": ("usagelog_cli", "CLICKHOUSE_CLI_PASSWORD"),
        "grafana": ("grafana", "GRAFANA_CLICKHOUSE_PASSWORD"),
        "collector": ("usagelog_collector", "CLICKHOUSE_COLLECTOR_PASSWORD"),
    }
    created = {m.group(1) for s in rendered if (m := re.match(r"CREATE USER OR REPLACE (\w+) ", s))}
    for service, (user, variable) in expected.items():
        assert logins[service] == (user, clickhouse[variable]), service
        assert user in created
    # Nobody but initdb uses the administrator.
    admin = clickhouse["CLICKHOUSE_USER"]
    assert admin not in {user for user, _ in logins.values()}


def test_clickhouse_mounts_the_users_sql_where_users_sh_reads_it(services: dict[str, Any]) -> None:
    mounts = {
        target: source
        for source, target in (v.split(":")[:2] for v in services["clickhouse"]["volumes"])
        if source.startswith("./")
    }
    assert (COMPOSE.parent / mounts["/etc/usagelog/clickhouse/users.sql"]).resolve() == USERS_SQL
    initdb = (COMPOSE.parent / mounts["/docker-entrypoint-initdb.d"]).resolve()
    assert initdb == USERS_SH.parent and os.access(USERS_SH, os.X_OK)  # run, not sourced, by the image
    assert "/etc/usagelog/clickhouse/users.sql" in USERS_SH.read_text()
