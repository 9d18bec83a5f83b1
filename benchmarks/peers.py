"""The peers the benchmark measures usagelog against: Apitally's Flask integration and Moesif's
WSGI middleware, each set up as its documentation says, sending to the local stub
(``peer_stub.py``) instead of the vendor.

The stub's address comes from ``BENCH_PEER_STUB`` (``http://127.0.0.1:PORT``) and the worker's
own path prefix from ``BENCH_WORKER_ID``; both are set by ``request_overhead.py``. A peer's
probe returns the number of events the stub received from this process, so every run checks
that the peer really captured and delivered the requests.

What is changed from their defaults, and why:

- Apitally sends its spooled telemetry every 15 s from an export thread. Here that thread is
  stopped once the SDK has activated and the same send cycle (``ExportWorker.run_cycle``) runs in
  the probe's flush at the end of every chunk, so the sending is counted in the chunk that
  produced it, as usagelog's background encoding is. Its batch span processor, encoding and
  gzip spool run as shipped.
- Moesif's batcher waits up to 2 s (``EVENT_BATCH_TIMEOUT``) to fill a batch of 100; 0.1 s here,
  so the end of a chunk need not wait 2 s for the last partial batch. Within a chunk batches
  still fill to 100, so the number of sends is the same.

The consumer (user) of a request is identified from the Bearer JWT's ``sub`` for both, as
usagelog does: Moesif does it by default; Apitally needs ``set_consumer``, called from a
``before_request`` hook as its Flask guide shows.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request

# Apitally's write token is checked for its format only (the stub accepts anything).
_APITALLY_TOKEN = "apt_" + "0" * 24
FLUSH_TIMEOUT = 30.0


def _stub() -> tuple[str, str]:
    url = os.environ.get("BENCH_PEER_STUB")
    worker = os.environ.get("BENCH_WORKER_ID")
    if not url or not worker:
        raise RuntimeError("BENCH_PEER_STUB and BENCH_WORKER_ID must be set (request_overhead.py sets them)")
    return url.rstrip("/"), worker


def stub_counts(url: str, worker: str) -> dict[str, Any]:
    """What the stub received from ``worker`` so far."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", f"/__counts/{worker}")
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    finally:
        conn.close()


def _wait_delivered(url: str, worker: str, expected: int) -> int:
    """Wait until the stub holds ``expected`` events from this worker (or the timeout); return the count.
    Waiting costs this process no CPU, so the measured CPU is the peer's own work."""
    deadline = time.monotonic() + FLUSH_TIMEOUT
    while True:
        events = int(stub_counts(url, worker)["events"])
        if events >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.005)


def setup_apitally(app: Flask, bodies: bool) -> Any:
    """``apitally.flask.init`` before any OpenTelemetry setup, so Apitally manages its own tracer
    provider (its guide's advice); bodies on adds request headers and request and response bodies."""
    import apitally.flask
    from apitally import set_consumer
    from apitally.shared import activation
    from probe import Probe, jwt_sub

    url, worker = _stub()
    options: dict[str, Any] = {}
    if bodies:
        options = {
            "capture_request_headers": True,
            "capture_request_body": True,
            "capture_response_body": True,
        }
    apitally.flask.init(app, write_token=_APITALLY_TOKEN, otlp_endpoint=f"{url}/{worker}", **options)

    @app.before_request
    def _identify() -> None:
        user = jwt_sub(request.headers.get("Authorization"))
        if user:
            set_consumer(user)

    stopped = False

    def flush(expected: int) -> int:
        nonlocal stopped
        exporter = activation.export_worker
        if exporter is None:  # not activated yet (no request served)
            return int(stub_counts(url, worker)["events"])
        if not stopped:
            exporter.stop()  # its 15 s timer; the same cycle runs here instead (see the module docstring)
            stopped = True
        exporter.run_cycle(None)
        return _wait_delivered(url, worker, expected)

    return Probe(flush)


def setup_moesif(app: Flask, bodies: bool) -> Any:
    """``app.wsgi_app = MoesifMiddleware(app.wsgi_app, settings)``, its Flask setup; ``LOG_BODY``
    (default true) captures request and response bodies."""
    from moesifwsgi import MoesifMiddleware  # type: ignore[import-untyped]
    from probe import Probe

    url, worker = _stub()
    settings = {
        "APPLICATION_ID": "bench-application-id",
        "BASE_URI": f"{url}/{worker}",
        "LOG_BODY": bodies,
        "EVENT_BATCH_TIMEOUT": 0.1,
    }
    app.wsgi_app = MoesifMiddleware(app.wsgi_app, settings)  # type: ignore[method-assign]

    def flush(expected: int) -> int:
        return _wait_delivered(url, worker, expected)

    return Probe(flush)
