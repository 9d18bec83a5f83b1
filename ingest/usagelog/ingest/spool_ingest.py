"""``usagelog ingest``: move spooled usage events into ClickHouse (and the archive, when set).

The spool is a source of :class:`~usagelog.ingest.pipeline.Item`\\ s: every frame of a segment,
oldest segment first, with ``<segment>@<offset>`` as its location; a damaged or torn frame is an
item the pipeline turns into a dead letter, which ``usagelog audit`` reports as loss. Segments
are claimed (locked) and handed to the :class:`~usagelog.ingest.pipeline.Pipeline` in groups of
about :data:`GROUP_BYTES`; a group's segments are deleted only after the pipeline stored,
archived and dead-lettered all of it. A crash or kill at any point leaves them in place; the
next run stores what is missing and skips what is there, so the table ends with every event
exactly once and the rollups with exact counts.

With an archive (``USAGELOG_ARCHIVE_URL``, off by default for the spool), events are staged
before they are stored and the archive's files are written when the run ends; a run that died
leaves its staged chunks, which the next run (or worker) finalizes.

``usagelog ingest --spool --follow`` (:func:`follow_spool`) runs the same rounds continuously:
one whenever a segment is ready, until stopped, with one pipeline and one archive for all rounds.

Before reading, :func:`~usagelog.instrumentation.losses.reap_orphans` turns the counter files
that API processes which are gone left in the spool into loss reports (``usagelog.loss``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from usagelog.instrumentation.losses import reap_orphans
from usagelog.instrumentation.spool import (
    DamagedFrame,
    claim_segments,
    has_claimable,
    list_segments,
    segment_instance,
)

from .archive import open_archive
from .pipeline import Item, Pipeline, Result
from .recycle import MB, give_back_arrow_memory, memory_bytes
from .settings import SPOOL_GROUP_BYTES, ArchiveSettings
from .store import Store, connect

# Let other processes (a CLI query, say) have the chDB directory between slices.
SLICE_SECONDS = 5.0
# ``usagelog ingest --spool --follow`` looks for a segment ready to be stored this often.
FOLLOW_POLL_SECONDS = 0.2
# Segments go through the pipeline (and are deleted) in groups of about this many payload bytes
# (USAGELOG_BATCH_MAX_BYTES; unset, 64 MiB, ~130,000 events of varied traffic): the engine reads a
# group in one statement, and a kill loses at most a group's progress. Each group has a fixed cost
# (~60 ms: analysing the staging query, the insert's part and its materialized views' parts) and
# adds a part the engine merges later, so larger groups store faster per event (1M events, in
# process, CPU: 32 MiB 6.2-6.4 s, 64 MiB 5.1, 128 MiB 4.45; own memory at its peak ~300, ~400,
# ~580 MB). The engine's memory for a group is about its size (it parses one payload at a time);
# the payloads wait mapped from their segments (read_frames(mapped=True)).
GROUP_BYTES = SPOOL_GROUP_BYTES


@dataclass
class IngestStats:
    segments: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    monitored: int = 0
    dead_letters: int = 0
    ignored: int = 0
    losses: int = 0  # loss reports read
    archived: list[str] | None = None  # the archive files written, when archiving


Progress = Callable[[IngestStats, int], None]


def segment_items(segment: Any) -> Iterator[Item]:
    """Every frame of a claimed segment as an item, damaged ones included (a torn frame at the
    end too: a sealed segment cut short, or the ``.open`` segment of a writer that died), each
    attributed to the instance the segment's name carries."""
    name = segment.path.name
    instance = segment_instance(segment.path)
    for frame in segment.frames(mapped=True):  # the payloads wait in the page cache
        location = f"{name}@{frame.offset}"
        if isinstance(frame, DamagedFrame):
            yield Item("spool", location, frame.raw, damage=frame.reason, instance=instance)
        else:
            yield Item("spool", location, frame.payload)


