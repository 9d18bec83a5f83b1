"""OTLP export of usage events (``USAGELOG_EXPORTER=otlp``), falling back to the durable spool.

Where and how to send follows the OpenTelemetry SDK's own variables, read as the SDK's OTLP log
exporters read them (its constants, its header parsing), the logs-specific one first:
``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or
``http/protobuf``), ``..._ENDPOINT`` (gRPC: default ``http://localhost:4317``; HTTP: the logs
endpoint as given, else the generic one plus ``/v1/logs``, default
``http://localhost:4318/v1/logs``), ``..._HEADERS`` (e.g. ``authorization=Bearer%20T``),
``..._TIMEOUT`` (seconds, as the Python SDK reads it; default 10), ``..._COMPRESSION``
(``none``, ``gzip`` or ``deflate``), ``..._INSECURE`` (gRPC), ``..._CERTIFICATE`` (a CA bundle),
``..._CLIENT_KEY`` and ``..._CLIENT_CERTIFICATE`` (mutual TLS). The SDK's exporters take only
SDK log records, so the already-encoded batches go out on the same transports directly.

Nothing is lost when the collector is down or slow. A batch that cannot be delivered
(connection refused, timeout, any error status) goes to the spool (``USAGELOG_SPOOL_DIR``)
and the exporter backs off (1 s, doubling up to 30 s). While anything is spooled, new batches
are spooled behind it, so events reach the collector oldest first; once the collector answers,
the background thread replays sealed segments in order, deleting each after all its frames
were accepted. Segments left by processes that died are replayed too. Memory stays bounded:
the in-memory queue is capped (``USAGELOG_MAX_QUEUE``) and everything beyond it is on disk.
At exit, what is held is sent with a short timeout or spooled.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_INSECURE,
    OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE,
    OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_LOGS_COMPRESSION,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_HEADERS,
    OTEL_EXPORTER_OTLP_LOGS_INSECURE,
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
)
from opentelemetry.util.re import parse_env_headers

from . import event as ev
from .config import Settings
from .losses import LossReport, encode_reports
from .spool import DamagedFrame, SpoolWriter, claim_segments, has_claimable, segment_instance

_logger = logging.getLogger("usagelog")

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
SHUTDOWN_TIMEOUT = 2.0
ORPHAN_SCAN_SECONDS = 10.0
SHUTDOWN_REPLAY_SECONDS = 5.0
COMPRESSIONS = ("none", "gzip", "deflate")


@dataclass(frozen=True)
class Destination:
    """Where and how to send, from the SDK's ``OTEL_EXPORTER_OTLP_*`` variables."""

    protocol: str = "grpc"
    endpoint: str = "http://localhost:4317"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    compression: str = "none"
    insecure: bool = True
    certificate: str = ""
    client_key: str = ""
    client_certificate: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Destination:
        env = os.environ if environ is None else environ

        def pick(logs: str, generic: str, default: str = "") -> str:
            return env.get(logs) or env.get(generic) or default

        protocol = pick(OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, "grpc").strip().lower()
        if protocol not in ("grpc", "http/protobuf"):
            _logger.warning("usagelog: unknown OTLP protocol %r; using grpc", protocol)
            protocol = "grpc"
        if protocol == "http/protobuf":
            endpoint = env.get(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) or (
                (env.get(OTEL_EXPORTER_OTLP_ENDPOINT) or "http://localhost:4318").rstrip("/") + "/v1/logs"
            )
        else:
            endpoint = pick(
                OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, "http://localhost:4317"
            )
        raw_timeout = pick(OTEL_EXPORTER_OTLP_LOGS_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT, "10")
        try:
            timeout = float(raw_timeout)
            if timeout <= 0:
                raise ValueError
        except ValueError:
            _logger.warning("usagelog: invalid OTLP timeout %r (seconds); using 10", raw_timeout)
            timeout = 10.0
        compression = pick(OTEL_EXPORTER_OTLP_LOGS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION, "none")
        compression = compression.strip().lower()
        if compression not in COMPRESSIONS:
            _logger.warning("usagelog: unsupported OTLP compression %r; sending uncompressed", compression)
            compression = "none"
        scheme = urlparse(endpoint).scheme
        insecure_flag = pick(OTEL_EXPORTER_OTLP_LOGS_INSECURE, OTEL_EXPORTER_OTLP_INSECURE)
        if scheme == "https":
            insecure = False
        elif insecure_flag:
            insecure = insecure_flag.strip().lower() == "true"
        else:
            insecure = scheme == "http"
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            headers=parse_env_headers(
                pick(OTEL_EXPORTER_OTLP_LOGS_HEADERS, OTEL_EXPORTER_OTLP_HEADERS), liberal=True
            ),
            timeout=timeout,
            compression=compression,
            insecure=insecure,
            certificate=pick(OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE),
            client_key=pick(OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY, OTEL_EXPORTER_OTLP_CLIENT_KEY),
            client_certificate=pick(
                OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE
            ),
        )


