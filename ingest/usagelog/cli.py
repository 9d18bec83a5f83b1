"""The ``usagelog`` command: ingest (spool or Kafka), replay, tail; timeline, top, export, query,
audit; the dashboards offline (serve, report) and the alert rules without Grafana; the demo.

Options fall back to environment variables, then defaults; :mod:`usagelog.ingest.settings`
resolves and checks them all, for every command the same way:

- ``--clickhouse`` / ``USAGELOG_CLICKHOUSE_URL``: ``chdb:///path`` (default ``chdb://<cwd>/.usagelog/chdb``)
  or ``http(s)://user:password@host:port``;
- ``--database`` / ``USAGELOG_CLICKHOUSE_DATABASE``: default ``usagelog``;
- ``--spool`` / ``USAGELOG_SPOOL_DIR``: default ``.usagelog/spool``;
- ``--format``: ``table`` (default), ``json`` or ``csv``.

An option's variable is declared with the option (``envvar=``, shown by ``--help``) but read by
the settings module, which names it in any problem; click only hands over what was typed.

Exit status: 0 on success, 1 when the operation failed (one line on stderr: any
:class:`~usagelog.ingest.errors.UsagelogError`), 2 on bad usage or settings, 130 on Ctrl-C.
``alerts check`` also exits 1 when a rule fires, ``audit`` when it finds any loss (``--exit-zero``
reports without failing).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from usagelog.ingest import queries
from usagelog.ingest.errors import SettingsError, UsagelogError
from usagelog.ingest.output import FORMATS, dumps, escape_text, render
from usagelog.ingest.redact import redact, redact_url
from usagelog.ingest.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

ENV_CLICKHOUSE_URL = "USAGELOG_CLICKHOUSE_URL"
ENV_CLICKHOUSE_DATABASE = "USAGELOG_CLICKHOUSE_DATABASE"
ENV_SPOOL_DIR = "USAGELOG_SPOOL_DIR"
ENV_WORKER_ID = "USAGELOG_WORKER_ID"
ENV_ARCHIVE_URL = "USAGELOG_ARCHIVE_URL"
ENV_GRAFANA_DIR = "USAGELOG_GRAFANA_DIR"


# -- options shared by several commands ----------------------------------------------------------


# Decorators apply bottom-up: the option added last is listed first in --help.


def _connection(f: F) -> F:
    f = click.option(
        "--database",
        metavar="NAME",
        envvar=ENV_CLICKHOUSE_DATABASE,
        show_envvar=True,
        help="database name (default usagelog)",
    )(f)
    return click.option(
        "--clickhouse", metavar="URL", envvar=ENV_CLICKHOUSE_URL, show_envvar=True, help="ClickHouse URL"
    )(f)


def _output(f: F) -> F:
    return click.option(
        "--format", type=click.Choice(FORMATS), default="table", help="output format (default table)"
    )(f)


def _common(f: F) -> F:
    return _connection(_output(f))


def _span(f: F) -> F:
    f = click.option("--until", help="end (default now)")(f)
    return click.option("--since", help="start: 24h, 7d (back from now), now-1h, ISO-8601 or epoch ms")(f)


def _grafana(f: F) -> F:
    return click.option(
        "--grafana-dir",
        metavar="DIR",
        envvar=ENV_GRAFANA_DIR,
        show_envvar=True,
        help="the grafana/ folder (default: shipped)",
    )(f)


def _given(ctx: click.Context, name: str) -> Any:
    """What the user typed for option ``name`` — here, or before the subcommand (``usagelog
    dashboards --format json list``) — else None: the environment and the defaults are the
    settings module's to read, so that its messages name the variable."""
    at: click.Context | None = ctx
    while at is not None:
        if at.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            return at.params[name]
        at = at.parent
    return None


def _settings(ctx: click.Context, **kwargs: Any) -> Settings:
    return load_settings(
        clickhouse=_given(ctx, "clickhouse"),
        database=_given(ctx, "database"),
        fmt=_given(ctx, "format") or "table",
        **kwargs,
    )


