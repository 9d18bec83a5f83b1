"""Every benchmark, one after the other, and the targets they measure: one command.

Runs each benchmark script with ``--json`` (its table goes to stderr, its results to stdout),
collects the targets each reports (met or not, the value, and what stands in the way), and
rewrites the generated part of ``docs/benchmarks.md`` — between its ``results:begin`` and
``results:end`` markers, at the top — with the machine's description, the targets and every
benchmark's table. The sections below the markers (how each benchmark measures) are kept.

Benchmarks run one at a time (they would disturb each other's timings); each compares its own
variants side by side within its run. A benchmark that fails is reported as such in the summary
and makes the run exit non-zero; the others still run.

    python benchmarks/run.py                 # full runs (~25 min here), rewrites docs/benchmarks.md
    python benchmarks/run.py --quick         # quick modes (~4 min), prints the summary only
    python benchmarks/run.py --quick --write # quick modes, and rewrite the document anyway
    python benchmarks/run.py --only ingest,cli_latency
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.metadata as metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- results:begin (written by benchmarks/run.py) -->", "<!-- results:end -->"


def _cli_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    mine = [r for r in report["results"] if r["code"] == "this"]
    worst = max(mine, key=lambda r: r["p50_s"])
    floor = [r["p50_s"] for r in report["results"] if r["code"] != "this" and r["code"] != "baseline"]
    met = all(r["target_met"] for r in mine)
    why = (
        f"`{worst['command']}` p50 {worst['p50_s']:.3f} s; clickhouse-connect's import and chDB starting its "
        f"engine alone take {floor[0]:.3f} s here (the floor measured beside it)"
        if floor
        else f"`{worst['command']}` p50 {worst['p50_s']:.3f} s"
    )
    return [
        {
            "name": f"CLI commands < {report['target_s']} s (p50, embedded store)",
            "met": met,
            "value": worst["p50_s"],
            "why_not": None if met else why,
        }
    ]


def _storage_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored table (``usage_events``, as the migrations make it) at each dataset's size."""
    out = []
    month = report["datasets"].get("events_30d")
    if month:
        disk = month["disk"]["usage_events"]
        total, table = disk["per_event_total"], disk["per_event_without_projection"]
        out.append({
            "name": f"≤ 60 bytes an event without bodies ({month['events']:,} events, with projections)",
            "met": total <= 60, "value": round(total, 1),
            "why_not": None if total <= 60 else (
                f"the table alone takes {table:.1f} B, its projections add "
                f"{disk['per_event_projection']:.1f} B"),
        })  # fmt: skip
    for key, label in (("events_30d", "30 days"), ("events_365d", "one year")):
        data = report["datasets"].get(key)
        if not data:
            continue
        p95 = data["timeline"]["usage_events"]["all"]["p95_ms"]
        out.append({
            "name": f"a consumer's timeline < 20 ms p95 ({data['events']:,} events over {label})",
            "met": p95 < 20, "value": round(p95, 1),
            "why_not": None if p95 < 20 else (
                f"the read visits {data['disk']['usage_events']['parts']} parts; the busiest consumers' "
                "FINAL reads merge up to ~9% of all events"),
        })  # fmt: skip
    return out


@dataclass
class Benchmark:
    name: str
    script: str
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=lambda: ["--quick"])
    targets: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda report: list(report.get("targets", []))


