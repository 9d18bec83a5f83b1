"""Dashboard and timeline query times on generated traffic: raw events against rollups, side by side.

One run measures, on a store of generated traffic (``usagelog.demo.history``: 10M events over
5 weeks by default), through the same code the offline dashboards use
(``usagelog.dashboards.runner``):

1. every panel of the Overview dashboard over 24 h, 7 d and 30 d, both ways: as shipped (raw
   events up to 7 d, the hourly rollup beyond) and with the other branch forced, by replacing
   the threshold constant ``604800`` in the panel's SQL before expansion (``0`` forces the
   rollup, ten years forces raw events). Panels without a rollup branch run once;
2. a consumer's timeline: the CLI's ``queries.timeline`` for the busiest and the median
   consumer, over all data and over the last day, and the Consumer dashboard's Timeline panel
   (7 d);
3. the page as a whole: variables plus every panel, one after another;
4. bytes on disk of ``usage_events`` (and its ``by_time`` projection) and of both rollups.

Repetitions are interleaved: each repetition loads every page (raw and rollup of one range back
to back, the first of the pair alternating) and every timeline, so drifts in machine speed hit
both sides of a comparison alike. Each repetition also moves the time window on by one second,
as a refreshing dashboard does, so no cache keyed on the query's constants serves a repeat.
After the timed repetitions, one more pass runs every call once more to find out where the
time goes: rows read (``SelectedRows`` in ``system.events``), the engine's elapsed time,
``EXPLAIN indexes=1`` of every statement the call sent and, for timelines, the same statements
without FINAL. The notes on targets not met come from there.

The store is built once per set of parameters under ``--data-dir`` (a subdirectory each, with
``params.json`` recording the parameters) and reused while the parameters match. Exits
non-zero when a panel fails.

    python benchmarks/dashboards.py                 # 10M events, 5 repetitions
    python benchmarks/dashboards.py --quick         # ~200k events, 3 repetitions (CI)
    python benchmarks/dashboards.py --write-docs    # also rewrite the results in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usagelog.dashboards import model, runner
from usagelog.dashboards.model import Dashboard, Panel
from usagelog.demo import history as history_module
from usagelog.ingest import queries
from usagelog.ingest.store import Store, connect

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- dashboards:begin -->", "<!-- dashboards:end -->"

PANEL_TARGET_MS = 300.0
TIMELINE_TARGET_MS = 20.0
THRESHOLD = "604800"  # the raw/rollup switch in overview.json: ranges up to 7 days read raw events
RAW_UP_TO_S = int(THRESHOLD)
# What the threshold becomes to force a branch: 0 sends every range to the rollup, ten years none.
FORCE = {"rollup": "0", "raw": str(10 * 365 * 86400)}
RANGES = (("24 h", "now-24h", 86400), ("7 d", "now-7d", 7 * 86400), ("30 d", "now-30d", 30 * 86400))
TIMELINE_LIMIT = 500  # the Grafana Timeline panel's LIMIT: one screenful of rows
DAY = dt.timedelta(days=1)
# Engine counters read around each query in the diagnostic pass.
COUNTERS = ("SelectedRows",)
FINAL = re.compile(r"\s+FINAL\b")


# -- data ------------------------------------------------------------------------------------------------


def _generator_digest() -> str:
    """Of the generator's source: a changed generator makes different data, so the cache is rebuilt."""
    return hashlib.sha256(Path(history_module.__file__).read_bytes()).hexdigest()[:12]


