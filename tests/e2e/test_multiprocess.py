"""Three API processes under ``opentelemetry-instrument`` (env vars only) sharing one spool;
simulated users alternate between them; ``usagelog ingest``, ``timeline`` and ``audit`` run as
the CLI a user would run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from usagelog.demo.driver import SCRIPT, drive, make_users
from usagelog.demo.run import INSTANCES, start_instances, stop_instances

pytestmark = pytest.mark.slow


def usagelog(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("multiprocess")
    spool = base / "spool"
    url = "chdb://" + str(base / "chdb")
    instances = start_instances(spool, base / "logs")
    try:
        users = drive([i.port for i in instances], make_users(4), rounds=2)
    finally:
        stop_instances(instances)
    ingest = usagelog("ingest", "--spool", str(spool), "--clickhouse", url, "--format", "json")
    return {"users": users, "url": url, "ingest": ingest[0], "spool": spool, "logs": base / "logs"}


def test_every_request_is_stored_once_and_the_spool_is_emptied(pipeline: dict[str, Any]) -> None:
    sent = sum(len(u.sent) for u in pipeline["users"])
    assert sent == 5 * 2 * len(SCRIPT)
    assert pipeline["ingest"]["stored"] == sent
    assert pipeline["ingest"]["dead_letters"] == 0
    assert list(Path(pipeline["spool"]).glob("*.seg")) == []
    assert list(Path(pipeline["spool"]).glob("*.open")) == []


def test_each_timeline_is_complete_and_in_the_order_sent(pipeline: dict[str, Any]) -> None:
    for user in pipeline["users"]:
        timeline = usagelog("timeline", user.name, "--clickhouse", pipeline["url"], "--format", "json")
        assert [e["path"] for e in timeline] == [s.path.split("?")[0] for s in user.sent]
        assert [e["trace_id"] for e in timeline] == [s.trace_id for s in user.sent]
        assert [e["status"] for e in timeline] == [s.expected_status for s in user.sent]
        assert [e["error_type"] for e in timeline] == [s.error_type for s in user.sent]
        assert [e["region"] for e in timeline] == [INSTANCES[s.instance]["cloud.region"] for s in user.sent]
        client_seen = [s.status for s in user.sent if s.status is not None]
        assert client_seen == [s.expected_status for s in user.sent if s.status is not None]


def test_identity_fields_come_from_the_environment(pipeline: dict[str, Any]) -> None:
    rows = usagelog(
        "query",
        "SELECT DISTINCT service_name, cluster, region, host_name != '' AS has_host, "
        "host_id != '' AS has_id, "
        "process_pid > 0 AS has_pid FROM usagelog.usage_events ORDER BY region",
        "--clickhouse",
        pipeline["url"],
        "--format",
        "json",
    )
    assert {(r["service_name"], r["cluster"], r["region"]) for r in rows} == {
        ("demo-api", i["k8s.cluster.name"], i["cloud.region"]) for i in INSTANCES
    }
    assert all(r["has_host"] and r["has_pid"] for r in rows)


def test_audit_reports_no_gaps_duplicates_or_checksum_failures(pipeline: dict[str, Any]) -> None:
    audit = usagelog("audit", "--clickhouse", pipeline["url"], "--format", "json")
    assert len(audit) == 3
    for instance in audit:
        assert instance["gaps"] == 0 and instance["duplicates"] == 0 and instance["checksum_failures"] == 0
        assert instance["events"] == instance["max_seq"]
    assert sum(i["events"] for i in audit) == pipeline["ingest"]["stored"]


def test_monitored_events_are_flagged(pipeline: dict[str, Any]) -> None:
    rows = usagelog(
        "query",
        "SELECT user_id, route, monitored FROM usagelog.usage_events WHERE monitored",
        "--clickhouse",
        pipeline["url"],
        "--format",
        "json",
    )
    assert rows and all(r["user_id"] == "carol" or r["route"].startswith("/admin/") for r in rows)
    users = {u.name for u in pipeline["users"]}
    assert "carol" in users
