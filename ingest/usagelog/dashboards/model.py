"""Grafana dashboard files read as the renderer, the alert evaluator and the tests need them.

The files in ``grafana/dashboards/*.json`` are classic dashboard JSON, provisioned into Grafana
as they are. This module reads the parts usagelog acts on (panels and their queries, variables,
the default time range) and finds the folder: ``USAGELOG_GRAFANA_DIR``, else the copy shipped
inside the package, else ``grafana/`` of a source checkout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from usagelog.ingest.errors import UsagelogError

DATASOURCE_TYPE = "grafana-clickhouse-datasource"
DATASOURCE_UID = "usagelog-clickhouse"
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1


class DashboardError(UsagelogError, ValueError):
    """A dashboard file is missing, unreadable, or asks for something usagelog cannot do."""


def grafana_dir() -> Path:
    """The ``grafana/`` folder: ``USAGELOG_GRAFANA_DIR``, the packaged copy, or the checkout's."""
    configured = os.environ.get("USAGELOG_GRAFANA_DIR", "").strip()
    if configured:
        path = Path(configured)
        if not (path / "dashboards").is_dir():
            raise DashboardError(f"USAGELOG_GRAFANA_DIR={configured!r} has no dashboards/ folder")
        return path
    packaged = Path(str(resources.files("usagelog.dashboards"))) / "grafana"
    if (packaged / "dashboards").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "grafana"
    if (checkout / "dashboards").is_dir():
        return checkout
    raise DashboardError("cannot find the grafana/ folder; set USAGELOG_GRAFANA_DIR")


@dataclass(frozen=True)
class Target:
    ref_id: str
    raw_sql: str
    format: int
    datasource_uid: str
    hide: bool = False


@dataclass(frozen=True)
class Panel:
    id: int
    type: str
    title: str
    x: int
    y: int
    w: int
    h: int
    targets: tuple[Target, ...]
    unit: str = ""
    description: str = ""
    min_interval: str = ""
    max_data_points: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def resolution(self) -> int:
        """Max data points: the panel's setting, else its width in pixels on a 1200 px dashboard."""
        return self.max_data_points or self.w * 50


@dataclass(frozen=True)
class VariableDef:
    name: str
    type: str  # query, custom, constant, textbox
    query: str
    label: str = ""
    multi: bool = False
    include_all: bool = False
    all_value: str = ""
    default: tuple[str, ...] = ()
    hide: int = 0


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    path: Path
    panels: tuple[Panel, ...]
    variables: tuple[VariableDef, ...]
    time_from: str
    time_to: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        """The file name without ``.json``: what ``--dashboard`` takes."""
        return self.path.stem

    def panel(self, panel_id: int) -> Panel:
        for panel in self.panels:
            if panel.id == panel_id:
                return panel
        raise DashboardError(f"dashboard {self.name} has no panel {panel_id}")


def _targets(panel: dict[str, Any]) -> tuple[Target, ...]:
    found = []
    for target in panel.get("targets", []):
        datasource = target.get("datasource") or panel.get("datasource") or {}
        found.append(
            Target(
                ref_id=str(target.get("refId", "")),
                raw_sql=str(target.get("rawSql", "")),
                format=int(target.get("format", FORMAT_TABLE)),
                datasource_uid=str(datasource.get("uid", "")),
                hide=bool(target.get("hide", False)),
            )
        )
    return tuple(found)


def _panels(items: list[dict[str, Any]]) -> list[Panel]:
    panels = []
    for item in items:
        grid = item.get("gridPos", {})
        defaults = item.get("fieldConfig", {}).get("defaults", {})
        panels.append(
            Panel(
                id=int(item.get("id", 0)),
                type=str(item.get("type", "")),
                title=str(item.get("title", "")),
                x=int(grid.get("x", 0)),
                y=int(grid.get("y", 0)),
                w=int(grid.get("w", 12)),
                h=int(grid.get("h", 8)),
                targets=_targets(item),
                unit=str(defaults.get("unit", "")),
                description=str(item.get("description", "")),
                min_interval=str(item.get("interval", "") or ""),
                max_data_points=int(item.get("maxDataPoints", 0) or 0),
                raw=item,
            )
        )
        # A collapsed row keeps its panels inside it.
        panels.extend(_panels(item.get("panels", [])) if item.get("type") == "row" else [])
    return panels


def _variable_query(item: dict[str, Any]) -> str:
    query = item.get("query", "")
    if isinstance(query, dict):
        return str(query.get("rawSql") or query.get("query") or "")
    return str(query)


def _default(item: dict[str, Any]) -> tuple[str, ...]:
    value = (item.get("current") or {}).get("value")
    if value is None or value == "":
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _variables(dashboard: dict[str, Any]) -> list[VariableDef]:
    found = []
    for item in dashboard.get("templating", {}).get("list", []):
        found.append(
            VariableDef(
                name=str(item["name"]),
                type=str(item.get("type", "query")),
                query=_variable_query(item),
                label=str(item.get("label") or item["name"]),
                multi=bool(item.get("multi", False)),
                include_all=bool(item.get("includeAll", False)),
                all_value=str(item.get("allValue") or ""),
                default=_default(item),
                hide=int(item.get("hide", 0)),
            )
        )
    return found


def load_dashboard(path: Path) -> Dashboard:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DashboardError(f"cannot read dashboard {path}: {exc}") from exc
    time = data.get("time", {})
    return Dashboard(
        uid=str(data.get("uid", "")),
        title=str(data.get("title", path.stem)),
        path=path,
        panels=tuple(_panels(data.get("panels", []))),
        variables=tuple(_variables(data)),
        time_from=str(time.get("from", "now-24h")),
        time_to=str(time.get("to", "now")),
        raw=data,
    )


def load_dashboards(directory: Path | None = None) -> dict[str, Dashboard]:
    """Every dashboard in ``<grafana>/dashboards``, by file name (``overview``, ``consumer``, ...)."""
    folder = (directory or grafana_dir()) / "dashboards"
    return {path.stem: load_dashboard(path) for path in sorted(folder.glob("*.json"))}


def find_dashboard(name: str, directory: Path | None = None) -> Dashboard:
    """A dashboard by file name, uid or title (case-insensitive)."""
    dashboards = load_dashboards(directory)
    wanted = name.lower()
    for key, dashboard in dashboards.items():
        if wanted in (key.lower(), dashboard.uid.lower(), dashboard.title.lower()):
            return dashboard
    known = ", ".join(sorted(dashboards))
    raise DashboardError(f"no dashboard {name!r}; there are: {known}")
