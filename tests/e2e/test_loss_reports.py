"""Loss reports travel the collector path like usage events: OTLP → the real collector binary
(base + monitored configs) → Kafka → an ingest worker → ``losses``; ``usagelog audit`` then
counts them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lossreports import loss_payload, loss_record
from tests.pipeline import Collector, WorkerProcess, count_events
from tests.spoolfill import make_payloads
from usagelog.ingest.store import connect
from usagelog.instrumentation import event as ev

pytestmark = pytest.mark.slow


def _post(port: int, payload: bytes) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs",
        data=payload,
        method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_loss_reports_reach_the_losses_table_through_collector_and_kafka(
    kafka: Any, topics: dict[str, str], collector_bin: Path, tmp_path: Path
) -> None:
    collector = Collector(
        collector_bin, tmp_path / "collector", kafka.bootstrap, topics["events"], topics["monitored"]
    ).start()
    url = "chdb://" + str(tmp_path / "chdb")
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", max_idle=15).start()
    try:
        _post(collector.http_port, make_payloads(1, 10, "lossy")[0])  # seq 1..10 stored
        _post(
            collector.http_port,
            loss_payload(
                "lossy",
                [
                    loss_record("lossy-1", ev.LOSS_DROPPED, count=3, first_seq=11, last_seq=13),
                    loss_record(
                        "lossy-2", ev.LOSS_TAIL, count=2, first_seq=14, last_seq=15, allocated_seq=15
                    ),
                ],
            ),
        )
        assert worker.wait(timeout=300) == 0, worker.log()[-3000:]
    finally:
        collector.stop()
    assert count_events(url) == (10, 10)
    with connect(url) as store:
        _, rows = store.query(
            "SELECT report_id, service_instance_id, reason, count, location FROM usagelog.losses FINAL "
            "ORDER BY report_id"
        )
    assert [r[:4] for r in rows] == [("lossy-1", "lossy", "dropped", 3), ("lossy-2", "lossy", "tail", 2)]
    assert all(r[4].startswith(topics["events"] + "/") for r in rows)

    audit = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--clickhouse", url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 1, audit.stderr
    (instance,) = json.loads(audit.stdout)
    assert (instance["instance"], instance["events"], instance["lost"]) == ("lossy", 10, 5)
    assert instance["missing"] == [[11, 15]]
    assert sorted(r["report_id"] for r in instance["reports"]) == ["lossy-1", "lossy-2"]


def test_a_damaged_spool_frame_replayed_by_the_app_reaches_audit_as_a_loss(
    kafka: Any, topics: dict[str, str], collector_bin: Path, tmp_path: Path
) -> None:
    """The in-app replay cannot send a frame it cannot read; it sends a ``damaged`` report naming
    the segment and offset instead, so audit fails for that instance rather than showing nothing."""
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.otlp import Destination, OtlpExporter
    from usagelog.instrumentation.spool import SpoolWriter

    spool = tmp_path / "spool"
    writer = SpoolWriter(spool, "torn", segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    first, second, third = make_payloads(3, 10, "torn")
    writer.append(first)
    writer.append(second)
    writer.append(third)
    writer.seal()
    (segment,) = spool.glob("*.seg")
    data = bytearray(segment.read_bytes())
    damaged_at = 12 + len(first)  # the second frame (a 12-byte header before each payload)
    data[damaged_at + 12 + 5] ^= 0xFF  # a payload byte: its checksum no longer matches
    segment.write_bytes(bytes(data))

    collector = Collector(
        collector_bin, tmp_path / "collector", kafka.bootstrap, topics["events"], topics["monitored"]
    ).start()
    url = "chdb://" + str(tmp_path / "chdb")
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "w1", max_idle=15).start()
    try:
        destination = Destination.from_environment(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.http_port}",
            }
        )
        exporter = OtlpExporter(Settings(spool_dir=str(spool / "own")), "replayer", destination)
        exporter.spool_dir = str(spool)
        assert exporter.replay() is True
        exporter.shutdown()
        assert not list(spool.glob("*.seg"))
        assert worker.wait(timeout=300) == 0, worker.log()[-3000:]
    finally:
        collector.stop()
    assert count_events(url) == (20, 20)
    audit = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--clickhouse", url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 1, audit.stderr
    (instance,) = json.loads(audit.stdout)
    assert (instance["instance"], instance["events"], instance["damaged"]) == ("torn", 20, 1)
    assert instance["missing"] == [[11, 20]]
    (report,) = instance["reports"]
    assert report["reason"] == ev.LOSS_DAMAGED
    assert f"{segment.name}@{damaged_at}" in report["detail"]
