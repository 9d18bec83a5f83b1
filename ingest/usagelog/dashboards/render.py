"""One renderer for ``usagelog dashboards serve`` and ``usagelog report``: the panels' results as a page.

Each panel becomes a small view (time series, bars, pie, stat, table) placed on the dashboard's
24-column grid; the page's script draws the charts with Plotly, whose bundle ships in the
``plotly`` package from PyPI. A report inlines that bundle and the data, so the file works with
no server and no network; the served page loads the same bundle from the local server.
A panel type the page does not draw is shown as a table with a note, and a failed query as an
error box, so nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import html
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from .macros import ALL_VALUE
from .model import Dashboard, Panel
from .runner import PanelResult, Resolved, Series
from .units import axis_suffix, format_value

DRAWN = ("timeseries", "barchart", "bargauge", "piechart", "stat", "gauge", "table")
MAX_TABLE_ROWS = 1000


def plotly_bundle() -> Path:
    """``plotly.min.js`` from the installed ``plotly`` package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (pip install 'usagelog[ingest]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the plotly package")
    return path


def page_script() -> str:
    return resources.files("usagelog.dashboards").joinpath("static", "dashboard.js").read_text()


def page_style() -> str:
    return resources.files("usagelog.dashboards").joinpath("static", "dashboard.css").read_text()


def _iso(moment: Any) -> Any:
    if isinstance(moment, dt.datetime):
        value = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment


def _decimals(panel: Panel) -> int | None:
    value = panel.raw.get("fieldConfig", {}).get("defaults", {}).get("decimals")
    return int(value) if isinstance(value, int) else None


def _column_units(panel: Panel) -> dict[str, str]:
    units = {}
    for override in panel.raw.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        if matcher.get("id") != "byName":
            continue
        for prop in override.get("properties", []):
            if prop.get("id") == "unit":
                units[str(matcher.get("options"))] = str(prop.get("value"))
    return units


def _column_links(panel: Panel) -> dict[str, dict[str, Any]]:
    links = {}
    for override in panel.raw.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        for prop in override.get("properties", []):
            if prop.get("id") == "links" and prop.get("value"):
                links[str(matcher.get("options"))] = prop["value"][0]
    return links


@dataclass(frozen=True)
class LinkContext:
    """What data links may refer to: the variables, the time range, how the page is served."""

    variables: Mapping[str, str]
    time_from: str
    time_to: str
    served: bool


def resolve_link(template: str, raw: Any, context: LinkContext) -> str | None:
    """A Grafana data link for one cell: ``${__value.raw}``, ``${__url_time_range}`` and
    dashboard variables; links into Grafana (``/d/...``) only where the page is served."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in ("__value.raw", "__value.text"):
            return quote(str(raw), safe="")
        if name == "__url_time_range":
            return urlencode({"from": context.time_from, "to": context.time_to})
        return context.variables.get(name, match.group(0))

    url = re.sub(r"\$\{([^}:]+)\}|\$([A-Za-z_][A-Za-z0-9_.]*)", substitute, template)
    if url.startswith("/d/") and not context.served:
        return None
    if not re.match(r"^(https?://|/d/)", url):
        return None  # only web links and the page's own dashboards: never javascript: or file:
    return url


def _table_view(result: PanelResult, context: LinkContext, note: str = "") -> dict[str, Any]:
    panel = result.panel
    units = _column_units(panel)
    links = _column_links(panel)
    default_unit = panel.unit
    columns: list[str] = []
    rows: list[list[dict[str, Any]]] = []
    for frame in result.frames:
        if not columns:
            columns = list(frame.columns)
        for row in frame.rows[:MAX_TABLE_ROWS]:
            cells = []
            for name, value in zip(frame.columns, row, strict=False):
                unit = units.get(name, default_unit if isinstance(value, (int, float)) else "")
                cell: dict[str, Any] = {"text": format_value(value, unit)}
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    cell["sort"] = value
                link = links.get(name)
                if link and value not in (None, ""):
                    href = resolve_link(str(link.get("url", "")), value, context)
                    if href:
                        cell["href"] = href
                        cell["title"] = str(link.get("title", ""))
                cells.append(cell)
            rows.append(cells)
    total = sum(len(f.rows) for f in result.frames)
    if total == 0:
        # Grafana says so too; a bare header row (or nothing, when the engine sends no columns
        # with an empty result) would read as a page that failed to load.
        note = (note + " " if note else "") + "No data in this time range."
    if total > MAX_TABLE_ROWS:
        note = (note + " " if note else "") + f"Showing the first {MAX_TABLE_ROWS} of {total} rows."
    return {"kind": "table", "columns": columns, "rows": rows, "note": note}


def _series_view(series: Sequence[Series], panel: Panel) -> dict[str, Any]:
    custom = panel.raw.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    return {
        "kind": "timeseries",
        "series": [{"name": s.name, "x": [_iso(t) for t in s.times], "y": s.values} for s in series],
        "unit": axis_suffix(panel.unit),
        "stack": bool(custom.get("stacking", {}).get("mode") not in (None, "none")),
        "bars": custom.get("drawStyle") == "bars",
    }


def _categories(result: PanelResult) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """First string column as categories; every numeric column as a series of values."""
    frame = next((f for f in result.frames if f.rows), None)
    if frame is None:
        return [], []
    label = next((i for i, k in enumerate(frame.kinds) if k == "string"), None)
    numbers = [i for i, k in enumerate(frame.kinds) if k == "number"]
    categories = [str(row[label]) if label is not None else str(n + 1) for n, row in enumerate(frame.rows)]
    series = [
        (frame.columns[i], [None if row[i] is None else float(row[i]) for row in frame.rows]) for i in numbers
    ]
    return categories, series


def _stat_view(result: PanelResult) -> dict[str, Any]:
    panel = result.panel
    value: Any = None
    frame = next((f for f in result.frames if f.rows), None)
    if frame is not None:
        numbers = [i for i, k in enumerate(frame.kinds) if k in ("number", "time")]
        column = numbers[0] if numbers else 0
        value = frame.rows[-1][column]
    color = _stat_color(panel, value)
    return {"kind": "stat", "text": format_value(value, panel.unit, _decimals(panel)), "color": color}


def _stat_color(panel: Panel, value: Any) -> str:
    if not isinstance(value, (int, float)) or panel.raw.get("options", {}).get("colorMode") == "none":
        return ""
    steps = panel.raw.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    color = ""
    for step in steps:
        if step.get("value") is None or value >= float(step["value"]):
            color = str(step.get("color", ""))
    return color


def panel_view(result: PanelResult, context: LinkContext) -> dict[str, Any]:
    """What the page's script needs to draw one panel."""
    panel = result.panel
    view: dict[str, Any] = {
        "id": panel.id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "grid": {"x": panel.x, "y": panel.y, "w": panel.w, "h": panel.h},
        "ms": round(result.milliseconds, 1),
    }
    if result.error:
        view.update(kind="error", error=result.error)
        return view
    if panel.type == "timeseries" and result.series:
        view.update(_series_view(result.series, panel))
    elif panel.type == "timeseries":
        view.update(kind="empty", note="No data in this time range.")
    elif panel.type in ("barchart", "bargauge", "piechart"):
        categories, series = _categories(result)
        if not categories:
            view.update(kind="empty", note="No data in this time range.")
        else:
            orientation = panel.raw.get("options", {}).get("orientation", "horizontal")
            view.update(
                kind="pie" if panel.type == "piechart" else "bar",
                categories=categories,
                series=[{"name": name, "values": values} for name, values in series],
                unit=axis_suffix(panel.unit),
                horizontal=orientation != "vertical",
            )
    elif panel.type in ("stat", "gauge"):
        view.update(_stat_view(result))
    elif panel.type == "table":
        view.update(_table_view(result, context))
    else:
        note = f"Panel type {panel.type!r} is not drawn offline; its data is shown as a table."
        view.update(_table_view(result, context, note))
        view["unknown"] = True
    return view


def _variable_views(resolved: Resolved, served: bool) -> list[dict[str, Any]]:
    views = []
    for definition in resolved.dashboard.variables:
        if definition.hide == 2:
            continue
        variable = resolved.variables[definition.name]
        current = variable.value if isinstance(variable.value, list) else [variable.value]
        options = [{"value": ALL_VALUE, "text": "All"}] if definition.include_all else []
        options += [
            {"value": value, "text": text} for value, text in resolved.options.get(definition.name, [])
        ]
        views.append(
            {
                "name": definition.name,
                "label": definition.label,
                "type": definition.type,
                "multi": definition.multi,
                "current": current,
                "text": variable.text,
                "options": options if definition.type in ("query", "custom") else [],
            }
        )
    return views


def render_page(
    results: Sequence[PanelResult],
    resolved: Resolved,
    *,
    served: bool,
    dashboards: Sequence[Dashboard] = (),
    generated_at: dt.datetime | None = None,
    time_from: str = "",
    time_to: str = "",
) -> str:
    """The whole page. ``served``: the page of ``usagelog dashboards serve`` (controls submit to
    the server, Plotly loads from it); otherwise a self-contained report."""
    dashboard = resolved.dashboard
    variables = {
        name: (", ".join(v.value) if isinstance(v.value, list) else str(v.value))
        for name, v in resolved.variables.items()
    }
    context = LinkContext(variables, time_from or dashboard.time_from, time_to or dashboard.time_to, served)
    data = {
        "dashboard": {"uid": dashboard.uid, "title": dashboard.title, "name": dashboard.name},
        "served": served,
        "range": {
            "from": context.time_from,
            "to": context.time_to,
            "start": _iso(resolved.start),
            "end": _iso(resolved.end),
        },
        "variables": _variable_views(resolved, served),
        "panels": [panel_view(r, context) for r in results],
        "rows": [{"title": p.title, "y": p.y} for p in dashboard.panels if p.type == "row"],
        "dashboards": [{"uid": d.uid, "title": d.title, "name": d.name} for d in dashboards],
        "generatedAt": _iso(generated_at or dt.datetime.now(dt.timezone.utc)),
    }
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    if served:
        plotly = '<script src="/static/plotly.min.js"></script>'
    else:
        plotly = "<script>" + plotly_bundle().read_text().replace("</script", "<\\/script") + "</script>"
    title = html.escape(f"{dashboard.title} — usagelog")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{page_style()}</style>
{plotly}
</head>
<body>
<script type="application/json" id="usagelog-data">{payload}</script>
<div id="app"></div>
<script>{page_script()}</script>
</body>
</html>
"""