def ensure_data(data_dir: Path, weeks: int, scale: float, consumers: int, seed: int) -> dict[str, Any]:
    """The store for these parameters: reused when ``params.json`` matches, else (re)built."""
    wanted = {
        "weeks": weeks,
        "scale": scale,
        "consumers": consumers,
        "seed": seed,
        "end": history_module.DEFAULT_END,
        "generator": _generator_digest(),
    }
    folder = data_dir / f"w{weeks}-s{scale:g}-c{consumers}-seed{seed}"
    params_file = folder / "params.json"
    if params_file.exists():
        recorded = json.loads(params_file.read_text())
        if recorded.get("parameters") == wanted:
            _progress(f"data: reusing {folder} ({recorded['events']:,} events)")
            return {**recorded, "url": "chdb://" + str((folder / "chdb").resolve()), "reused": True}
        _progress(f"data: {folder} was built with other parameters; rebuilding")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    url = "chdb://" + str((folder / "chdb").resolve())
    _progress(f"data: generating {weeks} weeks at scale {scale:g} ...")
    t0 = time.monotonic()
    history = history_module.generate(weeks=weeks, scale=scale, consumers=consumers, seed=seed)
    generate_s = time.monotonic() - t0
    events = len(history)
    _progress(f"data: {events:,} events generated in {generate_s:.0f} s; loading and building rollups ...")
    t0 = time.monotonic()
    with connect(url) as store:
        history_module.load(store, history)
    load_s = time.monotonic() - t0
    del history
    _progress(f"data: loaded in {load_s:.0f} s")
    recorded = {"parameters": wanted, "events": events, "generate_s": generate_s, "load_s": load_s}
    params_file.write_text(json.dumps(recorded, indent=2) + "\n")  # written last: marks the store complete
    return {**recorded, "url": url, "reused": False}


# -- the machine -----------------------------------------------------------------------------------------


def machine(store: Store) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    try:
        import chdb

        chdb_version = str(chdb.__version__)
    except (ImportError, AttributeError):
        chdb_version = "?"
    engine = str(store.client.query("SELECT version()").result_rows[0][0])
    return {
        "cpu": cpu or platform.processor() or "?",
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "chdb": chdb_version,
        "engine": engine,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }


# -- what is measured ------------------------------------------------------------------------------------


def panel_label(panel: Panel, panels: list[Panel]) -> str:
    """The title, with the kind of panel where a dashboard has two of a title (a stat and a graph)."""
    twins = [p for p in panels if p.title == panel.title]
    return f"{panel.title} ({panel.type})" if len(twins) > 1 else panel.title


def has_branch(panel: Panel) -> bool:
    return any(THRESHOLD in t.raw_sql for t in panel.targets)


def forced(panel: Panel, variant: str) -> Panel:
    """The panel with its raw/rollup switch forced to ``variant`` for every range."""
    targets = tuple(
        dataclasses.replace(t, raw_sql=t.raw_sql.replace(THRESHOLD, FORCE[variant])) for t in panel.targets
    )
    return dataclasses.replace(panel, targets=targets)


def shipped_variant(seconds: int) -> str:
    return "raw" if seconds <= RAW_UP_TO_S else "rollup"


def other(variant: str) -> str:
    return "rollup" if variant == "raw" else "raw"


@dataclass
class Page:
    """One load of the Overview page over one range, as shipped or with the other branch forced."""

    range_name: str
    time_from: str
    variant: str
    panels: list[Panel]

    def run(
        self, store: Store, dashboard: Dashboard, now: dt.datetime, diag: Diagnostics | None = None
    ) -> tuple[float, dict[int, float], list[str]]:
        """(variables ms, ms per panel, errors)."""
        t0 = time.perf_counter()
        resolved = runner.resolve(store, dashboard, self.time_from, "now", {}, now=now)
        variables_ms = (time.perf_counter() - t0) * 1000
        times, errors = {}, []
        for panel in self.panels:
            if diag is None:
                result = runner.run_panel(store, panel, resolved)
            else:
                key = ("panel", self.range_name, self.variant, panel.id)
                result = diag.measure(key, functools.partial(runner.run_panel, store, panel, resolved))
            if result.error:
                errors.append(f"{panel.title} ({self.range_name}, {self.variant}): {result.error}")
            times[panel.id] = result.milliseconds
        return variables_ms, times, errors


