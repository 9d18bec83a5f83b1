"""OTLP export of usage events (``USAGELOG_EXPORTER=otlp``), falling back to the spool.

Batches are POSTed as OTLP/HTTP protobuf to the logs endpoint named by the standard
variables (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
``/v1/logs``, default ``http://localhost:4318/v1/logs``), with ``OTEL_EXPORTER_OTLP_HEADERS``
/ ``..._LOGS_HEADERS`` and ``..._TIMEOUT``. A batch that cannot be delivered (connection
refused, timeout, retryable status) is appended to the spool instead; spooled batches are
replayed oldest first, from the background thread, once the collector answers again.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from urllib.parse import unquote

from .config import Settings
from .spool import DamagedFrame, SpoolWriter, claim_segments

_logger = logging.getLogger("usagelog")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _logs_endpoint() -> str:
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return base.rstrip("/") + "/v1/logs"


def _headers() -> dict[str, str]:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = {"Content-Type": "application/x-protobuf"}
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip())] = unquote(value.strip())
    return headers


class DeliveryError(Exception):
    """The collector did not accept a batch (retryable)."""


class OtlpExporter:
    def __init__(self, settings: Settings, instance_id: str) -> None:
        self.endpoint = _logs_endpoint()
        self.headers = _headers()
        timeout = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
        self.timeout = float(timeout) / 1000.0 if timeout and timeout.isdigit() else 10.0
        self.spool_dir = settings.spool_dir
        self.writer = SpoolWriter(
            settings.spool_dir,
            instance_id,
            segment_bytes=settings.spool_segment_bytes,
            segment_seconds=1.0,
            fsync=settings.spool_fsync,
        )
        self.spooled = 0
        self.sent = 0
        self._down_until = 0.0

    def _post(self, payload: bytes) -> None:
        request = urllib.request.Request(self.endpoint, data=payload, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in RETRYABLE_STATUS:
                raise DeliveryError(f"collector answered {exc.code}") from exc
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(str(exc)) from exc

    def export(self, payload: bytes, count: int) -> None:
        if time.monotonic() >= self._down_until:
            try:
                self._post(payload)
                self.sent += count
                return
            except DeliveryError as exc:
                _logger.warning("usagelog: collector unreachable (%s); spooling events", exc)
                self._down_until = time.monotonic() + 2.0
        self.writer.append(payload)
        self.spooled += count

    def tick(self) -> None:
        self.writer.maybe_seal()
        if time.monotonic() < self._down_until:
            return
        self._replay()

    def _replay(self) -> None:
        for segment in claim_segments(self.spool_dir):
            try:
                for frame in segment.frames():
                    if isinstance(frame, DamagedFrame):
                        _logger.error("usagelog: damaged spool frame in %s at %d", segment.path, frame.offset)
                        continue
                    self._post(frame.payload)
            except DeliveryError:
                self._down_until = time.monotonic() + 2.0
                segment.release()
                return
            except Exception:
                segment.release()
                raise
            segment.delete()

    def after_fork(self, instance_id: str) -> None:
        self.writer.abandon_after_fork()
        self.writer.instance_id = instance_id

    def shutdown(self) -> None:
        self.writer.seal()
