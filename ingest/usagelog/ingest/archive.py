"""Archiving stored usage events as files, Hive-partitioned by hour and cut every ~100 MB.

The ingest pipeline (:mod:`usagelog.ingest.pipeline`) hands every batch of decoded rows to
:meth:`Archive.stage` (or, on chDB, has the engine write them: :meth:`Archive.stage_hours`)
*before* inserting it into ClickHouse and before its source lets go of it (Kafka offsets
committed, spool segments deleted). This module reads no environment variables;
:func:`open_archive` takes them from :class:`~usagelog.ingest.settings.ArchiveSettings`:

- ``USAGELOG_ARCHIVE_URL`` → ``target``: a local directory or any fsspec URL (``file://``,
  ``s3://``, ``memory://`` ...). Without it nothing is archived.
- ``USAGELOG_ARCHIVE_ENDPOINT`` → ``endpoint``: the S3 server of an ``s3://`` target (MinIO,
  SeaweedFS...; default AWS). Credentials: the AWS variables, see :mod:`.archive_remote`.
- ``USAGELOG_ARCHIVE_FORMAT`` → ``fmt``: ``parquet`` (default, zstd) or ``csv``.
- ``USAGELOG_ARCHIVE_MAX_BYTES`` → ``max_bytes`` (default 104857600) and
  ``USAGELOG_ARCHIVE_MAX_SECONDS`` → ``max_seconds`` (default 3600): :meth:`Archive.maybe_rotate`
  finalizes a partition once its staged chunks take that many bytes on disk, or once its oldest
  chunk is that old, or once its staged rows take :data:`DEFAULT_MAX_TABLE_BYTES` (32 MiB) as
  columns in memory (finalizing holds about four times that). A file holds what was staged by
  then, so it may overshoot ``max_bytes`` by a batch or more; Parquet files usually come out
  smaller than their chunks.

Files: ``<target>/date=YYYY-MM-DD/hour=HH/usage_events-<YYYYmmddTHHMMSS>-<worker_id>-<8 hex>.<fmt>``
(UTC event time; the stamp is the first event's, the worker the one that staged the first chunk),
one row per ``event_id``, sorted by ``(timestamp, service_instance_id, seq)``.

Crash safety. ``stage()`` writes one chunk per (date, hour) to
``<staging_dir>/date=.../hour=.../chunk-<ns>-<n>-<rand>-<worker_id>.arrow`` (Arrow IPC) under a temporary
name, fsyncs and renames it. Finalizing writes the file under a temporary name (local targets:
``<final>.tmp-<rand>`` then rename; others: a local file then ``fs.put``, which object stores
publish atomically: an object appears whole or not at all) and only then deletes the chunks.
The name derives from the chunk names, so
finalizing the same chunks again after a crash replaces the file rather than copying it, and a
``published-<8 hex>.json`` marker covers a crash while chunks are deleted. ``recover()``
finalizes every chunk in ``staging_dir`` that this object did not stage, whichever worker wrote
it. ``<staging_dir>/.lock`` keeps two live archives off one staging directory.

An object store that is down (:class:`ArchiveUnavailable`) leaves the chunks staged and pending:
``maybe_rotate()``, ``recover()`` and ``close()`` raise it and the next call tries again. One
that refuses the credentials raises :class:`ArchiveError` naming the settings to check.

Duplicates: a batch staged twice before its partition is finalized is stored once; a batch
re-delivered after its first copy was finalized (e.g. by ``recover()`` after a crash before the
Kafka commit) lands in a second file. ``read_archive(..., unique=True)`` and the table's
ReplacingMergeTree fold such copies. An :class:`Archive` is not thread-safe.
"""

from __future__ import annotations

import calendar
import csv
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from usagelog.instrumentation import event as ev

from .archive_remote import open_fs, remote_errors
from .decode import COLUMNS
from .errors import ArchiveError, ArchiveUnavailable
from .settings import ArchiveSettings
from .store import try_lock

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Archive",
    "ArchiveError",
    "ArchiveUnavailable",
    "open_archive",
    "read_archive",
]

