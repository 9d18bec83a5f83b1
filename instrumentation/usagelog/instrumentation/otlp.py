"""OTLP export of usage events (``USAGELOG_EXPORTER=otlp``), falling back to the durable spool.

Transport and endpoint follow the standard variables, logs-specific ones first:
``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or
``http/protobuf``), ``..._ENDPOINT`` (default ``http://localhost:4317`` for gRPC,
``http://localhost:4318/v1/logs`` for HTTP), ``..._HEADERS`` (e.g. ``authorization=Bearer%20T``),
``..._TIMEOUT`` (ms, default 10000), ``..._INSECURE`` and ``..._CERTIFICATE``.

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

import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote, urlparse

from .config import Settings
from .spool import DamagedFrame, SpoolWriter, claim_segments, has_claimable

_logger = logging.getLogger("usagelog")

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
SHUTDOWN_TIMEOUT = 2.0
ORPHAN_SCAN_SECONDS = 10.0
SHUTDOWN_REPLAY_SECONDS = 5.0


def _env(name: str, default: str = "") -> str:
    """``OTEL_EXPORTER_OTLP_LOGS_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``, else ``default``."""
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_LOGS_{name}")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
        or default
    )


def _headers() -> list[tuple[str, str]]:
    headers = []
    for item in _env("HEADERS").split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers.append((unquote(name.strip()).lower(), unquote(value.strip())))
    return headers


class DeliveryError(Exception):
    """The collector did not accept a batch."""


class _HttpTransport:
    def __init__(self, endpoint: str, headers: list[tuple[str, str]], certificate: str) -> None:
        if not os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") and not endpoint.rstrip("/").endswith(
            "/v1/logs"
        ):
            endpoint = endpoint.rstrip("/") + "/v1/logs"
        self.endpoint = endpoint
        self.headers = {"Content-Type": "application/x-protobuf", **dict(headers)}
        self.context: Any = None
        if certificate:
            import ssl

            self.context = ssl.create_default_context(cafile=certificate)

    def send(self, payload: bytes, timeout: float) -> None:
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


class _GrpcTransport:
    def __init__(
        self, endpoint: str, headers: list[tuple[str, str]], certificate: str, insecure: bool
    ) -> None:
        import grpc

        parsed = urlparse(endpoint if "://" in endpoint else "http://" + endpoint)
        target = parsed.netloc or parsed.path
        if parsed.scheme == "https" or (certificate and not insecure):
            root = open(certificate, "rb").read() if certificate else None  # noqa: SIM115
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root))
        else:
            self.channel = grpc.insecure_channel(target)
        # The payload is already an encoded ExportLogsServiceRequest: send the bytes as they are.
        self.call = self.channel.unary_unary(LOGS_EXPORT_METHOD)
        self.metadata = headers
        self._grpc = grpc

    def send(self, payload: bytes, timeout: float) -> None:
        try:
            self.call(payload, timeout=timeout, metadata=self.metadata)
        except self._grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else "?"
            raise DeliveryError(f"collector answered gRPC {code}") from exc

    def close(self) -> None:
        self.channel.close()


class OtlpExporter:
    def __init__(self, settings: Settings, instance_id: str) -> None:
        protocol = _env("PROTOCOL", "grpc").strip().lower()
        timeout = _env("TIMEOUT", "10000")
        self.timeout = float(timeout) / 1000.0 if timeout.replace(".", "", 1).isdigit() else 10.0
        if protocol not in ("grpc", "http/protobuf"):
            _logger.warning("usagelog: unknown OTLP protocol %r; using grpc", protocol)
            protocol = "grpc"
        self.protocol = protocol
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
            certificate = _env("CERTIFICATE")
            if self.protocol == "http/protobuf":
                self._transport = _HttpTransport(
                    _env("ENDPOINT", "http://localhost:4318"), _headers(), certificate
                )
            else:
                insecure = _env("INSECURE", "false").strip().lower() == "true"
                self._transport = _GrpcTransport(
                    _env("ENDPOINT", "http://localhost:4317"), _headers(), certificate, insecure
                )
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
                        _logger.error(
                            "usagelog: skipping a damaged spool frame in %s at %d", segment.path, frame.offset
                        )
                        continue
                    self.transport.send(frame.payload, self.timeout)
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
        self.__init__(self._settings, instance_id)  # type: ignore[misc]

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
