"""Every query Grafana would run — panels, variables, alert rules — executed on the ClickHouse engine.

The SQL is taken from the dashboard and rule files and expanded exactly as Grafana and the
ClickHouse plugin expand it (time macros, intervals, variables single, multi and All), then run
on four weeks of generated traffic. Each query must run, return the shape its panel draws, and
known inputs must give known values: the generator says how many requests, errors and gaps
there are in a window, and the panels must say the same, from raw events and from rollups.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from tests.dashboards.conftest import HistoryStore
from usagelog.dashboards.alerts import frame_values, load_rules
from usagelog.dashboards.macros import TimeRange, render_query
from usagelog.dashboards.model import Dashboard, Panel, find_dashboard
from usagelog.dashboards.runner import (
    PanelResult,
    Resolved,
    resolve,
    run_dashboard,
    run_panel,
    run_sql,
)
from usagelog.demo import history
from usagelog.ingest.queries import audit_instances
from usagelog.ingest.store import Store

HOUR = 3600
DAY = 86400
MISSING = "Events missing per instance per hour (gaps and tail)"


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def panel(dashboard: Dashboard, title: str) -> Panel:
    return next(p for p in dashboard.panels if p.title == title)


def run(store: Store, resolved: Resolved, title: str) -> PanelResult:
    result = run_panel(store, panel(resolved.dashboard, title), resolved)
    assert not result.error, result.error
    return result


def value(result: PanelResult) -> Any:
    [frame] = result.frames
    assert len(frame.rows) == 1, frame.rows
    return frame.rows[0][0]


def column(result: PanelResult, name: str) -> list[Any]:
    [frame] = result.frames
    return [row[frame.columns.index(name)] for row in frame.rows]


def check_shape(result: PanelResult) -> None:
    """The shape each panel type draws: a time column and numbers for time series, one row for a
    stat, labels and numbers for bars and pies, named columns for tables."""
    assert not result.error, f"{result.panel.title}: {result.error}"
    for frame in result.frames:
        kinds = frame.kinds
        title = result.panel.title
        if result.panel.type == "timeseries":
            assert kinds.count("time") == 1 and "number" in kinds, (title, frame.columns, kinds)
            assert set(kinds) <= {"time", "number", "string"}, (title, kinds)
        elif result.panel.type == "stat":
            assert len(frame.rows) <= 1 and len(frame.columns) == 1, (title, frame.columns)
            assert not frame.rows or kinds[0] == "number", (title, kinds)
        elif result.panel.type in ("barchart", "piechart"):
            assert kinds[0] == "string" and all(k == "number" for k in kinds[1:]), (title, kinds)
        else:
            assert frame.columns and len(set(frame.columns)) == len(frame.columns), title


# --- every query runs ------------------------------------------------------------------------

COMBINATIONS = {
    "defaults (All)": {},
    "one of each": {
        "service": ["billing-api"],
        "route": ["/v1/invoices"],
        "region": ["eu-west-1"],
        "consumer": ["bob"],
    },
    "several": {
        "service": ["orders-api", "billing-api"],
        "route": ["/v1/orders", "/v1/invoices", "/v1/balance"],
    },
}


@pytest.mark.parametrize("name", ["overview", "consumer", "errors", "pipeline", "monitored"])
@pytest.mark.parametrize("span", [HOUR, DAY, 7 * DAY, 30 * DAY], ids=["1h", "24h", "7d", "30d"])
def test_every_panel_and_variable_query_runs_and_returns_its_shape(
    history_store: HistoryStore, store: Store, name: str, span: int
) -> None:
    dashboard = find_dashboard(name)
    end = history_store.history.end - 2 * DAY + 14 * HOUR
    for label, chosen in COMBINATIONS.items():
        chosen = {k: v for k, v in chosen.items() if k in {d.name for d in dashboard.variables}}
        if name == "consumer":
            chosen = {"consumer": ["alice"]}
        resolved = resolve(store, dashboard, iso(end - span), iso(end), chosen, now=history_store.now)
        for variable, options in resolved.options.items():
            assert options or (variable == "consumer" and name == "monitored"), (
                f"{name}: no options for {variable}"
            )
        results = run_dashboard(store, resolved)
        assert len(results) == len([p for p in dashboard.panels if p.type != "row"])
        for result in results:
            check_shape(result)
        drawn = [r for r in results if any(f.rows for f in r.frames)]
        if name != "monitored":  # the history has no monitored events
            assert len(drawn) >= len(results) // 2, f"{name} {label}: most panels came back empty"


def test_variable_options_follow_the_data_and_the_variables_before_them(
    history_store: HistoryStore, store: Store
) -> None:
    overview = find_dashboard("overview")
    end = history_store.history.end
    everything = resolve(store, overview, iso(end - 7 * DAY), iso(end), now=history_store.now)
    assert [v for v, _ in everything.options["service"]] == ["billing-api", "orders-api"]
    assert [v for v, _ in everything.options["region"]] == ["eu-central-1", "eu-west-1", "us-east-1"]
    billing = resolve(
        store, overview, iso(end - 7 * DAY), iso(end), {"service": ["billing-api"]}, now=history_store.now
    )
    routes = {v for v, _ in billing.options["route"]}
    assert routes == {"/v1/invoices", "/v1/invoices/<id>", "/v1/payments", "/v1/balance", "/v1/refunds"}
    consumers = [v for v, _ in everything.options["consumer"]]
    assert "alice" in consumers and "" not in consumers and consumers == sorted(consumers)


# --- known inputs, known values --------------------------------------------------------------


def count(history_store: HistoryStore, start: int, end: int, **equal: Any) -> int:
    return int(history_store.history.mask(start, end, **equal).sum())


def test_request_counts_match_the_generator_from_raw_events_and_from_rollups(
    history_store: HistoryStore, store: Store
) -> None:
    overview = find_dashboard("overview")
    h = history_store.history
    for span in (DAY, 7 * DAY, 21 * DAY):  # the last reads the hourly rollup
        end = h.end - DAY
        resolved = resolve(store, overview, iso(end - span), iso(end), now=history_store.now)
        expected = count(history_store, end - span, end)
        assert value(run(store, resolved, "Requests")) == expected
        assert sum(column(run(store, resolved, "Requests by region"), "requests")) == expected
        assert sum(column(run(store, resolved, "Requests by instance"), "requests")) == expected
        top = run(store, resolved, "Top routes")
        routes = dict(
            zip(
                zip(column(top, "method"), column(top, "route"), strict=True),
                column(top, "requests"),
                strict=True,
            )
        )
        assert routes["GET", "/v1/orders"] == count(
            history_store, end - span, end, route="/v1/orders", method="GET"
        )
        assert routes["POST", "/v1/orders"] == count(
            history_store, end - span, end, route="/v1/orders", method="POST"
        )
        series = run(store, resolved, "Requests/s by status class").series
        per_second = sum(sum(v for v in s.values if v) for s in series)
        interval = (series[0].times[1] - series[0].times[0]).total_seconds()
        assert per_second * interval == pytest.approx(expected, rel=1e-9)


def test_the_error_rate_of_the_burst_equals_the_generators(history_store: HistoryStore, store: Store) -> None:
    h = history_store.history
    burst = h.incident("error_burst")
    chosen = {"service": [burst.service], "route": [burst.route]}
    resolved = resolve(
        store, find_dashboard("overview"), iso(burst.start), iso(burst.end), chosen, now=history_store.now
    )
    # $__timeFilter is inclusive of its end second; the generator's window is not: no event sits on it.
    where = h.mask(burst.start, burst.end, service_name=burst.service, route=burst.route)
    failed = where & (h.columns["status_code"] >= 500)
    rate = 100 * failed.sum() / where.sum()
    assert rate > 40, "the burst should be obvious"
    assert value(run(store, resolved, "5xx error rate")) == pytest.approx(rate, rel=1e-9)
    errors = resolve(
        store, find_dashboard("errors"), iso(burst.start), iso(burst.end), chosen, now=history_store.now
    )
    assert value(run(store, errors, "5xx")) == int(failed.sum())
    types = run(store, errors, "Error types")
    assert dict(zip(column(types, "error type"), column(types, "requests"), strict=True))[
        "ConnectionError"
    ] == int((where & (h.columns["error_type"] == "ConnectionError")).sum())


def test_latency_percentiles_match_the_events(history_store: HistoryStore, store: Store) -> None:
    h = history_store.history
    incident = h.incident("latency")
    chosen = {"service": [incident.service], "route": [incident.route]}
    resolved = resolve(
        store,
        find_dashboard("overview"),
        iso(incident.start),
        iso(incident.end),
        chosen,
        now=history_store.now,
    )
    durations = h.columns["duration_ns"][
        h.mask(incident.start, incident.end, service_name=incident.service, route=incident.route)
    ]
    # ClickHouse's quantile() samples (reservoir of 8192): exact for this many values.
    assert durations.size < 8192
    assert value(run(store, resolved, "p95 latency")) == pytest.approx(
        np.quantile(durations, 0.95) / 1e6, rel=1e-6
    )


def test_a_consumers_timeline_and_counts(history_store: HistoryStore, store: Store) -> None:
    h = history_store.history
    end = h.end - DAY
    resolved = resolve(
        store,
        find_dashboard("consumer"),
        iso(end - 7 * DAY),
        iso(end),
        {"consumer": ["carol"]},
        now=history_store.now,
    )
    assert value(run(store, resolved, "Requests")) == count(
        history_store, end - 7 * DAY, end, user_id="carol"
    )
    timeline = run(store, resolved, "Timeline")
    times = column(timeline, "time")
    assert len(times) == 500 and times == sorted(times)
    expected = np.sort(h.columns["timestamp"][h.mask(end - 7 * DAY, end, user_id="carol")])[-500:]
    assert [int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1e6) for t in times] == list(expected // 1000)
    first = run(store, resolved, "First seen")
    assert value(first) == int(h.columns["timestamp"][h.columns["user_id"] == "carol"].min() // 1_000_000)


def test_pipeline_panels_show_the_gap_the_dead_letters_and_the_stall(
    history_store: HistoryStore, store: Store
) -> None:
    h = history_store.history
    gap = h.incident("sequence_gap")
    hour = gap.start // HOUR * HOUR
    pipeline = find_dashboard("pipeline")
    resolved = resolve(store, pipeline, iso(hour - 3 * HOUR), iso(hour + 3 * HOUR), now=history_store.now)
    gaps = run(store, resolved, MISSING).series
    assert [(s.name, sum(v or 0 for v in s.values)) for s in gaps] == [(gap.instance, gap.count)]
    letters = h.incident("dead_letters")
    resolved = resolve(
        store, pipeline, iso(letters.start - HOUR), iso(letters.start + HOUR), now=history_store.now
    )
    assert value(run(store, resolved, "Dead letters")) == letters.count
    stall = h.incident("stalled_instance")
    resolved = resolve(store, pipeline, iso(stall.end - HOUR), iso(stall.end + HOUR), now=history_store.now)
    freshness = run(store, resolved, "Freshness (request to storage)").series
    p99 = next(s for s in freshness if s.name == "p99")
    assert max(v for v in p99.values if v is not None) > 600, "the backlog shows as late events"


def test_pipeline_panels_count_reported_and_tail_loss_as_the_audit_does(
    history_store: HistoryStore, store: Store
) -> None:
    h = history_store.history
    incident = h.incident("events_lost")
    [drop] = [r for r in h.losses if r["reason"] == "dropped"]
    tails = [r for r in h.losses if r["reason"] == "tail"]
    assert len(tails) == 2 and tails[0]["report_id"] == tails[1]["report_id"], "delivered twice"
    tail = tails[0]
    # The generator's truth: the dropped numbers are really missing, the tail is what the kill left.
    seqs = h.columns["seq"][h.columns["service_instance_id"] == incident.instance]
    dropped = range(drop["first_seq"], drop["last_seq"] + 1)
    assert len(dropped) == drop["count"] == incident.count and not set(dropped) & set(seqs.tolist())
    tail_lost = tail["allocated_seq"] - int(seqs.max())
    assert tail_lost == history.LOSS_TAIL < tail["count"]

    pipeline = find_dashboard("pipeline")
    around = resolve(
        store, pipeline, iso(incident.start - HOUR), iso(incident.end + HOUR), now=history_store.now
    )
    assert value(run(store, around, "Events lost (reported + tail)")) == drop["count"] + tail_lost
    missing = run(store, around, MISSING).series
    assert [(s.name, sum(v or 0 for v in s.values)) for s in missing] == [
        (incident.instance, drop["count"] + tail_lost)
    ]
    reports = run(store, around, "Loss reports")
    assert column(reports, "reason") == ["tail", "dropped"], "newest first, the redelivered copy once"
    assert column(reports, "instance") == [incident.instance] * 2
    assert column(reports, "service") == [incident.service] * 2
    assert column(reports, "count") == [tail["count"], drop["count"]]
    assert column(reports, "seq range") == [
        f"{tail['first_seq']}-{tail['last_seq']}",
        f"{drop['first_seq']}-{drop['last_seq']}",
    ]
    assert column(reports, "location") == [tail["location"], drop["location"]]
    assert column(reports, "detail") == [tail["detail"], drop["detail"]]
    # Before the tail report: only what was dropped (its allocated number is below the stored).
    early = resolve(
        store, pipeline, iso(incident.start - HOUR), iso(tail["reported_at"] - 1), now=history_store.now
    )
    assert value(run(store, early, "Events lost (reported + tail)")) == drop["count"]
    assert column(run(store, early, "Loss reports"), "reason") == ["dropped"]
    quiet = resolve(
        store, pipeline, iso(incident.start - 4 * HOUR), iso(incident.start - HOUR), now=history_store.now
    )
    assert value(run(store, quiet, "Events lost (reported + tail)")) == 0

    # usagelog audit says the same of this instance.
    [entry] = [e for e in audit_instances(store) if e.instance == incident.instance]
    assert (entry.gaps, entry.tail_lost, entry.reported_lost) == (drop["count"], tail_lost, drop["count"])


# --- alert rule queries ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r.uid)
def test_alert_queries_return_one_numeric_value_per_labelled_series(
    history_store: HistoryStore, store: Store, rule: Any
) -> None:
    h = history_store.history
    for incident in h.incidents:
        at = history_store.at((incident.end or incident.start) + 5 * 60)
        for query in rule.queries:
            span = TimeRange(
                at - dt.timedelta(seconds=query.range_from),
                at - dt.timedelta(seconds=query.range_to),
                query.interval_ms,
            )
            frame = run_sql(store, render_query(query.sql, span, dashboard=False), query.ref_id)
            assert "value" in frame.columns and frame.kinds[frame.columns.index("value")] == "number"
            assert [k for k in frame.kinds if k == "number"] == ["number"], (
                rule.uid,
                frame.columns,
                frame.kinds,
            )
            frame_values(frame)  # one value per label set, or it raises
