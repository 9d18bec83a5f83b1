"""``usagelog tail [--user U]``: follow monitored events live from Kafka.

Reads ``USAGELOG_KAFKA_MONITORED_TOPIC`` (where the collector routes events flagged by
``USAGELOG_MONITOR``) with a throw-away consumer group, from the end unless ``--from-beginning``,
and prints one line per event (or one JSON object per line with ``--format json``). Once it has
its partitions it says ``tail: following ...`` on stderr: every event published after that line
is shown. A broker that does not answer within 10 seconds (or ``--timeout``, if shorter) is an
error (:class:`~usagelog.ingest.errors.KafkaError`), not an empty wait.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any, TextIO

from usagelog.instrumentation import event as ev

from .decode import DecodeError, decode_payload
from .errors import check_reachable
from .output import dumps, escape_text
from .settings import WorkerSettings

# What a monitored event shows as JSON: the fields the event's declaration marks for tail.
FIELDS = ev.TAIL_COLUMNS
# How long tail waits for a broker to answer at start (less if --timeout is shorter).
PROBE_SECONDS = 10.0


def as_json(row: dict[str, Any]) -> str:
    return dumps({k: row[k] for k in FIELDS})


def _line(row: dict[str, Any]) -> str:
    when = (
        time.strftime("%H:%M:%S", time.gmtime(row["timestamp"] / 1e9))
        + f".{row['timestamp'] % 10**9 // 10**6:03d}"
    )
    # Every text field came from a request: shown with its control characters escaped.
    user, method, path = (escape_text(str(row[k])) for k in ("user_id", "method", "path"))
    error, instance = (
        escape_text(str(row["error_type"] or "")),
        escape_text(str(row["service_instance_id"])[:8]),
    )
    return (
        f"{when}  {user or '-':<12} {method:<6} {path:<32} {row['status_code']:>3} "
        f"{error:<20} {row['duration_ns'] / 1e6:8.2f}ms  {instance}"
    )


def tail(
    settings: WorkerSettings,
    *,
    user: str | None = None,
    from_beginning: bool = False,
    fmt: str = "table",
    max_events: int = 0,
    timeout: float = 0.0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print monitored events as they arrive; returns how many were printed."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        settings.consumer_config(
            **{
                "group.id": f"usagelog-tail-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
    )
    topic = settings.monitored_topic
    try:
        # A broker that does not answer is an error now, not silence until --timeout.
        check_reachable(consumer, settings.brokers, min(timeout, PROBE_SECONDS) if timeout else PROBE_SECONDS)
    except BaseException:
        consumer.close()
        raise

    def on_assign(consumer: Any, partitions: list[Any]) -> None:
        # From the end as it is now, not as it is when the first fetch happens: an event
        # published after the "following" line cannot be skipped.
        if not from_beginning:
            for tp in partitions:
                _, tp.offset = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        consumer.incremental_assign(partitions)
        if partitions:
            start = "the beginning" if from_beginning else "the end"
            print(f"tail: following {topic} from {start}", file=err, flush=True)

    consumer.subscribe([topic], on_assign=on_assign)
    printed = 0
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            try:
                rows = decode_payload(message.value() or b"").rows
            except DecodeError:
                continue
            for row in rows:
                if user and row["user_id"] != user:
                    continue
                if fmt == "json":
                    print(as_json(row), file=out, flush=True)
                else:
                    print(_line(row), file=out, flush=True)
                printed += 1
                if max_events and printed >= max_events:
                    return printed
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return printed
