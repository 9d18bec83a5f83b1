"""The usage event archive: staged durably per batch, finalized into Hive-partitioned files once
per partition, crash-safe, readable back into the same rows decode produces."""

from __future__ import annotations

import csv
import gc
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usagelog.ingest.archive import (
    DELTA_COLUMNS,
    DICTIONARY_COLUMNS,
    SCHEMA,
    Archive,
    ArchiveError,
    read_archive,
)
from usagelog.ingest.decode import COLUMNS, decode_payload

HOUR_NS = 3600 * 10**9
# 2023-11-14T22:13:20.123456789Z
T0 = 1_700_000_000_123_456_789
FILE_NAME = re.compile(r"^usage_events-\d{8}T\d{6}-(?P<worker>[A-Za-z0-9._-]+)-[0-9a-f]{8}\.(parquet|csv)$")


def make_row(n: int, ts: int = T0, **changes: Any) -> dict[str, Any]:
    """A usage_events row with every column, as decode_payload returns it."""
    row: dict[str, Any] = {
        "event_id": f"{n:032x}",
        "timestamp": ts,
        "duration_ns": 1_234_567 + n,
        "user_id": f"user-{n % 5}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "service_name": "orders-api",
        "service_instance_id": "6c1f6f0e-1111-4222-8333-444455556666",
        "host_name": "web-1",
        "host_id": "machine-abc",
        "process_pid": 4321,
        "cluster": "prod-eu",
        "region": "eu-west-1",
        "method": "POST",
        "route": "/orders/<int:order_id>",
        "path": f"/orders/{n}",
        "query": "page=2&api_key=[REDACTED]",
        "status_code": 201,
        "error_type": "",
        "client_address": "203.0.113.9",
        "user_agent": "curl/8.5.0",
        "request_body": '{"item": "book"}',
        "response_body": '{"id": 42}',
        "request_size": 16,
        "response_size": 10,
        "seq": n,
        "monitored": n % 2 == 0,
        "checksum": f"{n:016x}",
        "observed_timestamp": ts + 5_000_001,
        "user_id_claimed": "",
        "attributes": {"deployment.environment": "production", "http.flavor": "1.1"},
    }
    assert set(row) == set(COLUMNS)
    row.update(changes)
    return row


def odd_rows() -> list[dict[str, Any]]:
    """Rows that stress every column type: unicode, empty strings, extreme ints, awkward text."""
    return [
        make_row(1, user_id="zoë", path="/café/日本語/🚀", user_agent="", error_type="", attributes={}),
        make_row(
            2,
            ts=T0 + 1,
            duration_ns=2**64 - 1,
            request_size=2**64 - 1,
            response_size=2**63,
            seq=2**64 - 2,
            process_pid=2**32 - 1,
            status_code=65535,
            monitored=True,
            observed_timestamp=T0 + 999_999_999,
        ),
        make_row(
            3,
            ts=T0 + 2,
            duration_ns=0,
            request_size=0,
            response_size=0,
            process_pid=0,
            status_code=0,
            monitored=False,
            request_body='line 1\nline 2,\r\n"quoted", trailing\\',
            response_body="",
            query="a=1&b=%22x%22",
            attributes={"ключ": "значение", "": "", 'comma,quote"': "new\nline", "json": '{"a":[1]}'},
        ),
        make_row(4, ts=T0 - T0 % 10**9, observed_timestamp=T0 - T0 % 10**9),  # whole seconds
    ]


def encoded_rows(count: int) -> list[dict[str, Any]]:
    """Rows decoded from OTLP payloads built by the real in-app encoder."""
    from usagelog.instrumentation.builder import EventBuilder
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.exchange import Exchange
    from usagelog.instrumentation.identity import AttrValue, Identity
    from usagelog.instrumentation.userid import UserResolver

    resource: dict[str, AttrValue] = {
        "service.name": "bulk",
        "service.instance.id": "i-1",
        "host.name": "h",
        "process.pid": 7,
    }
    builder = EventBuilder(Settings(), UserResolver(["header:X-User"]), Identity(dict(resource)), "test")
    exchanges = []
    for seq in range(1, count + 1):
        x = Exchange({}, seq)
        x.method, x.path, x.route, x.status_code = "GET", f"/items/{seq}", "/items/<id>", 200
        x.user_headers = {"HTTP_X_USER": f"user-{seq % 7}"}
        x.trace_id, x.span_id, x.trace_flags = int.from_bytes(os.urandom(16), "big"), 1, 1
        exchanges.append(x)
    decoded = decode_payload(builder.encode_batch(exchanges)[0])
    assert len(decoded.rows) == count and not decoded.rejected
    return decoded.rows


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["timestamp"], r["service_instance_id"], r["seq"]))


