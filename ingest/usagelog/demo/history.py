"""Synthetic traffic history: weeks of usage events with daily and weekly seasonality, many
consumers and routes, ordinary errors, and injected incidents whose effects are known.

Used to check the dashboards and alert rules on realistic data (every alert must fire on its
incident and nowhere else), and by the benchmarks (millions of events). The events are the
same rows ingest stores, with valid checksums and dense per-instance sequence numbers, so
``usagelog audit`` reads them like real ones; the incidents are the faults a team would want
to hear about:

- ``error_burst``: one route answers 5xx to most requests for 20 minutes;
- ``latency``: one route becomes 25 times slower for half an hour;
- ``traffic_drop``: a service gets a tenth of its usual traffic for an hour;
- ``consumer_spike``: one consumer sends far more than ever before, for an hour;
- ``sequence_gap``: seven events of one instance never arrive;
- ``dead_letters``: a burst of undecodable messages;
- ``stalled_instance``: one instance's events reach storage 50 minutes late;
- ``events_lost``: one instance drops twelve events at its memory bound (a ``dropped`` loss
  report, delivered at once), then is killed with five events not handed over and restarts
  under a new instance ID on the same host; the restarted process reaps the dead one's counters
  into a ``tail`` report, which the spool delivers twice (``History.losses``, the ``losses`` rows).

Everything is drawn from a seeded generator, so a history is the same on every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
NS = 1_000_000_000
DEFAULT_END = 1_795_392_000  # Monday 2026-11-23 00:00 UTC


@dataclass(frozen=True)
class Route:
    method: str
    route: str
    weight: float
    median_ms: float
    client_errors: tuple[tuple[int, float], ...] = ()  # (status, share)
    server_error: float = 0.001
    request_bytes: int = 0
    response_bytes: int = 800


@dataclass(frozen=True)
class Instance:
    name: str  # stands in for the per-process UUID
    host: str
    region: str
    cluster: str
    weight: float


@dataclass(frozen=True)
class Service:
    name: str
    peak_per_hour: float
    routes: tuple[Route, ...]
    instances: tuple[Instance, ...]


SERVICES = (
    Service(
        "orders-api",
        1800.0,
        (
            Route("GET", "/v1/orders", 0.30, 40, ((400, 0.01),)),
            Route("GET", "/v1/orders/<id>", 0.24, 25, ((404, 0.03),)),
            Route("POST", "/v1/orders", 0.12, 120, ((422, 0.04),), 0.002, 600, 400),
            Route("DELETE", "/v1/orders/<id>", 0.03, 60, ((404, 0.05), (409, 0.02))),
            Route("GET", "/v1/products", 0.15, 30),
            Route("GET", "/v1/products/<sku>", 0.11, 20, ((404, 0.05),)),
            Route("POST", "/v1/checkout", 0.04, 300, ((402, 0.02),), 0.004, 900, 300),
            Route("GET", "/v1/exports", 0.01, 400, (), 0.002, 0, 250_000),
        ),
        (
            Instance("orders-eu-west-1", "orders-eu-west-a", "eu-west-1", "prod-eu", 0.4),
            Instance("orders-eu-central-1", "orders-eu-central-a", "eu-central-1", "prod-eu", 0.3),
            Instance("orders-us-east-1", "orders-us-east-a", "us-east-1", "prod-us", 0.3),
        ),
    ),
    Service(
        "billing-api",
        700.0,
        (
            Route("GET", "/v1/invoices", 0.35, 50),
            Route("GET", "/v1/invoices/<id>", 0.25, 30, ((404, 0.04),)),
            Route("POST", "/v1/payments", 0.15, 200, ((402, 0.03),), 0.003, 500, 300),
            Route("GET", "/v1/balance", 0.20, 15),
            Route("POST", "/v1/refunds", 0.05, 250, ((409, 0.03),), 0.002, 300, 200),
        ),
        (
            Instance("billing-eu-west-1", "billing-eu-west-a", "eu-west-1", "prod-eu", 0.45),
            Instance("billing-eu-central-1", "billing-eu-central-a", "eu-central-1", "prod-eu", 0.3),
            Instance("billing-us-east-1", "billing-us-east-a", "us-east-1", "prod-us", 0.25),
        ),
    ),
)

# The events_lost incident: events dropped at the memory bound, events a kill left unhanded, and
# the tail count the dead process's counters claim (an upper bound: a batch written just before
# the kill was not counted yet), so the tail loss can only be told from the stored sequence.
LOSS_DROPPED = 12
LOSS_TAIL = 5
LOSS_TAIL_COUNTED = 8

NAMED_CONSUMERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
ANONYMOUS_SHARE = 0.03  # requests without credentials: 401, no user ID
# Watched as USAGELOG_MONITOR=user:carol,route:/v1/refunds would: these events carry bodies.
MONITORED_USER = "carol"
MONITORED_ROUTE = "/v1/refunds"


@dataclass
class Incident:
    """An injected fault: what, when (epoch seconds, end exclusive), and on which series."""

    kind: str
    start: int
    end: int
    service: str = ""
    route: str = ""
    user: str = ""
    instance: str = ""
    count: int = 0


@dataclass
class History:
    """Generated events (columns as numpy arrays, one entry per event), dead letters, loss reports
    and incidents."""

    start: int
    end: int
    columns: dict[str, np.ndarray]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)  # ``losses`` rows (epoch-second times)

    def __len__(self) -> int:
        return int(self.columns["timestamp"].shape[0])

    def incident(self, kind: str) -> Incident:
        return next(i for i in self.incidents if i.kind == kind)

    def mask(self, start: int | None = None, end: int | None = None, **equal: Any) -> np.ndarray:
        """Events with ``start <= timestamp < end`` (epoch seconds) and the given column values."""
        ts = self.columns["timestamp"]
        keep = np.ones(len(self), dtype=bool)
        if start is not None:
            keep &= ts >= start * NS
        if end is not None:
            keep &= ts < end * NS
        for column, value in equal.items():
            keep &= self.columns[column] == value
        return keep


def _consumers(count: int) -> list[str]:
    names = list(NAMED_CONSUMERS)
    names += [f"acct-{i:04d}" for i in range(len(names), count)]
    return names[:count]


def _rate_factor(hours: np.ndarray, rng: np.random.Generator, start: int) -> np.ndarray:
    """Relative traffic per hour: a daytime peak around 14:00 UTC, quieter weekends, a little
    growth week on week, and some day-to-day variation."""
    hour_of_day = (hours % DAY) / HOUR
    daily = 0.2 + 0.8 * np.exp(-(((hour_of_day - 14.0) / 4.5) ** 2))
    weekday = ((hours // DAY) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekly = np.where(weekday >= 5, 0.45, 1.0)
    week_index = (hours - start) // WEEK
    growth = 1.0 + 0.01 * week_index
    days = (hours - start) // DAY
    jitter = np.exp(rng.normal(0.0, 0.04, size=int(days.max()) + 1))[days]
    return np.asarray(daily * weekly * growth * jitter)


def generate(
    weeks: int = 4,
    scale: float = 1.0,
    consumers: int = 300,
    seed: int = 7,
    end: int | None = None,
    incidents: bool = True,
) -> History:
    """Events for ``weeks`` weeks up to ``end`` (epoch seconds, default ``DEFAULT_END``, a Monday
    00:00 UTC, so the last week runs Monday to Sunday), ``scale`` times the default traffic
    (about 0.65M events in 4 weeks)."""
    rng = np.random.default_rng(seed)
    end = end if end is not None else DEFAULT_END
    start = end - weeks * WEEK
    users = _consumers(consumers)
    user_weights = 1.0 / np.arange(1, consumers + 1) ** 1.1
    user_weights /= user_weights.sum()
    hours = np.arange(start, end, HOUR, dtype=np.int64)
    factor = _rate_factor(hours, rng, start)
    plan = _incident_plan(end, users) if incidents else []

    parts: list[dict[str, np.ndarray]] = []
    for service in SERVICES:
        expected = service.peak_per_hour * scale * factor
        for incident in plan:
            if incident.kind == "traffic_drop" and incident.service == service.name:
                expected = np.where(
                    (hours >= incident.start) & (hours < incident.end), expected * 0.1, expected
                )
        counts = rng.poisson(expected)
        total = int(counts.sum())
        ts = np.repeat(hours, counts) * NS + rng.integers(0, HOUR * NS, size=total)
        parts.append(_events(service, ts, rng, users, user_weights))
        for incident in plan:
            if incident.kind == "consumer_spike" and incident.service == service.name:
                extra = incident.count
                spike_ts = incident.start * NS + rng.integers(
                    0, (incident.end - incident.start) * NS, size=extra
                )
                spike = _events(service, spike_ts, rng, users, user_weights)
                spike["user_id"] = np.full(extra, incident.user, dtype=object)
                spike["anonymous"][:] = False
                route_index = [r.route for r in service.routes].index(incident.route)
                _set_route(spike, service.routes[route_index], rng)
                parts.append(spike)

    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.argsort(columns["timestamp"], kind="stable")
    columns = {name: values[order] for name, values in columns.items()}
    history = History(start, end, columns, incidents=plan)
    keep = _apply_incidents(history, rng)
    _number(history, seed, keep)
    return history


def _events(
    service: Service, ts: np.ndarray, rng: np.random.Generator, users: list[str], user_weights: np.ndarray
) -> dict[str, np.ndarray]:
    n = ts.shape[0]
    route_weights = np.array([r.weight for r in service.routes])
    route_index = rng.choice(len(service.routes), size=n, p=route_weights / route_weights.sum())
    instance_weights = np.array([i.weight for i in service.instances])
    instance_index = rng.choice(len(service.instances), size=n, p=instance_weights / instance_weights.sum())
    user_index = rng.choice(len(users), size=n, p=user_weights)
    user_id = np.array(users, dtype=object)[user_index]
    anonymous = rng.random(n) < ANONYMOUS_SHARE
    user_id[anonymous] = ""

    def pick(values: list[Any], index: Any) -> np.ndarray:
        return np.asarray(np.array(values, dtype=object)[index])

    instances = service.instances
    columns = {
        "timestamp": ts.astype(np.int64),
        "service_name": np.full(n, service.name, dtype=object),
        "service_instance_id": pick([i.name for i in instances], instance_index),
        "host_name": pick([i.host for i in instances], instance_index),
        "region": pick([i.region for i in instances], instance_index),
        "cluster": pick([i.cluster for i in instances], instance_index),
        "user_id": user_id,
        "route_index": route_index,
        "status_code": np.full(n, 200, dtype=np.int64),
        "duration_ns": np.zeros(n, dtype=np.int64),
        "request_size": np.zeros(n, dtype=np.int64),
        "response_size": np.zeros(n, dtype=np.int64),
        "method": np.empty(n, dtype=object),
        "route": np.empty(n, dtype=object),
        "path": np.empty(n, dtype=object),
        "error_type": np.full(n, "", dtype=object),
        "anonymous": anonymous,
    }
    for index, route in enumerate(service.routes):
        _set_route(columns, route, rng, columns["route_index"] == index)
    return columns


def _set_route(
    columns: dict[str, np.ndarray], route: Route, rng: np.random.Generator, where: np.ndarray | None = None
) -> None:
    """Method, route, path, status, duration and sizes of the events in ``where`` (all when None)."""
    where = np.ones(columns["timestamp"].shape[0], dtype=bool) if where is None else where
    n = int(where.sum())
    if n == 0:
        return
    columns["method"][where] = route.method
    columns["route"][where] = route.route
    ids = rng.integers(1, 100_000, size=n)
    template = route.route.split("<")[0]
    columns["path"][where] = [f"{template}{i}" for i in ids] if "<" in route.route else route.route
    status = np.full(n, 200 if route.method != "POST" else 201, dtype=np.int64)
    draw = rng.random(n)
    edge = 0.0
    for code, share in route.client_errors:
        status[(draw >= edge) & (draw < edge + share)] = code
        edge += share
    server = (draw >= edge) & (draw < edge + route.server_error)
    status[server] = 500
    anonymous = columns["anonymous"][where]
    status[anonymous] = 401
    columns["status_code"][where] = status
    error_type = np.full(n, "", dtype=object)
    error_type[server] = "TimeoutError"
    columns["error_type"][where] = error_type
    duration_ms = route.median_ms * np.exp(rng.normal(0.0, 0.5, size=n))
    duration_ms[anonymous] = 2.0
    columns["duration_ns"][where] = (duration_ms * 1e6).astype(np.int64)
    columns["request_size"][where] = (route.request_bytes * rng.uniform(0.5, 1.5, size=n)).astype(np.int64)
    response = (route.response_bytes * rng.uniform(0.5, 1.5, size=n)).astype(np.int64)
    response[status >= 400] = 120
    columns["response_size"][where] = response


def _incident_plan(end: int, users: list[str]) -> list[Incident]:
    """Incidents on the weekdays of the last week (which starts on a Monday when ``end`` is one),
    at busy hours, hours apart from each other."""
    week = end - WEEK
    day = [week + d * DAY for d in range(5)]
    spike_user = users[min(len(users) - 1, 42)]
    return [
        Incident("error_burst", day[0] + 14 * HOUR, day[0] + 14 * HOUR + 20 * 60, "orders-api", "/v1/orders"),
        Incident("latency", day[1] + 15 * HOUR, day[1] + 15 * HOUR + 30 * 60, "billing-api", "/v1/invoices"),
        Incident("traffic_drop", day[2] + 13 * HOUR, day[2] + 14 * HOUR, "orders-api"),
        Incident(
            "consumer_spike",
            day[3] + 11 * HOUR,
            day[3] + 12 * HOUR,
            "orders-api",
            "/v1/exports",
            user=spike_user,
            count=400,
        ),
        Incident(
            "sequence_gap",
            day[4] + 10 * HOUR + 17 * 60,
            0,
            "orders-api",
            instance="orders-eu-west-1",
            count=7,
        ),
        Incident("dead_letters", day[4] + 16 * HOUR + 5 * 60, 0, count=9),
        Incident(
            "stalled_instance",
            day[1] + 9 * HOUR + 40 * 60,
            day[1] + 10 * HOUR + 30 * 60,
            "billing-api",
            instance="billing-us-east-1",
        ),
        # From the first dropped event to the kill.
        Incident(
            "events_lost",
            day[4] + 14 * HOUR + 20 * 60,
            day[4] + 14 * HOUR + 35 * 60,
            "billing-api",
            instance="billing-eu-central-1",
            count=LOSS_DROPPED,
        ),
    ]


def restarted(instance: str) -> str:
    """The instance ID the process killed in the events_lost incident comes back with."""
    return f"{instance}-restarted"


def _apply_incidents(history: History, rng: np.random.Generator) -> np.ndarray:
    """Apply the planned incidents; returns which events are kept (a gap drops some)."""
    c = history.columns
    n = len(history)
    keep = np.ones(n, dtype=bool)
    # First what the requests did...
    for incident in history.incidents:
        if incident.kind == "error_burst":
            where = history.mask(
                incident.start, incident.end, service_name=incident.service, route=incident.route
            )
            where &= ~c["anonymous"]
            fail = where & (rng.random(n) < 0.6)
            c["status_code"][fail] = 503
            c["error_type"][fail] = "ConnectionError"
            c["response_size"][fail] = 120
        elif incident.kind == "latency":
            where = history.mask(
                incident.start, incident.end, service_name=incident.service, route=incident.route
            )
            c["duration_ns"][where] *= 25
        elif incident.kind == "sequence_gap":
            where = np.flatnonzero(history.mask(incident.start, None, service_instance_id=incident.instance))
            keep[where[: incident.count]] = False
        elif incident.kind == "events_lost":
            old = incident.instance
            dropped = np.flatnonzero(history.mask(incident.start, incident.end, service_instance_id=old))
            dropped = dropped[: incident.count]  # fewer on thin traffic (a small scale)
            keep[dropped] = False
            before_kill = np.flatnonzero(history.mask(None, incident.end, service_instance_id=old))
            keep[before_kill[before_kill > dropped.max(initial=-1)][-LOSS_TAIL:]] = False
            # The restarted process: a new instance ID, the same host.
            after_kill = history.mask(incident.end, None, service_instance_id=old)
            c["service_instance_id"][after_kill] = restarted(old)
        elif incident.kind == "dead_letters":
            history.dead_letters = [
                {
                    "received_at": incident.start + i,
                    "source": "kafka",
                    "location": f"usagelog.events/{i % 3}@{1000 + i}",
                    "reason": "not an OTLP logs payload: Error parsing message",
                    "payload": b"\x00garbage",
                }
                for i in range(incident.count)
            ]
    # ...then when each was recorded (after it ended) and stored (about 1.5 s later)...
    delay_ms = np.exp(rng.normal(np.log(1500.0), 0.6, size=n))
    c["inserted_at"] = c["timestamp"] + c["duration_ns"] + (delay_ms * 1e6).astype(np.int64)
    c["observed_timestamp"] = c["timestamp"] + c["duration_ns"] + rng.integers(200_000, 5_000_000, size=n)
    # ...except where ingest stalled: those arrive when it resumes.
    for incident in history.incidents:
        if incident.kind == "stalled_instance":
            where = history.mask(incident.start, incident.end, service_instance_id=incident.instance)
            late = incident.end * NS + rng.integers(5 * NS, 40 * NS, size=int(where.sum()))
            c["inserted_at"][where] = late
    return keep


def _number(history: History, seed: int, keep: np.ndarray) -> None:
    """Per-instance sequence numbers (dense, in timestamp order, gaps only where events were
    dropped), event IDs (a per-instance prefix, then the number) and trace/span IDs."""
    c = history.columns
    n = len(history)
    seq = np.zeros(n, dtype=np.int64)
    event_id = np.empty(n, dtype=object)
    for instance in np.unique(c["service_instance_id"]):
        where = np.flatnonzero(c["service_instance_id"] == instance)
        numbers = np.arange(1, where.shape[0] + 1, dtype=np.int64)
        seq[where] = numbers
        prefix = hashlib.sha256(f"{seed}/{instance}".encode()).hexdigest()[:16]
        event_id[where] = [f"{prefix}{s:016x}" for s in numbers]
    c["seq"] = seq
    c["event_id"] = event_id
    _watch(c, seq)
    _loss_reports(history, seq, keep)
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(0, 2**63, size=(n, 3), dtype=np.int64)
    c["trace_id"] = np.array([f"{a:016x}{b:016x}" for a, b, _ in ids], dtype=object)
    c["span_id"] = np.array([f"{s:016x}" for _, _, s in ids], dtype=object)
    # Events dropped by a gap keep their numbers out of the sequence: that is the gap.
    for name in list(c):
        c[name] = c[name][keep]
    del c["route_index"], c["anonymous"]


def _loss_reports(history: History, seq: np.ndarray, keep: np.ndarray) -> None:
    """The ``losses`` rows of the events_lost incident, from the sequence numbers the instance
    allocated (``seq``, before the lost events are taken out) and which events are ``keep``."""
    incident = next((i for i in history.incidents if i.kind == "events_lost"), None)
    if incident is None:
        return
    c = history.columns
    mine = c["service_instance_id"] == incident.instance
    numbers, times, kept = seq[mine], c["timestamp"][mine], keep[mine]
    stored = int(numbers[kept].max(initial=0))
    dropped = numbers[~kept & (numbers < stored)]  # consecutive: the first events from the start
    # Reported once writing works again.
    dropped_at = int(times[~kept & (numbers < stored)].max(initial=incident.start * NS)) // NS + 60
    reaped_at = incident.end + 40  # the restarted process reaps the dead one's counters
    service = next(s for s in SERVICES if s.name == incident.service)
    host = next(i.host for i in service.instances if i.name == incident.instance)
    common = {"service_name": incident.service, "service_instance_id": incident.instance, "host_name": host}
    drop = {
        **common,
        "report_id": f"{incident.instance}/dropped/{dropped.size}",
        "reported_at": dropped_at,
        "reason": "dropped",
        "count": int(dropped.size),
        "first_seq": int(dropped.min()) if dropped.size else 0,
        "last_seq": int(dropped.max(initial=0)),
        "allocated_seq": int(numbers[times <= dropped_at * NS].max(initial=0)),
        "detail": "dropped at the in-memory bound while nothing could be written",
        "location": "usagelog.events/1@48213",
        "received_at": dropped_at + 2,
    }
    allocated = int(numbers.max(initial=0))
    tail = {
        **common,
        "report_id": f"{incident.instance}/tail/{allocated}",
        "reported_at": reaped_at,
        "reason": "tail",
        "count": LOSS_TAIL_COUNTED,
        "first_seq": max(1, allocated - LOSS_TAIL_COUNTED + 1),
        "last_seq": allocated,
        "allocated_seq": allocated,
        "detail": f"process 4242 ended; its counters file {incident.instance}.counters",
        "location": f"loss-{incident.instance}-4242.seg@0",
        "received_at": reaped_at + 20,
    }
    # The spool is read twice (at-least-once): the same report again, two minutes later.
    history.losses = [drop, tail, {**tail, "received_at": reaped_at + 140}][0 if dropped.size else 1 :]
    incident.count = int(dropped.size)  # on thin traffic (a small scale) the kill may take them all


def _watch(c: dict[str, np.ndarray], seq: np.ndarray) -> None:
    """Mark the watched consumer's and route's events monitored; they carry (redacted) bodies."""
    n = seq.shape[0]
    monitored = (c["user_id"] == MONITORED_USER) | (c["route"] == MONITORED_ROUTE)
    c["monitored"] = monitored
    c["request_body"] = np.full(n, "", dtype=object)
    c["response_body"] = np.full(n, "", dtype=object)
    writes = monitored & np.isin(c["method"], ["POST", "DELETE"])
    c["request_body"][writes] = [
        f'{{"order_id": {s % 9973}, "card_number": "[REDACTED]"}}' for s in seq[writes]
    ]
    statuses = c["status_code"][monitored]
    c["response_body"][monitored] = [
        f'{{"status": {code}, "id": {s}}}' for code, s in zip(statuses, seq[monitored], strict=True)
    ]


def to_arrow(history: History) -> Any:
    """The events as an Arrow table with ``usage_events`` column names (checksum left empty)."""
    import pyarrow as pa

    c = history.columns
    n = len(history)

    def text(values: np.ndarray) -> Any:
        return pa.array(values.tolist(), type=pa.string())

    def stamp(values: np.ndarray, unit: str = "ns") -> Any:
        ns = pa.array(values, type=pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        return ns.cast(pa.timestamp(unit, tz="UTC"), safe=False)

    empty = pa.array([""] * n, type=pa.string())
    return pa.table(
        {
            "event_id": text(c["event_id"]),
            "timestamp": stamp(c["timestamp"]),
            "duration_ns": pa.array(c["duration_ns"], type=pa.uint64()),
            "user_id": text(c["user_id"]),
            "trace_id": text(c["trace_id"]),
            "span_id": text(c["span_id"]),
            "service_name": text(c["service_name"]),
            "service_instance_id": text(c["service_instance_id"]),
            "host_name": text(c["host_name"]),
            "host_id": text(c["host_name"]),
            "process_pid": pa.array(np.full(n, 4242), type=pa.uint32()),
            "cluster": text(c["cluster"]),
            "region": text(c["region"]),
            "method": text(c["method"]),
            "route": text(c["route"]),
            "path": text(c["path"]),
            "query": empty,
            "status_code": pa.array(c["status_code"], type=pa.uint16()),
            "error_type": text(c["error_type"]),
            "client_address": pa.array(["203.0.113.7"] * n, type=pa.string()),
            "user_agent": pa.array(["usagelog-history/1"] * n, type=pa.string()),
            "request_body": text(c["request_body"]),
            "response_body": text(c["response_body"]),
            "request_size": pa.array(c["request_size"], type=pa.uint64()),
            "response_size": pa.array(c["response_size"], type=pa.uint64()),
            "seq": pa.array(c["seq"], type=pa.uint64()),
            "monitored": pa.array(c["monitored"], type=pa.bool_()),
            "observed_timestamp": stamp(c["observed_timestamp"]),
            "inserted_at": stamp(c["inserted_at"], "ms"),
        }
    )


def load(store: Any, history: History, batch: int = 500_000) -> None:
    """Store the history: events (checksums computed by the engine, as audit recomputes them),
    dead letters, loss reports, then the rollups of every minute they touch, as ingest does."""
    from usagelog.ingest import rollup

    load_events(store, history, batch)
    minutes = np.unique(history.columns["timestamp"] // (60 * NS)) * 60
    rollup.stored(store, minutes.tolist())


def load_events(store: Any, history: History, batch: int = 500_000) -> None:
    """Store the history's events, dead letters and loss reports only (no rollups)."""
    from usagelog.ingest import queries, stored

    db = store.database
    table = to_arrow(history)
    stage = f"{db}._history_stage"
    store.client.command(f"DROP TABLE IF EXISTS {stage}")
    names = table.column_names
    # The logical columns (usage_events stores some differently and gives them back as ALIAS
    # columns, which SELECT * leaves out); both tables take them through their stored form.
    store.client.command(
        f"CREATE TABLE {stage} ENGINE = Memory EMPTY AS SELECT {', '.join(names)} FROM {db}.usage_events"
    )
    columns = [*names, "checksum"]
    with_checksum = f"(SELECT {', '.join(names)}, {queries._checksum_sql()} AS checksum FROM {stage})"
    try:
        for offset in range(0, table.num_rows, batch):
            store.client.insert_arrow(stage, table.slice(offset, batch))
            for target, where in (("usage_events", ""), ("monitored_events", " WHERE monitored")):
                # Ingest copies monitored events to their own table too.
                compact = store.compact(target)
                store.client.command(
                    f"INSERT INTO {db}.{target} ({', '.join(stored.stored_columns(compact, columns))}) "
                    f"SELECT {stored.select_sql(compact, columns)} FROM {with_checksum}{where}"
                )
            store.client.command(f"TRUNCATE TABLE {stage}")
    finally:
        store.client.command(f"DROP TABLE IF EXISTS {stage}")
    if history.dead_letters:
        columns = ["received_at", "source", "location", "reason", "payload"]
        store.client.insert(
            f"{db}.dead_letters",
            [
                [_datetime(d["received_at"]), d["source"], d["location"], d["reason"], d["payload"]]
                for d in history.dead_letters
            ],
            column_names=columns,
        )
    _load_losses(store, history.losses)


def _load_losses(store: Any, losses: list[dict[str, Any]]) -> None:
    """One insert per row: a redelivered report arrives as a separate write, as it would."""
    for row in losses:
        values = {**row, **{k: _datetime(row[k]) for k in ("reported_at", "received_at")}}
        store.client.insert(f"{store.database}.losses", [list(values.values())], column_names=list(values))


def _datetime(epoch: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
