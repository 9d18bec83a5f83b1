"""Wall time of short ``usagelog`` commands on the embedded store (chDB), as a user sees them.

Each command runs as a whole process (``python -m usagelog.cli ...``), as typed in a terminal,
on a small store (a few thousand events ingested from a spool written by ``tests/spoolfill.py``):

- ``query 'SELECT 1'``
- ``timeline user-3 --limit 10``
- ``top users --limit 5``
- ``audit``

Every checkout's ``usagelog`` is byte-compiled first (``compileall``, as ``pip install`` does):
a user's installed command reads its modules' bytecode, where a checkout run with
``PYTHONDONTWRITEBYTECODE`` set would compile them from source on every run.

Runs are interleaved (every command and every checkout in turn, round after round), so drifts in
machine speed hit all alike; p50 and p95 are over the rounds. The imports' share is read from three
extra runs of each with ``python -X importtime`` (the median sum of the top-level imports'
cumulative times, over the median wall time; importtime itself slows imports a little, so this is an upper
bound), with the part of it that is chDB's and clickhouse-connect's own (``import chdb`` loads
the engine library and starts an in-memory engine). Beside ``query 'SELECT 1'`` runs the engine
floor: the same query through clickhouse-connect's chDB backend in a bare ``python -c``, with
pyarrow deferred as usagelog defers it; what no change to usagelog can go below. The target is
0.3 s (p50) per command.

With ``--baseline DIR`` (an earlier checkout, e.g. ``git worktree add /tmp/base HEAD~3`` or
``git archive HEAD~3 ingest instrumentation | tar -x -C /tmp/base``) every command also runs on
that checkout's ``usagelog`` (its ``instrumentation/`` and ``ingest/`` first on ``PYTHONPATH``),
against the same store, and the table shows both side by side. ``USAGELOG_*`` variables are
removed from the children's environment.

Exits non-zero when a command fails (an exit status other than 0) or imports ``usagelog`` from
the wrong checkout.

    python benchmarks/cli_latency.py                      # 15 rounds
    python benchmarks/cli_latency.py --quick              # 3 rounds (CI: proves it runs)
    python benchmarks/cli_latency.py --baseline /tmp/base --runs 21
    python benchmarks/cli_latency.py --json > cli.json    # table on stderr, JSON on stdout
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.3
COMMANDS: dict[str, list[str]] = {
    "query 'SELECT 1'": ["query", "SELECT 1"],
    "timeline user-3 --limit 10": ["timeline", "user-3", "--limit", "10"],
    "top users --limit 5": ["top", "users", "--limit", "5"],
    "audit": ["audit"],
}


def _env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGELOG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(checkout / "instrumentation"), str(checkout / "ingest")])
    return env


def _check_origin(checkout: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import usagelog.cli; print(usagelog.cli.__file__)"],
        env=_env(checkout),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"cli_latency: usagelog imported from {found}, not from {checkout}")


def _build_store(workdir: Path, events: int) -> str:
    sys.path[:0] = [str(ROOT), str(ROOT / "instrumentation"), str(ROOT / "ingest")]
    from tests.spoolfill import write_spool

    spool = workdir / "spool"
    per_segment = 500
    write_spool(spool, segments=max(1, events // per_segment), per_segment=per_segment)
    url = f"chdb://{workdir / 'chdb'}"
    subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "ingest", "--spool", str(spool), "--clickhouse", url],
        env=_env(ROOT),
        capture_output=True,
        check=True,
    )
    return url


# The engine's own limit: the same query through clickhouse-connect's chDB backend, nothing else
# (no click, no settings, no schema check), with pyarrow deferred as usagelog defers it.
FLOOR = "engine floor"
FLOOR_CODE = """
import sys
sys.modules["pyarrow"] = None
import chdb.state.sqlitelike
del sys.modules["pyarrow"]
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
print(client.query("SELECT 1").result_rows)
client.close()
"""


def _run(checkout: Path | None, args: list[str], url: str, importtime: bool = False) -> tuple[float, str]:
    """One command as a process (``checkout`` None: the engine floor); its wall time and stderr."""
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    if checkout is None:
        argv, env = [*python, "-c", FLOOR_CODE, url], _env(ROOT)
    else:
        argv, env = [*python, "-m", "usagelog.cli", *args, "--clickhouse", url], _env(checkout)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cli_latency: {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, done.stderr


ENGINE_MODULES = ("chdb", "clickhouse_connect")


def _imports_seconds(stderr: str) -> tuple[float, float]:
    """The top-level imports' cumulative times in ``-X importtime`` output: all of them, and those
    of the engine (chDB, whose import also starts an in-memory engine, and clickhouse-connect)."""
    total = engine = 0
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        if not parts[2].startswith("  "):  # one space before a top-level module's name
            total += int(parts[1])
            if parts[2].strip().split(".")[0] in ENGINE_MODULES:
                engine += int(parts[1])
    return total / 1e6, engine / 1e6


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(checkouts: dict[str, Path], url: str, runs: int) -> list[dict[str, Any]]:
    first = next(iter(COMMANDS))
    # Who runs each command: every checkout, and the engine floor beside the first command.
    runners: dict[str, dict[str, Path | None]] = {
        label: {**checkouts, **({FLOOR: None} if label == first else {})} for label in COMMANDS
    }
    walls: dict[tuple[str, str], list[float]] = {(c, k): [] for c in COMMANDS for k in runners[c]}
    for label, args in COMMANDS.items():  # warm-up: the page cache
        for checkout in runners[label].values():
            _run(checkout, args, url)
    for round_number in range(runs):
        for label, args in COMMANDS.items():
            order = list(runners[label].items())
            if round_number % 2:
                order.reverse()
            for name, checkout in order:
                walls[(label, name)].append(_run(checkout, args, url)[0])
        print(f"cli_latency: round {round_number + 1}/{runs}", file=sys.stderr)
    results = []
    for label, args in COMMANDS.items():
        for name, checkout in runners[label].items():
            values = walls[(label, name)]
            p50 = statistics.median(values)
            # The median of three -X importtime runs.
            measured = sorted(
                _imports_seconds(_run(checkout, args, url, importtime=True)[1]) for _ in range(3)
            )
            imports, engine = measured[1]
            results.append(
                {
                    "command": label,
                    "code": name,
                    "runs": len(values),
                    "p50_s": round(p50, 4),
                    "p95_s": round(_p95(values), 4),
                    "min_s": round(min(values), 4),
                    "imports_s": round(imports, 4),
                    "engine_imports_s": round(engine, 4),
                    "imports_share": round(min(imports / p50, 1.0), 3),
                    "target_met": p50 < TARGET_S,
                }
            )
    return results


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| command | code | p50 s | p95 s | min s | imports s | of which chDB + clickhouse-connect s "
        "| imports share | < 0.3 s (p50) |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| `{r['command']}` | {r['code']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['min_s']:.3f} | "
            f"{r['imports_s']:.3f} | {r['engine_imports_s']:.3f} | {r['imports_share']:.0%} | "
            f"{'met' if r['target_met'] else 'not met'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 rounds: proves it runs")
    parser.add_argument("--events", type=int, default=2000, help="events in the store (default 2000)")
    parser.add_argument("--baseline", type=Path, help="an earlier checkout to run side by side")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    checkouts = {"this": ROOT}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline.resolve()
    for checkout in checkouts.values():
        for package in ("instrumentation", "ingest"):
            if not compileall.compile_dir(checkout / package / "usagelog", quiet=1):
                raise SystemExit(f"cli_latency: cannot byte-compile {checkout / package}")
        _check_origin(checkout)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="usagelog-cli-latency-") as workdir:
        url = _build_store(Path(workdir), args.events)
        results = measure(checkouts, url, runs)
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {runs} rounds, {args.events} events; "
        f"{time.monotonic() - started:.0f} s"
    )
    text = f"{machine}\n\n{table(results)}"
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps({"machine": machine, "target_s": TARGET_S, "results": results}, indent=1))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
