"""Rendering query results for people (``table``) and scripts (``json``, ``csv``).

Stored values come from HTTP requests, so they may hold terminal control sequences (an ESC in a
path or a user ID). ``table`` shows each control character escaped (``\\x1b``, ``\\n``,
``\\u202e``), ``json`` escapes them the JSON way (the value is unchanged once parsed), and ``csv``
is data for programs: values exactly as stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "csv")

# What a terminal acts on rather than shows: C0 and C1 controls, DEL, and the invisible
# characters that reorder or break text (bidirectional overrides, line and paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# json.dumps escapes C0 controls itself; a raw one in its output is indentation.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_text(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: _SHORT.get(m.group(0)) or _escape(m.group(0)), text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def dumps(value: Any, **options: Any) -> str:
    """JSON for a terminal: ``json.dumps`` (UTF-8 kept) with every control character escaped;
    ``json.loads`` gives the same value back."""
    text = json.dumps(value, ensure_ascii=False, **options)
    # Outside strings JSON has no such characters, so each is inside one: \uXXXX is its escape.
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", max_width: int = 48
) -> str:
    if fmt == "json":
        return dumps([dict(zip(columns, map(_plain, row), strict=False)) for row in rows], indent=1)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_plain(v) for v in row])
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    columns = [escape_text(str(c)) for c in columns]
    widths = [max(w, len(c)) for w, c in zip(widths, columns, strict=False)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join([line.rstrip(), rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def _cell(value: Any, max_width: int) -> str:
    value = _plain(value)
    text = dumps(value) if isinstance(value, (dict, list)) else escape_text(str(value))
    return text if len(text) <= max_width else text[: max_width - 1] + "…"