_logger = logging.getLogger("usagelog.ingest")
_T = TypeVar("_T")

FORMATS = ("parquet", "csv")
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_SECONDS = 3600.0
# A partition is also finalized once the rows staged for it take this much memory as columns:
# finalizing reads them all, sorts and writes them at once (64 MiB of columns, ~240,000 events,
# took ~280 MiB more at its peak). Without it an hour's file waited for 100 MB of compressed
# chunks: well over a million events finalized at once.
DEFAULT_MAX_TABLE_BYTES = 32 * 1024 * 1024
SORT_KEY = ("timestamp", "service_instance_id", "seq")
# Dictionary-encoded in Parquet files: the columns that repeat a few values, those the table keeps
# as LowCardinality. For the others (IDs, paths, bodies, numbers) a dictionary only costs: with
# every column encoded so, a file of 144,000 events took 2.9 MB and 57 ms to write; with these
# alone 1.6 MB and 43 ms.
DICTIONARY_COLUMNS = [
    "service_name",
    "service_instance_id",
    "host_name",
    "host_id",
    "cluster",
    "region",
    "method",
    "route",
    "error_type",
    "user_agent",
]

# Arrow types from the one declaration of the event (usagelog.instrumentation.event.FIELDS), so
# a row the archive accepts is one the table accepts too.
_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
    "timestamp_ns": pa.timestamp("ns", tz="UTC"),
    "map": pa.map_(pa.string(), pa.string()),
}
_TYPES: dict[str, pa.DataType] = {c: _ARROW[ev.BY_COLUMN[c].arrow] for c in COLUMNS}
_INT_TYPES = frozenset(c for c in COLUMNS if ev.BY_COLUMN[c].number)
_TIMESTAMPS = frozenset(c for c in COLUMNS if ev.BY_COLUMN[c].arrow == "timestamp_ns")
_BOOLS = frozenset(c for c in COLUMNS if ev.BY_COLUMN[c].arrow == "bool")
_MAPS = frozenset(c for c in COLUMNS if ev.BY_COLUMN[c].arrow == "map")
SCHEMA = pa.schema([pa.field(c, _TYPES[c], nullable=False) for c in COLUMNS])
# Delta-encoded in Parquet files: the integers and times (all but the dictionary's). Sorted by
# time, the timestamps and sequence numbers differ by little from row to row: a file of 130,000
# events of varied traffic took 45.4 bytes an event against 50.4 plain, and 8% less time to write.
DELTA_COLUMNS = [c for c in COLUMNS if (c in _INT_TYPES or c in _TIMESTAMPS) and c not in DICTIONARY_COLUMNS]

_HOUR_NS = 3600 * 10**9
# Chunks are Arrow IPC files (``.arrow``, uncompressed) whatever the files' format: a batch's
# chunk is written and read back at about memory speed (36,000 events: written in 11 ms and read in
# 2, against 18 and 12 as a zstd Parquet chunk). Chunks in either file format, staged by earlier
# versions, are still read.
CHUNK_SUFFIX = "arrow"
_CHUNK = re.compile(r"^chunk-\d{20}-\d{8}-[0-9a-f]{8}-(?P<worker>.+)\.(?:arrow|parquet|csv)$")
_WORKER_ID = re.compile(r"^[A-Za-z0-9._-]+$")


# --- rows, tables and files ----------------------------------------------------------------


def _to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    # from_pylist fills a missing key with null even for non-nullable fields.
    _check_values(table)
    return table


def _check_values(table: pa.Table) -> None:
    """Raise as :func:`_to_table` does when a column has rows without a value."""
    missing = [c for c in COLUMNS if table.column(c).null_count]
    if missing:
        raise ValueError(f"usage rows without a value for: {', '.join(missing)}")


