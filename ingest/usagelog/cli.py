"""The ``usagelog`` command: ingest (spool or Kafka), replay, tail; timeline, top, export, query,
audit; the dashboards offline (serve, report) and the alert rules without Grafana; the demo.

Options fall back to environment variables, then defaults:

- ``--clickhouse`` / ``USAGELOG_CLICKHOUSE_URL``: ``chdb:///path`` (default ``chdb://<cwd>/.usagelog/chdb``)
  or ``http(s)://user:password@host:port``;
- ``--database`` / ``USAGELOG_CLICKHOUSE_DATABASE``: default ``usagelog``;
- ``--spool`` / ``USAGELOG_SPOOL_DIR``: default ``.usagelog/spool``;
- ``--format``: ``table`` (default), ``json`` or ``csv``.

Exit status: 0 on success, 1 when the operation failed (message on stderr), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from usagelog.ingest import queries
from usagelog.ingest.errors import SettingsError, UsagelogError, kafka_errors
from usagelog.ingest.output import FORMATS, render
from usagelog.ingest.settings import Settings, WorkerSettings, load_settings
from usagelog.ingest.spool_ingest import IngestStats, ingest_spool
from usagelog.ingest.store import connect
from usagelog.instrumentation.config import DEFAULT_SPOOL_DIR, USAGELOG_SPOOL_DIR

USAGELOG_CLICKHOUSE_URL = "USAGELOG_CLICKHOUSE_URL"
USAGELOG_CLICKHOUSE_DATABASE = "USAGELOG_CLICKHOUSE_DATABASE"
CliSettings = Settings


def resolve_settings(args: argparse.Namespace) -> CliSettings:
    """Arguments > environment > defaults; every problem is reported at once."""
    kafka = args.func in (cmd_replay, cmd_tail) or (args.func is cmd_ingest and args.source)
    return load_settings(
        clickhouse=args.clickhouse,
        database=args.database,
        spool=getattr(args, "spool", None),
        fmt=args.format,
        retention=args.func is cmd_ingest,
        kafka=bool(kafka),
        source=getattr(args, "source", None),
        monitored=args.func is cmd_tail,
        worker_id=getattr(args, "worker_id", None),
    )


def _print_progress(stats: IngestStats, total: int) -> None:
    print(
        f"\ringest: {stats.segments}/{total} segments, {stats.inserted} events stored, "
        f"{stats.duplicates} duplicates skipped, {stats.dead_letters} dead letters",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _worker_settings(settings: CliSettings, args: argparse.Namespace) -> WorkerSettings:
    assert settings.worker is not None
    return settings.worker


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )


def _retention(settings: CliSettings) -> None:
    """Apply USAGELOG_RETENTION_* before ingesting (read, and checked, with the other settings)."""
    from usagelog.ingest.retention import apply_retention

    with _connect(settings) as store:
        for table, ttl in apply_retention(store, days=settings.retention).items():
            print(f"usagelog: retention of {table} set to {ttl}", file=sys.stderr)


def _connect(settings: CliSettings) -> Any:
    return connect(settings.clickhouse_url, database=settings.database, wait=settings.wait_seconds)


def cmd_ingest(settings: CliSettings, args: argparse.Namespace) -> int:
    if args.source:
        from usagelog.ingest.worker import run_worker

        _log_to_stderr()
        worker_settings = _worker_settings(settings, args)
        _retention(settings)
        return run_worker(worker_settings, max_idle_seconds=args.max_idle)
    _retention(settings)
    started = time.monotonic()
    stats = ingest_spool(settings.spool_dir, settings.clickhouse_url, settings.database, _print_progress)
    if stats.segments:
        print(file=sys.stderr)
    elapsed = time.monotonic() - started
    columns = ["segments", "events", "stored", "duplicates_skipped", "dead_letters", "seconds"]
    row = (
        stats.segments,
        stats.events,
        stats.inserted,
        stats.duplicates,
        stats.dead_letters,
        round(elapsed, 2),
    )
    print(render(columns, [row], settings.fmt))
    return 0


def cmd_replay(settings: CliSettings, args: argparse.Namespace) -> int:
    from usagelog.ingest.replay import replay

    if not args.since and not args.offsets:
        raise SettingsError("replay needs --since TIME or --offsets P:FIRST-LAST,...")
    _log_to_stderr()
    totals = replay(
        _worker_settings(settings, args), since=args.since, until=args.until, offsets=args.offsets
    )
    print(render(list(totals), [tuple(totals.values())], settings.fmt))
    return 0


def cmd_tail(settings: CliSettings, args: argparse.Namespace) -> int:
    from usagelog.ingest.tail import tail

    worker_settings = _worker_settings(settings, args)
    with kafka_errors(worker_settings.brokers):
        tail(
            worker_settings,
            user=args.user,
            from_beginning=args.from_beginning,
            fmt="json" if settings.fmt == "json" else "table",
            max_events=args.max_events,
            timeout=args.timeout,
        )
    return 0


def _filters(args: argparse.Namespace, default_since: str | None = None, **fields: Any) -> queries.Filters:
    from usagelog.ingest.timerange import time_range

    since = getattr(args, "since", None) or default_since
    until = getattr(args, "until", None) or "now"
    try:
        start, end = time_range(since, until) if since else (None, time_range("100y", until)[1])
        if getattr(args, "status", None):
            queries.parse_status(args.status)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    return queries.Filters(start, end, status=getattr(args, "status", None), **fields)


def cmd_timeline(settings: CliSettings, args: argparse.Namespace) -> int:
    filters = _filters(args, route=args.route)
    with _connect(settings) as store:
        columns, rows = queries.timeline(store, args.user, args.limit, filters)
    print(render(columns, rows, settings.fmt))
    return 0


def cmd_top(settings: CliSettings, args: argparse.Namespace) -> int:
    filters = _filters(args, "24h")
    with _connect(settings) as store:
        columns, rows = queries.top(store, args.what, filters, args.limit)
    print(render(columns, rows, settings.fmt))
    return 0


def cmd_export(settings: CliSettings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from usagelog.ingest.export import export_events

    filters = _filters(args, user=args.user, route=args.route)
    started = time.monotonic()
    shown: list[int] = []

    def progress(written: int, total: int) -> None:
        rate = written / max(time.monotonic() - started, 1e-6)
        print(f"\rexport: {written}/{total} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
        shown.append(written)

    with _connect(settings) as store:
        try:
            written = export_events(store, filters, args.file_format, Path(args.out), progress)
        except OSError as exc:
            # A directory given as --out, a full disk, no permission: the user's to fix, so a
            # message, not a traceback (the partial file is already gone).
            if shown:
                print(file=sys.stderr)  # end the progress line
            print(f"usagelog: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
    if written:
        print(file=sys.stderr)
    print(f"usagelog: {written} events written to {args.out} ({args.file_format})", file=sys.stderr)
    return 0


def _grafana_dir(args: argparse.Namespace) -> Any:
    from pathlib import Path

    return Path(args.grafana_dir) if getattr(args, "grafana_dir", None) else None


def cmd_dashboards(settings: CliSettings, args: argparse.Namespace) -> int:
    from usagelog.dashboards.model import load_dashboards

    if args.action == "list":
        dashboards = load_dashboards(_grafana_dir(args))
        rows = [
            (
                name,
                d.uid,
                d.title,
                sum(1 for p in d.panels if p.type != "row"),
                ", ".join(v.name for v in d.variables),
            )
            for name, d in dashboards.items()
        ]
        print(render(["name", "uid", "title", "panels", "variables"], rows, settings.fmt))
        return 0
    from usagelog.dashboards.serve import serve

    with _connect(settings):
        pass  # the schema exists before the first page asks for it
    server = serve(settings.clickhouse_url, settings.database, args.host, args.port, _grafana_dir(args))
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(
        f"usagelog: dashboards on http://{host}:{port}/ (read-only; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _variables(pairs: Sequence[str] | None) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SettingsError(f"--var {pair!r}: expected name=value")
        chosen.setdefault(name.strip(), []).append(value)
    return chosen


def cmd_report(settings: CliSettings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from usagelog.dashboards.model import find_dashboard, load_dashboards
    from usagelog.dashboards.serve import render_dashboard
    from usagelog.ingest.timerange import parse_since

    directory = _grafana_dir(args)
    dashboard = find_dashboard(args.dashboard, directory)
    with _connect(settings) as store:
        page = render_dashboard(
            store,
            dashboard,
            served=False,
            dashboards=list(load_dashboards(directory).values()),
            time_from=parse_since(args.since) if args.since else None,
            time_to=parse_since(args.until) if args.until else None,
            chosen=_variables(args.var),
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"usagelog: {dashboard.title} written to {out}", file=sys.stderr)
    return 0


def cmd_alerts(settings: CliSettings, args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from usagelog.dashboards import alerts
    from usagelog.ingest.timerange import parse_since, parse_time

    rules = alerts.load_rules(_grafana_dir(args))
    if args.rule:
        unknown = set(args.rule) - {r.uid for r in rules}
        if unknown:
            raise SettingsError(
                f"--rule: no rule {sorted(unknown)[0]!r}; rules are {', '.join(r.uid for r in rules)}"
            )
        rules = [r for r in rules if r.uid in args.rule]
    now = dt.datetime.now(dt.timezone.utc)
    try:
        at = parse_time(parse_since(args.at), now) if args.at else now
        since = parse_time(parse_since(args.since), at) if args.since else None
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    with _connect(settings) as store:
        from usagelog.dashboards.serve import ReadOnlyStore

        instances = alerts.check(ReadOnlyStore(store), rules, at, since)
    if settings.fmt == "json":
        print(json.dumps([i.as_dict() for i in instances], indent=1, ensure_ascii=False))
    else:
        rows = [
            (
                i.rule.uid,
                i.state,
                " ".join(f"{k}={v}" for k, v in sorted(i.labels.items())),
                "" if i.value is None else round(i.value, 3),
                i.active_since or i.at,
                i.error or i.summary,
            )
            for i in instances
        ]
        print(
            render(["rule", "state", "labels", "value", "since", "summary"], rows, settings.fmt, max_width=80)
        )
    firing = [i for i in instances if i.state in ("firing", "nodata", "error")]
    if args.webhook and any(i.state == "firing" for i in instances):
        try:
            status = alerts.post_webhook(args.webhook, alerts.webhook_payload(instances))
        except OSError as exc:
            print(f"usagelog: webhook {args.webhook} failed: {exc}", file=sys.stderr)
            return 1
        posted = sum(i.state == "firing" for i in instances)
        print(f"usagelog: posted {posted} alerts to the webhook ({status})", file=sys.stderr)
    evaluated = f"{len(rules)} rules at {at:%Y-%m-%d %H:%M:%S} UTC" + (
        f" since {since:%Y-%m-%d %H:%M}" if since else ""
    )
    print(f"usagelog: {len(firing)} alerting of {evaluated}", file=sys.stderr)
    return 1 if firing else 0


def cmd_query(settings: CliSettings, args: argparse.Namespace) -> int:
    with _connect(settings) as store:
        columns, rows = store.query(args.sql)
    print(render(columns, rows, settings.fmt))
    return 0


def cmd_rollups(settings: CliSettings, args: argparse.Namespace) -> int:
    from usagelog.ingest import rollup

    started = time.monotonic()
    with _connect(settings) as store:
        minutes = rollup.rebuild(store)
    print(
        render(["minutes", "seconds"], [(minutes, round(time.monotonic() - started, 2))], settings.fmt),
    )
    return 0


def cmd_audit(settings: CliSettings, args: argparse.Namespace) -> int:
    with _connect(settings) as store:
        columns, rows = queries.audit(store)
    print(render(columns, rows, settings.fmt))
    bad = sum(
        1 for row in rows if any(row[columns.index(c)] for c in ("gaps", "duplicates", "checksum_failures"))
    )
    return 1 if bad and args.strict else 0


def cmd_demo(settings: CliSettings, args: argparse.Namespace) -> int:
    from usagelog.demo.run import run_demo

    return run_demo(
        workdir=args.dir,
        users=args.users,
        rounds=args.rounds,
        fmt=settings.fmt,
        url=settings.clickhouse_url,
        database=settings.database,
    )


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--clickhouse", help=f"ClickHouse URL (env {USAGELOG_CLICKHOUSE_URL})")
    connection.add_argument(
        "--database", help=f"database name (env {USAGELOG_CLICKHOUSE_DATABASE}, default usagelog)"
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    common = [connection, output]
    span = argparse.ArgumentParser(add_help=False)
    span.add_argument("--since", help="start: 24h, 7d (back from now), now-1h, ISO-8601 or epoch ms")
    span.add_argument("--until", help="end (default now)")
    grafana = argparse.ArgumentParser(add_help=False)
    grafana.add_argument(
        "--grafana-dir", help="the grafana/ folder (env USAGELOG_GRAFANA_DIR; default: shipped)"
    )

    parser = argparse.ArgumentParser(prog="usagelog", description="API usage logs: ingest and query.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=common, help="store spooled (or Kafka) events in ClickHouse")
    p.add_argument("--spool", help=f"spool directory (env {USAGELOG_SPOOL_DIR}, default {DEFAULT_SPOOL_DIR})")
    p.add_argument(
        "--from", dest="source", help="kafka://host:port[,host:port]/topic: run as a consumer-group worker"
    )
    p.add_argument("--worker-id", help="worker name (env USAGELOG_WORKER_ID, default <host>-<pid>)")
    p.add_argument(
        "--max-idle",
        type=float,
        default=0.0,
        help="with --from: exit after this many seconds without messages (default: run until stopped)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "replay", parents=common, help="re-read a time or offset range of Kafka into ClickHouse"
    )
    p.add_argument(
        "--from", dest="source", help="kafka://host:port/topic (env USAGELOG_KAFKA_BROKERS/_TOPIC)"
    )
    p.add_argument("--since", help="ISO-8601 time (UTC unless stated) or epoch milliseconds")
    p.add_argument("--until", help="ISO-8601 time or epoch milliseconds (default: the end as of now)")
    p.add_argument("--offsets", help="partition:first-last,... instead of a time range (last may be empty)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("tail", parents=common, help="follow monitored events live from Kafka")
    p.add_argument(
        "--from", dest="source", help="kafka://host:port[/monitored-topic] (env USAGELOG_KAFKA_BROKERS)"
    )
    p.add_argument("--user", help="only this user's events")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained event")
    p.add_argument("--max-events", type=int, default=0, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("timeline", parents=[*common, span], help="one user's requests, in order")
    p.add_argument("user")
    p.add_argument("--route", help="only this route (as declared, e.g. /api/items/<int:item_id>)")
    p.add_argument("--status", help="only this status: 404, 5xx or 400-499")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser(
        "top", parents=[*common, span], help="the busiest users or routes, the commonest errors"
    )
    p.add_argument("what", choices=queries.TOP)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_top, since="24h")

    p = sub.add_parser(
        "export", parents=[connection, span], help="stored events to a Parquet, CSV or JSON-lines file"
    )
    p.add_argument("--user", help="only this user's events")
    p.add_argument("--route", help="only this route")
    p.add_argument("--status", help="only this status: 404, 5xx or 400-499")
    p.add_argument("--format", dest="file_format", choices=("parquet", "csv", "jsonl"), default="parquet")
    p.add_argument("--out", required=True, help="the file to write")
    p.set_defaults(func=cmd_export, format="table")

    p = sub.add_parser("query", parents=common, help="run a SQL query")
    p.add_argument("sql")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser(
        "audit", parents=common, help="per instance: events, sequence gaps, duplicates, checksums"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any instance has a problem")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "dashboards", parents=[*common, grafana], help="the Grafana dashboards without Grafana"
    )
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("serve", parents=[*common, grafana], help="a read-only local web page")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=3001, help="port (default 3001; 0 picks a free one)")
    a.set_defaults(func=cmd_dashboards)
    a = actions.add_parser("list", parents=[*common, grafana], help="the dashboards and their panels")
    a.set_defaults(func=cmd_dashboards)

    p = sub.add_parser(
        "report", parents=[*common, span, grafana], help="one dashboard as a self-contained HTML file"
    )
    p.add_argument("--dashboard", default="overview", help="name, uid or title (default overview)")
    p.add_argument("--var", action="append", help="a dashboard variable: name=value (repeat for several)")
    p.add_argument("--out", default="report.html", help="the file to write (default report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("alerts", parents=[*common, grafana], help="the alert rules without Grafana")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser(
        "check", parents=[*common, grafana], help="evaluate every rule; exit 1 when one fires"
    )
    a.add_argument("--since", help="also evaluate at every interval since then (24h, 1h, ISO-8601)")
    a.add_argument("--at", help="evaluate as of this time instead of now")
    a.add_argument("--rule", action="append", help="only this rule uid (repeat for several)")
    a.add_argument("--webhook", help="POST firing alerts here (Grafana/Alertmanager webhook payload)")
    a.set_defaults(func=cmd_alerts)

    p = sub.add_parser("rollups", parents=common, help="the per-minute and per-hour rollups")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser(
        "rebuild", parents=common, help="recompute every stored minute and hour (after a restore, say)"
    )
    a.set_defaults(func=cmd_rollups)

    p = sub.add_parser("demo", parents=common, help="run the example API on three instances and show the log")
    p.add_argument("--dir", default=".usagelog/demo", help="working directory (default .usagelog/demo)")
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3, help="passes of each user's request script")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve_settings(args)
        return int(args.func(settings, args))
    except SettingsError as exc:
        print(f"usagelog: {exc}", file=sys.stderr)
        return 2
    except UsagelogError as exc:
        # ClickHouse refused or unreachable, Kafka unreachable, a dashboard file: one line.
        print(f"usagelog: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
