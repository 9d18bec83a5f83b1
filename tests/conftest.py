"""Shared fixtures: a live WSGI server for an instrumented app, decoded events, a chDB store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from usagelog.ingest.decode import decode_payload
from usagelog.instrumentation import MemoryExporter, Runtime, reset_runtime


@dataclass
class LiveApp:
    """A Flask app served by werkzeug's threaded server on a free port, with usagelog attached."""

    app: Any
    runtime: Runtime
    exporter: MemoryExporter
    port: int

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every request begun so far has been finished and recorded."""
        deadline = time.monotonic() + timeout
        while self.runtime.recorder.recorded < self.runtime.sequence.last:
            assert time.monotonic() < deadline, "requests still in flight"
            time.sleep(0.01)

    def events(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Decoded events once at least ``expected`` were recorded (the server finishes an
        exchange when it closes the response, possibly after the client has its answer)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while True:
            self.runtime.flush()
            rows = [row for payload in list(self.exporter.payloads) for row in decode_payload(payload).rows]
            if len(rows) >= expected or time.monotonic() > deadline:
                return sorted(rows, key=lambda r: r["seq"])
            time.sleep(0.02)


@pytest.fixture
def live_app() -> Iterator[Callable[..., LiveApp]]:
    """Factory: ``live_app(app, **settings)`` instruments ``app`` and serves it."""
    from usagelog.instrumentation import instrument_app

    servers = []

    def start(app: Any, **settings: Any) -> LiveApp:
        exporter = MemoryExporter()
        runtime = instrument_app(app, exporter=exporter, **settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return LiveApp(app, runtime, exporter, server.server_port)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    reset_runtime()


@pytest.fixture
def chdb_url(tmp_path: Path) -> str:
    return "chdb://" + str(tmp_path / "chdb")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Kafka broker (KRaft) for the session; tests create their own topics."""
    from tests.pipeline import broker_module

    broker = broker_module().KafkaBroker(tmp_path_factory.mktemp("kafka"), partitions=3)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topics(kafka: Any, request: pytest.FixtureRequest) -> dict[str, str]:
    """Fresh topics (3 partitions each) named after the test."""
    import re
    import uuid

    stem = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]
    names = {
        "events": f"{stem}.events",
        "monitored": f"{stem}.monitored",
        "deadletter": f"{stem}.events.deadletter",
    }
    kafka.create_topics(list(names.values()), partitions=3)
    return names


@pytest.fixture(scope="session")
def collector_bin() -> Path:
    from tests.pipeline import collector_binary

    return collector_binary()
