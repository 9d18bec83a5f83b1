"""The Flask app under test and the ways of instrumenting it that the benchmark compares.

Each variant is set up in a fresh process (OpenTelemetry providers, the stock Flask
instrumentation and the usagelog runtime are process-global), either by the test-client
child of ``request_overhead.py`` or by a gunicorn worker through :func:`create_application`.

A variant returns a :class:`Probe`: ``flush(expected)`` drains whatever the variant still has
queued (usagelog's background encoder, the SDK's batch log processor, a peer's export to the
local stub, waiting for ``expected`` events there) and returns how many events were exported so
far, or ``None`` when the variant exports nothing. The peers (Apitally, Moesif) are in
``peers.py``; they are optional: :func:`available_variants` lists them only when installed.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request
from probe import Probe, jwt_sub

ITEM_PATH = "/api/items/{}"
POST_PATH = "/api/items"
POST_BODY = json.dumps({"name": "widget", "quantity": 3, "tags": ["blue", "small"], "price": 9.5}).encode()
# Requests carry a Bearer JWT (unsigned; only the payload matters) so user ID resolution,
# which every real deployment pays for, is part of what is measured.
_JWT_PAYLOAD = base64.urlsafe_b64encode(json.dumps({"sub": "user-42"}).encode()).rstrip(b"=").decode()
AUTHORIZATION = f"Bearer eyJhbGciOiJub25lIn0.{_JWT_PAYLOAD}.c2ln"
HEADERS = {"Authorization": AUTHORIZATION, "User-Agent": "usagelog-bench/1.0", "Accept": "application/json"}
STATS_PATH = "/__bench/stats"


def build_app() -> Flask:
    """A small JSON API: one GET route with a path parameter and one POST route echoing its body."""
    app = Flask("bench")

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Any:
        return jsonify(id=item_id, name=f"item-{item_id}", price=12.5, in_stock=True)

    @app.post("/api/items")
    def create_item() -> Any:
        payload = request.get_json()
        return jsonify(id=101, **payload), 201

    return app


# -- the variants ------------------------------------------------------------------------------


def _stock_otel(app: Flask) -> None:
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    # An SDK provider with no span processor and the default sampler: spans get real IDs
    # and are recorded, but nothing is exported. usagelog sets up exactly this provider
    # when the app has none, so the two usagelog variants differ from this one only by usagelog.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    # Per app: wraps this app's wsgi_app and adds its hooks; other apps in the process are untouched.
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]  # untyped upstream


def setup_plain(app: Flask) -> Probe:
    return Probe()


def setup_otel(app: Flask) -> Probe:
    _stock_otel(app)
    return Probe()


def _setup_usagelog(app: Flask, capture_body: str) -> Probe:
    from usagelog.instrumentation import MemoryExporter, instrument_app

    exporter = MemoryExporter()
    runtime = instrument_app(app, exporter=exporter, capture_body=capture_body)

    def flush(expected: int) -> int:
        runtime.flush()
        return exporter.count

    return Probe(flush)


def setup_usagelog(app: Flask) -> Probe:
    return _setup_usagelog(app, "none")


def setup_usagelog_bodies(app: Flask) -> Probe:
    return _setup_usagelog(app, "all")


class _OtlpBytesExporter:
    """Encodes each batch to OTLP protobuf bytes and counts the records, as an OTLP exporter
    would before sending; keeps the work comparable with usagelog's ``MemoryExporter`` path."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        self._encode = encode_logs
        self.count = 0
        self.bytes = 0

    def export(self, batch: Any) -> Any:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        self.bytes += len(self._encode(batch).SerializeToString())
        self.count += len(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def setup_naive(app: Flask) -> Probe:
    """Stock instrumentation plus one SDK log record per request from an ``after_request`` hook.

    What a direct implementation on the OpenTelemetry logs SDK looks like: build ~20
    attributes in the request thread, emit through a ``LoggerProvider`` with the default
    ``BatchLogRecordProcessor``, encode to OTLP in its worker thread. No bodies are recorded.
    """
    import itertools

    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    _stock_otel(app)
    exporter = _OtlpBytesExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))  # type: ignore[arg-type]
    logger = provider.get_logger("bench.naive")
    seq = itertools.count(1)

    @app.before_request
    def _start() -> None:
        g.naive_start_ns = time.time_ns()
        g.naive_start_perf = time.perf_counter_ns()

    @app.after_request
    def _emit(response: Any) -> Any:
        env = request.environ
        rule = request.url_rule
        attributes = {
            "http.request.method": request.method,
            "http.route": rule.rule if rule is not None else "",
            "url.path": request.path,
            "url.query": env.get("QUERY_STRING", ""),
            "url.scheme": request.scheme,
            "server.address": request.host,
            "network.protocol.version": env.get("SERVER_PROTOCOL", ""),
            "client.address": request.remote_addr or "",
            "user_agent.original": request.user_agent.string,
            "user.id": jwt_sub(request.headers.get("Authorization")),
            "http.response.status_code": response.status_code,
            "http.request.body.size": request.content_length or 0,
            "http.response.body.size": response.calculate_content_length() or 0,
            "http.request.header.content-type": request.content_type or "",
            "http.response.header.content-type": response.content_type or "",
            "usagelog.event_id": uuid.uuid4().hex,
            "usagelog.seq": next(seq),
            "usagelog.duration_ns": time.perf_counter_ns() - g.naive_start_perf,
            "process.pid": os.getpid(),
            "usagelog.monitored": False,
        }
        logger.emit(
            timestamp=g.naive_start_ns,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            event_name="usagelog.request",
            attributes=attributes,
        )
        return response

    def flush(expected: int) -> int:
        provider.force_flush()
        return exporter.count

    return Probe(flush)


