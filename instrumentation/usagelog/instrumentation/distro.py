"""The usagelog OpenTelemetry distro and configurator for ``opentelemetry-instrument``.

The distro sets OpenTelemetry defaults that suit usage logging before the SDK starts:
with ``USAGELOG_EXPORTER=spool`` (embedded, no collector) trace, metric and log exporters
default to ``none`` so nothing tries to reach a collector; otherwise they default to
``otlp`` like the stock distro. Explicit ``OTEL_*_EXPORTER`` values always win.

The configurator is the SDK's own; it gives the process a real tracer provider, so every
server span, sampled or not, has a trace ID for its usage event.

If ``opentelemetry-distro`` is installed too, set ``OTEL_PYTHON_DISTRO=usagelog`` to pick
this one.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from .config import USAGELOG_EXPORTER

_SIGNAL_EXPORTERS = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")


def default_exporters(environ: dict[str, str] | os._Environ[str]) -> None:
    spool = environ.get(USAGELOG_EXPORTER, "").strip().lower() == "spool"
    for name in _SIGNAL_EXPORTERS:
        environ.setdefault(name, "none" if spool else "otlp")


class UsagelogDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        default_exporters(os.environ)


class UsagelogConfigurator(_OTelSDKConfigurator):
    pass