class _Group:
    """Claimed segments whose items have not been through the pipeline yet."""

    def __init__(self) -> None:
        self.segments: list[Any] = []
        self.items: list[Item] = []
        self.nbytes = 0

    def add(self, segment: Any) -> None:
        self.segments.append(segment)
        for item in segment_items(segment):
            self.items.append(item)
            self.nbytes += len(item.payload)

    def finish(self, pipeline: Pipeline, store: Store, stats: IngestStats) -> None:
        """Through the pipeline, then delete the segments (only then: a failure keeps them)."""
        if self.segments:
            _count(stats, pipeline.process(self.items, store))
            for segment in self.segments:
                segment.delete()
            stats.segments += len(self.segments)
            if pipeline.archive is not None:
                pipeline.archive.maybe_rotate()
        self.segments, self.items, self.nbytes = [], [], 0

    def release(self) -> None:
        for segment in self.segments:
            segment.release()


def _count(stats: IngestStats, result: Result) -> None:
    stats.events += result.events
    stats.inserted += result.stored
    stats.duplicates += result.duplicates
    stats.monitored += result.monitored
    stats.dead_letters += result.dead_letters
    stats.ignored += result.ignored
    stats.losses += result.losses


def ingest_spool(
    spool_dir: str,
    url: str,
    database: str,
    progress: Progress | None = None,
    *,
    archive: ArchiveSettings | None = None,
    group_bytes: int = GROUP_BYTES,
) -> IngestStats:
    """Store every readable spooled segment, archiving too when ``archive`` is enabled.

    First the counter files of API processes that are gone become loss reports (a sealed
    segment each), so they are stored with the rest.
    """
    archiver = open_archive(archive) if archive is not None else None
    stats = IngestStats()
    try:
        _ingest(spool_dir, url, database, Pipeline(archive=archiver), stats, progress, group_bytes)
    finally:
        if archiver is not None:
            stats.archived = archiver.close()
    return stats


def follow_spool(
    spool_dir: str,
    url: str,
    database: str,
    stopped: Callable[[], bool],
    *,
    archive: ArchiveSettings | None = None,
    max_memory_mb: int = 0,
    poll_seconds: float = FOLLOW_POLL_SECONDS,
    group_bytes: int = GROUP_BYTES,
) -> tuple[IngestStats, bool]:
    """Store the spool continuously: whenever a segment is ready (sealed, or left by a writer
    that is gone), until ``stopped()``; then once more. The store is opened for each round and
    closed after, so other processes get a chDB directory between rounds, and the archive (one per
    follower) writes its files as its limits say and when the follower stops.

    Returns the totals and whether its own memory passed ``max_memory_mb`` (0: no bound) after a
    round: the caller then starts afresh in place (chDB keeps memory for every session opened).
    """
    archiver = open_archive(archive) if archive is not None else None
    pipeline = Pipeline(archive=archiver)
    stats = IngestStats()
    over = False
    try:
        while not stopped():
            if not has_claimable(spool_dir):
                time.sleep(poll_seconds)
                continue
            _ingest(spool_dir, url, database, pipeline, stats, None, group_bytes)
            used = memory_bytes() if max_memory_mb else None
            if used is not None and used > max_memory_mb * MB:
                give_back_arrow_memory()  # the archive's free pages first
                used = memory_bytes()
            if used is not None and used > max_memory_mb * MB:
                over = True
                break
        if not over:
            _ingest(spool_dir, url, database, pipeline, stats, None, group_bytes)
    finally:
        if archiver is not None:
            stats.archived = archiver.close()
    return stats, over


def _ingest(
    spool_dir: str,
    url: str,
    database: str,
    pipeline: Pipeline,
    stats: IngestStats,
    progress: Progress | None,
    group_bytes: int,
) -> None:
    reap_orphans(spool_dir)
    total = len(list_segments(spool_dir))
    while True:
        handled_in_slice = 0
        with connect(url, database=database) as store:
            started = time.monotonic()
            group = _Group()
            finished = True
            try:
                for segment in claim_segments(spool_dir):
                    group.add(segment)
                    handled_in_slice += 1
                    if group.nbytes >= group_bytes:
                        group.finish(pipeline, store, stats)
                        if progress is not None:
                            progress(stats, total)
                    if time.monotonic() - started > SLICE_SECONDS:
                        finished = False
                        break
                group.finish(pipeline, store, stats)
                # With nothing left to claim, every noted minute; a slice cut short by its time,
                # the minutes that have ended (the next slice goes on at once).
                pipeline.refresh_rollups(store, force=True, everything=finished)
                if progress is not None and handled_in_slice:
                    progress(stats, total)
            finally:
                group.release()
        if finished or handled_in_slice == 0:
            break
