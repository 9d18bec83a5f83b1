"""Real pipeline parts for tests: the Kafka broker (kafka/broker.py), the collector binary
(collector/build.sh) and ingest worker processes (``usagelog ingest --from kafka://...``)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

from usagelog.process import Child, free_port
from usagelog.wait import wait_until

REPO = Path(__file__).resolve().parents[1]


def broker_module() -> ModuleType:
    """kafka/broker.py, loaded by path (the folder is not a package)."""
    name = "usagelog_kafka_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "kafka" / "broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def collector_binary() -> Path:
    """Build (or reuse the cached) usagelog-otelcol; its path."""
    result = subprocess.run(
        ["bash", str(REPO / "collector" / "build.sh")], capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    if not wait_until(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Collector:
    """The real collector binary with the project's layered configs, on free ports."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        brokers: str,
        topic: str,
        monitored_topic: str,
        overlays: tuple[str, ...] = ("monitored",),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port, self.health_port, self.metrics_port = (free_port() for _ in range(4))
        self.env = {
            **os.environ,
            "USAGELOG_KAFKA_BROKERS": brokers,
            "USAGELOG_KAFKA_TOPIC": topic,
            "USAGELOG_KAFKA_MONITORED_TOPIC": monitored_topic,
            "USAGELOG_COLLECTOR_STORAGE_DIR": str(workdir / "storage"),
            "USAGELOG_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "USAGELOG_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "USAGELOG_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "USAGELOG_COLLECTOR_METRICS_PORT": str(self.metrics_port),
            "USAGELOG_COLLECTOR_METRICS_HOST": "127.0.0.1",
        }
        self.configs = ["base", *overlays]
        self.process: Child | None = None
        self.starts = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self) -> Collector:
        self.starts += 1
        args = [str(self.binary)]
        for name in self.configs:
            args += ["--config", str(REPO / "collector" / "config" / f"{name}.yaml")]
        log = self.workdir / f"collector-{self.starts}.log"
        self.process = Child.start(args, log=log, name="collector", env=self.env)
        self.process.wait_until(self.healthy, 60, "the collector to report healthy")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("collector-*.log")))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


class WorkerProcess:
    """``usagelog ingest --from kafka://...`` in its own process."""

    def __init__(
        self,
        workdir: Path,
        brokers: str,
        topic: str,
        clickhouse: str,
        worker_id: str,
        extra_env: dict[str, str] | None = None,
        max_idle: float = 0.0,
    ) -> None:
        self.workdir = workdir
        self.worker_id = worker_id
        self.args = [
            sys.executable,
            "-m",
            "usagelog.cli",
            "ingest",
            "--from",
            f"kafka://{brokers}/{topic}",
            "--clickhouse",
            clickhouse,
            "--worker-id",
            worker_id,
        ]
        if max_idle:
            self.args += ["--max-idle", str(max_idle)]
        self.env = {
            **os.environ,
            "USAGELOG_STATE_DIR": str(workdir / "state"),
            "USAGELOG_ARCHIVE_URL": str(workdir / "archive"),
            "USAGELOG_KAFKA_DEAD_LETTER_TOPIC": f"{topic}.deadletter",
            "USAGELOG_BATCH_MAX_SECONDS": "0.5",
            "USAGELOG_HEALTH_INTERVAL_SECONDS": "2",
            **(extra_env or {}),
        }
        self.process: Child | None = None
        self.log_path = workdir / f"worker-{worker_id}.log"

    def start(self) -> WorkerProcess:
        # Appended: a worker restarted under the same name keeps one log.
        self.process = Child.start(
            self.args, log=self.log_path, name=f"worker {self.worker_id}", env=self.env, append=True
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit status (no SIGKILL: a worker that does not stop fails the test)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


def http_get(port: int, path: str, timeout: float = 20) -> int:
    """Status of one GET to 127.0.0.1:port (0 when nothing is listening yet)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return int(response.status)
    except ConnectionError:
        return 0
    finally:
        conn.close()


def produce(brokers: str, topic: str, payloads: list[bytes], keys: list[bytes] | None = None) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "acks": "all"})
    for i, payload in enumerate(payloads):
        producer.produce(topic, value=payload, key=keys[i] if keys else str(i).encode())
    assert producer.flush(30) == 0


def in_process_worker_settings(brokers: str, topic: str, clickhouse: str, **environ: str) -> Any:
    """Settings of a worker run in the test's own process (``Worker(settings).run()``): no archive,
    no dead-letter topic and no memory bound (a restart in place would replace the test), then
    ``environ`` (``USAGELOG_...`` variables)."""
    from usagelog.ingest.settings import load_worker_settings

    return load_worker_settings(
        source=f"kafka://{brokers}/{topic}",
        clickhouse=clickhouse,
        worker_id="w1",
        environ={
            "USAGELOG_ARCHIVE_URL": "none",
            "USAGELOG_KAFKA_DEAD_LETTER_TOPIC": "",
            "USAGELOG_WORKER_MAX_MEMORY_MB": "0",
            **environ,
        },
    )


def count_events(clickhouse: str, table: str = "usage_events") -> tuple[int, int]:
    """(rows, distinct event IDs) in a table."""
    from usagelog.ingest.store import connect

    with connect(clickhouse) as store:
        _, rows = store.query(f"SELECT count(), uniqExact(event_id) FROM usagelog.{table}")
    return int(rows[0][0]), int(rows[0][1])


def serve_demo_with_gunicorn(workdir: Path, env: dict[str, str], workers: int, requests: int) -> None:
    """The demo API under ``opentelemetry-instrument`` and gunicorn (``workers`` workers, configured
    by ``env``), sent ``requests`` GETs from four threads, each answered 200; then SIGTERM, which
    has each worker flush what it holds. gunicorn's log is ``workdir/gunicorn.log``."""
    from concurrent.futures import ThreadPoolExecutor

    from usagelog.demo.run import instrument_command

    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    app = "usagelog.demo.app:create_app()"
    server = Child.start(
        [instrument_command(), gunicorn, "-w", str(workers), "-b", f"127.0.0.1:{port}", app],
        log=workdir / "gunicorn.log",
        name="gunicorn",
        env=env,
    )

    def get(i: int) -> int:
        return http_get(port, f"/api/items/{i % 20 + 1}")

    try:
        server.wait_until(lambda: get(0) == 200, 60, "gunicorn to serve")
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(get, range(requests)))
        assert statuses == [200] * requests, statuses
    finally:
        server.stop(timeout=60)
