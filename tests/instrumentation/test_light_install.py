"""The in-app part never pulls Kafka, ClickHouse or chDB clients into the user's process."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

HEAVY = ("clickhouse-connect", "chdb", "confluent-kafka", "pyarrow", "fsspec")


def test_base_requirements_exclude_storage_and_kafka_clients() -> None:
    base = [r for r in requires("usagelog") or [] if "extra ==" not in r]
    assert base, "the distribution declares its base requirements"
    assert not [r for r in base if r.split(">")[0].split("=")[0].split("<")[0].strip().lower() in HEAVY]
    assert any(r.startswith("opentelemetry-sdk") for r in base)


def test_an_instrumented_app_imports_no_heavy_module() -> None:
    code = """
import sys
from flask import Flask
from usagelog.instrumentation import instrument_app, MemoryExporter
app = Flask("light")
app.get("/")(lambda: "ok")
exporter = MemoryExporter()
runtime = instrument_app(app, exporter=exporter)
with app.test_client() as client:
    assert client.get("/", buffered=True).status_code == 200
runtime.flush()
assert exporter.count == 1, exporter.count
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("clickhouse_connect", "chdb", "confluent_kafka", "pyarrow", "fsspec")
               or m.startswith("usagelog.ingest"))
print(",".join(heavy))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
