"""Running a dashboard without Grafana: time range, variables, then every panel's queries.

What Grafana does for each panel is done here the same way: the variables are resolved
(query variables run their SQL, chosen values must be among the options), each target's SQL
goes through :func:`~usagelog.dashboards.macros.render_query`, and the result becomes frames —
a table, or time series split by their string columns as the plugin's time-series format
does. The offline page and report draw what this returns.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from usagelog.ingest.store import Store
from usagelog.ingest.timerange import parse_time

from .macros import ALL_VALUE, MacroError, TimeRange, Variable, calculate_interval_ms, render_query
from .model import FORMAT_TIME_SERIES, Dashboard, DashboardError, Panel, VariableDef


class PanelError(RuntimeError):
    """A panel's query could not be expanded or run; the message says which and why."""


@dataclass
class Frame:
    """One query result: column names, a kind per column (time, number, string, other), rows."""

    ref_id: str
    columns: list[str]
    kinds: list[str]
    rows: list[tuple[Any, ...]]
    sql: str = ""


@dataclass
class Series:
    name: str
    times: list[dt.datetime]
    values: list[float | None]


@dataclass
class PanelResult:
    panel: Panel
    frames: list[Frame] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    error: str = ""
    milliseconds: float = 0.0


def _kind(value: Any) -> str:
    if isinstance(value, (dt.datetime, dt.date)):
        return "time"
    if isinstance(value, bool):
        return "number"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _kinds(columns: Sequence[str], rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[str]:
    kinds = []
    for index, type_name in enumerate(types):
        name = type_name.lower()
        if "datetime" in name or name.startswith("date"):
            kinds.append("time")
        elif any(part in name for part in ("int", "float", "decimal", "bool")) and "array" not in name:
            kinds.append("number")
        elif "string" in name or "uuid" in name or "enum" in name:
            kinds.append("string")
        else:
            kinds.append(_kind(rows[0][index]) if rows else "other")
    return kinds


def run_sql(store: Store, sql: str, ref_id: str = "") -> Frame:
    result = store.client.query(sql)
    columns = list(result.column_names)
    rows = [tuple(r) for r in result.result_rows]
    types = [getattr(t, "name", str(t)) for t in result.column_types]
    if not columns:
        # An empty result comes back without its columns; the engine still knows them.
        described = store.client.query(f"DESCRIBE TABLE ({sql})")
        columns = [str(r[0]) for r in described.result_rows]
        types = [str(r[1]) for r in described.result_rows]
    return Frame(ref_id, columns, _kinds(columns, rows, types), rows, sql)


def to_series(frame: Frame) -> list[Series]:
    """Long rows (time, labels..., values...) as time series, one per label combination and
    value column, as the plugin's time-series format gives Grafana."""
    if "time" not in frame.kinds:
        return []
    t = frame.kinds.index("time")
    labels = [i for i, k in enumerate(frame.kinds) if k == "string"]
    values = [i for i, k in enumerate(frame.kinds) if k == "number"]
    grouped: dict[tuple[str, ...], dict[int, Series]] = {}
    for row in frame.rows:
        key = tuple(str(row[i]) for i in labels)
        bucket = grouped.setdefault(key, {})
        for v in values:
            if v not in bucket:
                label = ", ".join(key)
                if len(values) == 1:
                    name = label or frame.columns[v]
                else:
                    name = f"{frame.columns[v]} {label}".strip()
                bucket[v] = Series(name, [], [])
            value = row[v]
            bucket[v].times.append(_as_datetime(row[t]))
            bucket[v].values.append(None if value is None else float(value))
    return [s for bucket in grouped.values() for s in bucket.values()]


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)


@dataclass
class Resolved:
    """A dashboard ready to run: its time range and every variable with its options and value."""

    dashboard: Dashboard
    start: dt.datetime
    end: dt.datetime
    variables: dict[str, Variable]
    options: dict[str, list[tuple[str, str]]]  # name -> (value, text)


def _custom_options(query: str) -> list[tuple[str, str]]:
    options = []
    for item in re.split(r"(?<!\\),", query):
        item = item.strip()
        if not item:
            continue
        text, sep, value = item.partition(" : ")
        options.append((value.strip(), text.strip()) if sep else (item, item))
    return options


