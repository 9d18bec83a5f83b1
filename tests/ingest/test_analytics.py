"""The read side: ``usagelog top``, ``timeline`` and ``export`` and the Python API
(``usagelog.analytics``), on a week of generated traffic whose every count is known from the
generator's own columns. User input only ever reaches ClickHouse as a query parameter, so
hostile user IDs and routes, stored as real events, come back exactly and break nothing."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import usagelog.analytics as ul
from usagelog.demo import history
from usagelog.ingest.export import export_events
from usagelog.ingest.queries import EXPORT_COLUMNS, Filters
from usagelog.ingest.store import Store, connect
from usagelog.instrumentation import event as ev

# The generated week: Monday 2026-11-16 00:00 to Monday 2026-11-23 00:00 UTC (in the past, so
# every test passes explicit --since/--until rather than relying on "now").
WEEK = ("2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z")
TOP_WINDOW = ("2026-11-18T00:00:00Z", "2026-11-20T12:00:00Z")
EXPORT_WINDOW = ("2026-11-19T12:00:00Z", "2026-11-19T15:00:00Z")

# Values that change the meaning of a query if pasted into SQL text: quotes, a comment, a second
# statement, a LIKE wildcard, a query-parameter placeholder, a real user's name followed by a
# comment (pasted, it would return alice's thousands of events), a newline.
HOSTILE_USERS = (
    "x' OR '1'='1",
    "\\'",
    "'); DROP TABLE usagelog.usage_events; --",
    "%",
    "{user:String}",
    "alice' --",
    "bob\n' OR 1 = 1 --",
)
HOSTILE_ROUTE = "/v1/orders' OR '1'='1"
EVENTS_PER_HOSTILE = 5
TIED_USER = "tied-user"
NS = 10**9
TIED_NS = 1_795_091_400 * NS + NS // 2  # 2026-11-19T12:30:00.5Z, inside EXPORT_WINDOW and TOP_WINDOW


def iso(ns: int) -> str:
    return f"{dt.datetime.fromtimestamp(ns // NS, dt.timezone.utc):%Y-%m-%dT%H:%M:%S}.{ns % NS:09d}Z"


def epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


@dataclass(frozen=True)
class Loaded:
    """A store and the generated events it holds (with the hostile and tied events applied)."""

    url: str
    history: history.History

    @property
    def c(self) -> dict[str, np.ndarray]:
        return self.history.columns

    def mask(self, window: tuple[str, str], **equal: Any) -> np.ndarray:
        return self.history.mask(epoch(window[0]), epoch(window[1]), **equal)

    def timeline(self, where: np.ndarray) -> list[tuple[str, int]]:
        """(instance, seq) of the events in ``where``, in timeline order: time, instance, seq."""
        c = self.c
        rows = zip(c["timestamp"][where], c["service_instance_id"][where], c["seq"][where], strict=True)
        return [(str(i), int(s)) for _, i, s in sorted(rows)]

    def export_order(self, where: np.ndarray) -> list[str]:
        """Event IDs in export order: user, time, instance, seq."""
        c = self.c
        keys = zip(
            c["user_id"][where],
            c["timestamp"][where],
            c["service_instance_id"][where],
            c["seq"][where],
            c["event_id"][where],
            strict=True,
        )
        return [str(k[-1]) for k in sorted(keys)]


def _plant(events: history.History) -> None:
    """Give a few real events hostile user IDs and a hostile route, and make one user's events
    share a timestamp across instances (so the order within one instant shows)."""
    c = events.columns
    rng = np.random.default_rng(2026)
    named = np.flatnonzero(c["user_id"] != "")
    picks = rng.choice(named, size=len(HOSTILE_USERS) * EVENTS_PER_HOSTILE + 4, replace=False)
    for n, user in enumerate(HOSTILE_USERS):
        c["user_id"][picks[n * EVENTS_PER_HOSTILE : (n + 1) * EVENTS_PER_HOSTILE]] = user
    c["route"][picks[-4:]] = HOSTILE_ROUTE
    # Two events of one orders instance and one of each of three others, all at one instant.
    tied: list[int] = []
    for instance, count in (
        ("orders-us-east-1", 2),
        ("billing-eu-west-1", 1),
        ("orders-eu-central-1", 1),
        ("billing-us-east-1", 1),
    ):
        candidates = np.flatnonzero(
            (c["service_instance_id"] == instance)
            & (c["user_id"] != "")
            & np.isin(c["user_id"], HOSTILE_USERS, invert=True)
            & (c["route"] != HOSTILE_ROUTE)
        )
        tied += [int(i) for i in candidates[1000 : 1000 + count]]
    c["user_id"][tied] = TIED_USER
    c["timestamp"][tied] = TIED_NS


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    # scale 0.5: about 82,000 events, more than one 65,409-row block, so a whole-week export
    # arrives from the engine in several batches.
    events = history.generate(weeks=1, scale=0.5, consumers=40, incidents=False)
    _plant(events)
    url = "chdb://" + str(tmp_path_factory.mktemp("analytics") / "chdb")
    with connect(url) as store:
        history.load(store, events)
    return Loaded(url, events)


@pytest.fixture
def store(loaded: Loaded) -> Iterator[Store]:
    with connect(loaded.url, migrate_schema=False) as opened:
        yield opened


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def cli_json(loaded: Loaded, *args: str) -> list[dict[str, Any]]:
    done = cli(*args, "--clickhouse", loaded.url, "--format", "json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def window_args(window: tuple[str, str]) -> tuple[str, str, str, str]:
    return ("--since", window[0], "--until", window[1])


def stored_count(loaded: Loaded) -> int:
    with connect(loaded.url, migrate_schema=False) as store:
        _, rows = store.query("SELECT count() FROM usagelog.usage_events FINAL")
    return int(rows[0][0])


# -- top -------------------------------------------------------------------------------------------


def test_top_users_counts_equal_the_generated_traffic(loaded: Loaded) -> None:
    c = loaded.c
    where = loaded.mask(TOP_WINDOW) & (c["user_id"] != "")
    counts = Counter(c["user_id"][where].tolist())
    expected = sorted(counts.items(), key=lambda uc: (-uc[1], uc[0]))[:10]

    rows = cli_json(loaded, "top", "users", *window_args(TOP_WINDOW), "--limit", "10")
    assert [(r["user"], r["requests"]) for r in rows] == expected

    first = where & (c["user_id"] == expected[0][0])
    status = c["status_code"][first]
    assert rows[0]["server_error_pct"] == pytest.approx(100 * (status >= 500).mean(), abs=0.006)
    assert rows[0]["client_error_pct"] == pytest.approx(
        100 * ((status >= 400) & (status < 500)).mean(), abs=0.006
    )
    assert rows[0]["routes"] == len(set(c["route"][first].tolist()))


def test_top_routes_and_errors_equal_the_generated_traffic(loaded: Loaded) -> None:
    c = loaded.c
    where = loaded.mask(TOP_WINDOW)
    routes = Counter(
        zip(
            c["service_name"][where].tolist(),
            c["method"][where].tolist(),
            c["route"][where].tolist(),
            strict=True,
        )
    )
    expected_routes = sorted(routes.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][2], kv[0][1]))
    rows = cli_json(loaded, "top", "routes", *window_args(TOP_WINDOW), "--limit", "100")
    assert [((r["service"], r["method"], r["route"]), r["requests"]) for r in rows] == expected_routes

    failed = where & ((c["status_code"] >= 400) | (c["error_type"] != ""))
    errors = Counter(
        zip(
            c["service_name"][failed].tolist(),
            c["route"][failed].tolist(),
            c["status_code"][failed].tolist(),
            c["error_type"][failed].tolist(),
            strict=True,
        )
    )
    expected_errors = sorted(errors.items(), key=lambda kv: (-kv[1], *kv[0]))[:15]
    rows = cli_json(loaded, "top", "errors", *window_args(TOP_WINDOW), "--limit", "15")
    assert [
        ((r["service"], r["route"], r["status"], r["error_type"]), r["requests"]) for r in rows
    ] == expected_errors


# -- timeline --------------------------------------------------------------------------------------


def test_timeline_is_one_users_events_in_time_order(loaded: Loaded) -> None:
    window = ("2026-11-19T00:00:00Z", "2026-11-20T00:00:00Z")
    rows = cli_json(loaded, "timeline", "bob", *window_args(window))
    expected = loaded.timeline(loaded.mask(window, user_id="bob"))
    assert len(expected) > 100
    assert [(r["instance"], r["seq"]) for r in rows] == expected
    times = [r["time"] for r in rows]
    assert times == sorted(times) and times[0] >= "2026-11-19 00:00:00" and times[-1] < "2026-11-20"

    limited = cli_json(loaded, "timeline", "bob", *window_args(window), "--limit", "7")
    assert [(r["instance"], r["seq"]) for r in limited] == expected[:7]


def test_timeline_orders_one_instant_by_instance_then_seq(loaded: Loaded) -> None:
    expected = loaded.timeline(loaded.mask(WEEK, user_id=TIED_USER))
    assert len(expected) == 5
    # The ordering is only shown if instance order and sequence order disagree.
    assert expected != sorted(expected, key=lambda e: e[1])
    rows = cli_json(loaded, "timeline", TIED_USER, *window_args(WEEK))
    assert [(r["instance"], r["seq"]) for r in rows] == expected
    assert {r["time"] for r in rows} == {"2026-11-19 12:30:00.500000"}


@pytest.mark.parametrize(
    ("route", "status", "low", "high"),
    [
        (None, "4xx", 400, 499),
        (None, "400-499", 400, 499),
        ("/v1/orders/<id>", "404", 404, 404),
        ("/v1/orders", None, 0, 999),
    ],
)
def test_timeline_filters_by_route_and_status(
    loaded: Loaded, route: str | None, status: str | None, low: int, high: int
) -> None:
    c = loaded.c
    where = loaded.mask(WEEK, user_id="alice")
    where &= (c["status_code"] >= low) & (c["status_code"] <= high)
    if route is not None:
        where &= c["route"] == route
    expected = loaded.timeline(where)
    assert expected  # a filter that matches nothing would prove nothing
    args = [*window_args(WEEK)]
    args += ["--route", route] if route else []
    args += ["--status", status] if status else []
    rows = cli_json(loaded, "timeline", "alice", *args)
    assert [(r["instance"], r["seq"]) for r in rows] == expected
    assert all(low <= r["status"] <= high for r in rows)
    if route is not None:
        assert {r["route"] for r in rows} == {route}


def test_since_and_until_bound_the_timeline(loaded: Loaded) -> None:
    # Half-open: an event at exactly --until is left out, one at exactly --since kept.
    at = "2026-11-19T12:30:00.500000Z"
    assert cli_json(loaded, "timeline", TIED_USER, "--since", "2026-11-16T00:00:00Z", "--until", at) == []
    inside = cli_json(loaded, "timeline", TIED_USER, "--since", at, "--until", "2026-11-19T12:30:01Z")
    assert len(inside) == 5


# -- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("user", HOSTILE_USERS)
def test_hostile_user_ids_return_exactly_their_events(loaded: Loaded, user: str, tmp_path: Path) -> None:
    where = loaded.mask(WEEK, user_id=user)
    assert int(where.sum()) == EVENTS_PER_HOSTILE

    rows = cli_json(loaded, "timeline", user, *window_args(WEEK))
    assert [(r["instance"], r["seq"]) for r in rows] == loaded.timeline(where)

    out = tmp_path / "user.jsonl"
    done = cli(
        "export", "--clickhouse", loaded.url, *window_args(WEEK), "--user", user, "--format", "jsonl",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [e["user_id"] for e in lines] == [user] * EVENTS_PER_HOSTILE
    assert [e["event_id"] for e in lines] == loaded.export_order(where)

    table = ul.timeline(user, *WEEK, url=loaded.url)
    assert list(zip(table.column("instance").to_pylist(), table.column("seq").to_pylist(), strict=True)) == (
        loaded.timeline(where)
    )


def test_hostile_route_returns_exactly_its_events_and_the_table_survives(
    loaded: Loaded, tmp_path: Path
) -> None:
    where = loaded.mask(WEEK, route=HOSTILE_ROUTE)
    out = tmp_path / "route.parquet"
    done = cli(
        "export", "--clickhouse", loaded.url, *window_args(WEEK), "--route", HOSTILE_ROUTE, "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column("route").to_pylist() == [HOSTILE_ROUTE] * 4
    assert table.column("event_id").to_pylist() == loaded.export_order(where)

    rows = cli_json(loaded, "top", "routes", *window_args(WEEK), "--limit", "100")
    assert sum(r["requests"] for r in rows if r["route"] == HOSTILE_ROUTE) == 4
    # The hostile user IDs come back verbatim, each with its own count.
    rows = cli_json(loaded, "top", "users", *window_args(WEEK), "--limit", "100")
    users = {r["user"]: r["requests"] for r in rows}
    assert {u: users.get(u) for u in HOSTILE_USERS} == dict.fromkeys(HOSTILE_USERS, EVENTS_PER_HOSTILE)
    assert stored_count(loaded) == len(loaded.history)


# -- export ----------------------------------------------------------------------------------------

# ClickHouse column types and the Arrow types an export must keep for them.
ARROW_TYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "String": pa.types.is_string,
    "LowCardinality(String)": pa.types.is_string,
    "UInt16": lambda t: t == pa.uint16(),
    "UInt32": lambda t: t == pa.uint32(),
    "UInt64": lambda t: t == pa.uint64(),
    "Bool": pa.types.is_boolean,
    "DateTime64(9, 'UTC')": lambda t: t == pa.timestamp("ns", tz="UTC"),
    "DateTime64(3, 'UTC')": lambda t: t == pa.timestamp("ms", tz="UTC"),
    "Map(String, String)": lambda t: (
        pa.types.is_map(t) and pa.types.is_string(t.key_type) and pa.types.is_string(t.item_type)
    ),
}


def table_types(loaded: Loaded) -> dict[str, str]:
    with connect(loaded.url, migrate_schema=False) as store:
        _, rows = store.query(
            "SELECT name, type FROM system.columns WHERE database = 'usagelog' AND table = 'usage_events' "
            "ORDER BY position"
        )
    return {str(name): str(kind) for name, kind in rows}


def export(loaded: Loaded, fmt: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = cli(
        "export", "--clickhouse", loaded.url, *window_args(EXPORT_WINDOW), "--format", fmt,
        "--out", str(out), *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_export_columns_are_the_tables_in_the_events_declared_order(loaded: Loaded) -> None:
    # usage_events stores some columns differently and gives them back as ALIAS columns, listed
    # after the stored ones: the export keeps the order the event declares.
    types = table_types(loaded)
    assert set(EXPORT_COLUMNS) <= set(types)
    assert list(EXPORT_COLUMNS) == [f.column for f in ev.FIELDS]


def test_parquet_export_keeps_every_event_and_the_tables_types(loaded: Loaded, tmp_path: Path) -> None:
    where = loaded.mask(EXPORT_WINDOW)
    out = tmp_path / "sub" / "events.parquet"  # a missing directory is created
    done = export(loaded, "parquet", out)
    table = pq.read_table(out)
    assert table.num_rows == int(where.sum()) > 1000
    assert table.column_names == list(EXPORT_COLUMNS)
    types = table_types(loaded)
    wrong = {
        f.name: (types[f.name], str(f.type)) for f in table.schema if not ARROW_TYPES[types[f.name]](f.type)
    }
    assert wrong == {}
    ids = loaded.export_order(where)
    assert table.column("event_id").to_pylist() == ids
    # Nanoseconds survive: the timestamps are the generator's, to the nanosecond.
    ns_of = dict(
        zip(loaded.c["event_id"][where].tolist(), loaded.c["timestamp"][where].tolist(), strict=True)
    )
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [ns_of[i] for i in ids]
    assert done.stdout == ""
    assert f"usagelog: {len(ids)} events written to {out} (parquet)" in done.stderr
    assert f"export: {len(ids)}/{len(ids)} events" in done.stderr  # progress, on stderr
    assert [p.name for p in out.parent.iterdir()] == ["events.parquet"]


def test_csv_export_is_readable_with_every_event(loaded: Loaded, tmp_path: Path) -> None:
    where = loaded.mask(EXPORT_WINDOW)
    out = tmp_path / "events.csv"
    export(loaded, "csv", out)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert [r["event_id"] for r in rows] == loaded.export_order(where)
    assert {r["attributes"] for r in rows} == {"{}"}  # maps as JSON objects
    # A standard reader infers the types back, nanosecond timestamps included.
    table = pcsv.read_csv(out)
    assert table.num_rows == int(where.sum())
    assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("status_code").type == pa.int64()
    ns_of = dict(
        zip(loaded.c["event_id"][where].tolist(), loaded.c["timestamp"][where].tolist(), strict=True)
    )
    stamps = table.column("timestamp").cast(pa.int64()).to_pylist()
    assert stamps == [ns_of[r["event_id"]] for r in rows]


def test_jsonl_export_is_one_object_per_event(loaded: Loaded, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    export(loaded, "jsonl", out, "--status", "2xx")
    c = loaded.c
    ok = loaded.mask(EXPORT_WINDOW) & (c["status_code"] >= 200) & (c["status_code"] <= 299)
    events = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [e["event_id"] for e in events] == loaded.export_order(ok)
    assert all(list(e) == list(EXPORT_COLUMNS) for e in events)
    # Times to the nanosecond, every digit written (the tied events fall on a half second).
    ns_of = dict(zip(c["event_id"][ok].tolist(), c["timestamp"][ok].tolist(), strict=True))
    assert [e["timestamp"] for e in events] == [iso(ns_of[e["event_id"]]) for e in events]
    assert "2026-11-19T12:30:00.500000000Z" in {e["timestamp"] for e in events}
    assert all(isinstance(e["attributes"], dict) and isinstance(e["monitored"], bool) for e in events)


def test_filters_combine(loaded: Loaded, tmp_path: Path) -> None:
    c = loaded.c
    where = loaded.mask(WEEK, user_id="carol", route="/v1/orders") & (c["status_code"] >= 400)
    assert where.sum() > 0
    out = tmp_path / "carol.jsonl"
    done = cli(
        "export", "--clickhouse", loaded.url, *window_args(WEEK), "--user", "carol", "--route", "/v1/orders",
        "--status", "400-599", "--format", "jsonl", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [e["event_id"] for e in events] == loaded.export_order(where)


def test_empty_export_is_a_valid_empty_file(loaded: Loaded, tmp_path: Path) -> None:
    window = ("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
    out = tmp_path / "none.parquet"
    done = cli("export", "--clickhouse", loaded.url, *window_args(window), "--out", str(out))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == list(EXPORT_COLUMNS)
    assert "usagelog: 0 events written" in done.stderr


def test_whole_week_export_streams_in_several_batches(loaded: Loaded, tmp_path: Path) -> None:
    out = tmp_path / "week.parquet"
    done = cli("export", "--clickhouse", loaded.url, *window_args(WEEK), "--out", str(out))
    assert done.returncode == 0, done.stderr
    progress = [(int(a), int(b)) for a, b in re.findall(r"export: (\d+)/(\d+) events", done.stderr)]
    total = len(loaded.history)
    assert len(progress) >= 2  # more rows than one engine block: several batches, written as they came
    assert [w for w, _ in progress] == sorted({w for w, _ in progress})
    assert progress[-1] == (total, total)
    assert pq.ParquetFile(out).metadata.num_rows == total
    assert [p.name for p in tmp_path.iterdir()] == ["week.parquet"]


def week_filters() -> Filters:
    start, end = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in WEEK)
    return Filters(start, end)


def test_export_writes_batch_by_batch_into_a_hidden_partial_file(store: Store, tmp_path: Path) -> None:
    # Smaller engine blocks make more batches: each one must reach the file before the next
    # arrives (one row group per batch, the file growing), under a name no reader takes for the
    # export, and only the complete file appears under the real name.
    store.client.set_client_setting("max_block_size", "5000")
    out = tmp_path / "events.parquet"
    partial = tmp_path / ".events.parquet.partial"
    sizes: list[int] = []

    def progress(written: int, total: int) -> None:
        assert not out.exists()
        sizes.append(partial.stat().st_size)

    written = export_events(store, week_filters(), "parquet", out, progress)
    batches = pq.ParquetFile(out).metadata.num_row_groups
    assert written == pq.ParquetFile(out).metadata.num_rows > 80_000
    # A block is at most max_block_size rows, or one granule (8192) where FINAL reads a part
    # that needs no merging (the week is one month partition).
    assert batches >= written // 8192 and len(sizes) == batches
    assert all(b > a for a, b in itertools.pairwise(sizes))
    assert not partial.exists()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_failing_midway_leaves_no_file(store: Store, tmp_path: Path, fmt: str) -> None:
    store.client.set_client_setting("max_block_size", "5000")
    out = tmp_path / f"events.{fmt}"
    seen: list[int] = []

    def progress(written: int, total: int) -> None:
        seen.append((tmp_path / f".events.{fmt}.partial").stat().st_size)
        if len(seen) == 3:  # three batches are in the partial file by now
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        export_events(store, week_filters(), fmt, out, progress)
    assert len(seen) == 3 and seen[-1] > 0
    assert list(tmp_path.iterdir()) == []


def test_export_to_an_unusable_path_fails_cleanly(loaded: Loaded, tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    done = cli("export", "--clickhouse", loaded.url, *window_args(EXPORT_WINDOW), "--out", str(directory))
    assert done.returncode == 1
    assert "cannot write" in done.stderr and "directory" in done.stderr and "Traceback" not in done.stderr
    assert list(directory.iterdir()) == [] and sorted(tmp_path.iterdir()) == [directory]

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = cli(
        "export", "--clickhouse", loaded.url, *window_args(EXPORT_WINDOW), "--out", str(blocker / "x.csv")
    )
    assert done.returncode == 1
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("timeline", "bob", "--status", "6xx"), "--status"),
        (("timeline", "bob", "--status", "499-400"), "--status"),
        (("top", "users", "--since", "yesterday-ish"), "--since"),
        (("timeline", "bob", "--until", "99999999999999999999"), "--until"),
        (("top", "errors", "--since", "now-99999999999d"), "--since"),
        (("top", "routes", "--since", "2026-11-20T00:00:00Z", "--until", "2026-11-19T00:00:00Z"), "--until"),
        (("export", "--since", "soon", "--out", "never-written.parquet"), "--since"),
        (("export", "--since", "24h", "--status", "2xxx", "--out", "never-written.parquet"), "--status"),
    ],
)
def test_invalid_input_is_a_usage_error_naming_the_option(
    loaded: Loaded, tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args, "--clickhouse", loaded.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"usagelog: {option}") and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- the Python API --------------------------------------------------------------------------------


def test_api_events_as_arrow_and_pandas(loaded: Loaded) -> None:
    where = loaded.mask(EXPORT_WINDOW)
    table = ul.events(*EXPORT_WINDOW, url=loaded.url)
    assert isinstance(table, pa.Table) and table.column_names == list(EXPORT_COLUMNS)
    assert table.column("event_id").to_pylist() == loaded.export_order(where)

    c = loaded.c
    failed = where & (c["status_code"] >= 500)
    frame = ul.events(
        *EXPORT_WINDOW, status="5xx", columns=("event_id", "status_code"), url=loaded.url, as_pandas=True
    )
    assert list(frame.columns) == ["event_id", "status_code"]
    assert frame["event_id"].tolist() == loaded.export_order(failed) and len(frame) > 0
    assert ul.events(*EXPORT_WINDOW, limit=3, url=loaded.url).num_rows == 3


def test_api_timeline_and_top(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    # The store comes from the environment when no url= is given.
    monkeypatch.setenv("USAGELOG_CLICKHOUSE_URL", loaded.url)
    frame = ul.timeline(TIED_USER, *WEEK, as_pandas=True)
    expected = loaded.timeline(loaded.mask(WEEK, user_id=TIED_USER))
    assert list(zip(frame["instance"], frame["seq"].astype(int), strict=True)) == expected

    c = loaded.c
    where = loaded.mask(TOP_WINDOW) & (c["user_id"] != "")
    counts = Counter(c["user_id"][where].tolist())
    expected_top = sorted(counts.items(), key=lambda uc: (-uc[1], uc[0]))[:5]
    top = ul.top("users", *TOP_WINDOW, limit=5)
    assert list(zip(top.column("user").to_pylist(), top.column("requests").to_pylist(), strict=True)) == (
        expected_top
    )


def test_api_query_takes_parameters(loaded: Loaded) -> None:
    table = ul.query(
        "SELECT count() AS n FROM usagelog.usage_events FINAL WHERE user_id = {user:String}",
        {"user": HOSTILE_USERS[2]},
        url=loaded.url,
    )
    assert table.column("n").to_pylist() == [EVENTS_PER_HOSTILE]


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE usagelog.usage_events",
        "TRUNCATE TABLE usagelog.usage_events",
        "ALTER TABLE usagelog.usage_events DELETE WHERE 1",
        "INSERT INTO usagelog.usage_events (user_id) SELECT 'x'",
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
def test_api_query_is_read_only(loaded: Loaded, sql: str) -> None:
    with pytest.raises(Exception, match="readonly"):
        ul.query(sql, url=loaded.url)
    assert stored_count(loaded) == len(loaded.history)


def test_api_rejects_bad_times_and_statuses_naming_the_argument(loaded: Loaded) -> None:
    with pytest.raises(ValueError, match=r"^since: 'yesterday-ish' is not a time"):
        ul.events("yesterday-ish", url=loaded.url)
    with pytest.raises(ValueError, match=r"^until \(.*\) is not after since"):
        ul.top("users", *reversed(WEEK), url=loaded.url)
    with pytest.raises(ValueError, match=r"--status '6xx'"):
        ul.timeline("bob", *WEEK, status="6xx", url=loaded.url)
