"""One batch of Kafka messages, start to finish: decode, archive, store, dead-letter.

The order is what makes delivery safe: events are archived (durably staged) and stored, and the
rollups of the minutes they touch recomputed, before the caller commits the batch's offsets, so
a worker killed at any point leaves its batch to be read again; storage skips event IDs already
there and the archive drops repeated IDs when it writes a file, so both end with each event once.

A message that is not OTLP, or a usage event that fails its checksum, becomes a dead letter
in ``dead_letters`` (and on ``USAGELOG_KAFKA_DEAD_LETTER_TOPIC`` when set) with the reason and
its Kafka coordinates; the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import rollup
from .decode import decode_or_dead_letter
from .health import WorkerHealth
from .settings import WorkerSettings
from .store import connect

_logger = logging.getLogger("usagelog.worker")


@dataclass
class BatchResult:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    monitored: int = 0
    dead_letters: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read


class BatchPipeline:
    def __init__(
        self,
        settings: WorkerSettings,
        archive: Any | None,
        health: WorkerHealth | None,
        producer: Any | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.health = health
        self.producer = producer

    def process(self, messages: Sequence[Any]) -> BatchResult:
        """Decode, archive, store and dead-letter ``messages``; raises if storage failed (the caller
        must then not commit, and the batch will be read again)."""
        started = time.monotonic()
        result = BatchResult(messages=len(messages))
        rows: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            key = (topic, partition)
            result.offsets[key] = max(result.offsets.get(key, 0), offset + 1)
            location = f"{topic}/{partition}@{offset}"
            payload = message.value() or b""
            decoded, bad = decode_or_dead_letter(payload, "kafka", location)
            rows.extend(decoded.rows)
            letters.extend(bad)
        if self.archive is not None and rows:
            self.archive.stage(rows)
        monitored = [row for row in rows if row["monitored"]]
        s = self.settings
        with connect(s.clickhouse_url, database=s.database, wait=s.wait_seconds) as store:
            for start in range(0, len(rows), 10000):
                stored, duplicates = store.insert_events(rows[start : start + 10000])
                result.stored += stored
                result.duplicates += duplicates
            if monitored:
                result.monitored, _ = store.insert_events(monitored, table="monitored_events")
            store.insert_dead_letters(letters)
            # Every minute the batch touched, duplicates included: a redelivered batch whose
            # first delivery crashed before this point is recomputed now.
            rollup.refresh(store, rollup.minutes_of(rows))
        result.dead_letters = len(letters)
        if letters:
            self._publish_dead_letters(letters)
            for letter in letters:
                _logger.warning("dead letter %s: %s", letter["location"], letter["reason"])
        if self.health is not None:
            self.health.batch_done(
                stored=result.stored,
                duplicates=result.duplicates,
                dead_letters=result.dead_letters,
                seconds=time.monotonic() - started,
            )
        return result

    def _publish_dead_letters(self, letters: Sequence[dict[str, Any]]) -> None:
        if self.producer is None or not self.settings.dead_letter_topic:
            return
        for letter in letters:
            payload = letter["payload"]
            self.producer.produce(
                self.settings.dead_letter_topic,
                value=payload if isinstance(payload, bytes) else str(payload).encode(),
                headers=[
                    ("usagelog.reason", letter["reason"].encode()),
                    ("usagelog.source", letter["location"].encode()),
                ],
            )
        remaining = self.producer.flush(10)
        if remaining:
            _logger.error(
                "%d dead letters not confirmed by Kafka (they are in the dead_letters table)", remaining
            )
