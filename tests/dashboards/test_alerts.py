"""The alert rules, evaluated as Grafana evaluates them, on four weeks of traffic with known incidents.

Each rule must fire on its incident, with the incident's labels, and on nothing else: every rule
is evaluated at every hour of the last (normal) week and around each incident, and every
firing must fall inside its incident's window. Then ``usagelog alerts check`` as cron runs it:
exit codes, JSON, ``--since``, the webhook payload, ``for``, no data and broken rules.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.dashboards.conftest import HistoryStore
from usagelog.dashboards.alerts import Rule, evaluate, evaluate_once, load_rules
from usagelog.demo.history import History, Incident
from usagelog.ingest.store import Store, connect

MINUTE = 60
HOUR = 3600

RULES = {rule.uid: rule for rule in load_rules()}
LOST = {"service": "billing-api", "instance": "billing-eu-central-1"}
# rule -> the incidents it must fire on: (incident kind, the labels it must fire with)
EXPECTED: dict[str, list[tuple[str, dict[str, str]]]] = {
    "usagelog-5xx-rate": [("error_burst", {"service": "orders-api", "route": "/v1/orders"})],
    "usagelog-latency-p95": [("latency", {"service": "billing-api", "route": "/v1/invoices"})],
    "usagelog-traffic-anomaly": [("traffic_drop", {"service": "orders-api", "route": "*"})],
    "usagelog-consumer-spike": [("consumer_spike", {"consumer": "acct-0042"})],
    # The events dropped at the memory bound are a gap in the stored sequence too: both rules page.
    "usagelog-sequence-gaps": [
        ("sequence_gap", {"service": "orders-api", "instance": "orders-eu-west-1"}),
        ("events_lost", LOST),
    ],
    "usagelog-events-lost": [("events_lost", {**LOST, "reason": "dropped"})],
    "usagelog-dead-letters": [("dead_letters", {"source": "kafka", "reason": "not an OTLP logs payload"})],
    "usagelog-ingest-stalled": [("stalled_instance", {"service": "billing-api"})],
}


def received(history: History, reason: str = "") -> list[int]:
    """When the loss reports (of ``reason``) reached storage, every copy (epoch seconds)."""
    return sorted(r["received_at"] for r in history.losses if not reason or r["reason"] == reason)


def window(uid: str, incident: Incident, history: History) -> tuple[int, int]:
    """When the rule may fire because of the incident (epoch seconds, inclusive)."""
    if uid in ("usagelog-5xx-rate", "usagelog-latency-p95"):
        return incident.start, incident.end + 15 * MINUTE  # a 15-minute window
    if uid in ("usagelog-traffic-anomaly", "usagelog-consumer-spike"):
        return incident.end, incident.end + HOUR  # the closed hour after it
    if uid == "usagelog-sequence-gaps":
        return incident.start + 10 * MINUTE, incident.start + 70 * MINUTE
    if uid == "usagelog-events-lost":  # from the first report stored to 15 minutes after the last copy
        return received(history)[0], received(history)[-1] + 15 * MINUTE
    if uid == "usagelog-dead-letters":
        return incident.start, incident.start + 15 * MINUTE
    return incident.start + 15 * MINUTE, incident.end + 11 * MINUTE  # silent, then late events


def probes(uid: str, incident: Incident, history: History) -> list[int]:
    """Times at which the rule must fire."""
    if uid in ("usagelog-5xx-rate", "usagelog-latency-p95"):
        return [incident.end]
    if uid in ("usagelog-traffic-anomaly", "usagelog-consumer-spike", "usagelog-dead-letters"):
        return [(incident.end or incident.start) + 5 * MINUTE]
    if uid == "usagelog-sequence-gaps":
        return [incident.start + 30 * MINUTE]
    if uid == "usagelog-events-lost":
        return [received(history, "dropped")[0] + 5 * MINUTE]
    return [incident.start + 20 * MINUTE, incident.end + 5 * MINUTE]


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def firing(store: Store, rule: Rule, epoch: int) -> list[dict[str, str]]:
    evaluation = evaluate_once(store, rule, at(epoch))
    assert not evaluation.error, f"{rule.uid} at {at(epoch)}: {evaluation.error}"
    return [dict(labels) for labels, value in evaluation.conditions.items() if value]


@pytest.mark.parametrize("uid", sorted(EXPECTED))
def test_each_rule_fires_on_its_incident_and_nowhere_else_in_the_last_week(
    history_store: HistoryStore, store: Store, uid: str
) -> None:
    history: History = history_store.history
    rule = RULES[uid]
    windows = []
    for kind, labels in EXPECTED[uid]:
        incident = history.incident(kind)
        for probe in probes(uid, incident, history):
            fired = firing(store, rule, probe)
            assert any(labels.items() <= f.items() for f in fired), f"{uid} silent at {at(probe)}: {fired}"
        windows.append(window(uid, incident, history))
    times = set(range(history.end - 7 * 24 * HOUR, history.end + 1, HOUR))
    for other in history.incidents:  # close around every incident, where false alarms would hide
        base = other.end or other.start
        times |= {base + k * 5 * MINUTE for k in range(-3, 13)}
    stray = []
    for epoch in sorted(times):
        fired = firing(store, rule, epoch)
        if fired and not any(start <= epoch <= end for start, end in windows):
            stray.append((at(epoch).isoformat(), fired))
    assert not stray, f"{uid} fired outside its incident: {stray[:5]}"


def test_events_lost_pages_per_instance_and_reason_with_the_tail_the_stored_sequence_proves(
    history_store: HistoryStore, store: Store
) -> None:
    h = history_store.history
    incident = h.incident("events_lost")
    rule = RULES["usagelog-events-lost"]
    assert rule.pending == 0, "a loss report is a fact: one is enough"
    [drop] = [r for r in h.losses if r["reason"] == "dropped"]
    tail = next(r for r in h.losses if r["reason"] == "tail")
    stored = int(h.columns["seq"][h.columns["service_instance_id"] == incident.instance].max())
    tail_lost = tail["allocated_seq"] - stored
    assert 0 < tail_lost < tail["count"], "the tail count is an upper bound: the rule must not page with it"

    def lost(epoch: int) -> dict[str, float | None]:
        found = evaluate(store, rule, at(epoch))
        assert all(i.state == "firing" and i.labels == {**LOST, "reason": i.labels["reason"]} for i in found)
        return {i.labels["reason"]: i.value for i in found}

    first_tail = received(h, "tail")[0]
    assert lost(drop["received_at"] - MINUTE) == {}
    # Evaluated in the past, the rule sees only the reports stored by then: the tail is not yet.
    assert lost(first_tail - MINUTE) == {"dropped": drop["count"]}
    assert lost(first_tail + MINUTE) == {"dropped": drop["count"], "tail": tail_lost}
    assert lost(drop["received_at"] + 16 * MINUTE) == {"tail": tail_lost}
    assert lost(received(h)[-1] + 16 * MINUTE) == {}
    [instance] = evaluate(store, rule, at(first_tail + 5 * MINUTE))
    assert instance.summary == f"billing-api instance {incident.instance}: {tail_lost} lost (tail)"


def test_a_stalled_instance_is_named_while_silent_then_its_late_events_show_as_freshness(
    history_store: HistoryStore, store: Store
) -> None:
    stall = history_store.history.incident("stalled_instance")
    rule = RULES["usagelog-ingest-stalled"]
    assert firing(store, rule, stall.start + 20 * MINUTE) == [
        {"service": "billing-api", "instance": stall.instance, "host": "billing-us-east-a", "check": "silent"}
    ]
    assert firing(store, rule, stall.end + 5 * MINUTE) == [
        {"service": "billing-api", "instance": "", "host": "", "check": "freshness"}
    ]


def test_for_keeps_a_new_instance_pending_until_it_held_that_long(
    history_store: HistoryStore, store: Store
) -> None:
    burst = history_store.history.incident("error_burst")
    rule = RULES["usagelog-5xx-rate"]
    assert rule.pending == 5 * MINUTE
    early = evaluate(store, rule, at(burst.start + 2 * MINUTE))
    assert [(i.state, i.labels["route"]) for i in early] == [("pending", "/v1/orders")]
    late = evaluate(store, rule, at(burst.end))
    assert [(i.state, i.labels["route"]) for i in late] == [("firing", "/v1/orders")]
    assert late[0].active_since is not None and late[0].active_since <= at(burst.end - 5 * MINUTE)
    assert late[0].summary.startswith("orders-api /v1/orders: ") and late[0].summary.endswith(
        "% of requests failed with 5xx"
    )


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "alerts", "check", "--clickhouse", url, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Receiver.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


def test_alerts_check_exits_1_and_posts_the_webhook_when_something_fires(
    history_store: HistoryStore, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    burst = history_store.history.incident("error_burst")
    result = cli(history_store.url, "--at", at(burst.end).isoformat(), "--format", "json", "--webhook", url)
    assert result.returncode == 1, result.stderr
    found = json.loads(result.stdout)
    assert [(f["rule"], f["state"], f["labels"]) for f in found] == [
        ("usagelog-5xx-rate", "firing", {"route": "/v1/orders", "service": "orders-api"})
    ]
    assert found[0]["value"] > 5
    [post] = received
    assert post["type"] == "application/json"
    payload = post["body"]
    assert payload["status"] == "firing" and payload["state"] == "alerting" and payload["version"] == "1"
    [alert] = payload["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "5xx rate per route",
        "grafana_folder": "usagelog",
        "rule_uid": "usagelog-5xx-rate",
        "team": "api",
        "severity": "page",
        "route": "/v1/orders",
        "service": "orders-api",
    }
    assert alert["annotations"]["summary"].startswith("orders-api /v1/orders: ")
    assert alert["values"]["B"] == pytest.approx(found[0]["value"]) and alert["values"]["C"] == 1
    assert alert["startsAt"] <= at(burst.end).isoformat().replace("+00:00", "Z")


def test_alerts_check_on_a_quiet_hour_exits_0_and_since_finds_what_fired_earlier(
    history_store: HistoryStore,
) -> None:
    gap = history_store.history.incident("sequence_gap")
    quiet = gap.start - 3 * HOUR
    result = cli(history_store.url, "--at", at(quiet).isoformat(), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    later = gap.start + 3 * HOUR  # the gap left the rule's window an hour ago
    assert (
        cli(history_store.url, "--at", at(later).isoformat(), "--rule", "usagelog-sequence-gaps").returncode
        == 0
    )
    result = cli(
        history_store.url, "--at", at(later).isoformat(), "--since", "3h", "--rule", "usagelog-sequence-gaps"
    )
    assert result.returncode == 1
    assert "usagelog-sequence-gaps  firing" in result.stdout and "instance=orders-eu-west-1" in result.stdout


def test_alerts_check_reports_the_loss_of_the_killed_instance(history_store: HistoryStore) -> None:
    h = history_store.history
    moment = at(received(h, "tail")[0] + 5 * MINUTE)
    result = cli(
        history_store.url, "--at", moment.isoformat(), "--rule", "usagelog-events-lost", "--format", "json"
    )
    assert result.returncode == 1, result.stderr
    tail = next(r for r in h.losses if r["reason"] == "tail")
    stored = int(h.columns["seq"][h.columns["service_instance_id"] == tail["service_instance_id"]].max())
    assert [(f["state"], f["labels"], f["value"]) for f in json.loads(result.stdout)] == [
        ("firing", {**LOST, "reason": "tail"}, tail["allocated_seq"] - stored)
    ]


def _rules_copy(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of grafana/ whose rules went through ``change`` (one rule dict at a time)."""
    grafana = tmp_path / "grafana"
    shutil.copytree(Path(__file__).resolve().parents[2] / "grafana", grafana)
    path = grafana / "provisioning" / "alerting" / "rules.yaml"
    document = yaml.safe_load(path.read_text())
    for rule in document["groups"][0]["rules"]:
        change(rule)
    path.write_text(yaml.safe_dump(document))
    return grafana