BENCHMARKS = (
    Benchmark("ingest", "ingest.py"),
    Benchmark("storage", "storage.py", quick=["--quick", "--no-candidates"], targets=_storage_targets),
    Benchmark("request_overhead", "request_overhead.py"),
    Benchmark("freshness", "freshness.py"),
    Benchmark("cli_latency", "cli_latency.py", targets=_cli_targets),
    Benchmark("dashboards", "dashboards.py"),
)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    versions = []
    for package in ("chdb", "clickhouse-connect", "flask", "opentelemetry-sdk"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), {mem_kb / 1024 / 1024:.0f} GiB, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"{', '.join(versions)}; load average {load:.1f} at the start"
    )


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def run(bench: Benchmark, quick: bool) -> dict[str, Any]:
    script = ROOT / "benchmarks" / bench.script
    if not script.exists():
        return {"name": bench.name, "ok": False, "error": f"{bench.script} not found", "targets": []}
    args = [sys.executable, str(script), *(bench.quick if quick else bench.full), "--json"]
    started = time.monotonic()
    print(f"run: {bench.name} ({' '.join(args[1:])})", file=sys.stderr, flush=True)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return {"name": bench.name, "ok": False, "seconds": seconds, "targets": [],
                "error": (done.stderr or done.stdout)[-3000:]}  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        return {
            "name": bench.name,
            "ok": False,
            "seconds": seconds,
            "targets": [],
            "error": f"bad JSON: {exc}",
        }
    # The tables, without the progress lines (storage's start with a [HH:MM:SS] stamp).
    lines = [
        line
        for line in done.stderr.splitlines()
        if not line.startswith(("run:", "round ", "cli_latency: round", "["))
    ]
    return {"name": bench.name, "ok": True, "seconds": seconds, "table": "\n".join(lines),
            "targets": bench.targets(report)}  # fmt: skip


RESULTS = ROOT / ".usagelog" / "benchmarks"  # each benchmark's last full result (not committed)


def _last(name: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    result["name"] = f"{name}"
    return result


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _shown(value: Any) -> str:
    """A target's value in one cell: a structure (the peers' margins, say) as its smallest number."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, dict | list):
        numbers = _numbers(value)
        return f"smallest {min(numbers)}" if numbers else "—"
    return str(value)


def render(
    results: list[dict[str, Any]], quick: bool, description: str, rerun: list[str] | None = None
) -> str:
    """The page's generated part; ``rerun``: the benchmarks this run ran (None: all of them), the
    others' results being their last full runs'."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick modes (smoke runs: small samples)" if quick else "full runs"
    kept = [r["name"] for r in results if rerun is not None and r["name"] not in rerun]
    if kept:
        mode += f" of {', '.join(rerun or [])} (the results of {', '.join(kept)}: their last full runs)"
    out = [
        BEGIN,
        "# Benchmarks: the targets",
        "",
        f"`python benchmarks/run.py` on {when}, commit {commit()}, {mode}; machine: {description}.",
        "Ratios are measured side by side within one benchmark's run; absolute figures move with the",
        "machine's load (it is shared). The sections after this generated part say how each benchmark",
        "measures.",
        "",
        "| target | measured | met | what stands in the way |",
        "|---|---:|---|---|",
    ]
    for r in results:
        for t in r["targets"]:
            state = "**met**" if t["met"] else "not met"
            out.append(f"| {t['name']} | {_shown(t.get('value'))} | {state} | {t.get('why_not') or ''} |")
        if not r["ok"]:
            out.append(f"| {r['name']}: the benchmark failed | — | not met | see below |")
    for r in results:
        out += ["", f"## {r['name']} (`benchmarks/{r['name']}.py`, {r.get('seconds', 0):.0f} s)", ""]
        text = r.get("table") if r["ok"] else "FAILED:\n" + r.get("error", "")
        out += ["```text", (text or "").rstrip(), "```"]
    out.append(END)
    return "\n".join(out)


def write(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = section + "\n\n" + text
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick modes; print only (unless --write)")
    parser.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md also after --quick")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    description = machine()
    fresh = {b.name: run(b, args.quick) for b in chosen}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name, result in fresh.items():
            (RESULTS / f"{name}.json").write_text(json.dumps(result))
    # With --only, the others' last full results (kept under .usagelog) fill the rest of the page.
    results = [fresh[b.name] if b.name in fresh else _last(b.name) for b in BENCHMARKS]
    results = [r for r in results if r is not None]
    section = render(results, args.quick, description, list(fresh) if args.only else None)
    print(section)
    if args.write or not args.quick:
        write(section)
        print(f"run: wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0 if all(r["ok"] for r in fresh.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
