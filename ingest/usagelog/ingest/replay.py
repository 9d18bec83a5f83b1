"""``usagelog replay``: read a time or offset range of the events topic again into ClickHouse.

For records that went missing downstream (a table dropped, a partition deleted, storage restored
from an older backup). It reads with its own consumer (no group offsets are touched), from the
first offset at or after ``--since`` (a time) or from explicit ``--offsets``, up to ``--until``
or the end of each partition as it was when the replay started, and stores through the same
pipeline as the workers. Safe to run on data already stored: stored event IDs are skipped.
Replayed events are not archived again (the archive already holds what was stored before).
It runs until the range is read, however long that takes, and fails (exit 1) if Kafka stops
delivering for :data:`STALL_SECONDS` before the end; the CLI shows progress on stderr.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from .errors import KafkaError, SettingsError, kafka_errors
from .pipeline import Item, Pipeline
from .settings import WorkerSettings
from .store import connect

_logger = logging.getLogger("usagelog.worker")


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ISO-8601 (UTC unless it says otherwise) or a number of ms."""
    if text.isdigit():
        return int(text)
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(value.timestamp() * 1000)


def parse_offsets(text: str) -> dict[int, tuple[int, int | None]]:
    """``0:100-200,1:50-`` → {partition: (first offset, end offset or None for the current end)}."""
    ranges: dict[int, tuple[int, int | None]] = {}
    for item in text.split(","):
        partition, _, span = item.strip().partition(":")
        first, _, last = span.partition("-")
        ranges[int(partition)] = (int(first), int(last) + 1 if last else None)
    return ranges


Progress = Callable[[dict[str, int], int], None]  # (totals so far, messages still to read)

# Replay gives up, with a KafkaError, when nothing at all was read for this long although
# messages remain (brokers gone, the partition's leader unavailable).
STALL_SECONDS = 60.0


def replay(
    settings: WorkerSettings,
    *,
    since: str | None = None,
    until: str | None = None,
    offsets: str | None = None,
    progress: Progress | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> dict[str, int]:
    """Store the range again; returns the totals. Raises :class:`KafkaError` if Kafka stops
    delivering before the end of the range (what was read by then is stored)."""
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic
    with kafka_errors(settings.brokers):  # metadata, offsets, reading: confluent_kafka's errors
        consumer = Consumer(
            settings.consumer_config(**{"group.id": f"usagelog-replay-{uuid.uuid4().hex[:8]}"})
        )
        try:
            starts, ends = _range(consumer, settings, since, until, offsets)
            position = {p: starts[p] for p in starts if starts[p] < ends[p]}
            consumer.assign([TopicPartition(topic, p, position[p]) for p in sorted(position)])
            pipeline = Pipeline()
            totals = {"messages": 0, "stored": 0, "duplicates": 0, "dead_letters": 0, "loss_reports": 0}
            last_read = time.monotonic()
            while position:
                items = []
                for message in consumer.consume(num_messages=settings.batch_max_messages, timeout=1.0):
                    error = message.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaError(f"Kafka at {settings.brokers}: {error}")
                        continue
                    last_read = time.monotonic()
                    p, offset = int(message.partition() or 0), int(message.offset() or 0)
                    if p not in position:
                        continue
                    position[p] = max(position[p], offset + 1)
                    if offset < ends[p]:
                        items.append(Item("kafka", f"{topic}/{p}@{offset}", message.value() or b""))
                if items:
                    s = settings
                    with connect(s.clickhouse_url, database=s.database, wait=s.wait_seconds) as store:
                        result = pipeline.process(items, store)
                        pipeline.refresh_rollups(store, everything=True)
                    totals["messages"] += result.items
                    totals["stored"] += result.stored
                    totals["duplicates"] += result.duplicates
                    totals["dead_letters"] += result.dead_letters
                    totals["loss_reports"] += result.losses
                # A partition is done once the consumer is past its end, whether or not the
                # last offsets held messages (transaction markers, compaction).
                for tp in consumer.position([TopicPartition(topic, p) for p in position]):
                    if tp.offset >= 0:
                        position[tp.partition] = max(position[tp.partition], tp.offset)
                for p in [p for p in position if position[p] >= ends[p]]:
                    del position[p]
                remaining = sum(ends[p] - position[p] for p in position)
                if progress is not None:
                    progress(totals, remaining)
                if position and time.monotonic() - last_read > stall_seconds:
                    where = ", ".join(f"{p} at {position[p]} of {ends[p]}" for p in sorted(position))
                    raise KafkaError(
                        f"Kafka at {settings.brokers} delivered nothing for {stall_seconds:.0f}s with "
                        f"{remaining} messages of {topic!r} still to replay (partition {where}); "
                        f"{totals['messages']} were replayed"
                    )
            return totals
        finally:
            consumer.close()


def _range(
    consumer: Any, settings: WorkerSettings, since: str | None, until: str | None, offsets: str | None
) -> tuple[dict[int, int], dict[int, int]]:
    """(first offset, end offset) per partition to replay."""
    from confluent_kafka import TopicPartition

    topic = settings.topic
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except Exception as exc:
        raise KafkaError(f"Kafka at {settings.brokers} did not answer: {exc}") from exc
    topic_meta = metadata.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None:
        raise KafkaError(f"topic {topic!r} not found on {settings.brokers}")
    partitions = sorted(topic_meta.partitions)
    ends: dict[int, int] = {}
    for p in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = high
    starts: dict[int, int] = {}
    if offsets:
        for p, (first, end) in parse_offsets(offsets).items():
            if p not in ends:
                raise SettingsError(f"--offsets: topic {topic!r} has no partition {p}")
            starts[p] = first
            if end is not None:
                ends[p] = min(ends[p], end)
        return starts, {p: ends[p] for p in starts}
    since_ms = parse_time(since) if since else 0
    for tp in consumer.offsets_for_times(
        [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
    ):
        starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
    if until:
        until_ms = parse_time(until)
        for tp in consumer.offsets_for_times(
            [TopicPartition(topic, p, until_ms) for p in partitions], timeout=10
        ):
            if tp.offset >= 0:
                ends[tp.partition] = min(ends[tp.partition], tp.offset)
    return starts, ends
