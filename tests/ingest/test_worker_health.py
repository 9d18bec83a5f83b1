"""A real worker's health line and metrics against a load the test knows: a backlog, then a steady rate."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import WorkerProcess, count_events, produce, wait_for
from tests.spoolfill import make_payloads

pytestmark = pytest.mark.slow

HEALTH = re.compile(
    r"health worker=load lag=(?P<lag>\d+) events/s=(?P<rate>[\d.]+) duplicates/s=(?P<dup_rate>[\d.]+) "
    r"batches=(?P<batches>\d+) batch_p50_ms=(?P<p50>[\d.]+) batch_max_ms=(?P<max>[\d.]+) "
    r"interval_s=(?P<seconds>[\d.]+) stored=(?P<stored>\d+) duplicates=(?P<duplicates>\d+) "
    r"dead_letters=(?P<dead>\d+)"
)
BACKLOG = 120  # messages of 5 events, produced before the worker starts
PER_MESSAGE = 40  # events per message of the steady load
RATE = 200  # events per second
LOAD_SECONDS = 10


def _reports(log: str) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in m.groupdict().items()} for m in HEALTH.finditer(log)]


def _last_metrics(log: str) -> dict[str, Any]:
    """The last export of the console metric exporter (at exit), by metric name."""
    decoder = json.JSONDecoder()
    last: dict[str, Any] | None = None
    for match in re.finditer(r'\{\s*"resource_metrics"', log):
        try:
            last, _ = decoder.raw_decode(log, match.start())
        except ValueError:
            continue
    assert last is not None, "no metrics exported"
    found: dict[str, Any] = {}
    for resource in last["resource_metrics"]:
        for scope in resource["scope_metrics"]:
            for metric in scope["metrics"]:
                found[metric["name"]] = metric["data"]["data_points"]
    return found


def test_health_figures_match_a_known_backlog_and_steady_load(
    kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    url = "chdb://" + str(tmp_path / "chdb")
    produce(kafka.bootstrap, topics["events"], make_payloads(BACKLOG, 5, instance="backlog"))
    env = {
        "USAGELOG_HEALTH_INTERVAL_SECONDS": "2",
        # One message per batch: catching up on the backlog takes a while, so a report sees it.
        "USAGELOG_BATCH_MAX_MESSAGES": "1",
        "USAGELOG_WORKER_MAX_MEMORY_MB": "0",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "PYTHONUNBUFFERED": "1",  # an export is one write: not split by log lines
    }
    worker = WorkerProcess(tmp_path, kafka.bootstrap, topics["events"], url, "load", env, max_idle=6).start()

    def stored() -> int:
        reports = _reports(worker.log())
        return int(reports[-1]["stored"]) if reports else 0

    wait_for(lambda: stored() >= BACKLOG * 5, 120, "the backlog stored")
    # The steady load: RATE events/s as messages of PER_MESSAGE events, for LOAD_SECONDS.
    messages = RATE * LOAD_SECONDS // PER_MESSAGE
    payloads = make_payloads(messages, PER_MESSAGE, instance="steady", first_seq=10_000)
    every = PER_MESSAGE / RATE
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 0})
    started = time.monotonic()
    for i, payload in enumerate(payloads):
        time.sleep(max(0.0, started + i * every - time.monotonic()))
        producer.produce(topics["events"], value=payload, key=str(i).encode())
        assert producer.flush(10) == 0
    produced_rate = messages * PER_MESSAGE / (time.monotonic() - started)
    assert worker.wait(timeout=120) == 0, worker.log()[-3000:]
    log = worker.log()
    reports = _reports(log)
    total = BACKLOG * 5 + messages * PER_MESSAGE

    # Totals: every event once, as the store says.
    assert (reports[-1]["stored"], reports[-1]["duplicates"], reports[-1]["dead"]) == (total, 0, 0)
    assert count_events(url) == (total, total)
    assert sum(r["batches"] for r in reports) == BACKLOG + messages  # one message per batch

    # Lag: while the worker catches up on the backlog, every report's lag is the backlog's
    # messages not yet stored (one message per batch, 5 events each); once caught up, none.
    catching_up = [r for r in _reports(log[log.index("assigned [0, 1, 2]") :]) if r["stored"] < BACKLOG * 5]
    assert catching_up and catching_up[0]["lag"] > 0, reports
    assert [r["lag"] for r in catching_up] == [BACKLOG - r["stored"] // 5 for r in catching_up]
    assert reports[-1]["lag"] == 0 and reports[-2]["lag"] == 0

    # Events/s while the steady load ran: the reports whose whole interval lies inside it (the
    # previous report already counted some of the load, this one not yet all of it).
    inside = [
        (before, r)
        for before, r in itertools.pairwise(reports)
        if before["stored"] > BACKLOG * 5 and r["stored"] < total
    ]
    assert len(inside) >= 2, reports
    mean = sum(r["rate"] * r["seconds"] for _, r in inside) / sum(r["seconds"] for _, r in inside)
    assert 0.5 * produced_rate <= mean <= 1.5 * produced_rate, (produced_rate, inside)
    for before, r in inside:  # each interval: the right order of magnitude, duplicates none
        assert 0.2 * produced_rate <= r["rate"] <= 3 * produced_rate, (produced_rate, r)
        assert r["dup_rate"] == 0, r
        # the interval's events over its wall-clock length (both rounded to 0.1 in the line)
        assert r["rate"] * r["seconds"] == pytest.approx(r["stored"] - before["stored"], rel=0.1)
        assert r["batches"] > 0 and 0 < r["p50"] <= r["max"], r

    # The metrics exported at exit say the same as the last line.
    points = _last_metrics(log)
    events = {p["attributes"]["outcome"]: p["value"] for p in points["usagelog.ingest.events"]}
    assert events == {"stored": total, "duplicate": 0}
    assert [p["count"] for p in points["usagelog.ingest.batch.duration"]] == [BACKLOG + messages]
    assert [p["value"] for p in points["usagelog.ingest.consumer.lag"]] == [0]