@dataclass
class TimelineCase:
    """One timeline query. ``prepare(now)`` does the untimed set-up (the dashboard's variables) and
    returns the call to time, which returns the number of rows."""

    label: str
    consumer: str  # "busiest" or "median"
    prepare: Callable[[dt.datetime], Callable[[], int]]


def timeline_cases(store: Store, consumer_dashboard: Dashboard, users: dict[str, str]) -> list[TimelineCase]:
    panel = next(p for p in consumer_dashboard.panels if p.title == "Timeline")

    def cli(user: str, limit: int, day: bool) -> Callable[[dt.datetime], Callable[[], int]]:
        def prepare(now: dt.datetime) -> Callable[[], int]:
            filters = queries.Filters(start=now - DAY, end=now) if day else None
            return lambda: len(queries.timeline(store, user, limit, filters)[1])

        return prepare

    def grafana(user: str) -> Callable[[dt.datetime], Callable[[], int]]:
        def prepare(now: dt.datetime) -> Callable[[], int]:
            chosen = {"consumer": [user]}
            ready = runner.resolve(store, consumer_dashboard, "now-7d", "now", chosen, now=now)

            def call() -> int:
                result = runner.run_panel(store, panel, ready)
                if result.error:
                    raise RuntimeError(f"Consumer dashboard, Timeline panel: {result.error}")
                return len(result.frames[0].rows) if result.frames else 0

            return call

        return prepare

    cases = []
    for who, user in users.items():
        cases += [
            TimelineCase(
                f"CLI `timeline --limit {TIMELINE_LIMIT}`, all data", who, cli(user, TIMELINE_LIMIT, False)
            ),
            TimelineCase(
                f"CLI `timeline --limit {TIMELINE_LIMIT}`, last 24 h", who, cli(user, TIMELINE_LIMIT, True)
            ),
            TimelineCase("CLI `timeline` (no limit), last 24 h", who, cli(user, 0, True)),
            TimelineCase("Consumer dashboard, Timeline panel, 7 d", who, grafana(user)),
        ]
    return cases


