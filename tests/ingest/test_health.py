"""The worker's health: OpenTelemetry metrics and the periodic log line, with a clock the test moves."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from usagelog.ingest.health import WorkerHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def _health(clock: Clock, interval: float = 10.0) -> tuple[WorkerHealth, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    return WorkerHealth("w-test", interval=interval, meter=meter, clock=clock), reader


def test_batches_show_up_as_metrics_and_in_the_log(caplog: Any) -> None:
    clock = Clock()
    health, reader = _health(clock)
    health.batch_done(stored=90, duplicates=10, dead_letters=2)
    health.batch_committed(0.25)
    health.batch_done(stored=50, duplicates=0, dead_letters=0)
    health.batch_committed(0.05)
    health.lag = 42
    points = _points(reader)
    events = {p.attributes["outcome"]: p.value for p in points["usagelog.ingest.events"]}
    assert events == {"stored": 140, "duplicate": 10}
    assert [p.value for p in points["usagelog.ingest.dead_letters"]] == [2]
    assert [(p.count, p.sum) for p in points["usagelog.ingest.batch.duration"]] == [(2, 0.3)]
    assert [p.value for p in points["usagelog.ingest.consumer.lag"]] == [42]
    clock.now += 10
    with caplog.at_level(logging.INFO, logger="usagelog.worker"):
        health.maybe_report(force=True)
    assert "health worker=w-test lag=42 events/s=14.0 duplicates/s=1.0 batches=2" in caplog.text
    assert "batch_p50_ms=250.0 batch_max_ms=250.0 interval_s=10.0" in caplog.text
    assert "stored=140 duplicates=10 dead_letters=2" in caplog.text


def test_events_per_second_is_over_the_wall_clock_interval_not_the_batch_time() -> None:
    """One quick batch of 2,351 events in a 10 s interval is 235 events/s — not 2,351 divided by
    the batch's own fraction of a second (the health line once said 2,351,886 events/s)."""
    clock = Clock()
    health, _ = _health(clock)
    clock.now += 9.7
    health.batch_done(stored=2351, duplicates=0, dead_letters=0)
    clock.now += 0.3
    health.batch_committed(0.3)
    report = health.maybe_report()
    assert report is not None
    assert report.seconds == 10.0
    assert report.events_per_second == 235.1
    assert (report.batches, report.batch_p50_ms, report.batch_max_ms) == (1, 300.0, 300.0)


def test_each_report_covers_only_its_own_interval() -> None:
    clock = Clock()
    health, _ = _health(clock, interval=5.0)
    rates = []
    # 200 events/s in batches of 50 for 10 s, then 5 s idle.
    for second in range(15):
        if second < 10:
            for _ in range(4):
                clock.now += 0.25
                health.batch_done(stored=45, duplicates=5, dead_letters=0)
                health.batch_committed(0.1 if second % 2 else 0.2)
        else:
            clock.now += 1.0
        report = health.maybe_report()
        if report is not None:
            rates.append((report.events_per_second, report.duplicates_per_second, report.batches))
    assert rates == [(180.0, 20.0, 20), (180.0, 20.0, 20), (0.0, 0.0, 0)]
    assert (health.stored, health.duplicates, health.batches) == (1800, 200, 40)


def test_batch_latency_is_the_median_and_maximum_of_the_interval() -> None:
    clock = Clock()
    health, _ = _health(clock)
    for seconds in (0.1, 0.4, 0.2, 2.0, 0.3):
        health.batch_committed(seconds)
    clock.now += 10
    report = health.report()
    assert (report.batches, report.batch_p50_ms, report.batch_max_ms) == (5, 300.0, 2000.0)
    clock.now += 10
    assert (health.report().batches, health.report().batch_max_ms) == (0, 0.0)


def test_no_report_before_the_interval_has_passed() -> None:
    clock = Clock()
    health, _ = _health(clock)
    clock.now += 9.9
    assert not health.due() and health.maybe_report() is None
    clock.now += 0.1
    assert health.due() and health.maybe_report() is not None
    assert not health.due()
