"""``usagelog ingest --from kafka://...``: a stateless worker in a consumer group.

Any number of workers share the topic's partitions (cooperative rebalancing). A worker batches
messages by count and age (``USAGELOG_BATCH_MAX_MESSAGES``, ``USAGELOG_BATCH_MAX_SECONDS``),
runs the batch through :class:`~usagelog.ingest.pipeline.BatchPipeline` and commits the offsets
only after that succeeded: at-least-once delivery into idempotent storage, so the table ends
exactly-once. When partitions are taken away in a rebalance, the pending batch is stored and
committed first; when they are lost (the session expired), it is dropped for the new owner to
read again. SIGTERM or SIGINT finishes the current batch, commits, finalizes archive files and
exits.

Each worker stages archive chunks in ``USAGELOG_STATE_DIR/archive-staging/<worker id>``, locked
while it runs; at start it finalizes the chunks of any worker that died (its lock is free).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from .errors import KafkaError, kafka_errors
from .health import WorkerHealth, configure_metrics
from .pipeline import BatchPipeline, BatchResult
from .settings import WorkerSettings

_logger = logging.getLogger("usagelog.worker")


class _StagingLock:
    """This worker's archive staging folder, held by an flock for as long as the worker lives."""

    def __init__(self, root: Path, worker_id: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.directory = root / worker_id
        self.directory.mkdir(exist_ok=True)
        self._fd = os.open(root / f"{worker_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another worker with USAGELOG_WORKER_ID={worker_id} is running") from None

    @staticmethod
    def orphans(root: Path, own: str) -> list[Path]:
        """Staging folders of workers that are gone (their lock can be taken)."""
        found = []
        for lock in root.glob("*.lock"):
            name = lock.name[: -len(".lock")]
            if name == own:
                continue
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            if (root / name).is_dir():
                found.append(root / name)
        return found


def build_archive(settings: WorkerSettings, staging: Path, worker_id: str) -> Any | None:
    if settings.archive_url.lower() in ("", "none", "off"):
        return None
    from .archive import Archive

    return Archive(
        settings.archive_url,
        fmt=settings.archive_format,
        staging_dir=staging,
        worker_id=worker_id,
        max_bytes=settings.archive_max_bytes,
        max_seconds=settings.archive_max_seconds,
    )


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.health = WorkerHealth(settings.worker_id, settings.health_interval)
        root = Path(settings.state_dir) / "archive-staging"
        self._staging = _StagingLock(root, settings.worker_id)
        self.archive = build_archive(settings, self._staging.directory, settings.worker_id)
        if self.archive is not None:
            for orphan in _StagingLock.orphans(root, settings.worker_id):
                recovered = build_archive(settings, orphan, orphan.name)
                if recovered is not None:
                    files = recovered.recover()
                    recovered.close()
                    _logger.info("finalized %d archive files left by worker %s", len(files), orphan.name)
                shutil.rmtree(orphan, ignore_errors=True)
                (root / f"{orphan.name}.lock").unlink(missing_ok=True)
            self.archive.recover()
        with kafka_errors(settings.brokers):  # a bad USAGELOG_KAFKA_CONFIG shows here
            self.producer = Producer(settings.producer_config()) if settings.dead_letter_topic else None
            self.consumer = Consumer(settings.consumer_config())
        self.pipeline = BatchPipeline(settings, self.archive, self.health, self.producer)
        self._pending: list[Any] = []
        self._batch_started = 0.0
        self._stop = False
        self._assigned: set[tuple[str, int]] = set()
        self._last_activity = time.monotonic()

    # -- rebalance callbacks --------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._last_activity = time.monotonic()
        _logger.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._pending and any((m.topic(), m.partition()) in revoked for m in self._pending):
            self._flush()
        self._assigned -= revoked
        _logger.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in lost]
        self._assigned -= lost
        _logger.warning(
            "lost %s; their uncommitted messages go to the new owner", sorted(p.partition for p in partitions)
        )

    # -- the loop -------------------------------------------------------------------------------
    def _flush(self) -> BatchResult | None:
        if not self._pending:
            return None

        batch, self._pending = self._pending, []
        result = self._process_with_retries(batch)
        self._commit(result)
        if self.archive is not None:
            self.archive.maybe_rotate()
        self._update_lag()
        return result

    def _commit(self, result: BatchResult) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(result.offsets.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and hasattr(error, "fatal") and error.fatal():
                raise KafkaError(f"Kafka at {self.settings.brokers}: committing failed: {exc}") from exc
            # A rebalance moved the partitions while the batch was stored: the new owner reads
            # the batch again and storage skips what is already there. Nothing is lost.
            _logger.warning("offsets not committed (%s); the batch will be read again by its new owner", exc)

    def _process_with_retries(self, batch: list[Any], attempts: int = 5) -> BatchResult:
        """Storage hiccups (a busy chDB directory, a server restart) are retried with backoff;
        if they persist the worker stops without committing, and the batch is read again."""
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                return self.pipeline.process(batch)
            except Exception:
                if attempt == attempts:
                    raise
                _logger.exception(
                    "storing a batch failed (attempt %d of %d); retrying in %.0fs", attempt, attempts, delay
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _update_lag(self) -> None:
        from confluent_kafka import TopicPartition

        lag = 0
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in self._assigned])
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                if tp.offset >= 0:
                    lag += max(0, high - tp.offset)
                else:
                    low, _ = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                    lag += max(0, high - low)
        except Exception:
            _logger.debug("lag not available", exc_info=True)
            return
        self.health.lag = lag

    def stop(self, *_: Any) -> None:
        self._stop = True

    def run(self, *, max_idle_seconds: float = 0.0) -> None:
        """Consume until stopped (or, with ``max_idle_seconds``, until nothing arrived for that long)."""
        s = self.settings
        with kafka_errors(s.brokers):
            self.consumer.subscribe(
                [s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        self._last_activity = time.monotonic()
        try:
            while not self._stop:
                timeout = s.batch_max_seconds
                if self._pending:
                    timeout = max(0.0, self._batch_started + s.batch_max_seconds - time.monotonic())
                messages = self.consumer.consume(
                    num_messages=max(1, s.batch_max_messages - len(self._pending)), timeout=timeout
                )
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaError(f"Kafka consumer failed: {error}")
                        _logger.warning("Kafka: %s", error)
                        continue
                    if not self._pending:
                        self._batch_started = time.monotonic()
                    self._pending.append(message)
                    self._last_activity = time.monotonic()
                due = self._pending and (
                    len(self._pending) >= s.batch_max_messages
                    or time.monotonic() - self._batch_started >= s.batch_max_seconds
                )
                if due:
                    self._flush()
                elif not self._pending:
                    self._update_lag()
                self.health.maybe_report()
                idle = time.monotonic() - self._last_activity
                if max_idle_seconds and not self._pending and self._assigned and idle > max_idle_seconds:
                    break
            self._flush()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:
            _logger.debug("consumer close failed", exc_info=True)
        if self.archive is not None:
            self.archive.close()
        if self.producer is not None:
            self.producer.flush(10)
        self.health.maybe_report(force=True)


def run_worker(settings: WorkerSettings, *, max_idle_seconds: float = 0.0) -> int:
    configure_metrics()
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    _logger.info("worker %s consuming %s from %s", settings.worker_id, settings.topic, settings.brokers)
    worker.run(max_idle_seconds=max_idle_seconds)
    return 0
