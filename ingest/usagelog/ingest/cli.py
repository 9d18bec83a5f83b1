"""The ``usagelog`` command: ingest (spool or Kafka), replay, tail, timeline, query, audit, demo.

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
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from usagelog.instrumentation.config import DEFAULT_SPOOL_DIR, USAGELOG_SPOOL_DIR

from . import queries
from .output import FORMATS, render
from .settings import KafkaUnavailable, WorkerSettings, load_worker_settings
from .settings import SettingsError as WorkerSettingsError
from .spool_ingest import IngestStats, ingest_spool
from .store import DEFAULT_DATABASE, StoreError, connect, default_url, validate_url

USAGELOG_CLICKHOUSE_URL = "USAGELOG_CLICKHOUSE_URL"
USAGELOG_CLICKHOUSE_DATABASE = "USAGELOG_CLICKHOUSE_DATABASE"


@dataclass(frozen=True)
class CliSettings:
    clickhouse_url: str
    database: str
    spool_dir: str
    fmt: str


class SettingsError(ValueError):
    pass


def resolve_settings(args: argparse.Namespace) -> CliSettings:
    """Arguments > environment > defaults; every problem is reported at once."""
    url = args.clickhouse or os.environ.get(USAGELOG_CLICKHOUSE_URL) or default_url()
    database = args.database or os.environ.get(USAGELOG_CLICKHOUSE_DATABASE) or DEFAULT_DATABASE
    spool = getattr(args, "spool", None) or os.environ.get(USAGELOG_SPOOL_DIR) or DEFAULT_SPOOL_DIR
    problems = []
    problem = validate_url(url)
    if problem:
        source = "--clickhouse" if args.clickhouse else USAGELOG_CLICKHOUSE_URL
        problems.append(f"{source}: {problem}")
    if not database.replace("_", "").isalnum() or database[0].isdigit():
        source = "--database" if args.database else USAGELOG_CLICKHOUSE_DATABASE
        problems.append(f"{source}: {database!r} is not a valid database name")
    if problems:
        raise SettingsError("; ".join(problems))
    return CliSettings(url, database, spool, args.format)


def _print_progress(stats: IngestStats, total: int) -> None:
    print(
        f"\ringest: {stats.segments}/{total} segments, {stats.inserted} events stored, "
        f"{stats.duplicates} duplicates skipped, {stats.dead_letters} dead letters",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _worker_settings(settings: CliSettings, args: argparse.Namespace) -> WorkerSettings:
    try:
        return load_worker_settings(
            source=getattr(args, "source", None),
            clickhouse=settings.clickhouse_url,
            database=settings.database,
            worker_id=getattr(args, "worker_id", None),
        )
    except WorkerSettingsError as exc:
        raise SettingsError(str(exc)) from exc


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )


def cmd_ingest(settings: CliSettings, args: argparse.Namespace) -> int:
    if args.source:
        from .worker import run_worker

        _log_to_stderr()
        return run_worker(_worker_settings(settings, args), max_idle_seconds=args.max_idle)
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
    from .replay import replay

    if not args.since and not args.offsets:
        raise SettingsError("replay needs --since TIME or --offsets P:FIRST-LAST,...")
    _log_to_stderr()
    totals = replay(
        _worker_settings(settings, args), since=args.since, until=args.until, offsets=args.offsets
    )
    print(render(list(totals), [tuple(totals.values())], settings.fmt))
    return 0


def cmd_tail(settings: CliSettings, args: argparse.Namespace) -> int:
    from .tail import tail

    worker_settings = _worker_settings(settings, args)
    if args.source:
        from dataclasses import replace

        from .settings import parse_kafka_url

        # In `tail --from kafka://host:port/topic` the topic is the monitored one.
        topic = parse_kafka_url(args.source)[1]
        if topic:
            worker_settings = replace(worker_settings, monitored_topic=topic)
    tail(
        worker_settings,
        user=args.user,
        from_beginning=args.from_beginning,
        fmt="json" if settings.fmt == "json" else "table",
        max_events=args.max_events,
        timeout=args.timeout,
    )
    return 0


def cmd_timeline(settings: CliSettings, args: argparse.Namespace) -> int:
    with connect(settings.clickhouse_url, database=settings.database) as store:
        columns, rows = queries.timeline(store, args.user, args.limit)
    print(render(columns, rows, settings.fmt))
    return 0


def cmd_query(settings: CliSettings, args: argparse.Namespace) -> int:
    with connect(settings.clickhouse_url, database=settings.database) as store:
        columns, rows = store.query(args.sql)
    print(render(columns, rows, settings.fmt))
    return 0


def cmd_audit(settings: CliSettings, args: argparse.Namespace) -> int:
    with connect(settings.clickhouse_url, database=settings.database) as store:
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--clickhouse", help=f"ClickHouse URL (env {USAGELOG_CLICKHOUSE_URL})")
    common.add_argument(
        "--database", help=f"database name (env {USAGELOG_CLICKHOUSE_DATABASE}, default usagelog)"
    )
    common.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")

    parser = argparse.ArgumentParser(prog="usagelog", description="API usage logs: ingest and query.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="store spooled (or Kafka) events in ClickHouse")
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
        "replay", parents=[common], help="re-read a time or offset range of Kafka into ClickHouse"
    )
    p.add_argument(
        "--from", dest="source", help="kafka://host:port/topic (env USAGELOG_KAFKA_BROKERS/_TOPIC)"
    )
    p.add_argument("--since", help="ISO-8601 time (UTC unless stated) or epoch milliseconds")
    p.add_argument("--until", help="ISO-8601 time or epoch milliseconds (default: the end as of now)")
    p.add_argument("--offsets", help="partition:first-last,... instead of a time range (last may be empty)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("tail", parents=[common], help="follow monitored events live from Kafka")
    p.add_argument(
        "--from", dest="source", help="kafka://host:port[/monitored-topic] (env USAGELOG_KAFKA_BROKERS)"
    )
    p.add_argument("--user", help="only this user's events")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained event")
    p.add_argument("--max-events", type=int, default=0, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("timeline", parents=[common], help="one user's requests, in order")
    p.add_argument("user")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser("query", parents=[common], help="run a SQL query")
    p.add_argument("sql")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser(
        "audit", parents=[common], help="per instance: events, sequence gaps, duplicates, checksums"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any instance has a problem")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "demo", parents=[common], help="run the example API on three instances and show the log"
    )
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
    except (StoreError, KafkaUnavailable) as exc:
        print(f"usagelog: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Errors from ClickHouse (bad SQL, say) or Kafka (unreachable, unknown topic) are the
        # user's to read, not a traceback.
        if type(exc).__module__.startswith(("clickhouse_connect", "cimpl", "confluent_kafka")):
            print(f"usagelog: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
