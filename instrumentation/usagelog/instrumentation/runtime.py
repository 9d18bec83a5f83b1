"""The process-wide usagelog runtime: settings, recorder, and the per-request begin/finish steps."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .builder import EventBuilder
from .capture import ERROR_KEY, EXCHANGE_KEY, ROUTE_KEY, Exchange, _InputTee, span_ids
from .config import Settings, load_settings
from .exporters import EventExporter, MemoryExporter, SpoolExporter
from .recorder import Recorder
from .spool import SpoolWriter
from .userid import UserResolver

_logger = logging.getLogger("usagelog")

VERSION = "0.1.0"


class Runtime:
    def __init__(self, settings: Settings, exporter: EventExporter | None = None) -> None:
        self.settings = settings
        self.active = settings.enabled
        self.resolver = UserResolver(settings.user_id_from)
        self.capture_bodies = settings.capture_body != "none"
        self.body_limit = settings.body_max_bytes
        self._header_keys = self.resolver.header_keys
        builder = EventBuilder(settings, self.resolver, {})
        if exporter is None:
            exporter = build_exporter(settings, "pending")
        self.recorder = Recorder(
            builder,
            exporter,
            flush_interval_ms=settings.flush_interval_ms,
            max_queue=settings.max_queue,
            version=VERSION,
        )
        # The spool writer names its segments after the instance, known only now.
        writer = getattr(exporter, "writer", None)
        if isinstance(writer, SpoolWriter):
            writer.instance_id = self.recorder.instance_id

    # -- request path --------------------------------------------------------------------
    def begin(self, environ: dict[str, Any]) -> Exchange:
        exchange = Exchange(environ, self.recorder.next_seq())
        environ[EXCHANGE_KEY] = exchange
        if self.capture_bodies:
            exchange.response_body = []
            exchange.request_content_type = environ.get("CONTENT_TYPE", "")
            stream = environ.get("wsgi.input")
            if stream is not None:
                environ["wsgi.input"] = _InputTee(stream, exchange, self.body_limit)
        return exchange

    def finish(self, exchange: Exchange) -> None:
        """Complete the exchange from the environ and queue it; runs once per request."""
        try:
            environ = exchange.environ
            if environ is None:
                return
            exchange.environ = None
            exchange.duration_ns = time.perf_counter_ns() - exchange.start_perf
            status = exchange.status
            exchange.status_code = int(status[:3]) if status[:3].isdigit() else 500
            exchange.method = environ.get("REQUEST_METHOD", "")
            exchange.path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            exchange.query = environ.get("QUERY_STRING", "")
            exchange.client_address = environ.get("REMOTE_ADDR", "")
            exchange.user_agent = environ.get("HTTP_USER_AGENT", "")
            flask_error = environ.get(ERROR_KEY)
            if flask_error and not exchange.error_type:
                exchange.error_type = flask_error
            if not exchange.route:
                exchange.route = environ.get(ROUTE_KEY, "")
            length = environ.get("CONTENT_LENGTH")
            if length and length.isdigit():
                exchange.request_size = int(length)
            else:
                tee = environ.get("wsgi.input")
                exchange.request_size = getattr(tee, "total", 0) if isinstance(tee, _InputTee) else 0
            for key in self._header_keys:
                value = environ.get(key)
                if value:
                    exchange.user_headers[key] = value
            if self.capture_bodies:
                exchange.request_headers = [
                    (k[5:].replace("_", "-").lower(), v) for k, v in environ.items() if k.startswith("HTTP_")
                ]
                content_type = environ.get("CONTENT_TYPE")
                if content_type:
                    exchange.request_headers.append(("content-type", content_type))
            exchange.trace_id, exchange.span_id, exchange.trace_flags = span_ids(environ)
            self.recorder.record(exchange)
        except Exception:
            _logger.exception("usagelog: could not record a usage event")

    def flush(self) -> int:
        return self.recorder.flush()

    def shutdown(self) -> None:
        self.active = False
        self.recorder.shutdown()


def build_exporter(settings: Settings, instance_id: str) -> EventExporter:
    if settings.exporter == "spool":
        return SpoolExporter(
            SpoolWriter(
                settings.spool_dir,
                instance_id,
                segment_bytes=settings.spool_segment_bytes,
                segment_seconds=settings.spool_segment_seconds,
                fsync=settings.spool_fsync,
            )
        )
    from .otlp import OtlpExporter

    return OtlpExporter(settings, instance_id)


# -- the process-wide instance ----------------------------------------------------------------

_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime | None:
    return _runtime


def start_runtime(
    settings: Settings | None = None,
    exporter: EventExporter | None = None,
    *,
    install_exit_hooks: bool = True,
) -> Runtime:
    """Create the process-wide runtime once; later calls return the same one."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(settings or load_settings(), exporter)
            if install_exit_hooks:
                _runtime.recorder.install_exit_hooks()
        return _runtime


def reset_runtime() -> None:
    """Shut the runtime down and forget it (tests use this between configurations)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.shutdown()
        _runtime = None


__all__ = ["MemoryExporter", "Runtime", "get_runtime", "reset_runtime", "start_runtime"]
