"""Decoding, verifying, deduplicating and storing a batch of OTLP payloads inside the engine.

The reference decoder (:mod:`usagelog.ingest.decode`) walks every attribute of every record in
Python: about 13 µs an event before anything is stored. On chDB the same work runs in the
engine, in C++, on the whole batch at once:

1. the batch's payloads go to a file, each followed by its number in the batch (a protobuf field
   appended to a message merges into it), and the engine reads them with ``otlp_logs.proto`` —
   OTLP's log messages, same field numbers — into a staging table: one row per log record, the
   event's columns taken from its attributes and its resource, its checksum recomputed
   (SHA-256 over the same texts as :func:`usagelog.instrumentation.event.checksum`);
2. a row is *regular* when every field has the type the event declares (text as a string,
   numbers as an in-range integer, flags as a boolean), its extra attributes are strings or
   integers with distinct keys, it has an event ID and its checksum matches. A payload with any
   irregular usage event, or with a loss report, goes to the reference decoder instead, which
   dead-letters what it must with its reason: the engine never decides what is wrong, it only
   takes what is plainly right;
3. the regular events whose ID is not stored yet are inserted with one ``INSERT ... SELECT``
   (each ID once), and the monitored ones copied; with an archive, the engine writes its chunk
   files of the staged events too (:meth:`EngineDecoder.write_staged`).

A batch the engine cannot read at all (a payload that is not protobuf) goes to the reference
decoder whole. The engine path needs the engine's file access, so it runs on chDB only; against a
ClickHouse server ingest decodes in Python.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from usagelog.instrumentation import event as ev
from usagelog.instrumentation.wire import varint

if TYPE_CHECKING:
    from .store import Store

STAGE = "_ingest_stage"  # a Memory table, one per database; writers take turns on chDB
SEEN = "_ingest_seen"
_SCHEMA_FILE = "otlp_logs.proto"
_MESSAGE = "Batch"
_NO_FIELD = 536870911  # the payload number's field in Batch (the largest field number)
_EVENT, _LOSS, _OTHER = 1, 2, 0
_RANGES_AT_MOST = 256  # instances in a batch whose sequence ranges are checked before the lookup

_KIND = (
    "Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, "
    "'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)"
)
# An attribute's value: the members a usage event's fields take, and which member is set (``value``,
# the oneof's case), which is all the checks need of the others (a double, an array, a key-value
# list or bytes is irregular wherever it is): not reading them into columns takes ~11% off staging.
_ANY = f"Tuple(string_value String, bool_value UInt8, int_value Int64, value {_KIND})"
_STRUCTURE = (
    f"no UInt64, resource_logs Array(Tuple(resource_attributes Array(Tuple(key String, value {_ANY})), "
    "scope_logs_log_records Array(Array(Tuple(time_unix_nano UInt64, observed_time_unix_nano UInt64, "
    f"attributes Array(Tuple(key String, value {_ANY})), trace_id String, span_id String, "
    "event_name String)))))"
)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _array(texts: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_quote(t) for t in texts) + "]"


def _with_settings(sql: str, settings: Mapping[str, str | int]) -> str:
    """``sql`` with a ``SETTINGS`` clause. Given as the client's arguments instead, settings cost the
    embedded client a read of ``system.settings`` and a ``SET`` before and after the statement
    (~6 ms a statement, a tenth of a batch's fixed cost)."""
    values = (f"{k} = {_quote(v) if isinstance(v, str) else int(v)}" for k, v in settings.items())
    return f"{sql} SETTINGS {', '.join(values)}"


def _field_sql(f: ev.Field) -> tuple[str, str]:
    """(value, canonical text) of one record or resource field, from the row's arrays."""
    p = "r" if f.place == ev.RECORD else "s"  # record attributes, resource attributes
    i = f"indexOf({p}k, {_quote(f.attribute)})"
    if f.arrow == "string":
        value = f"{p}s[{i}]"
        return value, value
    if f.arrow == "bool":
        value = f"toBool({p}b[{i}])"  # absent: false, the declared default
        return value, f"toString(toUInt8({value}))"
    value = f"to{f.clickhouse}({p}i[{i}])"
    return value, f"toString({value})"


# What an attribute's value must be, by the type its key declares (0: an extra attribute).
# A value with no member set (or one of the members not read: _ANY) is irregular too: the reference
# decoder reads it as absent.
_REGULAR = {
    0: "t IN ('string_value', 'int_value')",
    1: "t = 'string_value'",  # string
    2: "t = 'bool_value'",
    3: f"t = 'int_value' AND n >= 0 AND n < {2**16}",
    4: f"t = 'int_value' AND n >= 0 AND n < {2**32}",
    5: "t = 'int_value' AND n >= 0",  # uint64
}
_CLASS = {"string": 1, "bool": 2, "uint16": 3, "uint32": 4, "uint64": 5}
# The SDK's own resource attributes are not kept, and checked as extra ones are (the checks' default):
# a class of their own tells a resource without extra attributes by its classes alone (any other
# ``telemetry.sdk.`` key is class 0, and left out of the extra attributes by its prefix).
_SDK = 6
_SDK_KEYS = ("telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version")


def _key_classes(place: str, fields: tuple[ev.Field, ...]) -> str:
    """The class of each attribute key of one place (``r``: the record, ``s``: its resource):
    the declared type of the field it names, 6 for the SDK's own, 0 for an extra attribute."""
    keys = [f.attribute for f in fields]
    classes = [_CLASS[f.arrow] for f in fields]
    if place == "s":
        keys += _SDK_KEYS
        classes += [_SDK] * len(_SDK_KEYS)
    listed = "[" + ", ".join(str(c) for c in classes) + "]"
    return f"arrayMap(k -> transform(k, {_array(keys)}, {listed}, 0), {place}k)"


def _regular_attributes(place: str) -> str:
    """Whether every attribute of one place is regular: one pass over the attributes, each
    checked by the class of its key (``{place}c``, :func:`_key_classes`). (One check per declared
    field, each looking its key up, made the query take ~18 ms to analyse, every batch.)"""
    checks = ", ".join(f"c = {c}, {check}" for c, check in _REGULAR.items() if c)
    extra = _REGULAR[0]
    if place == "r":  # an unknown record attribute must not pose as a resource one
        extra += " AND NOT startsWith(k, 'resource.')"
    return f"arrayAll((c, k, t, n) -> multiIf({checks}, {extra}), {place}c, {place}k, {place}t, {place}i)"


def _stage_columns() -> list[tuple[str, str]]:
    """The staging table: the event's columns, then the bookkeeping."""
    columns = [(f.column, f.clickhouse) for f in ev.FIELDS if f.place != ev.STORAGE]
    return [*columns, ("no", "UInt64"), ("kind", "UInt8"), ("ok", "UInt8")]


def _stage_select(path: str) -> str:
    """``SELECT`` of the staging table's columns from the batch file."""
    values: dict[str, str] = {}
    texts: dict[str, str] = {}
    for f in ev.FIELDS:
        if f.place in (ev.RECORD, ev.RESOURCE):
            values[f.column], texts[f.column] = _field_sql(f)
    values["timestamp"] = "fromUnixTimestamp64Nano(toInt64(rec.time_unix_nano), 'UTC')"
    values["observed_timestamp"] = "fromUnixTimestamp64Nano(toInt64(rec.observed_time_unix_nano), 'UTC')"
    texts["timestamp"] = "toString(rec.time_unix_nano)"
    texts["observed_timestamp"] = "toString(rec.observed_time_unix_nano)"
    values["trace_id"] = texts["trace_id"] = "lower(hex(rec.trace_id))"
    values["span_id"] = texts["span_id"] = "lower(hex(rec.span_id))"
    regular = [
        "rec.time_unix_nano < 9223372036854775808",
        "rec.observed_time_unix_nano < 9223372036854775808",
        # Trace and span IDs are stored as bytes: none, or 16 and 8 bytes not all zero (decode._check).
        "(rec.trace_id = '' OR (length(rec.trace_id) = 16 AND rec.trace_id != unhex(repeat('0', 32))))",
        "(rec.span_id = '' OR (length(rec.span_id) = 8 AND rec.span_id != unhex(repeat('0', 16))))",
        # Distinct keys: each field's value is its key's only one, checked below.
        "length(arrayDistinct(rk)) = length(rk)",
        "length(arrayDistinct(sk)) = length(sk)",
        # Extra attributes are kept as text: strings and integers read the same in Python and SQL.
        _regular_attributes("r"),
        _regular_attributes("s"),
    ]
    # Extra attributes (class 0), the resource's after a 'resource.' prefix and without the SDK's
    # own: their map is built only for the rows that have any (building it for every row, empty,
    # took ~15% of staging).
    extra_s = "c = 0 AND NOT startsWith(k, 'telemetry.sdk.')"
    extra_text = "if(t = 'int_value', toString(n), s)"
    values["attributes"] = (
        f"if(has(rc, 0) OR (has(sc, 0) AND arrayExists((c, k) -> {extra_s}, sc, sk)), mapFromArrays("
        "arrayConcat(arrayFilter((k, c) -> c = 0, rk, rc), "
        f"arrayMap(k -> concat('resource.', k), arrayFilter((k, c) -> {extra_s}, sk, sc))), "
        f"arrayConcat(arrayFilter((v, c) -> c = 0, arrayMap((s, n, t) -> {extra_text}, rs, ri, rt), rc), "
        f"arrayFilter((v, c, k) -> {extra_s}, arrayMap((s, n, t) -> {extra_text}, ss, si, st), sc, sk))), "
        "map())"
    )
    checksum_texts = [texts[f.column] for f in ev.CHECKSUM_FIELDS]
    joined = f"concatWithSeparator('\\x1f', {', '.join(checksum_texts)})"
    computed = f"lower(substring(hex(SHA256({joined})), 1, 32))"
    ok = " AND ".join([*regular, f"{values['event_id']} != ''", f"{values['checksum']} = {computed}"])
    kind = (
        f"multiIf(rec.event_name = {_quote(ev.EVENT_NAME)}, {_EVENT}, "
        f"rec.event_name = {_quote(ev.LOSS_EVENT_NAME)}, {_LOSS}, {_OTHER})"
    )
    selected = [f"{values[c]} AS {c}" for c, _ in _stage_columns() if c in values]
    return (
        "WITH rec.attributes.key AS rk, rec.attributes.value.value AS rt, "
        "rec.attributes.value.string_value AS rs, rec.attributes.value.int_value AS ri, "
        "rec.attributes.value.bool_value AS rb, "
        "ra.key AS sk, ra.value.value AS st, ra.value.string_value AS ss, ra.value.int_value AS si, "
        "ra.value.bool_value AS sb, "
        f"{_key_classes('r', ev.RECORD_FIELDS)} AS rc, {_key_classes('s', ev.RESOURCE_FIELDS)} AS sc "
        f"SELECT {', '.join(selected)}, no, {kind} AS kind, {ok} AS ok "
        f"FROM file({_quote(path)}, Protobuf, {_quote(_STRUCTURE)}) "
        # One row per resource (its attributes and its records), then one per record: only the
        # resource's attributes are repeated on every record's row, never the records themselves.
        "ARRAY JOIN resource_logs.resource_attributes AS ra, resource_logs.scope_logs_log_records AS sl "
        "ARRAY JOIN arrayFlatten(sl) AS rec"
    )


_NO_TAG = varint(_NO_FIELD << 3)


def write_batch(payloads: Sequence[bytes | memoryview], directory: str | None = None) -> str:
    """The payloads, length-delimited, each with its number appended; returns the file's path."""
    fd, path = tempfile.mkstemp(prefix="usagelog-batch-", suffix=".pb", dir=directory)
    with os.fdopen(fd, "wb") as out:
        for no, payload in enumerate(payloads):
            tail = _NO_TAG + varint(no)
            out.write(varint(len(payload) + len(tail)))
            out.write(payload)
            out.write(tail)
    return path


Ranges = list[tuple[str, int, int]]  # (instance, lowest seq, highest seq)


@dataclass
class EngineResult:
    """What the engine stored of a batch, and the payloads it left to the reference decoder."""

    events: int = 0  # regular usage events read (duplicates included)
    stored: int = 0
    duplicates: int = 0
    monitored: int = 0
    ignored: int = 0  # records that are neither usage events nor loss reports
    minutes: set[int] = field(default_factory=set)  # minutes (epoch s) the events fall in
    leftover: list[int] = field(default_factory=list)  # payload numbers for the reference decoder
    all_distinct: bool = True  # whether the regular events' IDs are all distinct
    staged_monitored: int = 0  # regular events to be copied to monitored_events (duplicates included)
    ranges: Ranges = field(default_factory=list)  # each instance's lowest and highest sequence number


DECODER_VARIABLE = "USAGELOG_INGEST_DECODER"
DECODERS = ("engine", "python")


def decoder_setting(environ: Mapping[str, str] | None = None) -> str:
    """``USAGELOG_INGEST_DECODER``: ``engine`` (default; used on chDB, Python against a server)
    or ``python`` (the reference decoder everywhere)."""
    from .errors import SettingsError

    value = (os.environ if environ is None else environ).get(DECODER_VARIABLE, "").strip().lower() or "engine"
    if value not in DECODERS:
        raise SettingsError(f"{DECODER_VARIABLE}={value!r}: expected one of {', '.join(DECODERS)}")
    return value


FILE_PATTERN = re.compile(r"[*?{}]")  # what the engine's file() expands in a path
# The archive's chunk: uncompressed (it is read back mapped, at memory speed), strings as Arrow
# strings, no dictionaries (the archive's schema has none).
# The engine's own Arrow writer (the only one upstream since ClickHouse 26.9; chDB keeps the Apache
# Arrow library's as its default): the same file, in half the CPU (240,000 events: 0.15 against
# 0.32 us an event).
_ARROW_CHUNK: dict[str, str | int] = {
    "output_format_arrow_use_native_writer": 1,
    "output_format_arrow_compression_method": "none",
    "output_format_arrow_string_as_string": 1,
    "output_format_arrow_low_cardinality_as_dictionary": 0,
}


def _schema_settings() -> dict[str, str | int]:
    path = resources.files("usagelog.ingest").joinpath(_SCHEMA_FILE)
    # One payload a block: the engine holds the parsed form of one payload at a time (all of
    # them at once took ~12x the batch's bytes) and only the staged columns grow with the batch.
    return {
        "format_schema": f"{path}:{_MESSAGE}",
        "input_format_protobuf_oneof_presence": 1,
        "max_block_size": 1,
    }


class EngineDecoder:
    """Decodes and stores batches in the engine; one per open store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.database
        self._ready = False
        self._seen = False  # whether the SEEN table holds anything

    @staticmethod
    def available(store: Store) -> bool:
        return bool(getattr(store.client, "embedded", False))

    def _prepare(self) -> None:
        if self._ready:
            return
        columns = ", ".join(f"{name} {kind}" for name, kind in _stage_columns())
        command = self.store.client.command
        command(f"CREATE OR REPLACE TABLE {self.db}.{STAGE} ({columns}) ENGINE = Memory")
        command(f"CREATE OR REPLACE TABLE {self.db}.{SEEN} (event_id String) ENGINE = Memory")
        self._ready = True

    def stage(self, payloads: Sequence[bytes | memoryview]) -> EngineResult | None:
        """Read ``payloads`` into the staging table and count what it holds (:meth:`_count`);
        None when the engine cannot read them."""
        from .errors import QueryError

        self._prepare()
        client, db = self.store.client, self.db
        client.command(f"TRUNCATE TABLE {db}.{STAGE}")
        path = write_batch(payloads)
        try:
            statement = f"INSERT INTO {db}.{STAGE} {_stage_select(path)}"
            client.command(_with_settings(statement, _schema_settings()))
        except QueryError:
            return None
        finally:
            os.unlink(path)
        return self._count()

    def _count(self) -> EngineResult:
        """One statement for everything the batch's storing needs to know of the staged rows: the
        payloads left to the reference decoder (any with an irregular usage event or a loss
        report), and of the regular events the rest holds: how many, whether their IDs are all
        distinct, how many are to be copied as monitored, the minutes they fall in and each
        instance's sequence range. (Five statements before, a few milliseconds each, every batch.)
        The IDs are told distinct by their 64-bit hashes, a third of the cost of the texts: hashes
        all distinct mean IDs all distinct; otherwise the insert counts the IDs themselves."""
        stage = f"{self.db}.{STAGE}"
        bad = f"kind = {_LOSS} OR (kind = {_EVENT} AND NOT ok)"
        good = f"kind = {_EVENT} AND ok AND NOT has(bad, no)"
        minute = "intDiv(toUnixTimestamp64Nano(timestamp), 60000000000) * 60"
        ranges = (
            "(SELECT groupArray((i, low, high)) FROM (SELECT service_instance_id AS i, min(seq) AS low, "
            f"max(seq) AS high FROM {stage} WHERE {good} GROUP BY i))"
        )
        row = self.store.client.query(
            f"WITH (SELECT groupUniqArray(no) FROM {stage} WHERE {bad}) AS bad "
            f"SELECT bad, countIf({good}), uniqExactIf(cityHash64(event_id), {good}), "
            f"countIf(kind = {_OTHER} AND NOT has(bad, no)), countIf({good} AND monitored), "
            f"groupUniqArrayIf({minute}, {good}), {ranges} FROM {stage}"
        ).result_rows[0]
        leftover, events, hashes, ignored, monitored, minutes, ranges_found = row
        return EngineResult(
            events=int(events),
            ignored=int(ignored),
            minutes={int(m) for m in minutes},
            leftover=sorted(int(n) for n in leftover),
            all_distinct=int(hashes) == int(events),
            staged_monitored=int(monitored),
            ranges=[(str(i), int(low), int(high)) for i, low, high in ranges_found],
        )

    def _good(self, result: EngineResult) -> str:
        good = f"kind = {_EVENT} AND ok"
        if result.leftover:
            good += f" AND no NOT IN ({', '.join(str(n) for n in result.leftover)})"
        return good

    def store_staged(self, result: EngineResult) -> None:
        """Insert the staged regular events not stored yet, then copy the monitored ones."""
        good = self._good(result)
        counted = (result.events, result.events) if result.all_distinct else None
        result.stored, result.duplicates = self._insert("usage_events", good, result.ranges, counted)
        if result.staged_monitored:
            result.monitored, _ = self._insert("monitored_events", f"{good} AND monitored", result.ranges)

    def _insert(
        self, table: str, good: str, ranges: Ranges, counted: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """Insert the staged rows matching ``good`` whose ID ``table`` does not hold, in the table's
        stored form (:mod:`usagelog.ingest.stored`); returns (stored, skipped as duplicates).
        ``counted``: the rows matching ``good`` and their distinct IDs, when known."""
        from .stored import seen_sql, select_sql, stored_columns

        client, db = self.store.client, self.db
        staged = f"(SELECT {{}} FROM {db}.{STAGE} WHERE {good})"
        fresh_only = good
        if self._stored_in_ranges(table, ranges):
            self._clear_seen()
            client.command(
                f"INSERT INTO {db}.{SEEN} "
                + seen_sql(db, table, staged.format("service_instance_id, seq"), staged.format("event_id"))
            )
            self._seen = True
            fresh_only += f" AND event_id NOT IN (SELECT event_id FROM {db}.{SEEN})"
            counted = None
        if counted is None:
            counted = client.query(
                f"SELECT count(), uniqExactIf(event_id, {fresh_only}) FROM {db}.{STAGE} WHERE {good}"
            ).result_rows[0]
        total, fresh = (int(n) for n in counted)
        if fresh:
            compact = self.store.compact(table)
            # Each ID once: no two rows then share the sorting key (it holds the ID), and the
            # replacing merge of the inserted block, which finds nothing, is off (~14% of the insert).
            once = " LIMIT 1 BY event_id" if fresh < total else ""
            client.command(
                _with_settings(
                    f"INSERT INTO {db}.{table} ({', '.join(stored_columns(compact))}) "
                    f"SELECT {select_sql(compact)} FROM {db}.{STAGE} WHERE {fresh_only}{once}",
                    {"optimize_on_insert": 0},
                )
            )
        return fresh, total - fresh

    def _stored_in_ranges(self, table: str, ranges: Ranges) -> bool:
        """Whether ``table`` holds any event in the staged events' sequence ranges (each instance's
        lowest to highest). Usually none: an instance's new events come after those stored. Only if
        one is, the batch's (instance, seq) pairs and event IDs are looked up one by one, which
        builds a set of each (a third of a microsecond an event)."""
        if not ranges:
            return False
        if len(ranges) > _RANGES_AT_MOST:
            return True  # a condition this long costs more to analyse than the lookup it spares
        within = " OR ".join(
            f"(service_instance_id = {_quote(instance)} AND seq BETWEEN {low} AND {high})"
            for instance, low, high in ranges
        )
        found = self.store.client.query(f"SELECT 1 FROM {self.db}.{table} WHERE {within} LIMIT 1").result_rows
        return bool(found)

    def _clear_seen(self) -> None:
        if self._seen:
            self.store.client.command(f"TRUNCATE TABLE {self.db}.{SEEN}")
            self._seen = False

    def export_staged(self, path: str) -> None:
        """Write the staging table to ``path`` (Native) for :meth:`load_staged` in another engine:
        a worker stages its batch while another holds the store (:mod:`usagelog.ingest.worker`)."""
        columns = ", ".join(name for name, _ in _stage_columns())
        self.store.client.command(
            f"INSERT INTO FUNCTION file({_quote(path)}, 'Native') SELECT {columns} FROM {self.db}.{STAGE}"
        )

    def load_staged(self, path: str) -> None:
        """Fill the staging table from a file :meth:`export_staged` wrote."""
        self._prepare()
        columns = ", ".join(name for name, _ in _stage_columns())
        client = self.store.client
        client.command(f"TRUNCATE TABLE {self.db}.{STAGE}")
        client.command(
            f"INSERT INTO {self.db}.{STAGE} ({columns}) SELECT {columns} FROM file({_quote(path)}, 'Native')"
        )

    def clear(self) -> None:
        """Empty the staging tables (their memory is the batch's size)."""
        if self._ready:
            self.store.client.command(f"TRUNCATE TABLE {self.db}.{STAGE}")
            self._clear_seen()

    def write_staged(self, result: EngineResult, hour: int, path: str | os.PathLike[str]) -> None:
        """Write the staged regular events of one hour (of the epoch, UTC) to ``path`` as an Arrow
        IPC file of the event's columns (the archive's chunk; :meth:`Archive.stage_hours`)."""
        target = os.fspath(path)
        if not FILE_PATTERN.search(target):
            self._write_hour(result, hour, target)
            return
        # The engine would read these characters as a pattern: written elsewhere, then moved.
        with tempfile.TemporaryDirectory(prefix="usagelog-chunk-") as directory:
            written = os.path.join(directory, "chunk.arrow")
            self._write_hour(result, hour, written)
            shutil.move(written, target)

    def _write_hour(self, result: EngineResult, hour: int, path: str) -> None:
        in_hour = f"intDiv(toUnixTimestamp64Nano(timestamp), {3600 * 10**9}) = {int(hour)}"
        where = f"{self._good(result)} AND {in_hour}"
        # Written by the engine: read back into Python and written again, the rows took twice the
        # CPU (72,000 events: 96 against 43 ms).
        self.store.client.command(
            _with_settings(
                f"INSERT INTO FUNCTION file({_quote(path)}, 'Arrow') "
                f"SELECT {', '.join(ev.COLUMNS)} FROM {self.db}.{STAGE} WHERE {where}",
                _ARROW_CHUNK,
            )
        )
