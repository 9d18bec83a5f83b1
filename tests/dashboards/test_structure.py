"""The Grafana files as Grafana reads them: dashboards, data source, provisioning, alert rules.

Grafana itself cannot run here, so what it would refuse or silently mis-render is checked: fixed
and unique uids, unique panel ids and refIds, a grid within 24 columns without overlaps, units
Grafana knows, every data source reference on the provisioned uid, variables that exist and are
quoted, and every file loaded into Grafana's own models (grafana-foundation-sdk, which
serialises but does not validate: the checks above are ours).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from usagelog.dashboards.model import DATASOURCE_TYPE, DATASOURCE_UID, grafana_dir, load_dashboards
from usagelog.dashboards.units import KNOWN_UNITS

GRAFANA = grafana_dir()
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
RULE_UIDS = {
    "usagelog-5xx-rate",
    "usagelog-latency-p95",
    "usagelog-traffic-anomaly",
    "usagelog-consumer-spike",
    "usagelog-sequence-gaps",
    "usagelog-events-lost",
    "usagelog-dead-letters",
    "usagelog-ingest-stalled",
}
# Grafana's own variables and the plugin's macros: not dashboard variables.
BUILTINS = re.compile(r"^__")
STRING_FORMATS = {"singlequote", "sqlstring", "doublequote"}


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in (GRAFANA / "provisioning" / "alerting").glob("*.yaml"):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []) or []:
            rules.extend(group["rules"])
    return rules


def test_the_five_dashboards_exist_with_fixed_unique_uids_and_a_recent_schema() -> None:
    dashboards = [_json(p) for p in DASHBOARD_FILES]
    assert [p.stem for p in DASHBOARD_FILES] == ["consumer", "errors", "monitored", "overview", "pipeline"]
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"usagelog-[a-z-]+", u) for u in uids)
    assert len({d["title"] for d in dashboards}) == len(dashboards)
    for dashboard in dashboards:
        assert dashboard["schemaVersion"] >= 39
        assert dashboard["tags"] == ["usagelog"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_ref_ids_and_sit_on_the_grid_without_overlapping(path: Path) -> None:
    panels = _all_panels(_json(path))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} runs past the 24 columns"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_units_are_grafana_units_and_every_data_source_is_the_provisioned_one(path: Path) -> None:
    dashboard = _json(path)
    for panel in _all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
        config = panel["fieldConfig"]
        units = [config["defaults"].get("unit")] + [
            prop["value"] for o in config["overrides"] for prop in o["properties"] if prop["id"] == "unit"
        ]
        for unit in units:
            assert unit is None or unit in KNOWN_UNITS, f"{panel['title']}: unit {unit!r}"
        if panel["type"] in ("timeseries", "stat", "barchart", "piechart"):
            assert config["defaults"].get("unit"), f"{panel['title']} has no unit"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            assert target["editorType"] == "sql" and target["rawSql"].strip()
            # Time series panels ask the plugin for time series (long rows become one series per label).
            expected = 0 if panel["type"] == "timeseries" else 1
            assert target["format"] == expected, f"{panel['title']}: format {target['format']}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}


def _references(sql: str) -> list[tuple[str, str | None]]:
    found = []
    for match in re.finditer(r"\$(\w+)|\$\{(\w+)(?::([^}]+))?\}|\[\[(\w+)(?::(\w+))?\]\]", sql):
        name = match.group(1) or match.group(2) or match.group(4)
        found.append((name, match.group(3) or match.group(5)))
    return found


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_queries_use_only_defined_variables_quoted_as_clickhouse_strings(path: Path) -> None:
    dashboard = _json(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    sqls = [t["rawSql"] for p in _all_panels(dashboard) for t in p.get("targets", [])]
    sqls += [v["query"]["rawSql"] for v in variables.values() if v["type"] == "query"]
    for sql in sqls:
        # $__conditionalAll(cond, $var) names its variable bare: only to test it for "All".
        stripped = re.sub(r",\s*\$\{?\w+\}?\)", ")", sql)
        for name, fmt in _references(stripped):
            if BUILTINS.match(name):
                continue
            assert name in variables, f"{path.name}: ${name} is not a variable of the dashboard"
            assert fmt in STRING_FORMATS, f"{path.name}: ${name} must be quoted (:singlequote), got {fmt!r}"
    for panel in _all_panels(dashboard):
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                for link in prop["value"] if prop["id"] == "links" else []:
                    for name, _ in _references(link["url"]):
                        assert BUILTINS.match(name) or name in variables, f"link uses unknown ${name}"


def test_variables_the_panels_rely_on() -> None:
    dashboards = {p.stem: _json(p) for p in DASHBOARD_FILES}
    names = {stem: [v["name"] for v in d["templating"]["list"]] for stem, d in dashboards.items()}
    assert names["overview"] == ["service", "route", "region", "consumer"]
    overview = {v["name"]: v for v in dashboards["overview"]["templating"]["list"]}
    assert overview["route"]["multi"] and overview["service"]["multi"]
    assert overview["consumer"]["allValue"] == "''", "the rollup branch tests the consumer for All this way"
    consumer = {v["name"]: v for v in dashboards["consumer"]["templating"]["list"]}
    assert not consumer["consumer"]["includeAll"] and consumer["trace_url"]["type"] == "textbox"
    timeline = next(p for p in _all_panels(dashboards["consumer"]) if p["title"] == "Timeline")
    links = [
        link["url"]
        for o in timeline["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links == ["${trace_url}${__value.raw}"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboards_load_into_grafanas_own_model_and_back_unchanged(path: Path) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    original = _json(path)
    model = Dashboard.from_json(original)
    back = json.loads(json.dumps(model, cls=JSONEncoder))
    for key in ("uid", "title", "schemaVersion", "time", "tags"):
        assert back[key] == original[key]

    def essentials(dashboard: dict[str, Any]) -> list[Any]:
        return [
            (
                p["id"],
                p["type"],
                p["title"],
                p["gridPos"],
                [(t["refId"], t["rawSql"], t["format"]) for t in p.get("targets", [])],
            )
            for p in dashboard["panels"]
        ]

    assert essentials(back) == essentials(original)
    assert [v["name"] for v in back["templating"]["list"]] == [
        v["name"] for v in original["templating"]["list"]
    ]


def test_the_data_source_is_provisioned_with_a_fixed_uid_and_a_secret_password() -> None:
    document = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    [source] = document["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == DATASOURCE_TYPE
    data = source["jsonData"]
    for key in ("host", "port", "protocol", "username", "defaultDatabase"):
        assert data.get(key) not in (None, ""), key
    assert "database" not in data, "the plugin reads defaultDatabase"
    assert data["defaultDatabase"] == "usagelog"
    assert re.fullmatch(r"\$\{[A-Z_]+\}", source["secureJsonData"]["password"]), (
        "the password comes from the environment"
    )
    assert "password" not in data


def test_dashboards_are_provisioned_from_files_into_their_folder() -> None:
    document = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "usagelog.yaml").read_text())
    [provider] = document["providers"]
    assert provider["type"] == "file" and provider["folder"] == "usagelog"
    assert provider["options"]["path"]


def test_alert_rules_have_fixed_uids_query_the_data_source_and_use_no_dashboard_variables() -> None:
    rules = _rules()
    assert {r["uid"] for r in rules} == RULE_UIDS
    for rule in rules:
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        queries = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        assert queries and all(q["datasourceUid"] == DATASOURCE_UID for q in queries)
        for query in queries:
            sql = query["model"]["rawSql"]
            assert query["model"]["format"] == 1, "one row per series: table format"
            assert "$__conditionalAll" not in sql, "browser-only macro in a rule"
            assert not [n for n, _ in _references(sql) if not BUILTINS.match(n)], (
                "dashboard variable in a rule"
            )
            assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] == 0
        for expression in (d for d in rule["data"] if d["datasourceUid"] == "__expr__"):
            model = expression["model"]
            assert model["type"] in ("reduce", "threshold", "math")
            assert model["expression"].lstrip("$") in refs
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("page", "warning")


def test_alert_rules_load_into_grafanas_own_model() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.alerting import Rule

    for original in _rules():
        back = json.loads(json.dumps(Rule.from_json(original), cls=JSONEncoder))
        assert back["uid"] == original["uid"] and back["condition"] == original["condition"]
        assert [d["refId"] for d in back["data"]] == [d["refId"] for d in original["data"]]


def test_alerts_go_to_a_webhook_from_the_environment_through_a_policy() -> None:
    document = yaml.safe_load((GRAFANA / "provisioning" / "alerting" / "notifications.yaml").read_text())
    [point] = document["contactPoints"]
    [receiver] = point["receivers"]
    assert receiver["type"] == "webhook" and receiver["settings"]["url"] == "${USAGELOG_ALERT_WEBHOOK_URL}"
    [policy] = document["policies"]
    assert policy["receiver"] == point["name"]


def test_the_renderer_reads_the_same_files() -> None:
    dashboards = load_dashboards()
    assert sorted(dashboards) == [p.stem for p in DASHBOARD_FILES]
    for name, dashboard in dashboards.items():
        titles = [
            p["title"]
            for p in _all_panels(_json(GRAFANA / "dashboards" / f"{name}.json"))
            if p["type"] != "row"
        ]
        assert [p.title for p in dashboard.panels if p.type != "row"] == titles
