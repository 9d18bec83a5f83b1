"""``usagelog replay``: read a time or offset range of the events topic again into ClickHouse.

For records that went missing downstream (a table dropped, a partition deleted, storage restored
from an older backup). It reads with its own consumer (no group offsets are touched), from the
first offset at or after ``--since`` (a time) or from explicit ``--offsets``, up to ``--until``
or the end of each partition as it was when the replay started, and stores through the same
pipeline as the workers. Safe to run on data already stored: stored event IDs are skipped.
Replayed events are not archived again (the archive already holds what was stored before).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from .errors import KafkaError, kafka_errors
from .pipeline import BatchPipeline
from .settings import WorkerSettings

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


def replay(
    settings: WorkerSettings,
    *,
    since: str | None = None,
    until: str | None = None,
    offsets: str | None = None,
    progress: Any = None,
) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    with kafka_errors(settings.brokers):  # metadata, offsets, reading: confluent_kafka's errors
        consumer = Consumer(
            settings.consumer_config(**{"group.id": f"usagelog-replay-{uuid.uuid4().hex[:8]}"})
        )
        try:
            try:
                metadata = consumer.list_topics(settings.topic, timeout=10)
            except Exception as exc:
                raise KafkaError(f"Kafka at {settings.brokers} did not answer: {exc}") from exc
            topic_meta = metadata.topics.get(settings.topic)
            if topic_meta is None or topic_meta.error is not None:
                raise KafkaError(f"topic {settings.topic!r} not found on {settings.brokers}")
            partitions = sorted(topic_meta.partitions)
            ends: dict[int, int] = {}
            for p in partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(settings.topic, p), timeout=10)
                ends[p] = high
            starts: dict[int, int] = {}
            if offsets:
                for p, (first, end) in parse_offsets(offsets).items():
                    starts[p] = first
                    if end is not None:
                        ends[p] = min(ends[p], end)
                partitions = [p for p in partitions if p in starts]
            else:
                since_ms = parse_time(since) if since else 0
                found = consumer.offsets_for_times(
                    [TopicPartition(settings.topic, p, since_ms) for p in partitions], timeout=10
                )
                for tp in found:
                    starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
                if until:
                    until_ms = parse_time(until)
                    found = consumer.offsets_for_times(
                        [TopicPartition(settings.topic, p, until_ms) for p in partitions], timeout=10
                    )
                    for tp in found:
                        if tp.offset >= 0:
                            ends[tp.partition] = min(ends[tp.partition], tp.offset)
            todo = {p for p in partitions if starts[p] < ends[p]}
            consumer.assign([TopicPartition(settings.topic, p, starts[p]) for p in sorted(todo)])
            pipeline = BatchPipeline(settings, archive=None, health=None)
            totals = {"messages": 0, "stored": 0, "duplicates": 0, "dead_letters": 0}
            deadline = time.monotonic() + 3600
            while todo and time.monotonic() < deadline:
                batch = []
                for message in consumer.consume(num_messages=settings.batch_max_messages, timeout=1.0):
                    if message.error() is not None:
                        continue
                    p = int(message.partition() or 0)
                    if p in todo and int(message.offset() or 0) < ends[p]:
                        batch.append(message)
                    if int(message.offset() or 0) + 1 >= ends[p]:
                        todo.discard(p)
                if batch:
                    result = pipeline.process(batch)
                    totals["messages"] += result.messages
                    totals["stored"] += result.stored
                    totals["duplicates"] += result.duplicates
                    totals["dead_letters"] += result.dead_letters
                    if progress is not None:
                        progress(totals)
                for p in list(todo):
                    position = consumer.position([TopicPartition(settings.topic, p)])[0].offset
                    if position >= ends[p]:
                        todo.discard(p)
            return totals
        finally:
            consumer.close()