def _to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Row dicts with decode's types: timestamps as int ns, attributes as a dict."""
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in _TIMESTAMPS:
            columns[name] = col.cast(pa.int64()).to_pylist()
        elif name in _MAPS:
            columns[name] = [dict(pairs) for pairs in col.to_pylist()]
        else:
            columns[name] = col.to_pylist()
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _ts_text(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def _ts_parse(text: str) -> int:
    whole, _, frac = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int((frac or "0").ljust(9, "0")[:9])


# CSV cells: timestamps as ISO-8601 with nanoseconds, attributes as a JSON object, true/false.
def _bool_text(value: Any) -> str:
    return "true" if value else "false"


def _map_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_CSV_OUT: dict[str, Callable[[Any], str]] = {
    **dict.fromkeys(_TIMESTAMPS, _ts_text),
    **dict.fromkeys(_BOOLS, _bool_text),
    **dict.fromkeys(_MAPS, _map_text),
}
_CSV_IN: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(_TIMESTAMPS, _ts_parse),
    **dict.fromkeys(_INT_TYPES, int),
    **dict.fromkeys(_BOOLS, lambda v: v == "true"),
    **dict.fromkeys(_MAPS, json.loads),
}


def _write_csv(rows: Sequence[dict[str, Any]], out: IO[str]) -> None:
    writers = [_CSV_OUT.get(c, str) for c in COLUMNS]
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        w.writerow([fmt(row[c]) for fmt, c in zip(writers, COLUMNS, strict=True)])


def _read_csv(src: IO[str]) -> list[dict[str, Any]]:
    reader = csv.reader(src)
    header = next(reader, None)
    if header is None:
        return []
    parsers = [_CSV_IN.get(c, str) for c in header]
    return [{c: p(v) for c, p, v in zip(header, parsers, line, strict=True)} for line in reader]


def _write_file(path: Path, data: Any, fmt: str) -> None:
    """Write ``data`` (a table, or a JSON document for fmt "json") to ``path`` and fsync it."""
    if fmt in ("parquet", CHUNK_SUFFIX):
        with open(path, "wb") as f:
            if fmt == "parquet":
                pq.write_table(
                    data,
                    f,
                    compression="zstd",
                    use_dictionary=DICTIONARY_COLUMNS,
                    column_encoding=dict.fromkeys(DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
                )
            else:
                with pa.ipc.new_file(f, data.schema) as writer:
                    writer.write_table(data)
            f.flush()
            os.fsync(f.fileno())
        return
    with open(path, "w", encoding="utf-8", newline="") as t:
        if fmt == "csv":
            _write_csv(_to_rows(data), t)
        else:
            json.dump(data, t)
        t.flush()
        os.fsync(t.fileno())


def _write_atomic(path: Path, data: Any, fmt: str) -> None:
    """Write through ``<name>.tmp-<rand>`` beside ``path`` and rename: never half a file at ``path``."""
    _replace_atomic(path, lambda tmp: _write_file(tmp, data, fmt))


def _replace_atomic(path: Path, write: Callable[[Path], _T]) -> _T:
    """Have ``write`` make ``<name>.tmp-<rand>`` beside ``path`` (durably), then rename it to
    ``path``; returns what ``write`` returned."""
    tmp = path.with_name(f"{path.name}.tmp-{_rand()}")
    try:
        result = write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)
    return result


def _write_chunk(table: pa.Table, path: Path) -> pa.Table:
    _write_file(path, table, CHUNK_SUFFIX)
    return table


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:  # no copy: the columns are the file's pages
        return pa.ipc.open_file(source).read_all().cast(SCHEMA)


def _read_chunk(path: Path) -> pa.Table:
    if path.suffix == f".{CHUNK_SUFFIX}":
        return _read_arrow(path)
    if path.suffix == ".parquet":
        return pq.read_table(path).cast(SCHEMA)
    with open(path, encoding="utf-8", newline="") as f:
        return _to_table(_read_csv(f))


