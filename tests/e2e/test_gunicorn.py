"""A pre-forking server: each gunicorn worker is its own instance (own ID, own sequence from 1),
and workers flush what they hold when the server shuts down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pipeline import serve_demo_with_gunicorn
from usagelog.ingest import queries
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def test_each_worker_is_an_instance_and_nothing_is_lost(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "gunicorn-api",
        "OTEL_PYTHON_DISTRO": "usagelog",
        "OTEL_PYTHON_CONFIGURATOR": "usagelog",
        "USAGELOG_EXPORTER": "spool",
        "USAGELOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    serve_demo_with_gunicorn(tmp_path, env, workers=3, requests=120)

    url = "chdb://" + str(tmp_path / "chdb")
    stats = ingest_spool(str(tmp_path / "spool"), url, "usagelog")
    assert stats.inserted == 121  # the readiness probe counts too
    with connect(url) as store:
        columns, audit = queries.audit(store)
        _, pids = store.query(
            "SELECT uniqExact(process_pid), uniqExact(service_instance_id) FROM usagelog.usage_events"
        )
    assert pids[0][0] == pids[0][1] == len(audit) >= 2
    for row in audit:
        entry = dict(zip(columns, row, strict=True))
        assert entry["gaps"] == 0 and entry["duplicates"] == 0 and entry["checksum_failures"] == 0
