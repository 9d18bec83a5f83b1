"""Loss accounting in the fault suite: which instance an API process is, what it lost by the load's
count, and what ``usagelog audit`` (the CLI, ``--format json``) says about it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.faults.load import Tally
from tests.faults.stack import Stack, Verdict
from usagelog.ingest.store import connect
from usagelog.instrumentation import counters


def instance_of(spool: Path, pid: int) -> str:
    """The ``service.instance.id`` of the live API process ``pid``: its counter file in the spool
    directory is ``<instance>-<pid>.counters``."""
    for path in spool.glob("*" + counters.SUFFIX):
        instance, _, owner = path.name[: -len(counters.SUFFIX)].rpartition("-")
        if owner == str(pid):
            return instance
    raise AssertionError(f"no counter file of process {pid} in {spool}")


def missing_by_port(verdict: Verdict, tally: Tally) -> Counter[int]:
    """Answered requests not stored, per API port (matched by trace ID)."""
    return Counter(tally.answered[trace] for trace in verdict.missing)


def answered_by_port(tally: Tally) -> Counter[int]:
    return Counter(tally.answered.values())


def loss_reports(stack: Stack) -> list[dict[str, Any]]:
    """The loss reports stored so far (one row per report ID)."""
    if not (stack.workdir / "chdb").exists():
        return []
    with connect(stack.url, wait=120) as store:
        columns, rows = store.query(
            "SELECT service_instance_id, reason, count, allocated_seq FROM usagelog.losses FINAL"
        )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def audit(stack: Stack) -> tuple[int, dict[str, dict[str, Any]]]:
    """``usagelog audit --format json`` on the scenario's store: its exit status and its
    instances by ID. Run after the workers stopped (the CLI takes its turn at the chDB directory)."""
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--clickhouse", stack.url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr
    instances: list[dict[str, Any]] = json.loads(result.stdout)
    return result.returncode, {str(i["instance"]): i for i in instances}
