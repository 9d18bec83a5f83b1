"""Summaries, tables and targets of ``request_overhead.py``'s results.

Every figure is a median over rounds of per-chunk figures (µs per request). Per variant, method
and mode (``test_client``, ``server``):

- ``wall_us``: the requests' wall time (client-observed at the server), the drain excluded;
- ``cpu_us``: the serving process's CPU, all threads, the drain at the end of the chunk included;
- ``thread_us``: the CPU of the thread that served the requests (the request path);
- ``background_us``: ``cpu_us - thread_us``, the other threads and the drain (encoding, export).

``added_over_stock_otel`` holds the chunk-by-chunk differences to stock OTel (same keys).
"""

from __future__ import annotations

import statistics
from typing import Any

from app_under_test import PEER_COUNTERPART, VARIANTS

METHODS = ("GET", "POST")
MODES = ("test_client", "server")
KEYS = ("wall_us", "cpu_us", "thread_us", "background_us")
BASELINE = "otel"
TARGET_US = 15.0
AT_BASELINE = "@base"  # suffix of a variant run on the --baseline checkout's usagelog
TARGET_ADDED = "per-request cost ≤ 15 µs over OTel (bodies off)"
TARGET_PEERS = "below every peer"


def variant_of(name: str) -> str:
    """The app_under_test variant behind a benchmark variant name (``usagelog@base`` → ``usagelog``)."""
    return name.removesuffix(AT_BASELINE)


def label(name: str) -> str:
    text = VARIANTS[variant_of(name)][0]
    return f"{text} (baseline)" if name.endswith(AT_BASELINE) else text


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def chunk_medians(samples: dict[str, list[float]], base: dict[str, list[float]] | None) -> dict[str, Any]:
    """One round's medians of a variant's chunks for one method, and the chunk-by-chunk differences to
    ``base`` (another variant's chunks, taken in the same turns)."""
    entry: dict[str, Any] = {k: statistics.median(samples[k]) for k in KEYS}
    if base is not None:
        entry["added"] = {
            k: statistics.median(a - b for a, b in zip(samples[k], base[k], strict=True)) for k in KEYS
        }
    return entry


