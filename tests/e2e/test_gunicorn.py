"""A pre-forking server: each gunicorn worker is its own instance (own ID, own sequence from 1),
and workers flush what they hold when the server shuts down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pipeline import http_get
from usagelog.demo.run import free_port, instrument_command
from usagelog.ingest import queries
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def _get(port: int, i: int) -> int:
    return http_get(port, f"/api/items/{i % 20 + 1}")


def test_each_worker_is_an_instance_and_nothing_is_lost(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "gunicorn-api",
        "OTEL_PYTHON_DISTRO": "usagelog",
        "OTEL_PYTHON_CONFIGURATOR": "usagelog",
        "USAGELOG_EXPORTER": "spool",
        "USAGELOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [
            instrument_command(),
            gunicorn,
            "-w",
            "3",
            "-b",
            f"127.0.0.1:{port}",
            "usagelog.demo.app:create_app()",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, 0) == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "gunicorn.log"
            ).read_text()
            time.sleep(0.2)
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda i: _get(port, i), range(120)))
        assert statuses == [200] * 120
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()

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