def _connect(settings: Settings) -> Any:
    from usagelog.ingest.store import connect

    return connect(settings.clickhouse_url, database=settings.database, wait=settings.wait_seconds)


def _grafana_dir(ctx: click.Context) -> Any:
    from pathlib import Path

    given = _given(ctx, "grafana_dir")
    return Path(given) if given else None


def _filters(
    since: str | None, until: str | None, status: str | None = None, **fields: Any
) -> queries.Filters:
    from usagelog.ingest.timerange import time_range

    try:
        start, end = (
            time_range(since, until or "now") if since else (None, time_range("100y", until or "now")[1])
        )
        if status:
            queries.parse_status(status)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    return queries.Filters(start, end, status=status, **fields)


def _log_to_stderr() -> None:
    import logging

    class Redacting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Redacting("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


# -- the commands --------------------------------------------------------------------------------


class _Group(click.Group):
    """Lists its commands in the order they are declared (the pipeline's), not alphabetically."""

    group_class = type  # subgroups are _Group too

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Group, help="API usage logs: ingest and query.")
def cli() -> None:
    pass


# The same sentence in the command list and atop the command's own help.
def _command(group: click.Group, name: str, text: str) -> Callable[[F], click.Command]:
    return group.command(name, help=text, short_help=text)


def _group(group: click.Group, name: str, text: str) -> Callable[[F], click.Group]:
    return group.group(name, help=text, short_help=text)


@_command(cli, "ingest", "store spooled (or Kafka) events in ClickHouse")
@_common
@click.option(
    "--spool",
    metavar="DIR",
    envvar=ENV_SPOOL_DIR,
    show_envvar=True,
    help="spool directory (default .usagelog/spool)",
)
@click.option(
    "--from",
    "source",
    metavar="URL",
    help="kafka://host:port[,host:port]/topic: run as a consumer-group worker",
)
@click.option(
    "--worker-id",
    envvar=ENV_WORKER_ID,
    show_envvar=True,
    help="names the archive staging folder and files (default <host>-<pid>)",
)
@click.option(
    "--archive",
    metavar="URL",
    envvar=ENV_ARCHIVE_URL,
    show_envvar=True,
    help="archive stored events as files here: a directory or s3://... (default: from the spool "
    "none, with --from .usagelog/archive; none turns it off)",
)
@click.option(
    "--follow",
    is_flag=True,
    help="from the spool: keep storing segments as they are sealed, until SIGTERM or Ctrl-C",
)
@click.option(
    "--max-idle",
    type=float,
    default=0.0,
    help="with --from: exit after this many seconds without messages (default: run until stopped); "
    "exit 1 if no broker answered by then",
)
@click.pass_context
def ingest(ctx: click.Context, /, source: str | None, max_idle: float, follow: bool, **_: Any) -> int:
    settings = _settings(
        ctx,
        spool=_given(ctx, "spool"),
        retention=True,
        kafka=bool(source),
        source=source,
        worker_id=_given(ctx, "worker_id"),
        archiving=True,
        archive=_given(ctx, "archive"),
    )
    if settings.worker is not None:
        from usagelog.ingest.worker import run_worker

        _log_to_stderr()
        _apply_retention(settings)
        return run_worker(settings.worker, max_idle_seconds=max_idle)
    if follow:
        return _follow_spool(settings)
    from usagelog.ingest.settings import load_spool_group_bytes
    from usagelog.ingest.spool_ingest import IngestStats, ingest_spool

    def progress(stats: IngestStats, total: int) -> None:
        print(
            f"\ringest: {stats.segments}/{total} segments, {stats.inserted} events stored, "
            f"{stats.duplicates} duplicates skipped, {stats.dead_letters} dead letters",
            end="",
            file=sys.stderr,
            flush=True,
        )

    group_bytes = load_spool_group_bytes()
    _apply_retention(settings)
    started = time.monotonic()
    stats = ingest_spool(
        settings.spool_dir,
        settings.clickhouse_url,
        settings.database,
        progress,
        archive=settings.archive,
        group_bytes=group_bytes,
    )
    if stats.segments:
        print(file=sys.stderr)
    for url in stats.archived or []:
        print(f"usagelog: archived {redact_url(url)}", file=sys.stderr)
    elapsed = time.monotonic() - started
    columns = [
        "segments", "events", "stored", "duplicates_skipped", "monitored", "dead_letters", "loss_reports",
        "seconds",
    ]  # fmt: skip
    row = (
        stats.segments,
        stats.events,
        stats.inserted,
        stats.duplicates,
        stats.monitored,
        stats.dead_letters,
        stats.losses,
        round(elapsed, 2),
    )
    print(render(columns, [row], settings.fmt))
    return 0


