"""Configuration by environment only: a bad ``USAGELOG_*`` value warns, naming the variable,
and the app still serves and logs with the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline import http_get
from usagelog.demo.run import start_instances, stop_instances
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect

pytestmark = pytest.mark.slow


def test_invalid_values_warn_and_fall_back(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    bad = {
        "USAGELOG_CAPTURE_BODY": "everything",
        "USAGELOG_BODY_MAX_BYTES": "-3",
        "USAGELOG_MONITOR": "team:x",
    }
    instances = start_instances(spool, tmp_path / "logs", bad, count=1)
    try:
        assert http_get(instances[0].port, "/api/items") == 200
    finally:
        stop_instances(instances)
    log = instances[0].log_path.read_text()
    for variable in bad:
        assert log.count(f"ignoring {variable}=") == 1, log
    url = "chdb://" + str(tmp_path / "chdb")
    assert ingest_spool(str(spool), url, "usagelog").inserted == 1
    with connect(url) as store:
        _, rows = store.query("SELECT request_body, monitored FROM usagelog.usage_events")
    assert rows == [("", False)]


def test_disabled_instance_writes_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    instances = start_instances(spool, tmp_path / "logs", {"USAGELOG_ENABLED": "false"}, count=1)
    try:
        assert http_get(instances[0].port, "/api/items") == 200
    finally:
        stop_instances(instances)
    assert not spool.exists() or list(spool.iterdir()) == []
