"""The embedded path end to end: instrumented API → spool → ``usagelog ingest`` → chDB, with the
monitored copy and the archive filled as the Kafka path fills them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline import http_get
from usagelog.demo.run import start_instances, stop_instances
from usagelog.ingest.archive import read_archive
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def test_the_spool_path_stores_monitored_events_and_archives_what_it_stores(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # The demo's instances watch route /admin/* and user carol (USAGELOG_MONITOR) and capture
    # the bodies of what they watch.
    instances = start_instances(spool, tmp_path / "logs", count=1)
    try:
        port = instances[0].port
        statuses = [http_get(port, "/api/items") for _ in range(5)]
        statuses += [http_get(port, "/admin/stats") for _ in range(3)]
    finally:
        stop_instances(instances)
    assert all(statuses)
    url = "chdb://" + str(tmp_path / "chdb")
    archive = tmp_path / "archive"
    env = {**os.environ, "USAGELOG_ARCHIVE_URL": str(archive), "USAGELOG_STATE_DIR": str(tmp_path / "state")}
    command = ["ingest", "--spool", str(spool), "--clickhouse", url, "--format", "json"]
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)[0]
    assert (summary["stored"], summary["monitored"]) == (8, 3), summary
    assert "archived " in result.stderr

    columns = "event_id, path, status_code, monitored, response_body"
    with connect(url) as store:
        _, stored = store.query(f"SELECT {columns} FROM usagelog.usage_events ORDER BY event_id")
        _, watched = store.query(f"SELECT {columns} FROM usagelog.monitored_events ORDER BY event_id")
    assert [row[1] for row in watched] == ["/admin/stats"] * 3
    assert watched == [row for row in stored if row[3]]
    assert all(row[4] for row in watched)  # bodies captured for what is watched

    archived = read_archive(str(archive))
    names = [c.split(", ")[0] for c in columns.split(", ")]
    as_rows = sorted((tuple(r[n] for n in names) for r in archived), key=lambda r: r[0])
    assert as_rows == sorted(stored, key=lambda r: r[0])
    assert list((tmp_path / "state").rglob("chunk-*")) == []