def _choose(
    definition: VariableDef, options: list[tuple[str, str]], chosen: Sequence[str] | None
) -> Variable:
    values = [value for value, _ in options]
    texts = dict(options)
    wanted = list(chosen) if chosen else list(definition.default)
    if wanted in ([ALL_VALUE], ["All"]) and definition.include_all:
        value: str | list[str] = ALL_VALUE
    else:
        if definition.type in ("query", "custom"):
            unknown = [w for w in wanted if w not in values]
            if unknown and chosen:
                raise DashboardError(f"variable {definition.name}: {unknown[0]!r} is not one of its values")
            wanted = [w for w in wanted if w in values]
            if not wanted:
                if definition.include_all:
                    wanted = [ALL_VALUE]
                elif values:
                    wanted = [values[0]]
        if wanted == [ALL_VALUE]:
            value = ALL_VALUE
        elif definition.multi:
            value = wanted
        else:
            value = wanted[0] if wanted else ""
    shown = value if isinstance(value, list) else [value]
    text = "All" if value == ALL_VALUE else ", ".join(texts.get(v, v) for v in shown)
    return Variable(definition.name, value, values, definition.all_value, text)


def resolve(
    store: Store,
    dashboard: Dashboard,
    time_from: str | None = None,
    time_to: str | None = None,
    chosen: Mapping[str, Sequence[str]] | None = None,
    now: dt.datetime | None = None,
) -> Resolved:
    """Time range and variables, in the order the dashboard lists them (a variable's query may
    use the ones before it); a chosen value that is not among a variable's options is refused."""
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        start = parse_time(time_from or dashboard.time_from, now)
        end = parse_time(time_to or dashboard.time_to, now, end=True)
    except ValueError as exc:
        raise DashboardError(str(exc)) from exc
    if end <= start:
        raise DashboardError(
            f"the time range ends ({end:%Y-%m-%d %H:%M}) before it starts ({start:%Y-%m-%d %H:%M})"
        )
    chosen = chosen or {}
    variables: dict[str, Variable] = {}
    options: dict[str, list[tuple[str, str]]] = {}
    time_range = TimeRange(start, end, calculate_interval_ms((end - start).total_seconds(), 1000))
    for definition in dashboard.variables:
        if definition.type == "query":
            sql = render_query(definition.query, time_range, variables)
            frame = run_sql(store, sql)
            if len(frame.columns) >= 2:
                found = [(str(r[0]), str(r[1])) for r in frame.rows]
            else:
                found = [(str(r[0]), str(r[0])) for r in frame.rows]
        elif definition.type == "custom":
            found = _custom_options(definition.query)
        elif definition.type in ("constant", "textbox"):
            given = chosen.get(definition.name)
            value = given[0] if given and definition.type == "textbox" else definition.query
            found = [(value, value)]
        else:
            raise DashboardError(
                f"variable {definition.name}: type {definition.type!r} is not supported offline"
            )
        options[definition.name] = found
        variables[definition.name] = _choose(definition, found, chosen.get(definition.name))
    return Resolved(dashboard, start, end, variables, options)


def time_range_for(panel: Panel, resolved: Resolved) -> TimeRange:
    seconds = (resolved.end - resolved.start).total_seconds()
    return TimeRange(
        resolved.start, resolved.end, calculate_interval_ms(seconds, panel.resolution, panel.min_interval)
    )


def panel_sql(panel: Panel, resolved: Resolved) -> list[tuple[str, str, int]]:
    """(refId, SQL as ClickHouse receives it, format) of each visible target."""
    time_range = time_range_for(panel, resolved)
    return [
        (t.ref_id, render_query(t.raw_sql, time_range, resolved.variables), t.format)
        for t in panel.targets
        if not t.hide and t.raw_sql.strip()
    ]


def run_panel(store: Store, panel: Panel, resolved: Resolved) -> PanelResult:
    """Every target of ``panel``; an error is kept on the result (the page shows it), not raised."""
    result = PanelResult(panel)
    started = time.perf_counter()
    try:
        for ref_id, sql, fmt in panel_sql(panel, resolved):
            frame = run_sql(store, sql, ref_id)
            result.frames.append(frame)
            if fmt == FORMAT_TIME_SERIES:
                result.series.extend(to_series(frame))
    except MacroError as exc:
        result.error = f"query of panel {panel.title!r}: {exc}"
    except Exception as exc:  # the engine's own message (bad SQL, missing table) is what to show
        result.error = f"{type(exc).__name__}: {exc}"
    result.milliseconds = (time.perf_counter() - started) * 1000
    return result


def run_dashboard(store: Store, resolved: Resolved) -> list[PanelResult]:
    return [run_panel(store, panel, resolved) for panel in resolved.dashboard.panels if panel.type != "row"]