def summarise(variants: list[str], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over rounds of: per variant and method, µs per request and µs added over stock OTel."""
    median: dict[str, Any] = {}
    added: dict[str, Any] = {}
    changed: dict[str, Any] = {}
    for v in variants:
        median[v], added[v] = {}, {}
        if v + AT_BASELINE in variants:
            changed[v] = {}
        for m in METHODS:
            median[v][m], added[v][m] = {}, {}
            if v in changed:
                changed[v][m] = {}
            for mode in MODES:
                rounds = [r[v] for r in runs[mode] if v in r]
                for key in KEYS:
                    name = f"{mode}_{key}"
                    median[v][m][name] = _median([e[m][key] for e in rounds])
                    added[v][m][name] = _median([e[m]["added"][key] for e in rounds if "added" in e[m]])
                    if v in changed:
                        changed[v][m][name] = _median(
                            [e[m]["vs_baseline"][key] for e in rounds if "vs_baseline" in e[m]]
                        )
    proc_stat = {v: _median([r[v]["proc_stat_cpu_us"] for r in runs["server"] if v in r]) for v in variants}
    delivered = {
        v: [r[v]["delivered"] for mode in MODES for r in runs[mode] if v in r and r[v].get("delivered")]
        for v in variants
    }
    summary: dict[str, Any] = {
        "median": median,
        "added_over_stock_otel": added,
        "added_over_baseline": changed,
        "server_proc_stat_cpu_us": proc_stat,
        "peer_fields": {v: d[0].get("fields") for v, d in delivered.items() if d},
    }
    summary["targets"] = targets(summary)
    return summary


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The two per-request targets of issue 9, each met / not met with its value and, if not met, why."""
    median, added = summary["median"], summary["added_over_stock_otel"]
    result = []
    # 1. usagelog (bodies off) over stock OTel: the worst of both methods and both modes.
    worst = None
    if "usagelog" in added and BASELINE in median:
        cells = [
            (added["usagelog"][m][f"{mode}_cpu_us"], mode, m)
            for mode in MODES
            for m in METHODS
            if added["usagelog"][m][f"{mode}_cpu_us"] is not None
        ]
        worst = max(cells) if cells else None
    if worst is None:
        result.append({"name": TARGET_ADDED, "met": False, "value": None, "why_not": "not measured"})
    else:
        value, mode, m = worst
        split = added["usagelog"][m]
        why = (
            f"worst case {mode} {m}: {value:+.1f} µs CPU, of which the request thread "
            f"{_fmt(split[f'{mode}_thread_us'], True)} µs and the background (encoding, export) "
            f"{_fmt(split[f'{mode}_background_us'], True)} µs"
        )
        result.append(
            {
                "name": TARGET_ADDED,
                "met": value <= TARGET_US,
                "value": round(value, 1),
                "unit": "µs CPU per request, worst of GET/POST x test client/server",
                "per_cell": {
                    f"{mode} {m}": _round(added["usagelog"][m][f"{mode}_cpu_us"])
                    for mode in MODES
                    for m in METHODS
                },
                "why_not": "" if value <= TARGET_US else why,
            }
        )
    # 2. usagelog's total below each peer that captures the same fields, every method and mode.
    margins: dict[str, Any] = {}
    failing = []
    for peer, ours in PEER_COUNTERPART.items():
        if peer not in median or ours not in median:
            continue
        margin: dict[str, float] = {}
        for mode in MODES:
            for m in METHODS:
                p, u = median[peer][m][f"{mode}_cpu_us"], median[ours][m][f"{mode}_cpu_us"]
                if p is None or u is None:
                    continue
                margin[f"{mode} {m}"] = round(p - u, 1)
                if u >= p:
                    failing.append(f"{label(ours)} {u:.1f} µs ≥ {label(peer)} {p:.1f} µs ({mode} {m})")
        margins[peer] = {"compared_with": ours, "peer_minus_usagelog_cpu_us": margin}
    if not margins:
        result.append(
            {
                "name": TARGET_PEERS,
                "met": False,
                "value": None,
                "why_not": "not measured: no peer ran (install the bench extra)",
            }
        )
    else:
        result.append(
            {
                "name": TARGET_PEERS,
                "met": not failing,
                "value": margins,
                "unit": "peer's CPU µs per request minus usagelog's (positive: usagelog is cheaper)",
                "why_not": "; ".join(failing),
            }
        )
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def render_table(summary: dict[str, Any]) -> str:
    median, added = summary["median"], summary["added_over_stock_otel"]
    header = (
        "| variant | method | test client CPU µs/req | server µs/req (client-observed) "
        "| server CPU µs/req | server: request thread / background CPU µs "
        "| added vs stock OTel: test client CPU µs | added vs stock OTel: server CPU µs |"
    )
    lines = [header, "|---|---|--:|--:|--:|--:|--:|--:|"]
    for v in median:
        for m in METHODS:
            x, a = median[v][m], added[v][m]
            base = v == BASELINE
            lines.append(
                f"| {label(v)} | {m} | {_fmt(x['test_client_cpu_us'])} | {_fmt(x['server_wall_us'])} "
                f"| {_fmt(x['server_cpu_us'])} "
                f"| {_fmt(x['server_thread_us'])} / {_fmt(x['server_background_us'])} "
                f"| {'—' if base else _fmt(a['test_client_cpu_us'], True)} "
                f"| {'—' if base else _fmt(a['server_cpu_us'], True)} |"
            )
    return "\n".join(lines)


def render_added(summary: dict[str, Any]) -> str:
    added = summary["added_over_stock_otel"]
    lines = [
        f"CPU µs added per request on top of stock OTel (target for usagelog: {TARGET_US:g} µs), "
        "total = request thread + background:"
    ]
    for v in added:
        if v == BASELINE or v == "plain":
            continue
        parts = []
        for mode in MODES:
            for m in METHODS:
                a = added[v][m]
                parts.append(
                    f"{mode.replace('_', ' ')} {m} {_fmt(a[f'{mode}_cpu_us'], True)} "
                    f"({_fmt(a[f'{mode}_thread_us'], True)} + {_fmt(a[f'{mode}_background_us'], True)})"
                )
        lines.append(f"  {label(v):42} " + "; ".join(parts))
    changed = summary.get("added_over_baseline") or {}
    if changed:
        lines.append(
            "CPU µs this code adds per request over the baseline checkout (chunk by chunk; - is faster):"
        )
        for v, by_method in changed.items():
            parts = [
                f"{m} {_fmt(by_method[m]['test_client_cpu_us'], True)} test client, "
                f"{_fmt(by_method[m]['server_cpu_us'], True)} server"
                for m in METHODS
            ]
            lines.append(f"  {label(v):42} " + "; ".join(parts))
    return "\n".join(lines)


def render_targets(summary: dict[str, Any]) -> str:
    lines = ["Targets:"]
    for t in summary["targets"]:
        state = "met" if t["met"] else "NOT MET"
        value = t["value"]
        if isinstance(value, dict):  # the peers' margins
            value = ", ".join(
                f"{peer} vs {x['compared_with']}: "
                + " ".join(f"{cell} {d:+.1f}" for cell, d in x["peer_minus_usagelog_cpu_us"].items())
                for peer, x in value.items()
            )
        lines.append(f"  {t['name']}: {state} ({value})" + (f" — {t['why_not']}" if t["why_not"] else ""))
    return "\n".join(lines)
