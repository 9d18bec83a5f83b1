"""The CLI imports only what a command needs: a short query on chDB loads no data-frame, plotting,
Kafka or instrumentation-runtime modules (their imports cost more than the query itself).
Checked in fresh interpreters, by the modules they hold; timing belongs to benchmarks/cli_latency.py."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "pyarrow",
    "pandas",
    "numpy",
    "plotly",
    "confluent_kafka",
    "google.protobuf",
    "opentelemetry.sdk",
    "usagelog.instrumentation.runtime",
    "usagelog.dashboards",
)


def _migrated(chdb_url: str) -> str:
    """A store past its first open: creating the schema inserts through clickhouse-connect, which
    looks for pandas (once, in the first command that opens a new store)."""
    done = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "query", "SELECT 1", "--clickhouse", chdb_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return chdb_url


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _heavy_modules_after("import usagelog.cli") == []


def test_a_query_on_chdb_loads_no_heavy_module(chdb_url: str) -> None:
    url = _migrated(chdb_url)
    code = f"from usagelog.cli import main\nassert main(['query', 'SELECT 1', '--clickhouse', {url!r}]) == 0"
    assert _heavy_modules_after(code) == []


def test_a_timeline_on_chdb_loads_no_heavy_module(chdb_url: str) -> None:
    code = (
        "from usagelog.cli import main\n"
        f"assert main(['timeline', 'user-1', '--limit', '10', '--clickhouse', {_migrated(chdb_url)!r}]) == 0"
    )
    assert _heavy_modules_after(code) == []


def test_chdbs_arrow_api_still_finds_pyarrow_when_used(chdb_url: str) -> None:
    """pyarrow is deferred in chDB's connection module, not taken away."""
    code = (
        "from usagelog.ingest.store import connect\n"
        "import chdb.state.sqlitelike as sqlitelike\n"
        f"with connect({_migrated(chdb_url)!r}) as store:\n"
        "    table = store.client.query_arrow('SELECT 1 AS x')\n"
        "    assert sqlitelike.pa.Table is type(table)\n"
        "    assert sqlitelike.pa.__name__ == 'pyarrow'"
    )
    assert {"numpy", "pyarrow"} <= set(_heavy_modules_after(code))
