"""The ingest worker's own health: events per second, consumer lag, batch latency, dead letters.

Reported two ways: a log line every ``USAGELOG_HEALTH_INTERVAL_SECONDS`` (default ``10``; logger
``usagelog.worker``), and OpenTelemetry metrics on the global meter provider (exported when the
process runs with ``OTEL_METRICS_EXPORTER``; see :func:`configure_metrics`).

The figures of the line, each over the reporting interval (the wall-clock time since the previous
line, or since the worker started):

- ``events/s``: events stored by the batches that ended in the interval, divided by the interval's
  wall-clock seconds; ``duplicates/s`` likewise for events skipped as already stored. Idle time
  counts: a worker that stored 1,000 events in a 0.1 s batch and then waited reports 100 events/s
  over a 10 s interval, not 10,000;
- ``lag``: messages the worker still has to store, summed over its partitions — each
  partition's end offset (high watermark) minus the group's committed offset (or the
  partition's beginning when nothing is committed), measured when the line is written;
- ``batch_p50_ms`` / ``batch_max_ms``: a batch's latency, from the poll that returned its first
  message to its offsets committed (waiting for the batch to fill, decoding, archiving, storing,
  committing), median and maximum over the batches committed in the interval; ``batches``: how many;
- ``stored``, ``duplicates``, ``dead_letters``: totals since the worker started.

The metrics carry the same figures:

- ``usagelog.ingest.events`` (counter): events, by ``outcome`` = stored | duplicate (the totals);
- ``usagelog.ingest.dead_letters`` (counter);
- ``usagelog.ingest.batch.duration`` (histogram, s): a batch's latency, poll to commit;
- ``usagelog.ingest.consumer.lag`` (gauge, messages): the lag as last measured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics

_logger = logging.getLogger("usagelog.worker")


def configure_metrics() -> None:
    """Install an SDK meter provider when ``OTEL_METRICS_EXPORTER`` asks for one (otlp or console)."""
    exporter_name = os.environ.get("OTEL_METRICS_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    exporter: MetricExporter
    if exporter_name == "console":
        exporter = ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "usagelog-ingest")})
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])
    )


@dataclass(frozen=True)
class Report:
    """One reporting interval's figures (see the module's docstring)."""

    worker: str
    seconds: float  # the interval's wall-clock length
    events_per_second: float
    duplicates_per_second: float
    lag: int
    batches: int
    batch_p50_ms: float
    batch_max_ms: float
    stored: int
    duplicates: int
    dead_letters: int

    def line(self) -> str:
        return (
            f"health worker={self.worker} lag={self.lag} events/s={self.events_per_second:.1f} "
            f"duplicates/s={self.duplicates_per_second:.1f} batches={self.batches} "
            f"batch_p50_ms={self.batch_p50_ms:.1f} batch_max_ms={self.batch_max_ms:.1f} "
            f"interval_s={self.seconds:.1f} stored={self.stored} duplicates={self.duplicates} "
            f"dead_letters={self.dead_letters}"
        )


class WorkerHealth:
    """Counts what the pipeline stored and how long batches took; writes the health line.

    ``clock`` (default :func:`time.monotonic`) is the wall clock the rates and the reporting
    interval are measured with."""

    def __init__(
        self,
        worker_id: str,
        interval: float,
        meter: metrics.Meter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker_id = worker_id
        self.interval = interval
        self.clock = clock
        self.stored = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.batches = 0
        self.lag = 0
        # This interval's share: events and latencies since the last report.
        self._interval_start = clock()
        self._interval_stored = 0
        self._interval_duplicates = 0
        self._latencies: list[float] = []
        self._lock = threading.Lock()
        meter = meter or metrics.get_meter("usagelog.ingest")
        self._events = meter.create_counter("usagelog.ingest.events", unit="{event}")
        self._dead = meter.create_counter("usagelog.ingest.dead_letters", unit="{message}")
        self._duration = meter.create_histogram("usagelog.ingest.batch.duration", unit="s")
        meter.create_observable_gauge(
            "usagelog.ingest.consumer.lag", callbacks=[self._observe_lag], unit="{message}"
        )

    def _observe_lag(self, options: Any) -> Iterable[metrics.Observation]:
        yield metrics.Observation(self.lag, {"worker": self.worker_id})

    def batch_done(self, *, stored: int, duplicates: int, dead_letters: int) -> None:
        """A batch's events are stored (``stored`` new, ``duplicates`` already there)."""
        attrs = {"worker": self.worker_id}
        with self._lock:
            self.stored += stored
            self.duplicates += duplicates
            self.dead_letters += dead_letters
            self._interval_stored += stored
            self._interval_duplicates += duplicates
        self._events.add(stored, {**attrs, "outcome": "stored"})
        self._events.add(duplicates, {**attrs, "outcome": "duplicate"})
        if dead_letters:
            self._dead.add(dead_letters, attrs)

    def batch_committed(self, seconds: float) -> None:
        """A batch's offsets are committed ``seconds`` after the poll that returned its first message."""
        with self._lock:
            self.batches += 1
            self._latencies.append(seconds)
        self._duration.record(seconds, {"worker": self.worker_id})

    def due(self) -> bool:
        """Whether the reporting interval has passed."""
        return self.clock() - self._interval_start >= self.interval

    def report(self) -> Report:
        """This interval's figures; the next interval starts now."""
        now = self.clock()
        with self._lock:
            seconds = max(now - self._interval_start, 1e-6)
            latencies = sorted(self._latencies)
            report = Report(
                worker=self.worker_id,
                seconds=seconds,
                events_per_second=self._interval_stored / seconds,
                duplicates_per_second=self._interval_duplicates / seconds,
                lag=self.lag,
                batches=len(latencies),
                batch_p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
                batch_max_ms=latencies[-1] * 1000 if latencies else 0.0,
                stored=self.stored,
                duplicates=self.duplicates,
                dead_letters=self.dead_letters,
            )
            self._interval_start = now
            self._interval_stored = self._interval_duplicates = 0
            self._latencies = []
        return report

    def maybe_report(self, force: bool = False) -> Report | None:
        """Log the health line when the interval has passed (or ``force``); the figures logged."""
        if not (force or self.due()):
            return None
        report = self.report()
        _logger.info("%s", report.line())
        return report
