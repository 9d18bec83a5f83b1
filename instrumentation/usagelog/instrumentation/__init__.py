"""usagelog instrumentation: one usage event per request of a Flask API, on OpenTelemetry.

Zero-code: install the package and run the app under ``opentelemetry-instrument`` with
``USAGELOG_*`` variables. In code::

    from usagelog.instrumentation import instrument_app, uninstrument_app
    instrument_app(app)                      # settings from USAGELOG_* variables
    instrument_app(app, capture_body="all")  # keyword arguments override them
    uninstrument_app(app)                    # and back

This package depends on OpenTelemetry only: never on Kafka, ClickHouse or chDB clients.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from .exporters import EventExporter, MemoryExporter
    from .runtime import Runtime, get_runtime, reset_runtime, start_runtime  # noqa: F401

    __version__: str

_logger = logging.getLogger("usagelog")

# Imported on first use, not with the package: ``usagelog.instrumentation.event`` (the event's
# fields and checksum) is read by the ingest side and the CLI, which need none of the runtime
# (OpenTelemetry metrics, protobuf, the recorder) and should not pay for importing it.
_LAZY = {
    "EventExporter": "exporters",
    "MemoryExporter": "exporters",
    "Runtime": "runtime",
    "get_runtime": "runtime",
    "reset_runtime": "runtime",
    "start_runtime": "runtime",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "__version__":
        return importlib.import_module(".runtime", __name__).VERSION
    if name in _LAZY:
        return getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ensure_tracer_provider() -> None:
    """Give the process an SDK tracer provider if it has none, so spans carry real IDs."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def instrument_app(app: Any, *, exporter: EventExporter | None = None, **settings: Any) -> Runtime:
    """Log every request of ``app`` (a ``flask.Flask``).

    Keyword arguments are the fields of :class:`Settings` (``exporter_name`` is spelled
    ``exporter`` in the environment); they override ``USAGELOG_*`` variables and raise
    :class:`ConfigError` when invalid. ``exporter`` may be an object such as
    :class:`MemoryExporter` (tests). Also applies the stock OpenTelemetry Flask
    instrumentation to the app if it is not instrumented yet.
    """
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from .capture import UsageMiddleware
    from .hooks import connect_flask_signals
    from .runtime import get_runtime, reset_runtime, start_runtime

    if "exporter_name" in settings:
        settings["exporter"] = settings.pop("exporter_name")
    resolved = load_settings(**settings)
    runtime = get_runtime()
    if runtime is None or runtime.settings != resolved or exporter is not None:
        reset_runtime()
        runtime = start_runtime(resolved, exporter)
    if not runtime.active:
        return runtime
    _ensure_tracer_provider()
    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
        app.usagelog_instrumented_flask = True
    if not getattr(app.wsgi_app, "usagelog_wrapped", False):
        app.wsgi_app = UsageMiddleware(app.wsgi_app, runtime)
    connect_flask_signals(runtime.resolver)
    return runtime


def uninstrument_app(app: Any) -> None:
    """Stop logging ``app``'s requests: its own ``wsgi_app`` back, the Flask signals disconnected,
    the stock Flask instrumentation removed if :func:`instrument_app` added it, and the events
    recorded so far exported."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from .capture import UsageMiddleware
    from .hooks import disconnect_flask_signals
    from .runtime import get_runtime

    if isinstance(app.wsgi_app, UsageMiddleware):
        app.wsgi_app = app.wsgi_app.app
    if getattr(app, "usagelog_instrumented_flask", False):
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
        app.usagelog_instrumented_flask = False
    disconnect_flask_signals()
    runtime = get_runtime()
    if runtime is not None:
        try:
            runtime.flush()
        except Exception:
            _logger.exception("usagelog: could not export the events recorded before uninstrumenting")


__all__ = [
    "ConfigError",
    "EventExporter",
    "MemoryExporter",
    "Runtime",
    "Settings",
    "__version__",
    "get_runtime",
    "instrument_app",
    "load_settings",
    "reset_runtime",
    "uninstrument_app",
]
