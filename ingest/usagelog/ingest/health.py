"""The ingest worker's own health: consumer lag, events per second, batch latency, dead letters.

Reported two ways: a log line every ``USAGELOG_HEALTH_INTERVAL_SECONDS`` (logger
``usagelog.worker``), and OpenTelemetry metrics on the global meter provider (exported when the
process runs with ``OTEL_METRICS_EXPORTER``; see :func:`configure_metrics`):

- ``usagelog.ingest.events`` (counter): events stored, by ``outcome`` = stored | duplicate;
- ``usagelog.ingest.dead_letters`` (counter);
- ``usagelog.ingest.batch.duration`` (histogram, s): decode + archive + store + commit;
- ``usagelog.ingest.consumer.lag`` (gauge, messages): end offset minus position, summed over
  the worker's partitions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
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


class WorkerHealth:
    def __init__(self, worker_id: str, interval: float, meter: metrics.Meter | None = None) -> None:
        self.worker_id = worker_id
        self.interval = interval
        self.stored = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.batches = 0
        self.lag = 0
        self._latencies: deque[float] = deque(maxlen=256)
        self._recent: deque[tuple[float, int]] = deque(maxlen=512)
        self._next_report = time.monotonic() + interval
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

    def batch_done(self, *, stored: int, duplicates: int, dead_letters: int, seconds: float) -> None:
        attrs = {"worker": self.worker_id}
        with self._lock:
            self.stored += stored
            self.duplicates += duplicates
            self.dead_letters += dead_letters
            self.batches += 1
            self._latencies.append(seconds)
            self._recent.append((time.monotonic(), stored + duplicates))
        self._events.add(stored, {**attrs, "outcome": "stored"})
        self._events.add(duplicates, {**attrs, "outcome": "duplicate"})
        if dead_letters:
            self._dead.add(dead_letters, attrs)
        self._duration.record(seconds, attrs)

    def events_per_second(self, window: float = 30.0) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._recent if now - t <= window]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def summary(self) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(self._latencies)
        p50 = latencies[len(latencies) // 2] if latencies else 0.0
        return {
            "worker": self.worker_id,
            "lag": self.lag,
            "events_per_second": round(self.events_per_second(), 1),
            "batch_p50_ms": round(p50 * 1000, 1),
            "stored": self.stored,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
        }

    def maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_report:
            self._next_report = now + self.interval
            s = self.summary()
            _logger.info(
                "health worker=%s lag=%d events/s=%.1f batch_p50_ms=%.1f stored=%d duplicates=%d "
                "dead_letters=%d",
                s["worker"],
                s["lag"],
                s["events_per_second"],
                s["batch_p50_ms"],
                s["stored"],
                s["duplicates"],
                s["dead_letters"],
            )