def final_files(target: Path) -> list[Path]:
    return sorted(p for p in target.rglob("*") if p.is_file())


def chunks_in(staging: Path) -> list[Path]:
    return sorted(p for p in staging.rglob("chunk-*") if p.is_file())


@pytest.fixture(params=["parquet", "csv"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return tmp_path / "staging"


def open_archive(target: Path | str, staging: Path, fmt: str = "parquet", **kwargs: Any) -> Archive:
    kwargs.setdefault("worker_id", "worker-1")
    return Archive(str(target), fmt=fmt, staging_dir=staging, **kwargs)


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_column_and_type(target: Path, staging: Path, fmt: str) -> None:
    rows = odd_rows()
    archive = open_archive(target, staging, fmt)
    archive.stage(rows)
    urls = archive.close()
    assert len(urls) == 1 and urls[0].endswith("." + fmt)
    back = read_archive(str(target))
    assert back == ordered(rows)
    for row in back:
        assert list(row) == list(COLUMNS)
        assert all(type(row[c]) is type(make_row(0)[c]) for c in COLUMNS)


def test_real_encoded_events_round_trip(target: Path, staging: Path, fmt: str) -> None:
    rows = encoded_rows(50)
    archive = open_archive(target, staging, fmt)
    archive.stage(rows[:20])
    archive.stage(rows[20:])
    archive.close()
    assert read_archive(str(target)) == ordered(rows)


def test_parquet_file_has_the_explicit_schema_and_zstd(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    archive.stage(odd_rows())
    (url,) = archive.close()
    meta = pq.read_metadata(url)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(url)
    assert schema.names == list(COLUMNS)
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("observed_timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("seq").type == pa.uint64()
    assert schema.field("status_code").type == pa.uint16()
    assert schema.field("monitored").type == pa.bool_()
    assert isinstance(schema.field("attributes").type, pa.MapType)
    assert schema.field("route").type == pa.string()
    assert pq.read_table(url).cast(SCHEMA).num_rows == 4


def test_parquet_dictionary_encodes_only_the_columns_that_repeat_a_few_values(
    target: Path, staging: Path
) -> None:
    archive = open_archive(target, staging)
    archive.stage(odd_rows())
    (url,) = archive.close()
    group = pq.read_metadata(url).row_group(0)
    encoded = {
        group.column(i).path_in_schema
        for i in range(group.num_columns)
        if any("DICTIONARY" in e for e in group.column(i).encodings)
    }
    assert encoded == set(DICTIONARY_COLUMNS)
    assert {"event_id", "trace_id", "path", "request_body"}.isdisjoint(encoded)
    delta = {
        group.column(i).path_in_schema
        for i in range(group.num_columns)
        if "DELTA_BINARY_PACKED" in group.column(i).encodings
    }
    numbers = {"timestamp", "observed_timestamp", "seq", "duration_ns", "status_code", "process_pid"}
    assert delta == set(DELTA_COLUMNS) == numbers | {"request_size", "response_size"}


def test_csv_file_is_plain_text_with_iso_timestamps(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging, "csv")
    archive.stage(odd_rows())
    (url,) = archive.close()
    with open(url, encoding="utf-8", newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header == list(COLUMNS)
    first = dict(zip(header, lines[0], strict=True))
    assert first["timestamp"] == "2023-11-14T22:13:20.000000000Z"
    second = dict(zip(header, lines[1], strict=True))
    assert second["timestamp"] == "2023-11-14T22:13:20.123456789Z"
    assert second["monitored"] == "false" and second["user_id"] == "zoë"
    assert json.loads(second["attributes"]) == {}
    assert json.loads(first["attributes"]) == {"deployment.environment": "production", "http.flavor": "1.1"}
    assert first["monitored"] == "true" and first["seq"] == "4"


def test_file_url_target_works(target: Path, staging: Path) -> None:
    archive = open_archive(target.as_uri(), staging)
    archive.stage(odd_rows())
    (url,) = archive.close()
    assert url.startswith("file://")
    assert read_archive(target.as_uri()) == ordered(odd_rows())


def test_memory_target_works(staging: Path, fmt: str) -> None:
    url_base = f"memory://archive-{uuid.uuid4().hex}"
    rows = [make_row(n, T0 + n * HOUR_NS // 2) for n in range(6)]
    archive = open_archive(url_base, staging, fmt)
    archive.stage(rows)
    urls = archive.close()
    try:
        assert len(urls) == 3 and all(u.startswith(url_base + "/date=2023-11-1") for u in urls)
        fs = fsspec.filesystem("memory")
        assert all(fs.exists(u) for u in urls)
        assert read_archive(url_base) == ordered(rows)
        assert chunks_in(staging) == [] and not list(staging.glob("*.tmp-*"))
    finally:
        fsspec.filesystem("memory").rm(url_base, recursive=True)


# -- layout --------------------------------------------------------------------------------------


def test_rows_over_two_hours_land_in_two_hive_partitions(target: Path, staging: Path, fmt: str) -> None:
    # 2023-11-14 23:59:59 and 2023-11-15 00:00:01 UTC: two hours on two dates.
    late, early = 1_700_006_399 * 10**9 + 7, 1_700_006_401 * 10**9
    rows = [make_row(1, late), make_row(2, early), make_row(3, late + 1)]
    archive = open_archive(target, staging, fmt, worker_id="kafka-worker.2")
    archive.stage(rows)
    archive.close()
    files = final_files(target)
    parents = [f.parent.relative_to(target).as_posix() for f in files]
    assert parents == ["date=2023-11-14/hour=23", "date=2023-11-15/hour=00"]
    names = [f.name for f in files]
    assert names[0].startswith("usage_events-20231114T235959-kafka-worker.2-")
    assert names[1].startswith("usage_events-20231115T000001-kafka-worker.2-")
    assert all(FILE_NAME.match(n) for n in names)
    assert [r["event_id"] for r in read_archive(str(target))] == [f"{n:032x}" for n in (1, 3, 2)]


def test_final_file_is_sorted_by_timestamp_instance_and_seq(target: Path, staging: Path) -> None:
    rows = [
        make_row(1, T0 + 5, service_instance_id="b"),
        make_row(2, T0 + 5, service_instance_id="a", seq=9),
        make_row(3, T0 + 5, service_instance_id="a", seq=3),
        make_row(4, T0),
    ]
    archive = open_archive(target, staging)
    archive.stage(rows[:2])
    archive.stage(rows[2:])
    (url,) = archive.close()
    assert pq.read_table(url).column("event_id").to_pylist() == [f"{n:032x}" for n in (4, 3, 2, 1)]


def _hour_writer(rows: list[dict[str, Any]], **table_changes: Any) -> Any:
    """A ``stage_hours`` writer: each hour's rows of ``rows`` as an Arrow IPC file (as the engine
    writes them), with ``table_changes`` applied (a column dropped: ``drop=name``; nulls:
    ``nulls=name``)."""

    def write(hour: int, path: Path) -> None:
        table = pa.Table.from_pylist([r for r in rows if r["timestamp"] // HOUR_NS == hour], schema=SCHEMA)
        if "drop" in table_changes:
            table = table.drop_columns([table_changes["drop"]])
        if "nulls" in table_changes:
            name = table_changes["nulls"]
            i = table.schema.get_field_index(name)
            field = pa.field(name, table.schema.field(name).type, nullable=True)
            table = table.cast(table.schema.set(i, field))
            table = table.set_column(i, field, pa.nulls(len(table), field.type))
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    return write


def test_rows_a_writer_puts_in_files_are_staged_by_hour_and_finalized(
    target: Path, staging: Path, fmt: str
) -> None:
    rows = [make_row(1), make_row(2, ts=T0 + HOUR_NS), make_row(3, ts=T0 + 1)]
    archive = open_archive(target, staging, fmt)
    hours = sorted({r["timestamp"] // HOUR_NS for r in rows})
    archive.stage_hours(hours, _hour_writer(rows))
    assert len(chunks_in(staging)) == 2 and archive.pending == 2
    assert len(archive.close()) == 2
    assert read_archive(str(target)) == ordered(rows)
    assert [p.parent.name for p in final_files(target)] == ["hour=22", "hour=23"]


@pytest.mark.parametrize("change", [{"drop": "seq"}, {"nulls": "user_id"}])
def test_a_written_file_missing_a_column_or_values_is_refused_and_nothing_is_staged(
    target: Path, staging: Path, change: dict[str, str]
) -> None:
    archive = open_archive(target, staging)
    with pytest.raises((ValueError, KeyError, pa.ArrowInvalid)):
        archive.stage_hours([T0 // HOUR_NS], _hour_writer([make_row(1)], **change))
    leftovers = [p for p in staging.rglob("*") if p.is_file() and p.name != ".lock"]
    assert leftovers == [] and archive.pending == 0
    archive.stage([make_row(2)])  # the archive goes on
    archive.close()
    assert read_archive(str(target)) == [make_row(2)]


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_by_size_cuts_several_files_and_loses_nothing(target: Path, staging: Path, fmt: str) -> None:
    rows = encoded_rows(200)
    archive = open_archive(target, staging, fmt, max_bytes=20_000)
    written = []
    for start in range(0, len(rows), 20):
        archive.stage(rows[start : start + 20])
        written += archive.maybe_rotate()
    written += archive.close()
    assert len(written) >= 3
    assert sorted(Path(u) for u in written) == final_files(target)
    assert read_archive(str(target)) == ordered(rows)


def test_rotation_by_rows_in_memory_bounds_what_finalizing_holds(target: Path, staging: Path) -> None:
    rows = encoded_rows(200)
    # On disk the chunks never reach max_bytes; as columns, 20 rows take ~6 kB: a file every 3 chunks.
    archive = open_archive(target, staging, max_bytes=10**9, max_table_bytes=12_000)
    written = []
    for start in range(0, len(rows), 20):
        archive.stage(rows[start : start + 20])
        written += archive.maybe_rotate()
        assert len(chunks_in(staging)) <= 2  # never more staged than a file's worth
    assert len(written) >= 3
    written += archive.close()
    assert read_archive(str(target)) == ordered(rows)


def test_rotation_waits_below_the_size_threshold(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging, max_bytes=10**9)
    archive.stage(odd_rows())
    assert archive.maybe_rotate() == []
    assert final_files(target) == [] and len(chunks_in(staging)) == 1
    archive.close()


def test_rotation_by_time(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging, max_seconds=60)
    archive.stage([make_row(1)])
    assert archive.due(now=time.time() + 30) == []
    assert archive.maybe_rotate(now=time.time() + 30) == []
    (partition,) = archive.due(now=time.time() + 61)
    (url,) = archive.maybe_rotate(now=time.time() + 61)
    assert f"/{partition}/" in url and archive.due(now=time.time() + 61) == []
    assert read_archive(str(target)) == [make_row(1)]
    archive.stage([make_row(2)])  # a new chunk starts a new clock
    assert archive.maybe_rotate(now=time.time() + 30) == []
    assert len(archive.close()) == 1
    assert len(final_files(target)) == 2 and Path(url) in final_files(target)


# -- duplicates and crashes ----------------------------------------------------------------------


def test_batch_staged_twice_is_stored_once_keeping_the_first(target: Path, staging: Path, fmt: str) -> None:
    batch = [make_row(n, T0 + n) for n in range(10)]
    archive = open_archive(target, staging, fmt)
    archive.stage(batch)
    archive.stage([{**r, "route": "/redelivered"} for r in batch[5:]] + [make_row(10, T0 + 10)])
    archive.close()
    assert read_archive(str(target)) == [*batch, make_row(10, T0 + 10)]


def test_copies_of_events_sharing_a_sort_key_are_each_stored_once(target: Path, staging: Path) -> None:
    # Two events of one instance given the same time and seq (IDs differ), both staged twice in
    # the other order, between other events of that instant: one of each, the first staged.
    a, b = make_row(7, T0, seq=3), make_row(2, T0, seq=3)
    others = [make_row(n, T0) for n in (20, 21)]
    archive = open_archive(target, staging)
    archive.stage([a, *others, b])
    archive.stage([{**b, "route": "/again"}, others[0], {**a, "route": "/again"}])
    archive.close()
    stored = read_archive(str(target))
    assert sorted(r["event_id"] for r in stored) == sorted(r["event_id"] for r in [a, b, *others])
    assert [r for r in stored if r["event_id"] in (a["event_id"], b["event_id"])] == [b, a]  # by ID


def test_recover_finalizes_what_a_dropped_archive_left(target: Path, staging: Path, fmt: str) -> None:
    rows = [make_row(n, T0 + n * HOUR_NS // 3) for n in range(9)]
    archive = open_archive(target, staging, fmt, worker_id="old")
    archive.stage(rows[:4])
    archive.stage(rows[4:])
    del archive  # no close(): the process "dies" with everything staged
    gc.collect()
    assert final_files(target) == []

    successor = open_archive(target, staging, fmt, worker_id="new")
    urls = successor.recover()
    assert len(urls) == 3
    assert {FILE_NAME.match(Path(u).name).group("worker") for u in urls} == {"old"}  # type: ignore[union-attr]
    assert read_archive(str(target)) == ordered(rows)
    assert chunks_in(staging) == []
    assert successor.recover() == [] and successor.close() == []
    assert len(final_files(target)) == 3


def test_recover_after_a_killed_process(target: Path, staging: Path) -> None:
    script = (
        "import os, sys\n"
        "from usagelog.ingest.archive import Archive\n"
        "from tests.ingest.test_archive import make_row\n"
        "a = Archive(sys.argv[1], staging_dir=sys.argv[2], worker_id='w1')\n"
        "a.stage([make_row(n, 1_700_000_000_000_000_000 + n) for n in range(100)])\n"
        "os._exit(9)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script, str(target), str(staging)], cwd=root, check=False)
    assert done.returncode == 9
    archive = open_archive(target, staging)  # the lock died with the process
    assert len(archive.recover()) == 1
    assert [r["seq"] for r in read_archive(str(target))] == list(range(100))


def test_recover_after_crash_between_publish_and_chunk_removal(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    archive.stage(odd_rows())
    saved = {c: c.read_bytes() for c in chunks_in(staging)}
    (url,) = archive.close()
    for chunk, data in saved.items():  # the chunks the crash did not get to delete
        chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(data)
    assert open_archive(target, staging).recover() == [url]  # same chunks, same file: no copy
    assert final_files(target) == [Path(url)]
    assert read_archive(str(target)) == ordered(odd_rows())


def test_recover_honours_the_published_marker(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    archive.stage(odd_rows())
    saved = {c: c.read_bytes() for c in chunks_in(staging)}
    archive.close()
    ((chunk, data),) = saved.items()
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.write_bytes(data)
    (chunk.parent / "published-0123abcd.json").write_text(json.dumps([chunk.name]))
    assert open_archive(target, staging).recover() == []
    assert not staging.joinpath("date=2023-11-14").exists()
    assert len(final_files(target)) == 1


def test_recover_discards_cut_short_writes(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    archive.stage([make_row(1)])
    del archive
    gc.collect()
    (chunk,) = chunks_in(staging)
    torn = chunk.with_name(chunk.name.replace("chunk-0", "chunk-1") + ".tmp-0badf00d")
    torn.write_bytes(b"PAR1 half a chunk")
    (staging / "upload.tmp-0badf00d").write_bytes(b"half an upload")
    archive = open_archive(target, staging)
    assert len(archive.recover()) == 1
    assert read_archive(str(target)) == [make_row(1)]
    assert [p for p in staging.rglob("*") if p.name != ".lock"] == []


def test_chunks_are_arrow_files_whatever_the_format(target: Path, staging: Path, fmt: str) -> None:
    archive = open_archive(target, staging, fmt)
    archive.stage(odd_rows())
    (chunk,) = chunks_in(staging)
    assert chunk.suffix == ".arrow"
    with pa.memory_map(str(chunk)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.schema == SCHEMA and table.num_rows == len(odd_rows())
    archive.close()
    assert read_archive(str(target)) == ordered(odd_rows())


@pytest.mark.parametrize("old", ["parquet", "csv"])
def test_recover_publishes_chunks_staged_in_the_files_format(target: Path, staging: Path, old: str) -> None:
    """Chunks staged as Parquet or CSV (before chunks were Arrow files), left by a crash, are
    published with those staged as Arrow."""
    from usagelog.ingest import archive as archive_module

    archive = open_archive(target, staging)
    archive.stage([make_row(1)])
    archive.release()
    (arrow_chunk,) = chunks_in(staging)
    older = arrow_chunk.with_name(f"chunk-{time.time_ns():020d}-00000001-0badf00d-w-old.{old}")
    archive_module._write_file(older, archive_module._to_table([make_row(2, T0 + 1)]), old)
    assert open_archive(target, staging).recover() != []
    assert read_archive(str(target)) == [make_row(1), make_row(2, T0 + 1)]
    assert chunks_in(staging) == []


def test_no_temporary_name_is_left_under_the_target(target: Path, staging: Path, fmt: str) -> None:
    archive = open_archive(target, staging, fmt, max_bytes=1)
    for n in range(5):
        archive.stage([make_row(n, T0 + n * HOUR_NS)])
        archive.maybe_rotate()
    archive.close()
    names = [p.name for p in target.rglob("*")]
    assert names and not [n for n in names if ".tmp" in n]
    assert all(FILE_NAME.match(p.name) for p in final_files(target))


# -- reading in place with ClickHouse -------------------------------------------------------------

# The archive's columns with the table's types, from the table itself: every column but
# inserted_at (the archive holds what the workers decoded, before storage stamped it). From
# monitored_events, which stores the event's columns as they are (usage_events stores some compactly).
STRUCTURE_SQL = """
SELECT arrayStringConcat(groupArray(name || ' ' || type), ', ') AS structure, groupArray(name) AS names
FROM (
    SELECT name, type FROM system.columns
    WHERE database = 'usagelog' AND table = 'monitored_events' AND name != 'inserted_at'
    ORDER BY position
)
"""
# CSV holds attributes as a JSON object, which ClickHouse's CSV reader does not take for a Map:
# read it as String and convert. Whitespace around a value and a bare \N are data, not padding
# or NULL (the archive quotes CSV cells only where it must).
IN_PLACE_SQL = {
    "parquet": "SELECT * FROM file({path:String}, Parquet, {structure:String})",
    "csv": (
        "SELECT * REPLACE (JSONExtract(attributes, 'Map(String, String)') AS attributes) "
        "FROM file({path:String}, CSVWithNames, {structure:String}) "
        "SETTINGS date_time_input_format = 'best_effort', input_format_csv_trim_whitespaces = 0, "
        "input_format_null_as_default = 0"
    ),
}


def test_archive_files_are_queryable_in_place_with_the_tables_types(
    target: Path, staging: Path, tmp_path: Path, fmt: str
) -> None:
    import usagelog.analytics as ul
    from usagelog.ingest.queries import _checksum_sql
    from usagelog.ingest.store import connect

    awkward = make_row(5, T0 + HOUR_NS, user_id=" padded ", user_agent="\\N", request_body=" ", query="NULL")
    encoded = encoded_rows(40)  # real checksums, over the canonical fields
    rows = [*odd_rows(), awkward, *encoded]
    url = "chdb://" + str(tmp_path / "chdb")
    with connect(url) as store:
        assert store.insert_events(rows) == (len(rows), 0)
    archive = open_archive(target, staging, fmt)
    archive.stage(rows[:3])
    archive.stage(rows[3:])
    assert len(archive.close()) >= 3  # two hours of odd rows, and the encoded rows' hour

    table = ul.query(STRUCTURE_SQL, url=url)
    assert table.column("names")[0].as_py() == list(COLUMNS)
    columns = str(table.column("structure")[0].as_py())
    if fmt == "csv":
        assert "attributes Map(String, String)" in columns
        columns = columns.replace("attributes Map(String, String)", "attributes String")
    params = {"path": f"{target}/**/*.{fmt}", "structure": columns}
    # usage_events keeps the checksum's first 16 hex digits (the archive all 32: checked below).
    archived = ul.query(
        f"SELECT * REPLACE (substring(checksum, 1, 16) AS checksum) FROM ({IN_PLACE_SQL[fmt]}) "
        "ORDER BY event_id",
        params,
        url=url,
        table_functions=True,
    )
    stored = ul.query(
        f"SELECT {', '.join(COLUMNS)} FROM usagelog.usage_events FINAL ORDER BY event_id", url=url
    )
    assert archived.num_rows == stored.num_rows == len(rows)
    assert archived.column("event_id").to_pylist() == stored.column("event_id").to_pylist()
    assert archived.column("checksum").to_pylist() == stored.column("checksum").to_pylist()
    assert archived.schema == stored.schema
    assert archived.equals(stored)  # every value, nanoseconds and all

    # The checksums the API processes computed hold for the rows as ClickHouse reads them back.
    recomputed = ul.query(
        f"SELECT event_id FROM ({IN_PLACE_SQL[fmt]}) WHERE checksum = {_checksum_sql()}",
        params,
        url=url,
        table_functions=True,
    )
    assert sorted(recomputed.column("event_id").to_pylist()) == sorted(r["event_id"] for r in encoded)

    # The Hive partition names (date=, hour=) are columns too, to filter files by.
    file_format = {"parquet": "Parquet", "csv": "CSVWithNames"}[fmt]
    hour = ul.query(
        f"SELECT count() AS n FROM file({{path:String}}, {file_format}, {{structure:String}}) "
        "WHERE date = '2023-11-14' AND hour = 22",
        params,
        url=url,
        table_functions=True,
    )
    assert hour.column("n").to_pylist() == [4]


# -- misuse --------------------------------------------------------------------------------------


def test_invalid_format_raises_naming_the_option(target: Path, staging: Path) -> None:
    with pytest.raises(ValueError, match=r"USAGELOG_ARCHIVE_FORMAT.*'json'"):
        open_archive(target, staging, "json")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker_id": "a/b"}, "worker_id"),
        ({"max_bytes": 0}, "USAGELOG_ARCHIVE_MAX_BYTES"),
        ({"max_seconds": -1}, "USAGELOG_ARCHIVE_MAX_SECONDS"),
    ],
)
def test_invalid_options_raise(target: Path, staging: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_archive(target, staging, **kwargs)


def test_rows_the_table_cannot_hold_are_refused_at_stage(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    incomplete = make_row(1)
    del incomplete["checksum"]
    with pytest.raises(ValueError, match="checksum"):
        archive.stage([incomplete])
    with pytest.raises(OverflowError):
        archive.stage([make_row(2, status_code=-1)])
    assert chunks_in(staging) == []
    archive.close()


def test_one_staging_directory_one_live_archive(target: Path, staging: Path) -> None:
    archive = open_archive(target, staging)
    with pytest.raises(ArchiveError, match="in use"):
        open_archive(target, staging, worker_id="other")
    archive.close()
    with pytest.raises(ArchiveError, match="closed"):
        archive.stage([make_row(1)])
    open_archive(target, staging, worker_id="other").close()


def test_read_archive_of_a_missing_target_is_empty(tmp_path: Path) -> None:
    assert read_archive(str(tmp_path / "nothing")) == []


def test_read_archive_unique_folds_copies_across_files(target: Path, staging: Path) -> None:
    for _ in range(2):  # the same batch finalized twice, as after a crash before the Kafka commit
        archive = open_archive(target, staging)
        archive.stage(odd_rows())
        archive.close()
    assert len(final_files(target)) == 2
    assert len(read_archive(str(target))) == 8
    assert read_archive(str(target), unique=True) == ordered(odd_rows())
