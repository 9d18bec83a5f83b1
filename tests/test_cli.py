"""The ``usagelog`` CLI: output formats for scripts and clear errors for bad configuration."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.spoolfill import write_spool


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


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
