"""``usagelog demo``: three instances of the example API under ``opentelemetry-instrument``,
simulated users, then ingest and a look at the result. Nothing but environment variables
turns usage logging on in the API processes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usagelog.process import Child, ProcessError, free_port

from .driver import drive, make_users

if TYPE_CHECKING:
    from usagelog.ingest.store import Store

# Each instance plays a different machine: host, cluster and region come from the environment.
INSTANCES = (
    {"host.name": "api-eu-west-a", "k8s.cluster.name": "prod-eu", "cloud.region": "eu-west-1"},
    {"host.name": "api-eu-central-a", "k8s.cluster.name": "prod-eu", "cloud.region": "eu-central-1"},
    {"host.name": "api-us-east-a", "k8s.cluster.name": "prod-us", "cloud.region": "us-east-1"},
)


def instrument_command() -> str:
    """The ``opentelemetry-instrument`` script of this Python environment."""
    candidate = Path(sys.executable).parent / "opentelemetry-instrument"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("opentelemetry-instrument")
    if not found:
        raise RuntimeError("opentelemetry-instrument is not installed in this environment")
    return found


__all__ = ["INSTANCES", "Instance", "free_port", "run_demo", "start_instances", "stop_instances"]


@dataclass
class Instance:
    port: int
    process: Child
    log_path: Path
    env: dict[str, str]


def start_instances(
    spool_dir: Path,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    count: int = 3,
    per_instance_env: list[dict[str, str]] | None = None,
) -> list[Instance]:
    """Start ``count`` API processes under opentelemetry-instrument, configured by env vars only."""
    log_dir.mkdir(parents=True, exist_ok=True)
    instances = []
    for i in range(count):
        attrs = INSTANCES[i % len(INSTANCES)]
        env = dict(os.environ)
        env.update(
            {
                "OTEL_SERVICE_NAME": "demo-api",
                "OTEL_RESOURCE_ATTRIBUTES": ",".join(f"{k}={v}" for k, v in attrs.items()),
                "OTEL_PYTHON_DISTRO": "usagelog",
                "OTEL_PYTHON_CONFIGURATOR": "usagelog",
                "USAGELOG_EXPORTER": "spool",
                "USAGELOG_SPOOL_DIR": str(spool_dir),
                "USAGELOG_USER_ID_FROM": "jwt:sub,basic,g:user",
                "USAGELOG_MONITOR": "user:carol,route:/admin/*",
                "USAGELOG_CAPTURE_BODY": "monitored",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env or {})
        if per_instance_env:
            env.update(per_instance_env[i])
        instances.append(_start_instance(i + 1, env, log_dir / f"api-{i + 1}.log"))
    return [_listening(number, instance) for number, instance in enumerate(instances, 1)]


PORT_ATTEMPTS = 5


def _listening(number: int, instance: Instance) -> Instance:
    """``instance`` once it listens. A port free when picked can be taken before the API binds it
    (another program's bind): the API exits, and starts again on a port picked anew."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            instance.process.wait_listening(instance.port, timeout=60.0)
            return instance
        except ProcessError as exc:
            if not exc.exited or "Address already in use" not in instance.process.log():
                raise
        instance = _start_instance(number, instance.env, instance.log_path)
    instance.process.wait_listening(instance.port, timeout=60.0)
    return instance


def _start_instance(number: int, env: dict[str, str], log_path: Path) -> Instance:
    port = free_port()
    process = Child.start(
        [instrument_command(), sys.executable, "-m", "usagelog.demo.app", "--port", str(port)],
        log=log_path,
        name=f"API instance {number}",
        env=env,
    )
    return Instance(port, process, log_path, env)


def stop_instances(instances: list[Instance], sig: int = signal.SIGTERM) -> None:
    """Signal them all first, so that they wind down side by side; SIGKILL after 30s."""
    for instance in instances:
        if instance.process.running():
            instance.process.send_signal(sig)
    for instance in instances:
        instance.process.stop(timeout=30, sig=None)


def run_demo(
    workdir: str, users: int, rounds: int, fmt: str = "table", url: str = "", database: str = "usagelog"
) -> int:
    """Run the demo; events land in ``url`` (the CLI passes the default embedded store)."""
    from usagelog.ingest import queries
    from usagelog.ingest.audit import COLUMNS as AUDIT_COLUMNS
    from usagelog.ingest.audit import summary
    from usagelog.ingest.output import render
    from usagelog.ingest.spool_ingest import ingest_spool
    from usagelog.ingest.store import connect

    base = Path(workdir).resolve()
    if base.exists():
        shutil.rmtree(base)
    spool_dir = base / "spool"
    url = url or "chdb://" + str(base / "chdb")
    # The report covers the demo's own events: from the minute it started (whole minutes, so
    # panels read from per-minute rollups see that first minute too) until it ends.
    since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")
    print(f"usagelog demo: starting 3 API instances (spool {spool_dir})", flush=True)
    instances = start_instances(spool_dir, base / "logs")
    try:
        people = make_users(users)
        print(
            f"usagelog demo: {len(people)} users x {rounds} rounds across ports "
            f"{', '.join(str(i.port) for i in instances)}",
            flush=True,
        )
        started = time.monotonic()
        drive([i.port for i in instances], people, rounds)
        sent = sum(len(u.sent) for u in people)
        print(f"usagelog demo: {sent} requests sent in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        stop_instances(instances)
    stats = ingest_spool(str(spool_dir), url, database)
    print(
        f"usagelog demo: ingested {stats.inserted} events from {stats.segments} spool segments "
        f"({stats.dead_letters} dead letters)\n",
        flush=True,
    )
    with connect(url, database=database) as store:
        for person in people[:3]:
            columns, rows = queries.timeline(store, person.name, limit=len(person.sent))
            keep = ["time", "instance", "seq", "method", "path", "status", "error_type", "ms", "region"]
            idx = [columns.index(c) for c in keep]
            short = [
                tuple(str(r[i])[:8] if c == "instance" else r[i] for i, c in zip(idx, keep, strict=True))
                for r in rows
            ]
            print(f"== timeline of {person.name} ({len(rows)} events)")
            print(render(keep, short, fmt), "\n")
        print("== error rates by route")
        print(render(*queries.error_rates(store), fmt), "\n")
        print("== monitored events")
        print(
            render(
                *store.query(
                    f"SELECT user_id, route, status_code, substring(request_body, 1, 60) AS request_body "
                    f"FROM {database}.usage_events FINAL WHERE monitored ORDER BY timestamp DESC LIMIT 8"
                ),
                fmt,
            ),
            "\n",
        )
        print("== audit")
        audited = queries.audit_instances(store)
        print(render(AUDIT_COLUMNS, [i.row() for i in audited], fmt))
        print(summary(audited))
        # Last, the picture of it all: the overview dashboard, as `usagelog report` writes it.
        # Until the end of this minute: the time filter counts whole seconds, and the last
        # requests were made in the second that is ending now.
        report = write_report(store, base, since, until="now/m")
    print(f"\nusagelog demo: overview dashboard written to {report}", flush=True)
    expected = sum(len(u.sent) for u in people)
    # The demo's own proof: every request stored, and audit finds nothing lost.
    ok = stats.inserted == expected and all(i.ok for i in audited)
    print(
        f"usagelog demo: {stats.inserted} of {expected} requests stored"
        f"{'' if ok else ' -- MISMATCH'}. Next: open {report.name}; usagelog timeline alice; "
        "usagelog audit; usagelog query 'SELECT ...'"
    )
    return 0 if ok else 1


REPORT_NAME = "report-overview.html"


def write_report(store: Store, directory: Path, since: str = "now-1h", until: str = "now") -> Path:
    """The overview dashboard from ``since`` to ``until`` as one self-contained HTML file (Plotly
    inline, no server, no network): the page ``usagelog report --dashboard overview`` writes."""
    from usagelog.dashboards.model import find_dashboard, load_dashboards
    from usagelog.dashboards.serve import render_dashboard

    dashboard = find_dashboard("overview")
    page = render_dashboard(
        store,
        dashboard,
        served=False,
        dashboards=list(load_dashboards().values()),
        time_from=since,
        time_to=until,
    )
    path = directory / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path