def _fsync(path: Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a power cut."""
    if not path.is_dir():
        _make_dirs(path.parent)
        path.mkdir(exist_ok=True)
        _fsync(path.parent)


def _partition_of(ts_ns: int) -> str:
    return time.strftime("date=%Y-%m-%d/hour=%H", time.gmtime(ts_ns // 10**9))


def _sorted_once(table: pa.Table) -> pa.Table:
    """``table`` sorted by :data:`SORT_KEY`, one row per event ID, the first of its copies: sorted
    (stably) with the ID last, the copies of a batch staged twice lie side by side in the order
    they were staged. Found so, they cost about half of counting distinct IDs by hash, the sort
    included (130,000 events: 0.12 against 0.23 us an event)."""
    table = table.sort_by([(c, "ascending") for c in (*SORT_KEY, "event_id")])
    ids = table.column("event_id")
    if len(ids) < 2:
        return table
    repeated = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    if not pc.any(repeated).as_py():
        return table
    return table.filter(pa.chunked_array([[True], *pc.invert(repeated).chunks], pa.bool_()))


def _first_of_each(ids: Sequence[str]) -> list[bool]:
    """A mask keeping the first occurrence of every ID."""
    seen: set[str] = set()
    keep = []
    for i in ids:
        keep.append(i not in seen)
        seen.add(i)
    return keep


def _rand() -> str:
    return os.urandom(4).hex()


# --- the archive ---------------------------------------------------------------------------


@dataclass
class _Pending:  # chunks this archive staged for one partition and has not finalized
    chunks: list[Path] = field(default_factory=list)
    nbytes: int = 0
    table_bytes: int = 0  # the staged rows as columns in memory (what finalizing will hold)
    oldest: float = 0.0


class Archive:
    """Stages batches durably and finalizes them into partitioned files under ``target``.

    Options as in the module docstring. ``staging_dir`` is a local directory only this archive
    uses while it is open; ``worker_id`` (letters, digits, ``.``, ``_``, ``-``) names its files.
    """

    def __init__(
        self,
        target: str,
        *,
        fmt: str = "parquet",
        staging_dir: str | os.PathLike[str],
        worker_id: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES,
        release: Callable[[], None] | None = None,
        endpoint: str = "",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"archive format (USAGELOG_ARCHIVE_FORMAT) {fmt!r}: expected parquet or csv")
        if not _WORKER_ID.match(worker_id):
            raise ValueError(f"archive worker_id {worker_id!r}: use letters, digits, '.', '_' or '-'")
        if max_bytes <= 0:
            raise ValueError(f"USAGELOG_ARCHIVE_MAX_BYTES {max_bytes!r}: must be positive")
        if max_seconds <= 0:
            raise ValueError(f"USAGELOG_ARCHIVE_MAX_SECONDS {max_seconds!r}: must be positive")
        self.target = target
        self.fmt = fmt
        self.worker_id = worker_id
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.max_table_bytes = max_table_bytes
        self.staging_dir = Path(staging_dir).absolute()
        self.endpoint = endpoint
        self._fs, self._root = open_fs(target, endpoint)
        self._local = isinstance(self._fs, LocalFileSystem)
        self._pending: dict[str, _Pending] = {}
        self._counter = 0
        self._release = release
        _make_dirs(self.staging_dir)
        self._lock: IO[bytes] | None = open(self.staging_dir / ".lock", "ab")  # noqa: SIM115 (held: the lock)
        if not try_lock(self._lock.fileno(), str(self.staging_dir / ".lock")):
            self._lock.close()
            raise ArchiveError(f"archive staging directory {self.staging_dir} is in use")

    # staging

    def stage(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` to staging, one chunk per (date, hour); durable when this returns."""
        if self._lock is None:
            raise ArchiveError("archive is closed")
        groups: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["timestamp"] // _HOUR_NS, []).append(row)
        for hour, group in groups.items():
            table = _to_table(group)
            self._stage_chunk(_partition_of(hour * _HOUR_NS), functools.partial(_write_chunk, table))

    def stage_hours(self, hours: Iterable[int], write: Callable[[int, Path], None]) -> int:
        """:meth:`stage` for rows a writer puts in files itself (the engine, from its staging
        table): for each of ``hours`` (hours of the epoch, UTC), ``write(hour, path)`` writes that
        hour's rows to ``path`` as an Arrow IPC file of :data:`SCHEMA`'s columns and types. The file
        is checked as rows are (every column there, no value missing) before it counts as staged.
        Returns the number of rows staged."""
        if self._lock is None:
            raise ArchiveError("archive is closed")

        def chunk(hour: int, path: Path) -> pa.Table:
            write(hour, path)
            table = _read_arrow(path)  # mapped, not copied: the schema and the null counts
            _check_values(table)
            _fsync(path)
            return table

        return sum(self._stage_chunk(_partition_of(h * _HOUR_NS), functools.partial(chunk, h)) for h in hours)

    def _stage_chunk(self, partition: str, write: Callable[[Path], pa.Table]) -> int:
        """Stage one chunk of ``partition``: ``write(path)`` writes it durably and returns its rows;
        the chunk is renamed into place only then. Returns the number of rows."""
        directory = self.staging_dir / partition
        _make_dirs(directory)
        self._counter += 1
        stamp = f"{time.time_ns():020d}-{self._counter:08d}-{_rand()}"
        path = directory / f"chunk-{stamp}-{self.worker_id}.{CHUNK_SUFFIX}"
        table = _replace_atomic(path, write)
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = _Pending(oldest=time.time())
        pending.chunks.append(path)
        pending.nbytes += path.stat().st_size
        pending.table_bytes += table.nbytes
        return int(table.num_rows)

    # finalizing

    def due(self, now: float | None = None) -> list[str]:
        """The partitions that reached ``max_bytes`` or ``max_table_bytes``, or whose oldest chunk
        is ``max_seconds`` old (``now`` defaults to ``time.time()``)."""
        now = time.time() if now is None else now
        return [
            part
            for part, p in self._pending.items()
            if p.nbytes >= self.max_bytes
            or p.table_bytes >= self.max_table_bytes
            or now - p.oldest >= self.max_seconds
        ]

    def maybe_rotate(self, now: float | None = None) -> list[str]:
        """Finalize the partitions that are :meth:`due`; returns the URLs of the files written."""
        return [self._finalize_pending(part) for part in self.due(now)]

    def close(self) -> list[str]:
        """Finalize everything staged, release the staging directory; returns the URLs written."""
        if self._lock is None:
            return []
        try:
            urls = [self._finalize_pending(part) for part in list(self._pending)]
        except ArchiveUnavailable as exc:
            raise ArchiveUnavailable(
                f"{exc}; the unpublished chunks stay in {self.staging_dir} for the next run to publish"
            ) from exc
        finally:
            self._lock.close()
            self._lock = None
            if self._release is not None:
                self._release()
        return urls

    def release(self) -> None:
        """Let go of the staging directory without publishing: what is staged stays there for
        a later :meth:`recover` (by this worker's next run or any other's)."""
        if self._lock is None:
            return
        self._lock.close()
        self._lock = None
        if self._release is not None:
            self._release()

    @property
    def pending(self) -> int:
        """Partitions staged and not yet published."""
        return len(self._pending)

    def check(self) -> None:
        """Ask the object store for ``target`` once: raises :class:`ArchiveError` if it refuses
        the credentials, :class:`ArchiveUnavailable` if it does not answer. Local: nothing."""
        if self._local:
            return
        with remote_errors(self.target, self.endpoint, "read the archive"):
            try:
                self._fs.info(self._root)
            except FileNotFoundError:
                pass  # nothing archived yet (a missing bucket is created at the first upload)

    def recover(self) -> list[str]:
        """Finalize chunks left in ``staging_dir`` by an earlier run (any worker_id); call at start."""
        if self._lock is None:
            raise ArchiveError("archive is closed")
        own = {c for p in self._pending.values() for c in p.chunks}
        down: ArchiveUnavailable | None = None
        for stray in self.staging_dir.glob("*.tmp-*"):
            stray.unlink()  # an upload interrupted by the crash
        urls = []
        for directory in sorted(self.staging_dir.glob("date=*/hour=*")):
            for marker in directory.glob("published-*.json"):
                for name in json.loads(marker.read_text(encoding="utf-8")):
                    (directory / name).unlink(missing_ok=True)
                marker.unlink()
            for stray in directory.glob("*.tmp-*"):
                stray.unlink()  # a chunk the crash cut short: its batch was never acknowledged
            chunks = [c for c in directory.iterdir() if _CHUNK.match(c.name) and c not in own]
            if not chunks:
                self._remove_empty(directory)
                continue
            partition = directory.relative_to(self.staging_dir).as_posix()
            if down is None:
                try:
                    urls.append(self._finalize(partition, chunks))
                    continue
                except ArchiveUnavailable as exc:
                    down = exc
            # The store is down: keep them pending and due, for the next rotation to publish.
            pending = self._pending.setdefault(partition, _Pending())
            pending.chunks[:0] = chunks
            pending.nbytes += sum(c.stat().st_size for c in chunks)
            pending.oldest = 0.0
        if down is not None:
            raise down
        return urls

    def _finalize_pending(self, partition: str) -> str:
        url = self._finalize(partition, self._pending[partition].chunks)
        del self._pending[partition]
        return url

    def _finalize(self, partition: str, chunks: list[Path]) -> str:
        chunks = sorted(chunks, key=lambda c: c.name)  # names start with the staging time
        table = _sorted_once(pa.concat_tables([_read_chunk(c) for c in chunks]))
        # Same chunks, same name: finalizing again after a crash replaces the file, never copies it.
        digest = hashlib.sha256("\n".join(c.name for c in chunks).encode()).hexdigest()[:8]
        match = _CHUNK.match(chunks[0].name)
        worker = match.group("worker") if match else self.worker_id
        first = time.strftime("%Y%m%dT%H%M%S", time.gmtime(table.column("timestamp")[0].value // 10**9))
        name = f"usage_events-{first}-{worker}-{digest}.{self.fmt}"
        url = self._publish(table, partition, name)
        directory = self.staging_dir / partition
        marker = directory / f"published-{digest}.json"
        _write_atomic(marker, [c.name for c in chunks], "json")
        for c in chunks:
            c.unlink(missing_ok=True)
        _fsync(directory)
        marker.unlink()
        self._remove_empty(directory)
        return url

    def _publish(self, table: pa.Table, partition: str, name: str) -> str:
        url = f"{self.target.rstrip('/')}/{partition}/{name}"
        if self._local:
            directory = Path(self._root) / partition
            _make_dirs(directory)
            for stray in directory.glob(f"{name}.tmp-*"):
                stray.unlink()  # left by a crash while this very file was being written
            _write_atomic(directory / name, table, self.fmt)
            return url
        tmp = self.staging_dir / f"upload.tmp-{_rand()}"
        try:
            _write_file(tmp, table, self.fmt)
            remote = f"{self._root.rstrip('/')}/{partition}"
            with remote_errors(self.target, self.endpoint, f"upload {partition}/{name}"):
                self._fs.makedirs(remote, exist_ok=True)
                self._fs.put(str(tmp), f"{remote}/{name}")
        finally:
            tmp.unlink(missing_ok=True)
        return url

    def _remove_empty(self, directory: Path) -> None:
        for d in (directory, directory.parent):
            try:
                d.rmdir()
            except OSError:
                return


# --- one owner's archive, and what dead owners left ----------------------------------------


class StagingArea:
    """``<root>/<owner>``: one process's staging folder, held by an flock on ``<root>/<owner>.lock``
    for as long as the process uses it (the archive's, while it is open; the worker's batches
    staged ahead). A folder whose lock can be taken belongs to a process that is gone."""

    def __init__(self, root: Path, owner: str, taken: str = "is archiving") -> None:
        _make_dirs(root)
        self.directory = root / owner
        self.lock = root / f"{owner}.lock"
        self._fd: int | None = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not try_lock(self._fd, str(self.lock)):
            self.release()
            raise ArchiveError(f"another process with USAGELOG_WORKER_ID={owner} {taken}; give each its own")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def orphans(root: Path, own: str) -> list[Path]:
        found = []
        for lock in root.glob("*.lock"):
            name = lock.name[: -len(".lock")]
            if name == own:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:  # removed meanwhile
                continue
            try:
                if try_lock(fd, str(lock)):
                    found.append(root / name)
            finally:
                os.close(fd)
        return found


def open_archive(settings: ArchiveSettings) -> Archive | None:
    """The archive ``settings.owner`` stages into, or None when archiving is off.

    Staging lives in ``<state_dir>/archive-staging/<owner>``, held while the archive is open
    (:meth:`Archive.close` releases it). Before it is returned, the chunks of every owner that
    died are finalized into files and their folders removed, and so are the chunks this owner
    left in an earlier life.

    An object store that refuses the credentials raises :class:`ArchiveError` here, at start. One
    that does not answer is logged and tolerated: this owner's leftovers stay pending (the first
    rotation publishes them), a dead owner's stay in its folder for the next start.
    """
    if not settings.enabled:
        return None

    def build(directory: Path, owner: str, release: Callable[[], None] | None = None) -> Archive:
        return Archive(
            settings.url,
            fmt=settings.fmt,
            staging_dir=directory,
            worker_id=owner,
            max_bytes=settings.max_bytes,
            max_seconds=settings.max_seconds,
            release=release,
            endpoint=settings.endpoint,
        )

    root = Path(settings.state_dir) / "archive-staging"
    area = StagingArea(root, settings.owner)
    archive: Archive | None = None
    try:
        archive = build(area.directory, settings.owner, area.release)
        try:
            archive.check()
        except ArchiveUnavailable as exc:
            _logger.warning("%s; archiving goes on once it answers", exc)
        for orphan in StagingArea.orphans(root, settings.owner):
            if orphan.is_dir():
                left = build(orphan, orphan.name)
                try:
                    files = left.recover()
                except ArchiveUnavailable as exc:
                    left.release()
                    _logger.warning("%s; what %s left stays staged until a later start", exc, orphan.name)
                    continue
                left.close()
                _logger.info("finalized %d archive files left by %s", len(files), orphan.name)
                shutil.rmtree(orphan, ignore_errors=True)
            (root / f"{orphan.name}.lock").unlink(missing_ok=True)
        try:
            archive.recover()
        except ArchiveUnavailable as exc:
            _logger.warning("%s; %d partition(s) stay staged until it answers", exc, archive.pending)
    except BaseException:
        if archive is not None:
            archive.release()
        area.release()
        raise
    return archive


def _read_parquet(fs: Any, path: str) -> pa.Table:
    """One Parquet file, read on this thread: a local one by its path, a remote one from its bytes.
    Read through a Python file object, pyarrow's I/O threads may still hold pieces of it when the
    interpreter exits; the thread that lets go of one then dies holding C++ frames, which aborts
    the process after its work is done (and the engine's handler of that signal hangs it)."""
    if isinstance(fs, LocalFileSystem):
        return pq.read_table(path, pre_buffer=False)
    with fs.open(path, "rb") as f:
        data = f.read()
    return pq.read_table(pa.BufferReader(data), pre_buffer=False)


def read_archive(target: str, *, unique: bool = False, endpoint: str = "") -> list[dict[str, Any]]:
    """Every row of every final file under ``target`` (both formats), typed like decode's rows
    and sorted by (timestamp, service_instance_id, seq). ``unique`` keeps one row per event_id;
    ``endpoint`` is the S3 server of an ``s3://`` target."""
    fs, root = open_fs(target, endpoint)
    if not fs.exists(root):
        return []
    rows: list[dict[str, Any]] = []
    for path in sorted(fs.find(root)):
        name = path.rsplit("/", 1)[-1]
        if not name.startswith("usage_events-"):
            continue
        if name.endswith(".parquet"):
            rows.extend(_to_rows(_read_parquet(fs, path)))
        elif name.endswith(".csv"):
            with fs.open(path, "r", encoding="utf-8", newline="") as f:
                rows.extend(_read_csv(f))
    rows.sort(key=lambda r: tuple(r[c] for c in SORT_KEY))
    if unique:
        keep = _first_of_each([r["event_id"] for r in rows])
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
    return rows
