"""The worker's health: OpenTelemetry metrics and the periodic log line."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from usagelog.ingest.health import WorkerHealth


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def test_batches_show_up_as_metrics_and_in_the_log(caplog: Any) -> None:
    reader = InMemoryMetricReader()
    health = WorkerHealth(
        "w-test", interval=3600, meter=MeterProvider(metric_readers=[reader]).get_meter("t")
    )
    health.batch_done(stored=90, duplicates=10, dead_letters=2, seconds=0.25)
    health.batch_done(stored=50, duplicates=0, dead_letters=0, seconds=0.05)
    health.lag = 42
    points = _points(reader)
    events = {p.attributes["outcome"]: p.value for p in points["usagelog.ingest.events"]}
    assert events == {"stored": 140, "duplicate": 10}
    assert [p.value for p in points["usagelog.ingest.dead_letters"]] == [2]
    assert [p.count for p in points["usagelog.ingest.batch.duration"]] == [2]
    assert [p.value for p in points["usagelog.ingest.consumer.lag"]] == [42]
    with caplog.at_level(logging.INFO, logger="usagelog.worker"):
        health.maybe_report(force=True)
    assert "health worker=w-test lag=42" in caplog.text
    assert "stored=140 duplicates=10 dead_letters=2" in caplog.text
    assert health.events_per_second() > 0
