"""Output of stored values: control characters never reach the terminal raw in table form,
JSON stays valid and exact, CSV carries the data as stored."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from typing import Any

from usagelog.ingest.output import render
from usagelog.ingest.tail import _line, as_json
from usagelog.instrumentation import event as ev

HOSTILE = {
    "path": "/api/\x1b[2J\x1b]0;pwned\x07items",
    "user_id": "alice\u202egnp.exe",
    "error_type": "Boom\r\nFAKE LOG LINE\x9b31m",
}
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def raw_controls(text: str) -> list[str]:
    return [c for c in RAW if c in text]


def test_table_shows_control_characters_escaped() -> None:
    columns = list(HOSTILE)
    table = render(columns, [tuple(HOSTILE.values())], "table", max_width=200)
    assert raw_controls(table) == []
    assert "/api/\\x1b[2J\\x1b]0;pwned\\x07items" in table
    assert "alice\\u202egnp.exe" in table
    assert "Boom\\r\\nFAKE LOG LINE\\x9b31m" in table
    assert len(table.splitlines()) == 4  # header, rule, one row, count: no line of its own


def test_json_is_valid_exact_and_free_of_raw_controls() -> None:
    text = render(list(HOSTILE), [tuple(HOSTILE.values())], "json")
    assert raw_controls(text) == []
    assert json.loads(text) == [HOSTILE]


def test_csv_carries_the_values_as_stored() -> None:
    text = render(list(HOSTILE), [tuple(HOSTILE.values())], "csv")
    assert list(csv.DictReader(io.StringIO(text, newline=""))) == [HOSTILE]


def test_tail_lines_escape_and_tail_json_stays_exact() -> None:
    row: dict[str, Any] = {c: "" for c in ev.COLUMNS}
    row.update(HOSTILE, timestamp=1_700_000_000_000_000_000, duration_ns=1_000_000, status_code=500)
    row.update(method="GET\x1b[0m", service_instance_id="abc\x1b[1mdef")
    assert raw_controls(_line(row)) == []
    assert "\\x1b[2J" in _line(row)
    shown = as_json(row)
    assert raw_controls(shown) == []
    assert {k: json.loads(shown)[k] for k in HOSTILE if k in ev.TAIL_COLUMNS} == {
        k: v for k, v in HOSTILE.items() if k in ev.TAIL_COLUMNS
    }


def test_query_output_in_a_terminal_has_no_escape_sequences(chdb_url: str) -> None:
    sql = "SELECT concat('/p', char(27), '[31mred', char(27), '[0m') AS path, 'a' || char(7) AS user"
    result = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "query", sql, "--clickhouse", chdb_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert raw_controls(result.stdout) == []
    assert "/p\\x1b[31mred\\x1b[0m" in result.stdout and "a\\x07" in result.stdout

    # An engine's error message may quote a stored value too.
    throw = "SELECT throwIf(1, concat('x', char(27), '[2J'))"
    failed = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "query", throw, "--clickhouse", chdb_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and raw_controls(failed.stderr) == [] and "x\\x1b[2J" in failed.stderr
