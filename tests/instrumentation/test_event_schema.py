"""The usage event is declared once (``event.FIELDS``): the table, the encoder, the decoder, the archive
and ``tail`` follow that declaration, and a new field needs only the declaration and a migration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from usagelog.ingest import archive, decode, stored, tail
from usagelog.ingest.store import connect
from usagelog.instrumentation import event as ev


def _logical(stored: str) -> str:
    """A stored type as the event declares it (a stored form may use LowCardinality where the
    declaration says String: the values read the same)."""
    match = re.fullmatch(r"LowCardinality\((.*)\)", stored)
    return match.group(1) if match else stored


def test_the_declaration_matches_the_tables_the_migrations_create(chdb_url: str) -> None:
    with connect(chdb_url) as store:
        # monitored_events stores the declared columns as they are, in order.
        _, rows = store.query(
            "SELECT name, type FROM system.columns WHERE database = 'usagelog' "
            "AND table = 'monitored_events' ORDER BY position"
        )
        assert rows == [(f.column, f.clickhouse) for f in ev.FIELDS]
        # usage_events stores some compactly and gives back every declared column, stored or ALIAS,
        # under its name with its declared type; every other column is stored.py's stored form.
        _, rows = store.query(
            "SELECT name, type, default_kind FROM system.columns WHERE database = 'usagelog' "
            "AND table = 'usage_events' ORDER BY position"
        )
        by_name = {name: (kind, default) for name, kind, default in rows}
        for f in ev.FIELDS:
            assert f.column in by_name, f.column
            kind, default = by_name[f.column]
            assert _logical(kind) == _logical(f.clickhouse), f.column
            assert default in ("", "ALIAS", "DEFAULT"), f.column
        derived = {name for name, (_, default) in by_name.items() if default == "ALIAS"}
        physical = [name for name, _, default in rows if default != "ALIAS"]
        assert physical == [*stored.stored_columns(True, ev.COLUMNS), "inserted_offset_ms"]
        assert derived == {"event_id", "trace_id", "span_id", "checksum", "observed_timestamp", "inserted_at"}


def test_checksum_positions_run_without_gaps_and_match_the_stored_order() -> None:
    assert [f.checksum for f in ev.CHECKSUM_FIELDS] == list(range(len(ev.CHECKSUM_FIELDS)))
    # The order stored events were checksummed in: changing it would fail every audit.
    assert [f.column for f in ev.CHECKSUM_FIELDS] == [
        "event_id", "timestamp", "duration_ns", "user_id", "trace_id", "span_id", "service_name",
        "service_instance_id", "host_name", "process_pid", "cluster", "region", "method", "route", "path",
        "query", "status_code", "error_type", "request_size", "response_size", "request_body",
        "response_body", "seq", "monitored",
    ]  # fmt: skip


def test_decoder_archive_and_tail_read_the_declaration() -> None:
    assert decode.COLUMNS == ev.COLUMNS
    assert archive.SCHEMA.names == list(ev.COLUMNS)
    assert tuple(f.column for f in ev.FIELDS if f.tail) == tail.FIELDS


# A field added the way a developer would: a line in event.FIELDS and a migration. The script runs
# in its own process so every module derives its tables from the extended declaration at import.
NEW_FIELD = """
import json, sys
from dataclasses import replace
from usagelog.instrumentation import event as ev

position = [f.column for f in ev.FIELDS].index("attributes")
field = ev.Field(
    "content_type", "http.request.header.content-type", ev.RECORD, "LowCardinality(String)", "string",
    source="request_content_type", tail=True,
)
ev.FIELDS = (*ev.FIELDS[:position], field, *ev.FIELDS[position:])
ev._derive()

from pathlib import Path
from usagelog.ingest import archive, store, tail
from usagelog.ingest.decode import decode_payload
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import Settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.userid import UserResolver

COLUMN = "content_type LowCardinality(String) AFTER observed_timestamp"
MIGRATION = (
    f"ALTER TABLE ${{DATABASE}}.usage_events ADD COLUMN {COLUMN};"
    f"ALTER TABLE ${{DATABASE}}.monitored_events ADD COLUMN {COLUMN};"
)
known = store.migrations()
store.migrations = lambda: [*known, (900, "900_content_type.sql", MIGRATION)]

identity = Identity({"service.name": "shop", "service.instance.id": "i-1", "process.pid": 1})
builder = EventBuilder(Settings(), UserResolver(["header:X-User"]), identity, "test")
x = Exchange({}, 1)
x.method, x.path, x.route, x.status_code = "POST", "/orders", "/orders", 201
x.request_content_type = "application/json"
decoded = decode_payload(builder.encode_batch([x])[0])
assert not decoded.rejected, decoded.rejected
[row] = decoded.rows
with store.connect(sys.argv[1]) as opened:
    assert opened.insert_events(decoded.rows) == (1, 0)
    stored = opened.query("SELECT content_type FROM usagelog.usage_events")[1]
shelf = archive.Archive(sys.argv[2], staging_dir=Path(sys.argv[3]), worker_id="w1")
shelf.stage(decoded.rows)
shelf.close()
archived = archive.read_archive(sys.argv[2])
print(json.dumps({
    "stored": stored[0][0],
    "archived": archived[0]["content_type"],
    "tail": json.loads(tail.as_json(row)),
}))
"""


def test_a_new_field_needs_only_the_declaration_and_a_migration(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(NEW_FIELD),
            "chdb://" + str(tmp_path / "chdb"),
            str(tmp_path / "archive"),
            str(tmp_path / "staging"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["stored"] == "application/json"
    assert out["archived"] == "application/json"
    assert out["tail"]["content_type"] == "application/json" and out["tail"]["method"] == "POST"
