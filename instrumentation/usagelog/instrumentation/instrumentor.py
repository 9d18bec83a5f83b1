"""Auto-instrumentation entry point (``opentelemetry_instrumentor`` group, name ``usagelog``).

``opentelemetry-instrument`` loads this with every other installed instrumentor. It patches
``flask.Flask.__call__`` so every Flask app, created before or after, is wrapped at the WSGI
boundary, outside the stock Flask instrumentation whose server span the events refer to.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from .capture import serve
from .hooks import connect_flask_signals, disconnect_flask_signals
from .runtime import get_runtime, start_runtime

_logger = logging.getLogger("usagelog")


class UsagelogInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Usage events for every Flask app in the process, configured by ``USAGELOG_*`` variables."""

    _original_call: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("flask >= 2.2",)

    def _instrument(self, **kwargs: Any) -> None:
        import flask

        try:
            runtime = start_runtime()
        except Exception:
            _logger.exception("usagelog: could not start; the app runs without usage logging")
            return
        if not runtime.active:
            _logger.info("usagelog: disabled by USAGELOG_ENABLED")
            return
        connect_flask_signals(runtime.resolver)
        original = flask.Flask.__call__
        UsagelogInstrumentor._original_call = original

        def __call__(app: flask.Flask, environ: dict[str, Any], start_response: Any) -> Any:
            return serve(app.wsgi_app, runtime, environ, start_response)

        __call__.usagelog_original = original  # type: ignore[attr-defined]
        flask.Flask.__call__ = __call__  # type: ignore[method-assign,assignment]

    def _uninstrument(self, **kwargs: Any) -> None:
        import flask

        if UsagelogInstrumentor._original_call is not None:
            flask.Flask.__call__ = UsagelogInstrumentor._original_call  # type: ignore[method-assign]
            UsagelogInstrumentor._original_call = None
        disconnect_flask_signals()
        runtime = get_runtime()
        if runtime is not None:
            runtime.flush()