def setup_apitally(app: Flask) -> Probe:
    from peers import setup_apitally

    return setup_apitally(app, bodies=False)  # type: ignore[no-any-return]


def setup_apitally_bodies(app: Flask) -> Probe:
    from peers import setup_apitally

    return setup_apitally(app, bodies=True)  # type: ignore[no-any-return]


def setup_moesif(app: Flask) -> Probe:
    from peers import setup_moesif

    return setup_moesif(app, bodies=False)  # type: ignore[no-any-return]


def setup_moesif_bodies(app: Flask) -> Probe:
    from peers import setup_moesif

    return setup_moesif(app, bodies=True)  # type: ignore[no-any-return]


VARIANTS: dict[str, tuple[str, Callable[[Flask], Probe]]] = {
    "plain": ("plain Flask", setup_plain),
    "otel": ("stock OTel Flask instrumentation", setup_otel),
    "usagelog": ("usagelog, bodies off", setup_usagelog),
    "usagelog-bodies": ("usagelog, bodies on", setup_usagelog_bodies),
    "naive": ("stock OTel + SDK log record per request", setup_naive),
    "apitally": ("Apitally, bodies off (defaults)", setup_apitally),
    "apitally-bodies": ("Apitally, bodies and request headers on", setup_apitally_bodies),
    "moesif": ("Moesif, bodies off (LOG_BODY false)", setup_moesif),
    "moesif-bodies": ("Moesif, bodies on (defaults)", setup_moesif_bodies),
}
LOGGING_VARIANTS = ("usagelog", "usagelog-bodies", "naive")
# The peers, with the package each needs; they deliver to the local stub (peers.py, peer_stub.py).
PEER_VARIANTS = {
    "apitally": "apitally",
    "apitally-bodies": "apitally",
    "moesif": "moesifwsgi",
    "moesif-bodies": "moesifwsgi",
}
# Which usagelog variant each peer is compared with: the one capturing the same fields.
PEER_COUNTERPART = {
    "apitally": "usagelog",
    "moesif": "usagelog",
    "apitally-bodies": "usagelog-bodies",
    "moesif-bodies": "usagelog-bodies",
}


# The peers and what they need beyond usagelog's dependencies (scripts/setup.sh installs them;
# benchmarks/peers-requirements.txt says why apart): only peer variants put this on their path.
PEERS_DIR = Path(__file__).resolve().parent.parent / ".venv" / "peers"


def available_variants() -> list[str]:
    """Every variant whose packages are installed (the peers are optional: ``PEERS_DIR``)."""
    return [v for v in VARIANTS if v not in PEER_VARIANTS or (PEERS_DIR / PEER_VARIANTS[v]).is_dir()]


def usagelog_location() -> str | None:
    """Where this process imported ``usagelog.instrumentation`` from (None if it did not)."""
    import sys

    module = sys.modules.get("usagelog.instrumentation")
    return getattr(module, "__file__", None) if module is not None else None


def build_variant(variant: str) -> tuple[Flask, Probe]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    app = build_app()
    probe = VARIANTS[variant][1](app)
    return app, probe


# -- under a WSGI server -------------------------------------------------------------------------


def create_application(variant: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI callable gunicorn serves: the variant's app, plus an uninstrumented stats route.

    ``GET /__bench/stats?expect=N`` drains the variant's queue (a peer: until the stub holds
    ``N`` events) and then reports the worker's PID, its CPU time (all threads, user + system,
    ``CLOCK_PROCESS_CPUTIME_ID``), the serving thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``)
    before and after the drain, and the number of events exported. The sync worker serves
    every request on its main thread, so the serving thread's time between two stats calls is
    the request path's and the rest of the process's time is the background threads'. The
    route is dispatched before the app, so no instrumentation sees it and it never counts as a
    logged request.
    """
    app, probe = build_variant(variant)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            query = environ.get("QUERY_STRING", "")
            expected = int(query.removeprefix("expect=")) if query.startswith("expect=") else 0
            thread_ns = time.thread_time_ns()
            events = probe.flush(expected)
            body = json.dumps(
                {
                    "pid": os.getpid(),
                    "cpu_ns": time.process_time_ns(),
                    "thread_ns": thread_ns,
                    "thread_end_ns": time.thread_time_ns(),
                    "events": events,
                    "usagelog": usagelog_location(),
                }
            ).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return app(environ, start_response)  # Flask.__call__ runs the (wrapped) wsgi_app

    return application
