"""Bytes on disk per event and a consumer's timeline latency: the current ``usage_events`` against candidates.

Builds a chDB store with the project's migrations in a temporary directory and fills
``usage_events`` with generated events (``benchmarks/storage_sql.py`` says how: in SQL, 30 instances
with dense sequences, ~2000 consumers with Zipf-like activity, checksums as the audit computes them),
twice: N events over 30 days and N events over 365 days (one database each). A sample of rows is
checked against the instrumentation's own checksum function (and the audit's SQL check runs on the
whole table) before anything is measured. Then, after ``OPTIMIZE TABLE ... FINAL``:

- **bytes per event**: ``system.parts`` (active parts, ``bytes_on_disk``) for the table and
  ``system.projection_parts`` for its projections (in chDB ``by_instance``; a server's table also has
  ``by_time``), and per column from ``system.columns``;
- **candidates**, converted from the current table with ``INSERT ... SELECT``: the typed form
  (binary IDs, an 8-byte checksum, event ID derived from prefix and seq, observed and inserted times
  as offsets, LowCardinality, per-column codecs, ALIAS columns giving back the hex text) under four
  partitionings (day, week, month, none; ``--partitions``) and once more by month with a narrow
  ``by_time`` projection; a codec lab (every option of every column side by side in one table
  sorted like the candidates); a narrow time-ordered table (what a narrower projection costs). The
  month candidate must give back every derived column (event ID, hex IDs, observed and inserted
  times) and pass the audit's checksum in its 8-byte form, or the run stops;
- **timeline**: ``queries.timeline_query`` as ``usagelog timeline USER --limit 500`` sends it (over
  all data, and ``--since 7d``), in process on the open session, for ~200 consumers (the 20 busiest
  and 180 spread over the ranking), every table and way of reading for one consumer back to back;
  p50 / p95 per table. On the month and unpartitioned candidates also read with FINAL per partition
  and without FINAL (copies dropped by instance and seq), after checking all give the same rows. The
  CLI's process wall time is target 5, measured by ``cli_latency.py``;
- **time-range reads** (what a ``by_time`` projection is for): ``top routes`` over 24 h and 7 d on
  the current table (in chDB a scan), the month candidate without a projection and with the narrow
  one.

    python benchmarks/storage.py                 # 10M events per dataset (~15 min on 2 cores)
    python benchmarks/storage.py --quick         # 100k events, 20 consumers (CI: ~30 s of CPU)
    python benchmarks/storage.py --events 2000000 --json > storage.json   # table on stderr, JSON on stdout
    python benchmarks/storage.py --no-candidates # the current schema only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "instrumentation"), str(ROOT / "ingest"), str(Path(__file__).resolve().parent)]

import storage_sql as sq  # noqa: E402

from usagelog.ingest import queries  # noqa: E402
from usagelog.ingest.store import Store, connect  # noqa: E402
from usagelog.instrumentation import event as ev  # noqa: E402

END = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
TIMELINE_LIMIT = 500
PARTITIONINGS = ("day", "week", "month", "none")
RECOMMENDED = "month"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(store: Store, sql: str) -> None:
    store.client.command(sql)


def scalar(store: Store, sql: str, params: dict[str, Any] | None = None) -> Any:
    return store.query(sql, params)[1][0][0]


# -- data ---------------------------------------------------------------------------------------------


LEGACY = "legacy_events"  # the events in the form before migration 010, the candidates' source


def build_dataset(client: Any, db: str, events: int, days: int, keep_legacy: bool) -> Store:
    """Generate the events in the form migrations 1-9 make (the generator writes its columns),
    keep a copy of that form when candidates are built from it, then let migration 010 convert
    ``usage_events`` as it converts a user's store."""
    store = Store(client, db)
    store.migrate(upto=9)
    end_ns = int(END.timestamp()) * 10**9
    started = time.perf_counter()
    run(store, sq.generate_sql(f"{db}.usage_events", events, days, end_ns, queries._checksum_sql()))
    log(f"{db}: {events:,} events over {days} d generated in {time.perf_counter() - started:.1f} s")
    if keep_legacy:
        run(store, f"CREATE TABLE {db}.{LEGACY} AS {db}.usage_events")
        copy = f"INSERT INTO {db}.{LEGACY} SELECT * FROM {db}.usage_events"
        run(store, copy + " SETTINGS max_partitions_per_insert_block = 0")
        run(store, f"OPTIMIZE TABLE {db}.{LEGACY} FINAL")
    started = time.perf_counter()
    store.migrate()
    log(f"{db}: converted by the migrations in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    run(store, f"OPTIMIZE TABLE {db}.usage_events FINAL")
    log(f"{db}: OPTIMIZE FINAL in {time.perf_counter() - started:.1f} s")
    return store


def validate(store: Store, table: str = "usage_events", sample: int = 300) -> dict[str, int]:
    """The generator's rows against the instrumentation's checksum (Python) and the audit's SQL check."""
    db = store.database
    cols = [f.column for f in ev.CHECKSUM_FIELDS]
    select = ", ".join(
        f"toUnixTimestamp64Nano({c}) AS {c}" if ev.BY_COLUMN[c].arrow == "timestamp_ns" else c for c in cols
    )
    names, rows = store.query(
        f"SELECT {select}, checksum FROM {db}.{table} ORDER BY cityHash64(event_id) LIMIT {sample}"
    )
    # usage_events keeps the checksum's first 64 bits (16 hex digits); the wire carries 128.
    bad_python = sum(1 for row in rows if ev.checksum(dict(zip(names, row, strict=True)))[:16] != row[-1])
    recomputed = queries._checksum_sql(digits=16)
    bad_sql = int(scalar(store, f"SELECT countIf(checksum != {recomputed}) FROM {db}.{table}"))
    result = {"sampled": len(rows), "python_mismatches": bad_python, "audit_sql_failures": bad_sql}
    if bad_python or bad_sql or not rows:
        raise SystemExit(f"storage: the generated events fail their checksum: {result}")
    return result


def audit_typed(store: Store, table: str) -> dict[str, int]:
    """The audit's checks on a candidate: the 8-byte checksum recomputed in SQL over the ALIAS columns,
    and every derived column equal to the current table's on a sample joined by (instance, seq)."""
    db = store.database
    full = queries._checksum_sql()  # lower(substring(hex(SHA256(...)), 1, 32)) over the current names
    head, tail = "lower(substring(hex(", "), 1, 32))"
    assert full.startswith(head) and full.endswith(tail), full
    binary = f"substring({full[len(head) : -len(tail)]}, 1, 8)"  # the first 8 bytes of the same SHA-256
    failures = int(scalar(store, f"SELECT countIf(checksum_bin != {binary}) FROM {db}.{table}"))
    derived = ("event_id", "trace_id", "span_id", "observed_timestamp", "inserted_at")
    differ = (
        " OR ".join(f"c.{c} != t.{c}" for c in derived) + " OR substring(c.checksum, 1, 16) != t.checksum"
    )
    mismatches = int(
        scalar(
            store,
            f"SELECT countIf({differ}) FROM (SELECT * FROM {db}.{LEGACY} WHERE seq % 97 = 0) AS c "
            f"INNER JOIN (SELECT *, {', '.join(derived)}, checksum FROM {db}.{table} WHERE seq % 97 = 0) "
            "AS t "
            "USING (service_instance_id, seq)",
        )
    )
    result = {"checksum_failures": failures, "derived_mismatches": mismatches}
    if failures or mismatches:
        raise SystemExit(f"storage: candidate {table} does not give back the events: {result}")
    return result


def build_candidates(store: Store, partitions: list[str], with_lab: bool) -> dict[str, float]:
    db = store.database
    seconds: dict[str, float] = {}
    for part in partitions:
        table = f"typed_{part}"
        started = time.perf_counter()
        run(store, sq.typed_table_sql(f"{db}.{table}", part))
        run(store, sq.typed_insert_sql(f"{db}.{table}", f"{db}.{LEGACY}"))
        run(store, f"OPTIMIZE TABLE {db}.{table} FINAL")
        seconds[table] = time.perf_counter() - started
        log(f"{db}: {table} built in {seconds[table]:.1f} s")
    # The month-partitioned form again, with the narrow by_time projection (added before the rows,
    # so it is built as ingest would build it, then merged).
    table = f"typed_{RECOMMENDED}_by_time"
    started = time.perf_counter()
    run(store, sq.typed_table_sql(f"{db}.{table}", RECOMMENDED))
    for statement in sq.narrow_projection_sql(f"{db}.{table}"):
        run(store, statement)
    run(store, sq.typed_insert_sql(f"{db}.{table}", f"{db}.{LEGACY}"))
    run(store, f"OPTIMIZE TABLE {db}.{table} FINAL")
    seconds[table] = time.perf_counter() - started
    log(f"{db}: {table} built in {seconds[table]:.1f} s")
    if with_lab:
        create, insert, _ = sq.lab_sql(f"{db}.codec_lab", f"{db}.{LEGACY}")
        run(store, create)
        run(store, insert)
        run(store, f"OPTIMIZE TABLE {db}.codec_lab FINAL")
        create, insert = sq.narrow_sql(f"{db}.narrow_by_time", f"{db}.typed_{RECOMMENDED}")
        run(store, create)
        run(store, insert)
        run(store, f"OPTIMIZE TABLE {db}.narrow_by_time FINAL")
        log(f"{db}: codec lab and narrow by-time table built")
    return seconds


# -- bytes --------------------------------------------------------------------------------------------


def disk(store: Store, table: str) -> dict[str, Any]:
    db = store.database
    p = {"db": db, "t": table}
    parts, rows, on_disk = store.query(
        "SELECT count(), sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND active",
        p,
    )[1][0]
    proj_parts, proj_on_disk = store.query(
        "SELECT count(), sum(bytes_on_disk) FROM system.projection_parts "
        "WHERE database = {db:String} AND table = {t:String} AND active",
        p,
    )[1][0]
    columns = store.query(
        "SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} AND data_compressed_bytes > 0 "
        "ORDER BY data_compressed_bytes DESC",
        p,
    )[1]
    (index_bytes,) = store.query(
        "SELECT sum(data_compressed_bytes) FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = {t:String}",
        p,
    )[1][0]
    rows = int(rows or 0)

    def per(count: Any) -> float:
        return float(count) / rows if rows else 0.0

    # bytes_on_disk of a part includes its projections' directories; report both apart.
    return {
        "table": table,
        "parts": int(parts),
        "rows": rows,
        "bytes_on_disk": int(on_disk or 0),
        "per_event_total": per(on_disk or 0),
        "per_event_projection": per(proj_on_disk or 0),
        "per_event_without_projection": per((on_disk or 0) - (proj_on_disk or 0)),
        "projection_parts": int(proj_parts),
        "per_event_skip_indexes": per(index_bytes or 0),
        "columns": {name: per(c) for name, c, _ in columns},
    }


# -- timelines ----------------------------------------------------------------------------------------


def pick_users(store: Store, count: int) -> list[str]:
    ranked = [
        r[0]
        for r in store.query(
            f"SELECT user_id FROM {store.database}.usage_events WHERE user_id != '' "
            "GROUP BY user_id ORDER BY count() DESC, user_id"
        )[1]
    ]
    heavy = ranked[: min(20, count // 10)]
    rest = ranked[len(heavy) :]
    want = max(count - len(heavy), 0)
    spread = [rest[int(k * len(rest) / want)] for k in range(want)] if rest and want else []
    return heavy + spread


# How the timeline is read. "final": queries.timeline_query as shipped. "final_per_partition": the
# same with do_not_merge_across_partitions_select_final (safe here: the copies of an event share its
# timestamp, so they share a partition; a partition merged into one part then needs no merge at all).
# "no_final": no FINAL, copies dropped among the rows read by (instance, seq), as the Consumer
# dashboard's Timeline panel does, so reading in key order can stop after the limit.
VARIANTS = ("final", "final_per_partition", "no_final")


def read_timeline(store: Store, table: str, user: str, since: dt.timedelta | None, variant: str) -> int:
    """Run one timeline read; the number of rows it returned."""
    return len(store.query(*timeline_sql(store, table, user, since, variant))[1])


def timeline_sql(
    store: Store, table: str, user: str, since: dt.timedelta | None, variant: str = "final"
) -> tuple[str, dict[str, Any]]:
    filters = queries.Filters(start=END - since if since else None)
    sql, params = queries.timeline_query(store, user, TIMELINE_LIMIT, filters)
    sql = sql.replace(f"{store.database}.usage_events ", f"{store.database}.{table} ")
    if variant == "final_per_partition":
        sql += " SETTINGS do_not_merge_across_partitions_select_final = 1"
    elif variant == "no_final":
        head, order = sql.replace(" FINAL ", " ", 1).split(" ORDER BY ", 1)
        order, limit = order.split(" LIMIT ", 1)
        sql = f"{head} ORDER BY {order} LIMIT 1 BY service_instance_id, seq LIMIT {limit}"
    return sql, params


def measure_timelines(
    store: Store, tables: list[str], variant_tables: list[str], users: list[str], rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p95 per (table, shape); shapes: ``all`` and ``7d`` as shipped, and on ``variant_tables``
    ``all:<variant>`` for the other ways of reading (VARIANTS)."""
    cases: list[tuple[str, str, dt.timedelta | None, str]] = []
    for table in tables:
        cases += [(table, "all", None, "final"), (table, "7d", dt.timedelta(days=7), "final")]
        if table in variant_tables:
            cases += [(table, f"all:{v}", None, v) for v in VARIANTS[1:]]
    samples: dict[tuple[str, str], list[float]] = {(t, s): [] for t, s, _, _ in cases}
    for user in users[:10]:  # warm-up: marks and primary index in memory, as on a running store
        for table, _, since, variant in cases:
            store.query(*timeline_sql(store, table, user, since, variant))
    for round_ in range(rounds):
        for k, user in enumerate(users):
            # Every way of reading, for one consumer, back to back (in turn forwards and backwards).
            order = cases if (k + round_) % 2 == 0 else list(reversed(cases))
            for table, shape, since, variant in order:
                started = time.perf_counter()
                read_timeline(store, table, user, since, variant)
                samples[(table, shape)].append((time.perf_counter() - started) * 1000)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (table, shape), values in samples.items():
        values.sort()
        out.setdefault(table, {})[shape] = {
            "p50_ms": statistics.median(values),
            "p95_ms": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
            "max_ms": values[-1],
            "n": len(values),
        }
    return out


def check_variants(store: Store, table: str, users: list[str]) -> None:
    """Every way of reading gives the same rows as the product's query on the current table."""
    for user in users[:5] + users[-5:]:
        want = store.query(*timeline_sql(store, "usage_events", user, None))[1]
        for variant in VARIANTS:
            got = store.query(*timeline_sql(store, table, user, None, variant))[1]
            if got != want:
                raise SystemExit(
                    f"storage: timeline of {user} on {table} ({variant}) differs from usage_events"
                )


def measure_time_range(store: Store, tables: list[str], reps: int) -> dict[str, dict[str, float]]:
    """``usagelog top routes`` over the last 24 h and 7 d: what a by_time projection is for."""
    out: dict[str, dict[str, float]] = {}
    for span in (1, 7):
        filters = queries.Filters(start=END - dt.timedelta(days=span), end=END)
        sql, params = queries.top_query(store, "routes", filters, 20)
        runs: dict[str, list[float]] = {t: [] for t in tables}
        for _ in range(reps + 1):
            for table in tables:
                started = time.perf_counter()
                store.query(
                    sql.replace(f"{store.database}.usage_events ", f"{store.database}.{table} "), params
                )
                runs[table].append((time.perf_counter() - started) * 1000)
        for table in tables:
            out.setdefault(table, {})[f"top_routes_{span}d_p50_ms"] = statistics.median(runs[table][1:])
    # What ingest's rollup refresh reads for a batch: five minutes, each event once.
    low = END - dt.timedelta(hours=3)
    refresh = (
        "SELECT count() FROM (SELECT timestamp, service_name, route, method, status_code, region, cluster, "
        "service_instance_id, error_type, request_size, response_size, duration_ns "
        f"FROM {store.database}.{{table}} WHERE timestamp >= {{{{low:DateTime64(9, 'UTC')}}}} "
        "AND timestamp < {{high:DateTime64(9, 'UTC')}} LIMIT 1 BY service_instance_id, seq)"
    )
    runs = {t: [] for t in tables}
    for _ in range(reps + 1):
        for table in tables:
            started = time.perf_counter()
            store.query(refresh.format(table=table), {"low": low, "high": low + dt.timedelta(minutes=5)})
            runs[table].append((time.perf_counter() - started) * 1000)
    for table in tables:
        out[table]["rollup_refresh_5min_p50_ms"] = statistics.median(runs[table][1:])
    return out


# -- retention ----------------------------------------------------------------------------------------


def retention_overhang(partition_days: float, retention_days: int) -> dict[str, float]:
    """With ``ttl_only_drop_parts`` a partition leaves when its newest row expires: the data kept is
    the retention plus, on average, half a partition (at worst a whole one)."""
    return {
        "mean_extra_pct": 100 * partition_days / 2 / retention_days,
        "max_extra_pct": 100 * partition_days / retention_days,
    }


PARTITION_DAYS = {"day": 1.0, "week": 7.0, "month": 30.44}


# -- report -------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    out: list[str] = []
    for db, data in result["datasets"].items():
        out += [f"\n## {db}: {data['events']:,} events over {data['days']} days", ""]
        out += [
            "| table | parts | B/event total | table | projection | skip indexes "
            "| timeline p50 / p95 ms (all) | (7d) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for table, d in data["disk"].items():
            tl = data["timeline"].get(table, {})
            cells = [
                f"{tl[s]['p50_ms']:.1f} / {tl[s]['p95_ms']:.1f}" if s in tl else "" for s in ("all", "7d")
            ]
            sizes = [
                d[k] for k in ("per_event_total", "per_event_without_projection", "per_event_projection")
            ]
            out.append(
                f"| {table} | {d['parts']} | "
                + " | ".join(f"{b:.1f}" for b in sizes)
                + f" | {d['per_event_skip_indexes']:.1f} | {cells[0]} | {cells[1]} |"
            )
        variants = [
            (t, s, v) for t, shapes in data["timeline"].items() for s, v in shapes.items() if ":" in s
        ]
        if variants:
            out += ["", "| table | timeline, all data, read as | p50 / p95 ms |", "|---|---|--:|"]
            for table, shape, v in variants:
                out.append(f"| {table} | {shape.split(':')[1]} | {v['p50_ms']:.1f} / {v['p95_ms']:.1f} |")
        if data.get("time_range"):
            out += [
                "",
                "| table | `top routes` 24 h p50 ms | 7 d p50 ms | rollup refresh read, 5 min, p50 ms |",
                "|---|--:|--:|--:|",
            ]
            for table, r in data["time_range"].items():
                out.append(
                    f"| {table} | {r['top_routes_1d_p50_ms']:.1f} | {r['top_routes_7d_p50_ms']:.1f} "
                    f"| {r['rollup_refresh_5min_p50_ms']:.1f} |"
                )
        for table in ("usage_events", f"typed_{RECOMMENDED}", "typed_none"):
            if table in data["disk"]:
                cols = data["disk"][table]["columns"]
                out += ["", f"Columns of {table}, compressed bytes per event:", ""]
                out.append(", ".join(f"`{c}` {b:.2f}" for c, b in cols.items()))
        if data.get("lab"):
            out += ["", "| codec lab: column option | B/event |", "|---|--:|"]
            out += [f"| {label} | {b:.2f} |" for label, b in data["lab"].items()]
        if data.get("narrow_by_time"):
            out += [
                "",
                f"Narrow by-time table (a narrower projection's cost): {data['narrow_by_time']:.1f} B/event: "
                + ", ".join(f"`{c}` {b:.2f}" for c, b in data.get("narrow_by_time_columns", {}).items()),
            ]
    out += ["", "Retention with ttl_only_drop_parts: data kept beyond the retention, mean / worst:", ""]
    out += ["| partition | 30 d | 90 d | 365 d |", "|---|--:|--:|--:|"]
    for part, days in PARTITION_DAYS.items():
        kept = [retention_overhang(days, r) for r in (30, 90, 365)]
        out.append(
            f"| {part} | "
            + " | ".join(f"{c['mean_extra_pct']:.0f}% / {c['max_extra_pct']:.0f}%" for c in kept)
            + " |"
        )
    out.append(
        "| none | never drops a part (each keeps getting rows): needs row-level TTL, which rewrites parts "
        "| | |"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events per dataset (default 10M)")
    parser.add_argument("--quick", action="store_true", help="100k events, 20 consumers, 1 round (CI)")
    parser.add_argument("--users", type=int, default=200, help="consumers whose timeline is timed")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over the consumers")
    parser.add_argument("--days", default="30,365", help="datasets: days each spans (default 30,365)")
    parser.add_argument("--partitions", default=",".join(PARTITIONINGS), help="candidate partitionings")
    parser.add_argument("--no-candidates", action="store_true", help="measure the current schema only")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--data-dir", help="keep the store here (default: a temporary directory)")
    args = parser.parse_args(argv)
    partitions = [p for p in args.partitions.split(",") if p]
    if RECOMMENDED not in partitions or any(p not in PARTITIONINGS for p in partitions):
        parser.error(f"--partitions: some of {', '.join(PARTITIONINGS)}, with {RECOMMENDED}")
    if args.quick:
        args.events, args.users, args.rounds = 100_000, 20, 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="usagelog-storage-") as tmp:
        where = Path(args.data_dir or tmp) / "chdb"
        result: dict[str, Any] = {"events": args.events, "datasets": {}}
        with connect(f"chdb://{where}", database="storage_meta") as meta:
            client = meta.client
            result["engine"] = scalar(meta, "SELECT version()")
            for days in (int(d) for d in args.days.split(",")):
                db = f"events_{days}d"
                store = build_dataset(client, db, args.events, days, keep_legacy=not args.no_candidates)
                data: dict[str, Any] = {"events": args.events, "days": days}
                data["validation"] = validate(store)
                tables = ["usage_events"]
                if not args.no_candidates:
                    data["build_seconds"] = build_candidates(store, partitions, with_lab=days == 30)
                    tables += [f"typed_{p}" for p in partitions] + [f"typed_{RECOMMENDED}_by_time"]
                    data["candidate_audit"] = audit_typed(store, f"typed_{RECOMMENDED}")
                data["disk"] = {t: disk(store, t) for t in tables}
                if not args.no_candidates and days == 30:
                    lab = disk(store, "codec_lab")["columns"]
                    _, _, names = sq.lab_sql("x", "y")
                    data["lab"] = {names[c]: b for c, b in lab.items() if c in names}
                    narrow = disk(store, "narrow_by_time")
                    data["narrow_by_time"] = narrow["per_event_total"]
                    data["narrow_by_time_columns"] = narrow["columns"]
                users = pick_users(store, args.users)
                log(f"{db}: timelines of {len(users)} consumers, {len(tables)} tables, {args.rounds} rounds")
                variant_tables = [t for t in tables if t in (f"typed_{RECOMMENDED}", "typed_none")]
                for table in variant_tables:
                    check_variants(store, table, users)
                data["timeline"] = measure_timelines(store, tables, variant_tables, users, args.rounds)
                if not args.no_candidates:
                    data["time_range"] = measure_time_range(
                        store, ["usage_events", f"typed_{RECOMMENDED}", f"typed_{RECOMMENDED}_by_time"], 3
                    )
                result["datasets"][db] = data
    result["seconds"] = time.perf_counter() - started
    table = render(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