def _follow_spool(settings: Settings) -> int:
    """``usagelog ingest --spool --follow``: store segments as they are sealed until stopped;
    past ``USAGELOG_WORKER_MAX_MEMORY_MB`` start afresh in place, as the workers do."""
    import signal

    from usagelog.ingest.recycle import accept_stop_signals, reexecute
    from usagelog.ingest.settings import load_max_memory_mb, load_spool_group_bytes
    from usagelog.ingest.spool_ingest import follow_spool

    bound = load_max_memory_mb()
    group_bytes = load_spool_group_bytes()
    stop: list[bool] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    accept_stop_signals()  # blocked across a restart in place: handled now
    _apply_retention(settings)
    print(f"usagelog: following the spool {settings.spool_dir}", file=sys.stderr, flush=True)
    stats, over = follow_spool(
        settings.spool_dir,
        settings.clickhouse_url,
        settings.database,
        lambda: bool(stop),
        archive=settings.archive,
        max_memory_mb=bound,
        group_bytes=group_bytes,
    )
    for url in stats.archived or []:
        print(f"usagelog: archived {redact_url(url)}", file=sys.stderr)
    if over:
        print(
            f"usagelog: {stats.inserted} events stored; past USAGELOG_WORKER_MAX_MEMORY_MB={bound}: "
            "restarting in place",
            file=sys.stderr,
            flush=True,
        )
        reexecute(lambda: bool(stop))
    print(f"usagelog: stopped following; {stats.inserted} events stored", file=sys.stderr)
    return 0


def _apply_retention(settings: Settings) -> None:
    """USAGELOG_RETENTION_* (read and checked with the other settings) before ingesting."""
    from usagelog.ingest.retention import apply_retention

    with _connect(settings) as store:
        for table, ttl in apply_retention(store, days=settings.retention).items():
            print(f"usagelog: retention of {table} set to {ttl}", file=sys.stderr)


