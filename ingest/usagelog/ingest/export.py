"""``usagelog export``: stored events to a Parquet, CSV or JSON-lines file, streamed.

The events come from ClickHouse as Arrow record batches and go to the file batch by batch, so
an export of any size runs in bounded memory. Each event is written once (``FINAL``), in
timeline order. The file appears under its name only when complete (written beside it, then
renamed), so a reader never sees half an export.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .queries import Filters, count_events, events_query
from .store import Store

FORMATS = ("parquet", "csv", "jsonl")
Progress = Callable[[int, int], None]


def _plain_batch(batch: Any) -> Any:
    """Columns CSV cannot hold (maps) as JSON text; everything else as it is."""
    import pyarrow as pa

    columns = []
    for index, field in enumerate(batch.schema):
        column = batch.column(index)
        if pa.types.is_map(field.type):
            values = [
                json.dumps(dict(v), ensure_ascii=False) if v is not None else "" for v in column.to_pylist()
            ]
            column = pa.array(values, type=pa.string())
        columns.append(column)
    names = [field.name for field in batch.schema]
    return pa.RecordBatch.from_arrays(columns, names=names)


def _iso_timestamps(batch: Any) -> Any:
    """Timestamp columns as ISO-8601 text with every digit of the column's precision
    (``...T12:30:00.500000000Z``): exact to the nanosecond without going through Python
    datetimes, and equal widths, so the text sorts as the times do."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [
        pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ") if pa.types.is_timestamp(column.type) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {str(k): v for k, v in value}
    return value


class _Writer:
    def __init__(self, fmt: str, path: Path) -> None:
        self.fmt = fmt
        self.path = path
        self._writer: Any = None
        self._file: Any = None

    def write(self, batch: Any) -> None:
        import pyarrow as pa

        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, batch.schema, compression="zstd")
            self._writer.write_table(pa.Table.from_batches([batch]))
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            plain = _plain_batch(batch)
            if self._writer is None:
                self._writer = pcsv.CSVWriter(str(self.path), plain.schema)
            self._writer.write_batch(plain)
        else:
            if self._file is None:
                self._file = self.path.open("w", encoding="utf-8")
            for row in _iso_timestamps(batch).to_pylist():
                self._file.write(
                    json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False) + "\n"
                )

    def close(self, empty_schema: Any = None) -> None:
        if self._writer is None and self._file is None:
            # No events: still a valid, empty file of the format.
            if self.fmt == "jsonl":
                self.path.write_text("")
            elif empty_schema is not None:
                self.write(_empty(empty_schema))
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()


def _empty(schema: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def export_events(
    store: Store, filters: Filters, fmt: str, out: Path, progress: Progress | None = None
) -> int:
    """Write the events matching ``filters`` to ``out``; returns how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        # Checked first: otherwise the whole export would run only to fail at the final rename.
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file name", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    total = count_events(store, filters)
    sql, params = events_query(store, filters)
    written = 0
    writer = _Writer(fmt, partial)
    schema = None
    try:
        with store.client.query_arrow_stream(sql, parameters=params) as stream:
            for batch in stream:
                schema = batch.schema
                if batch.num_rows:
                    writer.write(batch)
                    written += batch.num_rows
                    if progress is not None:
                        progress(written, total)
        if schema is None:
            schema = store.client.query_arrow(sql + " LIMIT 0", parameters=params).schema
        writer.close(schema)
        os.replace(partial, out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return written