class DeliveryError(Exception):
    """The collector did not accept a batch."""


class _HttpTransport:
    def __init__(self, destination: Destination) -> None:
        self.endpoint = destination.endpoint
        self.headers = {"Content-Type": "application/x-protobuf", **destination.headers}
        self.compression = destination.compression
        if self.compression != "none":
            self.headers["Content-Encoding"] = self.compression
        self.context: Any = None
        if destination.certificate or destination.client_certificate:
            import ssl

            self.context = ssl.create_default_context(cafile=destination.certificate or None)
            if destination.client_certificate:
                self.context.load_cert_chain(destination.client_certificate, destination.client_key or None)

    def send(self, payload: bytes, timeout: float) -> None:
        if self.compression == "gzip":
            payload = gzip.compress(payload)
        elif self.compression == "deflate":
            payload = zlib.compress(payload)
        request = urllib.request.Request(self.endpoint, data=payload, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"collector answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(str(getattr(exc, "reason", exc))) from exc

    def close(self) -> None:
        pass


def _read(path: str) -> bytes | None:
    with open(path, "rb") as file:
        return file.read()


class _GrpcTransport:
    def __init__(self, destination: Destination) -> None:
        import grpc

        endpoint = destination.endpoint
        parsed = urlparse(endpoint if "://" in endpoint else "http://" + endpoint)
        target = parsed.netloc or parsed.path
        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
            destination.compression, grpc.Compression.NoCompression
        )
        if destination.insecure:
            self.channel = grpc.insecure_channel(target, compression=compression)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(destination.certificate) if destination.certificate else None,
                private_key=_read(destination.client_key) if destination.client_key else None,
                certificate_chain=_read(destination.client_certificate)
                if destination.client_certificate
                else None,
            )
            self.channel = grpc.secure_channel(target, credentials, compression=compression)
        # The payload is already an encoded ExportLogsServiceRequest: send the bytes as they are.
        self.call = self.channel.unary_unary(LOGS_EXPORT_METHOD)
        self.metadata = tuple(destination.headers.items())
        self._grpc = grpc

    def send(self, payload: bytes, timeout: float) -> None:
        try:
            self.call(payload, timeout=timeout, metadata=self.metadata)
        except self._grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else "?"
            raise DeliveryError(f"collector answered gRPC {code}") from exc

    def close(self) -> None:
        self.channel.close()


def damaged_frame_report(path: Path, frame: DamagedFrame) -> bytes:
    """A ``damaged`` loss report for a spool frame that cannot be read, attributed to the instance
    the segment's name carries."""
    instance = segment_instance(path) or "unknown"
    location = f"{path.name}@{frame.offset}"
    report = LossReport(
        ev.LOSS_DAMAGED,
        0,
        0,
        0,
        0,
        f"spool frame {location} unreadable: {frame.reason} ({frame.size} bytes); its events are lost",
        f"{instance}/{ev.LOSS_DAMAGED}/{location}",
    )
    resource = {ev.SERVICE_INSTANCE_ID: instance, ev.HOST_NAME: socket.gethostname()}
    return encode_reports(resource, [report])