@_command(cli, "replay", "re-read a time or offset range of Kafka into ClickHouse")
@_common
@click.option(
    "--from", "source", metavar="URL", help="kafka://host:port/topic (env USAGELOG_KAFKA_BROKERS/_TOPIC)"
)
@click.option("--since", help="ISO-8601 time (UTC unless stated) or epoch milliseconds")
@click.option("--until", help="ISO-8601 time or epoch milliseconds (default: the end as of now)")
@click.option("--offsets", help="partition:first-last,... instead of a time range (last may be empty)")
@click.pass_context
def replay(
    ctx: click.Context,
    /,
    source: str | None,
    since: str | None,
    until: str | None,
    offsets: str | None,
    **_: Any,
) -> int:
    from usagelog.ingest.replay import replay as replay_range

    settings = _settings(ctx, kafka=True, source=source)
    if not since and not offsets:
        raise SettingsError("replay needs --since TIME or --offsets P:FIRST-LAST,...")
    assert settings.worker is not None
    _log_to_stderr()

    def progress(totals: dict[str, int], remaining: int) -> None:
        print(
            f"\rreplay: {totals['messages']} messages read, {totals['stored']} events stored, "
            f"{totals['duplicates']} already there, {remaining} messages to go",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        totals = replay_range(settings.worker, since=since, until=until, offsets=offsets, progress=progress)
    finally:
        print(file=sys.stderr)  # end the progress line
    print(render(list(totals), [tuple(totals.values())], settings.fmt))
    return 0


@_command(cli, "tail", "follow monitored events live from Kafka")
@_common
@click.option(
    "--from", "source", metavar="URL", help="kafka://host:port[/monitored-topic] (env USAGELOG_KAFKA_BROKERS)"
)
@click.option("--user", help="only this user's events")
@click.option("--from-beginning", is_flag=True, help="start at the oldest retained event")
@click.option("--max-events", type=int, default=0, help="exit after this many events")
@click.option(
    "--timeout",
    type=float,
    default=0.0,
    help="exit after this many seconds (a broker that does not answer within 10s is an error, exit 1)",
)
@click.pass_context
def tail(
    ctx: click.Context,
    /,
    source: str | None,
    user: str | None,
    from_beginning: bool,
    max_events: int,
    timeout: float,
    **_: Any,
) -> int:
    from usagelog.ingest.errors import kafka_errors
    from usagelog.ingest.tail import tail as follow

    settings = _settings(ctx, kafka=True, source=source, monitored=True)
    assert settings.worker is not None
    with kafka_errors(settings.worker.brokers):
        follow(
            settings.worker,
            user=user,
            from_beginning=from_beginning,
            fmt="json" if settings.fmt == "json" else "table",
            max_events=max_events,
            timeout=timeout,
        )
    return 0


@_command(cli, "timeline", "one user's requests, in order")
@_common
@_span
@click.argument("user")
@click.option("--route", help="only this route (as declared, e.g. /api/items/<int:item_id>)")
@click.option("--status", help="only this status: 404, 5xx or 400-499")
@click.option("--limit", type=int, default=0)
@click.pass_context
def timeline(
    ctx: click.Context,
    /,
    user: str,
    since: str | None,
    until: str | None,
    route: str | None,
    status: str | None,
    limit: int,
    **_: Any,
) -> int:
    settings = _settings(ctx)
    filters = _filters(since, until, status, route=route)
    with _connect(settings) as store:
        columns, rows = queries.timeline(store, user, limit, filters)
    print(render(columns, rows, settings.fmt))
    return 0


@_command(cli, "top", "the busiest users or routes, the commonest errors")
@_common
@_span
@click.argument("what", type=click.Choice(queries.TOP))
@click.option("--limit", type=int, default=20)
@click.pass_context
def top(ctx: click.Context, /, what: str, since: str | None, until: str | None, limit: int, **_: Any) -> int:
    settings = _settings(ctx)
    filters = _filters(since or "24h", until)
    with _connect(settings) as store:
        columns, rows = queries.top(store, what, filters, limit)
    print(render(columns, rows, settings.fmt))
    return 0


@_command(cli, "export", "stored events to a Parquet, CSV or JSON-lines file")
@_connection
@_span
@click.option("--user", help="only this user's events")
@click.option("--route", help="only this route")
@click.option("--status", help="only this status: 404, 5xx or 400-499")
@click.option("--format", "file_format", type=click.Choice(("parquet", "csv", "jsonl")), default="parquet")
@click.option("--out", required=True, help="the file to write")
@click.pass_context
def export(
    ctx: click.Context,
    /,
    since: str | None,
    until: str | None,
    user: str | None,
    route: str | None,
    status: str | None,
    file_format: str,
    out: str,
    **_: Any,
) -> int:
    from pathlib import Path

    from usagelog.ingest.export import export_events

    settings = _settings(ctx)
    filters = _filters(since, until, status, user=user, route=route)
    started = time.monotonic()
    shown: list[int] = []

    def progress(written: int, total: int) -> None:
        rate = written / max(time.monotonic() - started, 1e-6)
        print(f"\rexport: {written}/{total} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
        shown.append(written)

    with _connect(settings) as store:
        try:
            written = export_events(store, filters, file_format, Path(out), progress)
        except OSError as exc:
            # A directory given as --out, a full disk, no permission: the user's to fix, so a
            # message, not a traceback (the partial file is already gone).
            if shown:
                print(file=sys.stderr)  # end the progress line
            print(f"usagelog: cannot write {out}: {exc}", file=sys.stderr)
            return 1
    if written:
        print(file=sys.stderr)
    print(f"usagelog: {written} events written to {out} ({file_format})", file=sys.stderr)
    return 0


_QUERY_TEXT = "run a SQL query (read-only unless --write)"


@cli.command(
    "query",
    short_help=_QUERY_TEXT,
    help=f"""{_QUERY_TEXT}.

    Read-only by default: the engine runs the statement with readonly=1, which refuses DROP,
    TRUNCATE, ALTER, INSERT, CREATE, changing settings (SET, a SETTINGS clause) and the table
    functions that reach outside the store (file(), url(), s3(), remote()); on chDB one
    statement at a time and no INTO OUTFILE. --write lifts all of that.
    """,
)
@_common
@click.argument("sql")
@click.option(
    "--write",
    is_flag=True,
    help="let the statement change the store, change settings or read and write files",
)
@click.pass_context
def query(ctx: click.Context, /, sql: str, write: bool, **_: Any) -> int:
    from usagelog.ingest.readonly import ReadOnlyStore

    settings = _settings(ctx)
    with _connect(settings) as store:
        if not write:
            store = ReadOnlyStore(store)
            store.check_statement(sql)
        columns, rows = store.query(sql)
    print(render(columns, rows, settings.fmt))
    return 0


AUDIT_HELP = """Per instance: events stored and events lost, and where.

\b
Lost events are found four ways:
- gaps: sequence numbers missing between 1 and the highest stored;
- tail loss: the highest sequence number the instance reported allocating,
  above the highest stored (what a killed process never handed over);
- loss reports: events the instance counted as dropped or unwritable (table losses);
- dead letters: damaged or torn spool frames (segment@offset), undecodable
  messages, events failing their checksum.

\b
Printed per instance: lost, gaps, tail_lost, reported_lost, dead_letters,
duplicates, checksum_failures and the first missing ranges; then the loss
reports and dead letters found. --format json gives the same per instance,
with the ranges, reports and dead letters as lists.

Exit status 1 when anything is lost, dead-lettered, stored twice or fails its checksum (so cron
or CI can run it as is); --exit-zero reports without failing.
"""


@cli.command("audit", help=AUDIT_HELP, short_help="per instance: events lost and where; exit 1 on any loss")
@_common
@click.option("--exit-zero", is_flag=True, help="exit 0 even when a loss is found (report only)")
@click.option("--strict", is_flag=True, help="exit 1 on any loss (the default; kept for older scripts)")
@click.pass_context
def audit(ctx: click.Context, /, exit_zero: bool, strict: bool, **_: Any) -> int:
    from usagelog.ingest.audit import COLUMNS, details, summary, to_json

    if exit_zero and strict:
        raise SettingsError("--strict and --exit-zero contradict each other")
    settings = _settings(ctx)
    with _connect(settings) as store:
        instances = queries.audit_instances(store)
    if settings.fmt == "json":
        print(to_json(instances))
    else:
        print(render(COLUMNS, [i.row() for i in instances], settings.fmt))
    if settings.fmt == "table":
        for i in instances:
            if i.reports or i.dead_letter_list:
                print(f"\n{details(i)}")
            if i.reports:
                print(f"loss reports ({i.reports_count}):")
                print(render(list(i.reports[0]), [tuple(r.values()) for r in i.reports], max_width=60))
            if i.dead_letter_list:
                letters = i.dead_letter_list
                print(f"dead letters ({i.dead_letters}):")
                print(render(list(letters[0]), [tuple(d.values()) for d in letters], max_width=110))
    print(f"usagelog: {summary(instances)}", file=sys.stderr)
    return 1 if any(not i.ok for i in instances) and not exit_zero else 0


# Groups take the common options too, so `usagelog dashboards --format json list` works as well.
@_group(cli, "dashboards", "the Grafana dashboards without Grafana")
@_common
@_grafana
def dashboards(**_: Any) -> None:
    pass


@_command(dashboards, "serve", "a read-only local web page")
@_common
@_grafana
@click.option("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
@click.option("--port", type=int, default=3001, help="port (default 3001; 0 picks a free one)")
@click.pass_context
def dashboards_serve(ctx: click.Context, /, host: str, port: int, **_: Any) -> int:
    from usagelog.dashboards.serve import serve

    settings = _settings(ctx)
    with _connect(settings):
        pass  # the schema exists before the first page asks for it
    server = serve(settings.clickhouse_url, settings.database, host, port, _grafana_dir(ctx))
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    print(
        f"usagelog: dashboards on http://{bound_host}:{bound_port}/ (read-only; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


@_command(dashboards, "list", "the dashboards and their panels")
@_common
@_grafana
@click.pass_context
def dashboards_list(ctx: click.Context, /, **_: Any) -> int:
    from usagelog.dashboards.model import load_dashboards

    settings = _settings(ctx)
    found = load_dashboards(_grafana_dir(ctx))
    rows = [
        (
            name,
            d.uid,
            d.title,
            sum(1 for p in d.panels if p.type != "row"),
            ", ".join(v.name for v in d.variables),
        )
        for name, d in found.items()
    ]
    print(render(["name", "uid", "title", "panels", "variables"], rows, settings.fmt))
    return 0


def _variables(pairs: Sequence[str]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SettingsError(f"--var {pair!r}: expected name=value")
        chosen.setdefault(name.strip(), []).append(value)
    return chosen


@_command(cli, "report", "one dashboard as a self-contained HTML file")
@_common
@_span
@_grafana
@click.option("--dashboard", "name", default="overview", help="name, uid or title (default overview)")
@click.option("--var", "pairs", multiple=True, help="a dashboard variable: name=value (repeat for several)")
@click.option("--out", default="report.html", help="the file to write (default report.html)")
@click.pass_context
def report(
    ctx: click.Context,
    /,
    since: str | None,
    until: str | None,
    name: str,
    pairs: tuple[str, ...],
    out: str,
    **_: Any,
) -> int:
    from pathlib import Path

    from usagelog.dashboards.model import find_dashboard, load_dashboards
    from usagelog.dashboards.serve import render_dashboard
    from usagelog.ingest.timerange import parse_since

    settings = _settings(ctx)
    directory = _grafana_dir(ctx)
    dashboard = find_dashboard(name, directory)
    with _connect(settings) as store:
        page = render_dashboard(
            store,
            dashboard,
            served=False,
            dashboards=list(load_dashboards(directory).values()),
            time_from=parse_since(since) if since else None,
            time_to=parse_since(until) if until else None,
            chosen=_variables(pairs),
        )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    print(f"usagelog: {dashboard.title} written to {path}", file=sys.stderr)
    return 0


@_group(cli, "alerts", "the alert rules without Grafana")
@_common
@_grafana
def alerts_group(**_: Any) -> None:
    pass


@_command(alerts_group, "check", "evaluate every rule; exit 1 when one fires")
@_common
@_grafana
@click.option("--since", help="also evaluate at every interval since then (24h, 1h, ISO-8601)")
@click.option("--at", help="evaluate as of this time instead of now")
@click.option("--rule", "only", multiple=True, help="only this rule uid (repeat for several)")
@click.option("--webhook", help="POST firing alerts here (Grafana/Alertmanager webhook payload)")
@click.pass_context
def alerts_check(
    ctx: click.Context,
    /,
    since: str | None,
    at: str | None,
    only: tuple[str, ...],
    webhook: str | None,
    **_: Any,
) -> int:
    import datetime as dt

    from usagelog.dashboards import alerts
    from usagelog.dashboards.serve import ReadOnlyStore
    from usagelog.ingest.timerange import parse_since, parse_time

    settings = _settings(ctx)
    rules = alerts.load_rules(_grafana_dir(ctx))
    if only:
        unknown = set(only) - {r.uid for r in rules}
        if unknown:
            raise SettingsError(
                f"--rule: no rule {sorted(unknown)[0]!r}; rules are {', '.join(r.uid for r in rules)}"
            )
        rules = [r for r in rules if r.uid in only]
    now = dt.datetime.now(dt.timezone.utc)
    try:
        when = parse_time(parse_since(at), now) if at else now
        start = parse_time(parse_since(since), when) if since else None
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    with _connect(settings) as store:
        instances = alerts.check(ReadOnlyStore(store), rules, when, start)
    if settings.fmt == "json":
        print(dumps([i.as_dict() for i in instances], indent=1))
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
    if webhook and any(i.state == "firing" for i in instances):
        try:
            status = alerts.post_webhook(webhook, alerts.webhook_payload(instances))
        except OSError as exc:
            print(
                f"usagelog: webhook {redact_url(webhook, path=False)} failed: {redact(str(exc))}",
                file=sys.stderr,
            )
            return 1
        posted = sum(i.state == "firing" for i in instances)
        print(f"usagelog: posted {posted} alerts to the webhook ({status})", file=sys.stderr)
    evaluated = f"{len(rules)} rules at {when:%Y-%m-%d %H:%M:%S} UTC" + (
        f" since {start:%Y-%m-%d %H:%M}" if start else ""
    )
    print(f"usagelog: {len(firing)} alerting of {evaluated}", file=sys.stderr)
    return 1 if firing else 0


@_group(cli, "rollups", "the per-minute and per-hour rollups")
@_common
def rollups(**_: Any) -> None:
    pass


@_command(rollups, "rebuild", "recompute every stored minute and hour (after a restore, say)")
@_common
@click.pass_context
def rollups_rebuild(ctx: click.Context, /, **_: Any) -> int:
    from usagelog.ingest import rollup

    settings = _settings(ctx)
    started = time.monotonic()
    with _connect(settings) as store:
        minutes = rollup.rebuild(store)
    print(
        render(["minutes", "seconds"], [(minutes, round(time.monotonic() - started, 2))], settings.fmt),
    )
    return 0


@_command(cli, "demo", "run the example API on three instances and show the log")
@_common
@click.option("--dir", "workdir", default=".usagelog/demo", help="working directory (default .usagelog/demo)")
@click.option("--users", type=int, default=6)
@click.option("--rounds", type=int, default=3, help="passes of each user's request script")
@click.pass_context
def demo(ctx: click.Context, /, workdir: str, users: int, rounds: int, **_: Any) -> int:
    from usagelog.demo.run import run_demo

    settings = _settings(ctx)
    return run_demo(
        workdir=workdir,
        users=users,
        rounds=rounds,
        fmt=settings.fmt,
        url=settings.clickhouse_url,
        database=settings.database,
    )


def _one_line(exc: Exception) -> str:
    """An error for the terminal: no URL's secrets, no control characters (an engine's message
    may quote stored values)."""
    return escape_text(redact(str(exc)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's); returns the exit status."""
    try:
        code = cli.main(
            args=None if argv is None else list(argv), prog_name="usagelog", standalone_mode=False
        )
    except click.exceptions.Abort:  # click's word for Ctrl-C
        return 130
    except click.ClickException as exc:  # bad usage: click's message, exit status 2
        exc.show()
        return exc.exit_code
    except SettingsError as exc:
        print(f"usagelog: {_one_line(exc)}", file=sys.stderr)
        return 2
    except UsagelogError as exc:
        # ClickHouse refused or unreachable, Kafka unreachable, a dashboard file: one line.
        print(f"usagelog: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
