"""``usagelog ingest``: move spooled usage events into ClickHouse.

Segment by segment, oldest first: read every frame, decode, store the events (skipping
event IDs already stored), store dead letters, and only then delete the segment. A crash or
kill at any point leaves the segment in place; the next run stores what is missing and
skips what is there, so the table ends with every event exactly once.

Damaged frames, payloads that are not OTLP, and events failing their checksum become dead
letters (table ``dead_letters``) with the reason and the segment and offset they came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from usagelog.instrumentation.spool import DamagedFrame, claim_segments, list_segments

from .decode import dead_letter, decode_or_dead_letter
from .store import Store, connect

# Let other processes (a CLI query, say) have the chDB directory between slices.
SLICE_SECONDS = 5.0


@dataclass
class IngestStats:
    segments: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    ignored: int = 0


Progress = Callable[[IngestStats, int], None]


def _ingest_segment(store: Store, segment: Any, stats: IngestStats) -> None:
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
    store.insert_dead_letters(letters)
    stats.events += len(rows)
    stats.dead_letters += len(letters)
    stats.segments += 1
    segment.delete()


def ingest_spool(spool_dir: str, url: str, database: str, progress: Progress | None = None) -> IngestStats:
    """Store every readable spooled segment; returns what was done."""
    stats = IngestStats()
    total = len(list_segments(spool_dir))
    while True:
        handled_in_slice = 0
        with connect(url, database=database) as store:
            started = time.monotonic()
            for segment in claim_segments(spool_dir):
                try:
                    _ingest_segment(store, segment, stats)
                finally:
                    segment.release()
                handled_in_slice += 1
                if progress is not None:
                    progress(stats, total)
                if time.monotonic() - started > SLICE_SECONDS:
                    break
            else:
                return stats
        if handled_in_slice == 0:
            return stats