def pick_consumers(store: Store) -> tuple[dict[str, str], dict[str, int], int]:
    """The busiest consumer and the one in the middle of the ranking by events (and how many there are)."""
    _, rows = store.query(
        f"SELECT user_id, count() AS n FROM {store.database}.usage_events WHERE user_id != '' "
        "GROUP BY user_id ORDER BY n DESC, user_id"
    )
    busiest, median = rows[0], rows[len(rows) // 2]
    users = {"busiest": busiest[0], "median": median[0]}
    return users, {busiest[0]: int(busiest[1]), median[0]: int(median[1])}, len(rows)


# -- diagnostics: engine counters and plans ------------------------------------------------------------


class _Recorder:
    """Stands in for the store's client while a call runs: records every query it sends."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.engine_ns = 0

    def query(self, sql: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        self.seen.append((sql, dict(parameters or {})))
        result = self._client.query(sql, parameters=parameters, **kwargs)
        # chDB reports each query's own elapsed time: the engine's share of the call.
        self.engine_ns += int((getattr(result, "summary", None) or {}).get("elapsed_ns", 0))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Diagnostics:
    """For single calls: rows read (``SelectedRows`` in ``system.events``, before and after), the
    engine's time (chDB's elapsed time of each query), the plan of every query the call sent
    (``EXPLAIN indexes=1``), and what the same queries cost without FINAL."""

    store: Store
    found: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    _overhead: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = self.store.client  # the real one, also while a call runs with a recorder

    def _counters(self) -> dict[str, int]:
        rows = self.client.query(
            "SELECT event, value FROM system.events WHERE event IN {names:Array(String)}",
            parameters={"names": list(COUNTERS)},
        ).result_rows
        values = dict.fromkeys(COUNTERS, 0)
        values.update({str(k): int(v) for k, v in rows})
        return values

    def calibrate(self) -> None:
        """What reading the counters itself adds (it is a query too)."""
        a = self._counters()
        b = self._counters()
        self._overhead = {k: b[k] - a[k] for k in COUNTERS}

    def _counted(self, call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
        start = self._counters()
        t0 = time.perf_counter()
        result = call()
        wall_ms = (time.perf_counter() - t0) * 1000
        end = self._counters()
        delta = {k: max(end[k] - start[k] - self._overhead.get(k, 0), 0) for k in COUNTERS}
        found = {
            "rows_read": delta["SelectedRows"],
            "wall_ms": wall_ms,
        }
        return result, found

    def measure(self, key: tuple[Any, ...], call: Callable[[], Any], without_final: bool = False) -> Any:
        recorder = _Recorder(self.client)
        self.store.client = recorder
        try:
            result, found = self._counted(call)
        finally:
            self.store.client = self.client
        found["engine_ms"] = recorder.engine_ns / 1e6
        plans = []
        for sql, parameters in recorder.seen:
            rows = self.client.query("EXPLAIN indexes=1 " + sql, parameters=parameters).result_rows
            plans += summarise_plan([str(r[0]) for r in rows])
        found["plan"] = plans
        if without_final and any(FINAL.search(sql) for sql, _ in recorder.seen):
            runs = [
                self._counted(
                    lambda: [self.client.query(FINAL.sub("", q), parameters=p) for q, p in recorder.seen]
                )[1]
                for _ in range(3)
            ]
            found["without_final"] = {
                "ms": statistics.median(r["wall_ms"] for r in runs),
                "rows_read": runs[-1]["rows_read"],
            }
        self.found[key] = found
        return result


def summarise_plan(lines: list[str]) -> list[str]:
    """Per ``ReadFromMergeTree`` step that reads anything: source, FINAL, granules selected/total."""
    steps: list[dict[str, Any]] = []
    for line in lines:
        text = line.strip("│└├─ ")
        match = re.match(r"ReadFromMergeTree \((.+)\)", text)
        if match:
            steps.append({"source": match.group(1).removeprefix("usagelog."), "final": False, "total": 0})
        elif steps:
            step = steps[-1]
            if text == "FINAL: 1":
                step["final"] = True
            elif match := re.match(r"Parts: (\d+) \| Granules: (\d+)", text):
                step.setdefault("parts", int(match.group(1)))
                step.setdefault("granules", int(match.group(2)))
            elif match := re.match(r"Granules: \d+/(\d+)", text):
                step["total"] = max(step["total"], int(match.group(1)))
    out = []
    for step in steps:
        if "granules" not in step:
            continue  # the branch a constant condition switched off: nothing is read
        total = f"/{step['total']}" if step["total"] else ""
        final = " FINAL" if step["final"] else ""
        out.append(f"{step['source']}{final}: {step['parts']} parts, {step['granules']}{total} granules")
    return out


# -- statistics and formatting ---------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if len(ordered) == 1:
        p95 = ordered[0]
    else:
        p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1], "n": len(ordered)}


def fmt_ms(s: dict[str, float] | None) -> str:
    if s is None:
        return "—"
    return " / ".join(_num(s[k]) for k in ("p50", "p95", "max"))


def _num(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_rows(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def verdict(s: dict[str, float], target: float) -> str:
    """Judged on the p50; a p95 over the target is worth seeing too (on a shared machine, often noise)."""
    if s["p50"] >= target:
        return "**not met**"
    return "met" if s["p95"] < target else "met (p95 not)"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class Samples:
    pages: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    variables: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    panels: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    timelines: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    timeline_rows: dict[tuple[str, str], int] = field(default_factory=dict)


def build_pages(dashboard: Dashboard) -> list[tuple[Page, Page]]:
    """Per range, the shipped page and the page with the other branch forced, as a pair."""
    panels = [p for p in dashboard.panels if p.type != "row"]
    pairs = []
    for name, time_from, seconds in RANGES:
        ship = shipped_variant(seconds)
        alt = other(ship)
        shipped_page = Page(name, time_from, ship, list(panels))
        forced_page = Page(name, time_from, alt, [forced(p, alt) if has_branch(p) else p for p in panels])
        pairs.append((shipped_page, forced_page))
    return pairs


def measure(
    store: Store,
    overview: Dashboard,
    pairs: list[tuple[Page, Page]],
    cases: list[TimelineCase],
    end: dt.datetime,
    repeat: int,
    warmup: int,
    failures: list[str],
) -> Samples:
    samples = Samples()
    for rep in range(-warmup, repeat):
        t0 = time.monotonic()
        now = end + dt.timedelta(seconds=rep + warmup)  # a refreshing dashboard: new constants every time
        turn = rep % len(pairs)
        for first, second in pairs[turn:] + pairs[:turn]:
            for page in (first, second) if rep % 2 else (second, first):
                variables_ms, times, errors = page.run(store, overview, now)
                failures += [e for e in errors if e not in failures]
                if rep < 0:
                    continue
                key = (page.range_name, page.variant)
                samples.variables.setdefault(key, []).append(variables_ms)
                samples.pages.setdefault(key, []).append(variables_ms + sum(times.values()))
                for panel_id, ms in times.items():
                    samples.panels.setdefault((*key, panel_id), []).append(ms)
        for case in cases[turn:] + cases[:turn]:
            call = case.prepare(now)
            started = time.perf_counter()
            rows = call()
            ms = (time.perf_counter() - started) * 1000
            if rep >= 0:
                samples.timelines.setdefault((case.label, case.consumer), []).append(ms)
                samples.timeline_rows[(case.label, case.consumer)] = rows
        label = "warm-up" if rep < 0 else f"repetition {rep + 1}/{repeat}"
        _progress(f"{label} done in {time.monotonic() - t0:.1f} s (load average {os.getloadavg()[0]:.1f})")
    return samples


def diagnose(
    store: Store,
    overview: Dashboard,
    pairs: list[tuple[Page, Page]],
    cases: list[TimelineCase],
    end: dt.datetime,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    diag = Diagnostics(store)
    diag.calibrate()
    for pair in pairs:
        for page in pair:
            page.run(store, overview, end, diag)
    for case in cases:
        diag.measure(("timeline", case.label, case.consumer), case.prepare(end), without_final=True)
    return diag.found


def disk_usage(store: Store) -> dict[str, Any]:
    db = store.database
    tables = ("usage_events", "usage_rollup_1m", "usage_rollup_1h")
    _, parts = store.query(
        "SELECT table, count(), sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
        "FROM system.parts WHERE database = {db:String} AND active AND table IN {tables:Array(String)} "
        "GROUP BY table",
        {"db": db, "tables": list(tables)},
    )
    _, projections = store.query(
        "SELECT table, name, count(), sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
        "FROM system.projection_parts WHERE database = {db:String} AND active GROUP BY table, name",
        {"db": db},
    )
    _, columns = store.query(
        "SELECT name, data_compressed_bytes FROM system.columns WHERE database = {db:String} "
        "AND table = 'usage_events' ORDER BY data_compressed_bytes DESC LIMIT 6",
        {"db": db},
    )
    rows: list[dict[str, Any]] = []
    by_table = {r[0]: r for r in parts}
    for table in tables:
        if table in by_table:
            _, n_parts, n_rows, compressed, uncompressed = by_table[table]
            rows.append(
                {
                    "name": table,
                    "parts": n_parts,
                    "rows": n_rows,
                    "compressed": compressed,
                    "uncompressed": uncompressed,
                }
            )
        if table == "usage_events":
            for p_table, name, n_parts, n_rows, compressed, uncompressed in projections:
                if p_table == table:
                    rows.append(
                        {
                            "name": f"{table}, projection {name}",
                            "parts": n_parts,
                            "rows": n_rows,
                            "compressed": compressed,
                            "uncompressed": uncompressed,
                        }
                    )
    return {"tables": rows, "largest_columns": [(str(n), int(b)) for n, b in columns]}


# -- the report ------------------------------------------------------------------------------------------


def render(
    report: dict[str, Any], overview: Dashboard, samples: Samples, diag: dict[tuple[Any, ...], Any]
) -> str:
    m, data = report["machine"], report["data"]
    out = [
        f"`{report['command']}`: {data['events']:,} events over {data['parameters']['weeks']} weeks "
        f"(`generate(weeks={data['parameters']['weeks']}, scale={data['parameters']['scale']:g})`, "
        f"{report['consumers_ranked']} consumers), {report['repeat']} timed repetitions after "
        f"{report['warmup']} warm-up, interleaved; {report['elapsed_s']:.0f} s of measuring"
        + (
            f" (building the store took {data['generate_s'] + data['load_s']:.0f} s)"
            if not data["reused"]
            else ""
        )
        + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; chDB {m['chdb']} (ClickHouse "
        f"{m['engine']}), Python {m['python']}; load average {m['load_average']:.1f} at the start, "
        f"{report['load_average_end']:.1f} at the end.",
        "",
        "Times are wall ms per call as the offline dashboards run it (render, query, decode), "
        "p50 / p95 / max over the repetitions. Rows read: the engine's `SelectedRows` counter for one "
        f"call. Targets: a panel under {PANEL_TARGET_MS:g} ms, a timeline under "
        f"{TIMELINE_TARGET_MS:g} ms (judged on p50).",
    ]
    notes: list[str] = []
    slower_rollups: list[str] = []
    panels = [p for p in overview.panels if p.type != "row"]
    for name, _, seconds in RANGES:
        ship = shipped_variant(seconds)
        out += ["", f"### Overview panels, {name}", ""]
        out.append(
            f"| panel | raw{' (shipped)' if ship == 'raw' else ''}: ms p50 / p95 / max | raw: rows read "
            f"| rollup{' (shipped)' if ship == 'rollup' else ''}: ms p50 / p95 / max | rollup: rows read "
            f"| target < {PANEL_TARGET_MS:g} ms |"
        )
        out.append("|---|--:|--:|--:|--:|---|")
        for panel in panels:
            cells = {}
            for variant in ("raw", "rollup"):
                measured = variant == ship or has_branch(panel)
                s = samples.panels.get((name, variant, panel.id)) if measured else None
                d = diag.get(("panel", name, variant, panel.id), {}) if measured else {}
                cells[variant] = (stats(s) if s else None, d.get("rows_read"))
            shipped_stats = cells[ship][0]
            assert shipped_stats is not None
            v = verdict(shipped_stats, PANEL_TARGET_MS)
            out.append(
                f"| {panel_label(panel, panels)} | {fmt_ms(cells['raw'][0])} | {fmt_rows(cells['raw'][1])} "
                f"| {fmt_ms(cells['rollup'][0])} | {fmt_rows(cells['rollup'][1])} | {v} |"
            )
            if v == "**not met**":
                notes.append(_panel_note(panel, panels, name, ship, shipped_stats, diag))
            raw_s, rollup_s = cells["raw"][0], cells["rollup"][0]
            if raw_s and rollup_s and rollup_s["p50"] > max(raw_s["p50"] * 1.1, raw_s["p50"] + 2):
                slower_rollups.append(
                    f"{panel_label(panel, panels)} ({name}): rollup {_num(rollup_s['p50'])} ms, "
                    f"raw {_num(raw_s['p50'])} ms"
                )
    out += ["", "### The Overview page", ""]
    out.append(
        "| range | as shipped: ms p50 / p95 / max | of which variables "
        "| other branch forced: ms p50 / p95 / max | slowest panel as shipped (p50) |"
    )
    out.append("|---|--:|--:|--:|---|")
    for name, _, seconds in RANGES:
        ship = shipped_variant(seconds)
        slowest = max(panels, key=lambda p: statistics.median(samples.panels[(name, ship, p.id)]))
        out.append(
            f"| {name} ({ship}) | {fmt_ms(stats(samples.pages[(name, ship)]))} "
            f"| {_num(statistics.median(samples.variables[(name, ship)]))} "
            f"| {other(ship)}: {fmt_ms(stats(samples.pages[(name, other(ship))]))} "
            f"| {panel_label(slowest, panels)}, "
            f"{_num(statistics.median(samples.panels[(name, ship, slowest.id)]))} ms |"
        )
    out += ["", "### Consumer timeline", ""]
    counts = report["consumer_events"]
    users = report["consumers"]
    out.append(
        f"Busiest consumer: `{users['busiest']}` ({counts[users['busiest']]:,} events); median consumer: "
        f"`{users['median']}` ({counts[users['median']]:,} events)."
    )
    out += [
        "",
        "| query | consumer | rows returned | ms p50 / p95 / max | rows read "
        f"| target < {TIMELINE_TARGET_MS:g} ms |",
    ]
    out.append("|---|---|--:|--:|--:|---|")
    for (label, who), values in samples.timelines.items():
        summary = stats(values)
        d = diag.get(("timeline", label, who), {})
        v = verdict(summary, TIMELINE_TARGET_MS)
        out.append(
            f"| {label} | {who} | {samples.timeline_rows[(label, who)]:,} | {fmt_ms(summary)} "
            f"| {fmt_rows(d.get('rows_read'))} | {v} |"
        )
        if v == "**not met**":
            notes.append(_timeline_note(label, who, summary, d, samples.timeline_rows[(label, who)]))
    out += ["", "### Bytes on disk", ""]
    out.append("| table | parts | rows | compressed | uncompressed | compressed bytes per event |")
    out.append("|---|--:|--:|--:|--:|--:|")
    events = max(report["events_stored"], 1)
    for t in report["disk"]["tables"]:
        out.append(
            f"| {t['name']} | {t['parts']} | {t['rows']:,} | {fmt_bytes(t['compressed'])} "
            f"| {fmt_bytes(t['uncompressed'])} | {t['compressed'] / events:.1f} |"
        )
    total = sum(t["compressed"] for t in report["disk"]["tables"])
    out.append(f"| all of the above | | | {fmt_bytes(total)} | | {total / events:.1f} |")
    out += [
        "",
        "Largest columns of `usage_events` (compressed bytes per event): "
        + ", ".join(f"`{n}` {b / events:.1f}" for n, b in report["disk"]["largest_columns"])
        + ".",
    ]
    out += ["", "### Notes", ""]
    if notes:
        out += [f"- {n}" for n in notes]
    else:
        out.append("- Every target met.")
    if slower_rollups:
        out.append(
            "- Where the rollup is slower than raw events (p50 more than 10% and 2 ms above): "
            + "; ".join(slower_rollups)
            + "."
        )
    if report["failures"]:
        out += ["", "FAILED:", *[f"- {f}" for f in report["failures"]]]
    return "\n".join(out)


def _why(d: dict[str, Any]) -> str:
    parts = []
    if "rows_read" in d:
        parts.append(f"reads {fmt_rows(d['rows_read'])} rows")
    if d.get("plan"):
        parts.append("(" + "; ".join(d["plan"]) + ")")
    if "engine_ms" in d:
        parts.append(f"; {_num(d['engine_ms'])} ms of {_num(d['wall_ms'])} ms in the engine")
    return " ".join(parts).replace(" ;", ";")


def _panel_note(
    panel: Panel,
    panels: list[Panel],
    name: str,
    ship: str,
    s: dict[str, float],
    diag: dict[tuple[Any, ...], Any],
) -> str:
    d = diag.get(("panel", name, ship, panel.id), {})
    note = f"{panel_label(panel, panels)}, {name} ({ship}): p50 {_num(s['p50'])} ms; {_why(d)}."
    alt = diag.get(("panel", name, other(ship), panel.id))
    if alt and has_branch(panel):
        note += f" The {other(ship)} branch reads {fmt_rows(alt.get('rows_read'))} rows."
    return note


def _timeline_note(label: str, who: str, s: dict[str, float], d: dict[str, Any], rows: int) -> str:
    note = f"{label}, {who} consumer: p50 {_num(s['p50'])} ms for {rows:,} rows; {_why(d)}."
    if "without_final" in d:
        w = d["without_final"]
        note += f" The same without FINAL: {_num(w['ms'])} ms, {fmt_rows(w['rows_read'])} rows read."
    return note


def write_docs(section: str, path: Path = DOCS) -> None:
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found")
    path.write_text(text[: start + len(BEGIN)] + "\n" + section.rstrip() + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="~200k events, 3 repetitions: proves it runs (CI)"
    )
    parser.add_argument("--weeks", type=int, default=5, help="weeks of generated traffic (default 5)")
    parser.add_argument("--scale", type=float, help="traffic scale (default 12.5: ~10.3M events in 5 weeks)")
    parser.add_argument("--consumers", type=int, default=300, help="generated consumers (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--repeat", type=int, help="timed repetitions (default 5; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".usagelog/bench-dashboards"),
        help="where generated stores are kept and reused (default .usagelog/bench-dashboards)",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"rewrite the results section of {DOCS.name}"
    )
    parser.add_argument(
        "--json", action="store_true", help="print results as JSON on stdout (the tables then go to stderr)"
    )
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.25 if args.quick else 12.5)
    repeat = args.repeat or (3 if args.quick else 5)
    if args.weeks <= 0 or scale <= 0 or repeat <= 0 or args.warmup < 0 or args.consumers < 2:
        parser.error(
            "--weeks, --scale and --repeat must be positive, --warmup not negative, --consumers >= 2"
        )
    out = sys.stderr if args.json else sys.stdout

    data = ensure_data(args.data_dir, args.weeks, scale, args.consumers, args.seed)
    end = dt.datetime.fromtimestamp(data["parameters"]["end"], dt.timezone.utc)
    overview, consumer = model.find_dashboard("overview"), model.find_dashboard("consumer")
    failures: list[str] = []
    with connect(data["url"]) as store:
        report: dict[str, Any] = {
            "machine": machine(store),
            "data": data,
            "repeat": repeat,
            "warmup": args.warmup,
        }
        shown = [
            a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--write-docs", "--json")
        ]
        report["command"] = " ".join(["python benchmarks/dashboards.py", *shown])
        users, counts, ranked = pick_consumers(store)
        report["consumers"], report["consumer_events"], report["consumers_ranked"] = users, counts, ranked
        report["events_stored"] = store.query(f"SELECT count() FROM {store.database}.usage_events")[1][0][0]
        pairs = build_pages(overview)
        cases = timeline_cases(store, consumer, users)
        started = time.monotonic()
        samples = measure(store, overview, pairs, cases, end, repeat, args.warmup, failures)
        report["elapsed_s"] = time.monotonic() - started
        _progress("diagnostics: engine counters and plans ...")
        diag = diagnose(store, overview, pairs, cases, end)
        report["disk"] = disk_usage(store)
    report["load_average_end"] = os.getloadavg()[0]
    report["failures"] = failures
    section = render(report, overview, samples, diag)
    print(section, file=out)
    if args.write_docs:
        write_docs(section)
        _progress(f"wrote the results into {DOCS}")
    if args.json:
        report["samples"] = {
            "pages": {f"{r} {v}": x for (r, v), x in samples.pages.items()},
            "panels": {f"{r} {v} {p}": x for (r, v, p), x in samples.panels.items()},
            "timelines": {f"{label} ({who})": x for (label, who), x in samples.timelines.items()},
        }
        report["diagnostics"] = {" ".join(map(str, k)): v for k, v in diag.items()}
        print(json.dumps(report, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