def test_no_data_and_errors_follow_the_rules_states(tmp_path: Path) -> None:
    url = "chdb://" + str(tmp_path / "empty")
    with connect(url):
        pass

    def change(rule: dict[str, Any]) -> None:
        if rule["uid"] == "usagelog-ingest-stalled":
            rule["noDataState"] = "Alerting"  # an empty store: no data, which this rule now calls alerting
        if rule["uid"] == "usagelog-dead-letters":
            rule["data"][0]["model"]["rawSql"] = "SELECT nope FROM usagelog.dead_letters"

    grafana = _rules_copy(tmp_path, change)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "usagelog.cli",
            "alerts",
            "check",
            "--clickhouse",
            url,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "USAGELOG_GRAFANA_DIR": str(grafana)},
    )
    assert result.returncode == 1, result.stderr
    states = {f["rule"]: f for f in json.loads(result.stdout)}
    assert (
        states["usagelog-ingest-stalled"]["state"] == "firing"
        and states["usagelog-ingest-stalled"]["labels"] == {}
    )
    assert states["usagelog-dead-letters"]["state"] == "error"
    assert "nope" in states["usagelog-dead-letters"]["error"]
    assert set(states) == {"usagelog-ingest-stalled", "usagelog-dead-letters"}, "empty store: nothing else"
