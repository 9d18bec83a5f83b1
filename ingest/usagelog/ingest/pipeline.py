"""One ingest pipeline for every source: payloads in; events stored, copied, archived; dead letters out.

A source — spool segments (:mod:`usagelog.ingest.spool_ingest`) or Kafka messages
(:mod:`usagelog.ingest.worker`, :mod:`usagelog.ingest.replay`) — hands over :class:`Item`\\ s:
an OTLP payload with where it came from, or something the source itself could not read (a
damaged spool frame). :meth:`Pipeline.process` does the same for both, in this order:

1. decode and verify every payload (checksum, numeric ranges);
2. stage the events in the archive, when one is configured (``USAGELOG_ARCHIVE_URL``);
3. store the events, skipping event IDs already stored, and copy monitored ones to
   ``monitored_events``; store the loss reports (``usagelog.loss`` records) in ``losses``,
   one row per report ID however often it is delivered;
4. store dead letters — payloads that are not OTLP, events that fail their checks, damaged
   or torn frames — with the reason, the location and the instance when known, and hand them
   to the source's dead-letter sink (the Kafka dead-letter topic);
5. bring the rollups up to date (:mod:`usagelog.ingest.rollup`) at most every
   :data:`ROLLUP_SECONDS`, when the source closes the store and when it stops. Every minute the
   payloads touched, duplicates included, is noted before the batch is stored: where rollups are
   added from each insert (chDB), so that what a crash or a failed batch left is recomputed from
   the events; where they are recomputed (a server), for that recompute.

The caller gives up the items' origin (deletes the spool segments, commits the Kafka offsets)
only after ``process`` returned, so a crash at any point leaves them to be read again; storage
skips what is there and the archive drops repeated IDs when it writes a file, so both end with
each event once. A failure of storage raises: the caller must then keep the items.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import retention, rollup
from .decode import dead_letter, decode_or_dead_letter
from .engine_decode import EngineDecoder, EngineResult, decoder_setting
from .errors import ArchiveError, StoreError
from .health import WorkerHealth
from .store import Store

if TYPE_CHECKING:
    from .archive import Archive

_logger = logging.getLogger("usagelog.ingest")

INSERT_CHUNK = 10_000  # rows per INSERT
# Rollups are brought up to date at most this often (and when a source closes its store): the
# sums batches added are folded in (chDB), or the noted minutes that have ended are recomputed,
# reading each of their events again (a server). Dashboards read rollups only for ranges over 7
# days, where a minute of delay does not show.
ROLLUP_SECONDS = 10.0


@dataclass(frozen=True)
class Item:
    """One payload from a source. ``damage`` says why the source could not read it (then
    ``payload`` holds the raw bytes, kept in the dead letter, and ``instance`` the instance it
    came from when the source knows it)."""

    source: str  # "spool" or "kafka"
    location: str  # segment@offset, or topic/partition@offset
    payload: bytes | memoryview  # a view of a mapped spool segment (spool_ingest)
    damage: str = ""
    instance: str = ""


@dataclass
class Result:
    items: int = 0
    events: int = 0
    stored: int = 0
    duplicates: int = 0
    monitored: int = 0
    dead_letters: int = 0
    ignored: int = 0  # log records that are neither usage events nor loss reports
    losses: int = 0  # loss reports read (redeliveries included)

    def add(self, other: Result) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


DeadLetterSink = Callable[[Sequence[dict[str, Any]]], None]


@dataclass
class Staged:
    """A batch staged in another engine than the store's (:meth:`Pipeline.stage_ahead`): its items,
    with the payloads the engine read dropped (the engine's columns hold them), the engine's
    result (None: it could not read the batch, every payload kept) and the file holding its
    staging table."""

    items: list[Item]
    result: EngineResult | None
    path: str | None
    size: int  # the file's bytes

    def discard(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


class Pipeline:
    def __init__(
        self,
        *,
        archive: Archive | None = None,
        health: WorkerHealth | None = None,
        dead_letter_sink: DeadLetterSink | None = None,
        decoder: str | None = None,
    ) -> None:
        self.archive = archive
        self.health = health
        self.dead_letter_sink = dead_letter_sink
        self.decoder = decoder_setting() if decoder is None else decoder
        self._engines: tuple[Store, EngineDecoder] | None = None
        self._merges_matched: Store | None = None  # the store whose projection merges were matched
        self._rolled_up = -ROLLUP_SECONDS  # the first batch also recomputes what a crash left noted
        # The store whose noted minutes all had their batches' sums added (None: none yet this
        # session, or a batch failed part way).
        self._clean: Store | None = None

    def refresh_rollups(self, store: Store, *, force: bool = False, everything: bool = False) -> None:
        """Bring the rollups up to date (:func:`usagelog.ingest.rollup.refresh_pending`) when
        :data:`ROLLUP_SECONDS` passed since the last time, or now with ``force`` (sources call it
        before they close the store); ``everything``: every noted minute is due (a source that
        stops or has nothing left to do)."""
        now = time.monotonic()
        if force or everything or now - self._rolled_up >= ROLLUP_SECONDS:
            rollup.refresh_pending(store, everything=everything, clean=self._clean is store)
            self._rolled_up = now

    def _engine(self, store: Store) -> EngineDecoder | None:
        """The engine decoder of ``store`` (one per open store), or None to decode in Python."""
        if self.decoder == "python" or not EngineDecoder.available(store):
            return None
        if self._engines is None or self._engines[0] is not store:
            self._engines = (store, EngineDecoder(store))
        return self._engines[1]

    def stage_ahead(self, items: Sequence[Item], engine_store: Store, directory: str) -> Staged:
        """Decode and verify ``items`` in the engine of ``engine_store`` (not the store: a chDB
        directory of the caller's own) into a file in ``directory``, for :meth:`process` to store
        later with ``staged_ahead``. What the store's engine then does is the insert alone."""
        items = list(items)
        readable = [n for n, item in enumerate(items) if not item.damage]
        engine = self._engine(engine_store) if readable else None
        result = engine.stage([items[n].payload for n in readable]) if engine is not None else None
        if engine is None or result is None:
            return Staged(items, None, None, 0)
        try:
            fd, path = tempfile.mkstemp(prefix="usagelog-staged-", suffix=".native", dir=directory)
            os.close(fd)
            try:
                engine.export_staged(path)
                size = os.path.getsize(path)
            except BaseException:
                os.unlink(path)
                raise
        finally:
            engine.clear()
        kept = {readable[n] for n in result.leftover}  # payloads the reference decoder reads
        light = [
            item if item.damage or n in kept else replace(item, payload=b"") for n, item in enumerate(items)
        ]
        return Staged(light, result, path, size)

    @staticmethod
    def _archive_staged(archive: Archive, engine: EngineDecoder, staged: EngineResult) -> None:
        """Have the engine write the staged events to ``archive``, a chunk for each hour they fall in."""
        hours = sorted({minute // 3600 for minute in staged.minutes})
        archived = archive.stage_hours(hours, lambda hour, path: engine.write_staged(staged, hour, path))
        if archived != staged.events:  # never an event stored and not archived
            raise ArchiveError(f"{archived} of the batch's {staged.events} events went to the archive")

    def process(self, items: Iterable[Item], store: Store, staged_ahead: Staged | None = None) -> Result:
        """Decode, archive, store, copy and dead-letter ``items`` (or the batch ``staged_ahead``:
        :meth:`stage_ahead`); raises if storage failed."""
        if staged_ahead is not None:
            items = staged_ahead.items
        result = Result()
        rows: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        losses: list[dict[str, Any]] = []
        readable: list[Item] = []
        for item in items:
            result.items += 1
            if item.damage:
                letters.append(
                    dead_letter(
                        item.source,
                        item.location,
                        item.damage,
                        item.payload,
                        service_instance_id=item.instance,
                    )
                )
            else:
                readable.append(item)
        if self._merges_matched is not store:
            retention.match_projection_merges(store)
            self._merges_matched = store
        if self._clean is not store:  # what a crash (or a failed batch) left noted
            rollup.recover(store)
            self._clean = store
        engine = self._engine(store) if readable else None
        ahead = staged_ahead is not None and staged_ahead.result is not None
        if ahead:
            assert staged_ahead is not None
            if engine is None or staged_ahead.path is None:  # its payloads are only in the file
                raise StoreError("a batch staged ahead needs the engine decoder of a chDB store")
            engine.load_staged(staged_ahead.path)
            staged = staged_ahead.result
        else:
            staged = engine.stage([item.payload for item in readable]) if engine is not None else None
        for item in readable if staged is None else [readable[n] for n in staged.leftover]:
            decoded, bad = decode_or_dead_letter(bytes(item.payload), item.source, item.location)
            rows.extend(decoded.rows)
            letters.extend(bad)
            losses.extend({**loss, "location": item.location} for loss in decoded.losses)
            result.ignored += decoded.ignored
        minutes = rollup.minutes_of(rows)
        if staged is not None and engine is not None:
            result.events += staged.events
            result.ignored += staged.ignored
            minutes |= staged.minutes
            if self.archive is not None and staged.events:
                self._archive_staged(self.archive, engine, staged)
        result.events += len(rows)
        if self.archive is not None and rows:
            self.archive.stage(rows)
        # Every minute the payloads touched, duplicates included, before anything is stored: a
        # crash or a failure from here on leaves them noted, to be recomputed from the events.
        rollup.note(store, minutes)
        self._clean = None
        if staged is not None and engine is not None and staged.events:
            engine.store_staged(staged)
            result.stored, result.duplicates, result.monitored = (
                staged.stored,
                staged.duplicates,
                staged.monitored,
            )
        if engine is not None:
            engine.clear()
        for start in range(0, len(rows), INSERT_CHUNK):
            stored, duplicates = store.insert_events(rows[start : start + INSERT_CHUNK])
            result.stored += stored
            result.duplicates += duplicates
        monitored = [row for row in rows if row["monitored"]]
        if monitored:
            copied, _ = store.insert_events(monitored, table="monitored_events")
            result.monitored += copied
        store.insert_losses(losses)
        result.losses = len(losses)
        store.insert_dead_letters(letters)
        self._clean = store
        self.refresh_rollups(store)
        result.dead_letters = len(letters)
        for loss in losses:
            _logger.warning(
                "loss report from instance %s: %s events %s (%s)",
                loss["service_instance_id"],
                loss["count"],
                loss["reason"],
                loss["location"],
            )
        if letters:
            for letter in letters:
                _logger.warning("dead letter %s: %s", letter["location"], letter["reason"])
            if self.dead_letter_sink is not None:
                self.dead_letter_sink(letters)
        if self.health is not None:
            self.health.batch_done(
                stored=result.stored,
                duplicates=result.duplicates,
                dead_letters=result.dead_letters,
            )
        return result
