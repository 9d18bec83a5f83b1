"""The ``usagelog`` CLI: output formats for scripts and clear errors for bad configuration."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.spoolfill import write_spool
from usagelog.process import free_port


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def _reported(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line the CLI printed about a failure (after any lines a client library logged)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("usagelog: "), result.stderr
    return last


def test_ingest_then_timeline_in_every_format(tmp_path: Path, chdb_url: str) -> None:
    write_spool(tmp_path / "spool", segments=2, per_segment=14)
    env = {"USAGELOG_SPOOL_DIR": str(tmp_path / "spool"), "USAGELOG_CLICKHOUSE_URL": chdb_url}
    ingest = _cli("ingest", "--format", "json", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)[0]["stored"] == 28
    assert "2/2 segments" in ingest.stderr  # progress

    as_json = json.loads(_cli("timeline", "user-3", "--format", "json", env=env).stdout)
    assert [e["seq"] for e in as_json] == [3, 10, 17, 24]
    as_csv = list(csv.DictReader(io.StringIO(_cli("timeline", "user-3", "--format", "csv", env=env).stdout)))
    assert [int(e["seq"]) for e in as_csv] == [3, 10, 17, 24]
    table = _cli("timeline", "user-3", env=env).stdout
    assert table.splitlines()[0].split()[:3] == ["time", "instance", "seq"]
    assert table.rstrip().endswith("(4 rows)")


def test_bad_clickhouse_url_names_the_variable(tmp_path: Path) -> None:
    result = _cli("audit", env={"USAGELOG_CLICKHOUSE_URL": "postgres://nope"})
    assert result.returncode == 2
    assert "USAGELOG_CLICKHOUSE_URL" in result.stderr and "Traceback" not in result.stderr
    result = _cli("audit", "--clickhouse", "chdb://memory")
    assert result.returncode == 2 and "--clickhouse" in result.stderr


def test_bad_sql_is_reported_without_a_traceback(chdb_url: str) -> None:
    result = _cli("query", "SELECT no_such_column FROM usagelog.usage_events", "--clickhouse", chdb_url)
    assert result.returncode == 1
    assert "no_such_column" in result.stderr and "Traceback" not in result.stderr


def test_clickhouse_refusing_a_statement_is_one_line_and_exit_1(chdb_url: str) -> None:
    unknown = _cli("query", "SELECT 1 FROM usagelog.no_such_table", "--clickhouse", chdb_url)
    assert "no_such_table" in _reported(unknown, 1)
    syntax = _cli("query", "SELEC 1", "--clickhouse", chdb_url)
    assert "Syntax error" in _reported(syntax, 1)
    assert syntax.stderr.count("\n") == 1  # the engine's message, on one line


def test_query_is_read_only_unless_write_is_given(tmp_path: Path, chdb_url: str) -> None:
    (tmp_path / "secret.txt").write_text("s3cret\n")
    at = ("--clickhouse", chdb_url)
    assert "readonly" in _reported(_cli("query", "DROP TABLE usagelog.usage_events", *at), 1)
    assert "readonly" in _reported(_cli("query", "TRUNCATE TABLE usagelog.usage_events", *at), 1)
    read = _cli("query", f"SELECT * FROM file('{tmp_path}/secret.txt', LineAsString)", *at)
    assert "readonly" in _reported(read, 1) and "s3cret" not in read.stdout
    outfile = _cli("query", f"SELECT 1 INTO OUTFILE '{tmp_path}/out.csv'", *at)
    assert "INTO OUTFILE" in _reported(outfile, 1) and not (tmp_path / "out.csv").exists()
    assert _cli(
        "query", "SELECT count() FROM usagelog.usage_events", "--format", "csv", *at
    ).stdout.split() == [
        "count()",
        "0",
    ]

    dropped = _cli("query", "DROP TABLE usagelog.usage_events", "--write", *at)
    assert dropped.returncode == 0, dropped.stderr
    # The next command finds the table gone and runs its migration again.
    again = _cli("query", "SELECT count() FROM usagelog.usage_events", *at)
    assert again.returncode == 0, again.stderr
    assert "usage_events missing" in again.stderr


def test_query_help_documents_the_read_only_default_and_write() -> None:
    text = " ".join(_cli("query", "--help").stdout.split())
    assert "read-only unless --write" in text and "readonly=1" in text and "--write" in text


def test_an_unreachable_clickhouse_server_is_exit_1() -> None:
    result = _cli("audit", "--clickhouse", f"http://127.0.0.1:{free_port()}")
    assert "cannot open ClickHouse at http://127.0.0.1:" in _reported(result, 1)


def test_bad_settings_are_exit_2_naming_the_variable_or_option(chdb_url: str) -> None:
    wait = _cli("audit", "--clickhouse", chdb_url, env={"USAGELOG_CLICKHOUSE_WAIT_SECONDS": "abc"})
    assert "USAGELOG_CLICKHOUSE_WAIT_SECONDS='abc'" in _reported(wait, 2)
    url = _cli("timeline", "alice", "--clickhouse", "mysql://somewhere")
    assert "--clickhouse: 'mysql://somewhere'" in _reported(url, 2)
    both = _cli(
        "query",
        "SELECT 1",
        "--database",
        "not-a-name",
        env={"USAGELOG_CLICKHOUSE_URL": "chdb://memory", "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "-3"},
    )
    line = _reported(both, 2)
    assert "USAGELOG_CLICKHOUSE_URL" in line and "--database" in line and "WAIT_SECONDS" in line


CANARY = "CANARY-s3cr3t"


def test_no_password_of_any_url_reaches_a_message(tmp_path: Path) -> None:
    port = free_port()
    ch = ("--clickhouse", "chdb://" + str(tmp_path / "ch"))
    failures = [
        # A URL the settings refuse, with "@" in its password.
        (_cli("audit", "--clickhouse", f"clickhouses://admin:pa@ss-{CANARY}@db.example:8443"), 2),
        # Servers that do not answer: "@" in the password, a password as a query parameter.
        (_cli("audit", "--clickhouse", f"http://admin:pa@ss-{CANARY}@127.0.0.1:{port}"), 1),
        (_cli("audit", "--clickhouse", f"http://127.0.0.1:{port}/?user=a&password={CANARY}"), 1),
        # Kafka takes credentials from USAGELOG_KAFKA_CONFIG only, and never echoes them.
        (_cli("ingest", "--from", f"kafka://user:{CANARY}@127.0.0.1:{port}/t", *ch, cwd=tmp_path), 2),
        (
            _cli(
                "tail",
                *ch,
                env={"USAGELOG_KAFKA_BROKERS": f"user:{CANARY}@127.0.0.1:{port}"},
                cwd=tmp_path,
            ),
            2,
        ),
        (
            _cli(
                "ingest",
                "--from",
                f"kafka://127.0.0.1:{port}/t",
                *ch,
                env={"USAGELOG_KAFKA_CONFIG": f"sasl.username=u,sasl.password:{CANARY}"},
                cwd=tmp_path,
            ),
            2,
        ),
    ]
    for result, code in failures:
        line = _reported(result, code)
        # Masked, refused with the rule, or named by position only (not echoed).
        assert "***" in line or "credentials go in" in line or "is not key=value" in line, line
        assert CANARY not in result.stderr + result.stdout, result.stderr


def test_archive_urls_are_shown_without_their_credentials(tmp_path: Path, chdb_url: str) -> None:
    write_spool(tmp_path / "spool", segments=1, per_segment=5)
    result = _cli(
        "ingest",
        "--spool",
        str(tmp_path / "spool"),
        "--archive",
        f"memory://user:{CANARY}@bucket/archive",
        "--clickhouse",
        chdb_url,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "usagelog: archived memory://user:***@bucket/archive/" in result.stderr
    assert CANARY not in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "-1"])
def test_a_bad_wait_is_exit_2_naming_the_variable_for_every_kind_of_command(
    tmp_path: Path, value: str
) -> None:
    kafka = f"kafka://127.0.0.1:{free_port()}/t"
    env = {"USAGELOG_CLICKHOUSE_WAIT_SECONDS": value, "USAGELOG_CLICKHOUSE_URL": f"chdb://{tmp_path}/ch"}
    for command in (
        ["ingest"],
        ["ingest", "--from", kafka, "--max-idle", "3"],
        ["tail", "--from", kafka, "--timeout", "3"],
        ["dashboards", "serve", "--port", "0"],
    ):
        line = _reported(_cli(*command, env=env, cwd=tmp_path, timeout=40), 2)
        assert f"USAGELOG_CLICKHOUSE_WAIT_SECONDS={value!r}" in line, command


def test_ingest_from_an_unreachable_kafka_stops_at_the_idle_limit_with_exit_1(tmp_path: Path) -> None:
    source = f"kafka://127.0.0.1:{free_port()}/usagelog.events"
    result = _cli(
        "ingest",
        "--from",
        source,
        "--max-idle",
        "3",
        "--clickhouse",
        f"chdb://{tmp_path}/ch",
        cwd=tmp_path,
        timeout=40,
    )
    line = _reported(result, 1)
    assert "did not answer" in line and source.split("/")[2] in line


def test_tail_from_an_unreachable_kafka_is_exit_1_before_its_timeout(tmp_path: Path) -> None:
    source = f"kafka://127.0.0.1:{free_port()}"
    result = _cli(
        "tail", "--from", source, "--timeout", "300", "--clickhouse", f"chdb://{tmp_path}/ch", timeout=40
    )
    assert "did not answer within 10s" in _reported(result, 1)


def test_an_unreachable_kafka_is_exit_1(tmp_path: Path) -> None:
    source = f"kafka://127.0.0.1:{free_port()}/usagelog.events"
    result = _cli(
        "replay", "--from", source, "--since", "1h", "--clickhouse", "chdb://" + str(tmp_path / "ch")
    )
    assert "did not answer" in _reported(result, 1)


def test_a_kafka_setting_the_client_refuses_is_exit_1(tmp_path: Path) -> None:
    result = _cli(
        "ingest",
        "--from",
        f"kafka://127.0.0.1:{free_port()}/usagelog.events",
        "--clickhouse",
        "chdb://" + str(tmp_path / "ch"),
        env={"USAGELOG_KAFKA_CONFIG": "no.such.property=1"},
        cwd=tmp_path,
    )
    assert "no.such.property" in _reported(result, 1)


@pytest.mark.slow
def test_an_unknown_topic_is_exit_1(kafka: Any, tmp_path: Path) -> None:
    source = f"kafka://{kafka.bootstrap}/no-such-topic-{os.getpid()}"
    result = _cli(
        "replay", "--from", source, "--since", "1h", "--clickhouse", "chdb://" + str(tmp_path / "ch")
    )
    assert "not found" in _reported(result, 1)


def test_a_dashboard_that_does_not_exist_is_exit_1(tmp_path: Path, chdb_url: str) -> None:
    result = _cli(
        "report", "--dashboard", "nope", "--out", str(tmp_path / "r.html"), "--clickhouse", chdb_url
    )
    assert "no dashboard 'nope'" in _reported(result, 1)


def test_help_shows_the_variable_behind_each_option() -> None:
    def help_of(*command: str) -> str:
        result = _cli(*command, "--help")
        assert result.returncode == 0, result.stderr
        return " ".join(result.stdout.split())  # as one line: the help wraps where it likes

    query = help_of("query")
    assert "--clickhouse URL ClickHouse URL [env var: USAGELOG_CLICKHOUSE_URL]" in query
    assert "[env var: USAGELOG_CLICKHOUSE_DATABASE]" in query
    ingest = help_of("ingest")
    assert "[env var: USAGELOG_SPOOL_DIR]" in ingest and "[env var: USAGELOG_WORKER_ID]" in ingest
    assert "[env var: USAGELOG_GRAFANA_DIR]" in help_of("dashboards", "serve")


def test_main_runs_in_process_and_returns_the_exit_status(chdb_url: str, capsys: Any) -> None:
    from usagelog.cli import main

    assert main(["query", "SELECT 41 + 1 AS answer", "--clickhouse", chdb_url, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["answer", "42"]
    assert main(["query", "SELEC 1", "--clickhouse", chdb_url]) == 1
    assert main(["query"]) == 2  # a missing argument is bad usage
    assert main(["no-such-command"]) == 2
    assert main(["top", "everything"]) == 2
    assert "Syntax error" in capsys.readouterr().err


def test_an_option_given_before_the_subcommand_counts(tmp_path: Path) -> None:
    listed = _cli("dashboards", "--format", "json", "list")
    assert listed.returncode == 0, listed.stderr
    assert "overview" in {d["name"] for d in json.loads(listed.stdout)}


def test_ctrl_c_exits_130(chdb_url: str) -> None:
    import signal

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "dashboards",
            "serve",
            "--port",
            "0",
            "--clickhouse",
            chdb_url,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    try:
        assert "dashboards on http://127.0.0.1:" in server.stderr.readline()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 130
    finally:
        server.kill()
        server.wait()
