"""``usagelog ingest``: move spooled usage events into ClickHouse.

Segment by segment, oldest first: read every frame, decode, store the events (skipping
event IDs already stored) and copy monitored ones to ``monitored_events``, store dead letters;
then, for a group of segments together, recompute the rollups of every minute they touched,
and only then delete the segments. A crash or kill at any point leaves the segments in place;
the next run stores what is missing and skips what is there, so the table ends with every
event exactly once and the rollups with exact counts.

Damaged frames, payloads that are not OTLP, and events failing their checksum become dead
letters (table ``dead_letters``) with the reason and the segment and offset they came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from usagelog.instrumentation.spool import DamagedFrame, claim_segments, list_segments

from . import rollup
from .decode import dead_letter, decode_or_dead_letter
from .store import Store, connect

# Let other processes (a CLI query, say) have the chDB directory between slices.
SLICE_SECONDS = 5.0
# Stored segments are finished (rollups recomputed, files deleted) in groups of about this many
# events: one rollup recompute per group, and a kill loses at most a group's progress.
GROUP_EVENTS = 5000


@dataclass
class IngestStats:
    segments: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    ignored: int = 0


Progress = Callable[[IngestStats, int], None]


def _ingest_segment(store: Store, segment: Any, stats: IngestStats) -> set[int]:
    """Store one segment's events and dead letters; returns the minutes its events fall in."""
    rows: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []
    name = segment.path.name
    for frame in segment.frames():
        location = f"{name}@{frame.offset}"
        if isinstance(frame, DamagedFrame):
            letters.append(dead_letter("spool", location, frame.reason, frame.raw))
            continue
        decoded, bad = decode_or_dead_letter(frame.payload, "spool", location)
        rows.extend(decoded.rows)
        letters.extend(bad)
        stats.ignored += decoded.ignored
    for start in range(0, len(rows), 10000):
        inserted, duplicates = store.insert_events(rows[start : start + 10000])
        stats.inserted += inserted
        stats.duplicates += duplicates
    monitored = [row for row in rows if row["monitored"]]
    if monitored:
        store.insert_events(monitored, table="monitored_events")
    store.insert_dead_letters(letters)
    stats.events += len(rows)
    stats.dead_letters += len(letters)
    stats.segments += 1
    return rollup.minutes_of(rows)


def _finish(store: Store, segments: list[Any], minutes: set[int]) -> None:
    """Recompute the rollups of the stored segments' minutes, then delete the segments."""
    rollup.refresh(store, minutes)
    for segment in segments:
        segment.delete()


def ingest_spool(spool_dir: str, url: str, database: str, progress: Progress | None = None) -> IngestStats:
    """Store every readable spooled segment; returns what was done."""
    stats = IngestStats()
    total = len(list_segments(spool_dir))
    while True:
        handled_in_slice = 0
        with connect(url, database=database) as store:
            started = time.monotonic()
            group: list[Any] = []
            minutes: set[int] = set()
            pending_events = 0
            finished = True
            try:
                for segment in claim_segments(spool_dir):
                    group.append(segment)
                    before = stats.events
                    minutes |= _ingest_segment(store, segment, stats)
                    pending_events += stats.events - before
                    handled_in_slice += 1
                    if progress is not None:
                        progress(stats, total)
                    if pending_events >= GROUP_EVENTS:
                        _finish(store, group, minutes)
                        group, minutes, pending_events = [], set(), 0
                    if time.monotonic() - started > SLICE_SECONDS:
                        finished = False
                        break
                _finish(store, group, minutes)
            finally:
                for segment in group:
                    segment.release()
            if finished:
                return stats
        if handled_in_slice == 0:
            return stats