class OtlpExporter:
    def __init__(self, settings: Settings, instance_id: str, destination: Destination | None = None) -> None:
        self.destination = destination or Destination.from_environment()
        self.timeout = self.destination.timeout
        self.protocol = self.destination.protocol
        # Created on first use, in the background thread: a gRPC channel must not cross a fork
        # (pre-forking servers import the app, and so usagelog, before forking workers).
        self._transport: _HttpTransport | _GrpcTransport | None = None
        self.spool_dir = settings.spool_dir
        self.writer = SpoolWriter(
            settings.spool_dir,
            instance_id,
            segment_bytes=settings.spool_segment_bytes,
            segment_seconds=1.0,
            fsync=settings.spool_fsync,
        )
        self.sent = 0
        self.spooled = 0
        self.replayed_batches = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._settings = settings
        self._next_scan = 0.0
        # Segments spooled earlier (by this service or a process that died) go out first.
        self._backlog = has_claimable(self.spool_dir)

    @property
    def transport(self) -> _HttpTransport | _GrpcTransport:
        if self._transport is None:
            if self.protocol == "http/protobuf":
                self._transport = _HttpTransport(self.destination)
            else:
                self._transport = _GrpcTransport(self.destination)
        return self._transport

    # -- state ------------------------------------------------------------------------------
    @property
    def collector_down(self) -> bool:
        return time.monotonic() < self._retry_at

    def _failed(self, exc: Exception) -> None:
        self._backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        _logger.warning("usagelog: collector unavailable (%s); spooling, retry in %.0fs", exc, self._backoff)

    def _succeeded(self) -> None:
        if self._backoff:
            _logger.info("usagelog: collector reachable again")
        self._backoff = 0.0
        self._retry_at = 0.0

    # -- exporter interface -----------------------------------------------------------------
    def export(self, payload: bytes, count: int) -> None:
        if not self._backlog and not self.collector_down:
            try:
                self.transport.send(payload, self.timeout)
                self.sent += count
                self._succeeded()
                return
            except DeliveryError as exc:
                self._failed(exc)
        self.spill(payload, count)

    def spill(self, payload: bytes, count: int) -> None:
        self.writer.append(payload)
        self.spooled += count
        self._backlog = True

    def tick(self) -> None:
        self.writer.maybe_seal()
        if self.collector_down:
            return
        now = time.monotonic()
        if not self._backlog and now >= self._next_scan:
            # Another process sharing the spool may have died with events in it.
            self._next_scan = now + ORPHAN_SCAN_SECONDS
            self._backlog = has_claimable(self.spool_dir)
        if self._backlog:
            self.replay()

    def replay(self, budget: float = 0.0) -> bool:
        """Send spooled segments oldest first (for at most ``budget`` seconds when given);
        True when nothing claimable is left."""
        self.writer.seal()  # our own open segment goes in line too
        deadline = time.monotonic() + budget if budget else None
        for segment in claim_segments(self.spool_dir):
            if deadline is not None and time.monotonic() > deadline:
                segment.release()
                return False
            try:
                for frame in segment.frames():
                    if isinstance(frame, DamagedFrame):
                        # The frame cannot be sent, but its loss must reach audit: a report
                        # naming the segment and offset goes in its place.
                        _logger.error(
                            "usagelog: damaged spool frame in %s at %d (%s); reported as lost",
                            segment.path,
                            frame.offset,
                            frame.reason,
                        )
                        self.transport.send(damaged_frame_report(segment.path, frame), self.timeout)
                        continue
                    self.transport.send(bytes(frame.payload), self.timeout)  # read unmapped: bytes already
                    self.replayed_batches += 1
            except DeliveryError as exc:
                segment.release()
                self._failed(exc)
                return False
            except Exception:
                segment.release()
                raise
            segment.delete()
            self._succeeded()
        self._backlog = self.writer.pending
        return not self._backlog

    def after_fork(self, instance_id: str) -> None:
        self.writer.abandon_after_fork()
        # The parent's channel (if any) is left alone: closing it here could hang.
        self.__init__(self._settings, instance_id, self.destination)  # type: ignore[misc]

    def shutdown(self) -> None:
        """Seal what is spooled and, if the collector answers, hand it over before exiting; what
        is left stays in the spool for the next process (or ``usagelog ingest --spool``)."""
        self.timeout = min(self.timeout, SHUTDOWN_TIMEOUT)
        self.writer.seal()
        if self._backlog and not self.collector_down:
            try:
                self.replay(budget=SHUTDOWN_REPLAY_SECONDS)
            except Exception:
                _logger.exception("usagelog: replay at exit failed; events stay spooled")
        if self._transport is not None:
            self._transport.close()
