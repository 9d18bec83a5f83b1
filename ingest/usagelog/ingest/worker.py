"""``usagelog ingest --from kafka://...``: a stateless worker in a consumer group.

Any number of workers share the topic's partitions (cooperative rebalancing). A worker batches
messages by count and age (``USAGELOG_BATCH_MAX_MESSAGES``, ``USAGELOG_BATCH_MAX_SECONDS``),
runs the batch through :class:`~usagelog.ingest.pipeline.Pipeline` and commits the offsets
only after that succeeded: at-least-once delivery into idempotent storage, so the table ends
exactly-once. When partitions are taken away in a rebalance, the pending batch is stored and
committed first; when they are lost (the session expired), it is dropped for the new owner to
read again. SIGTERM or SIGINT finishes the current batch, commits, finalizes archive files and
exits.

Each worker stages archive chunks in ``USAGELOG_STATE_DIR/archive-staging/<worker id>``, locked
while it runs; at start it finalizes the chunks of any worker that died (its lock is free), see
:func:`~usagelog.ingest.archive.open_archive`. Archive files due for publishing are written
before the batch's offsets are committed. While the archive's object store does not answer
(``s3://`` down or unreachable) the worker pauses: it consumes nothing and commits nothing,
staying in its group, and tries again after 1, 2, 4... up to :data:`ARCHIVE_RETRY_MAX_SECONDS`
seconds until the store is back; then it publishes, commits and catches up. A store that refuses
the credentials stops the worker with a message naming the settings. Dead letters also go to
``USAGELOG_KAFKA_DEAD_LETTER_TOPIC`` when it is set.

The worker keeps the store open across the batches of a slice of
``USAGELOG_WORKER_STORE_SLICE_SECONDS`` (default 5; 0 opens it for each batch) and closes it
when the slice is over, when a consume finds no messages, or after the current batch when another
process waits for the directory (it says so with a ``.lock.wanted`` file: a CLI query or a dashboard
then waits one batch, not a slice); another worker waiting (``.lock.wanted-by-worker``) gets it at
the end of the slice. Fewer sessions also mean less of the memory chDB keeps per session.

While another process holds the chDB directory, a worker does not wait idle: it decodes and
verifies its batches in a chDB engine of its own (in ``USAGELOG_STATE_DIR/stage-ahead``; one engine
a process, so only while it does not hold the store) into files of staged rows, up to
``USAGELOG_WORKER_STAGE_AHEAD_BATCHES`` (default 16; 0: wait instead), and in its turn stores
them, oldest first and before anything newer, with the insert alone. Nothing staged ahead is
committed before it is stored: a worker that dies leaves those messages to be read again. A
worker holding the directory at the end of its slice, when another worker waited during it,
stages ahead itself until the other took the directory (or :data:`HANDOVER_SECONDS` passed).

After each batch is stored and committed, the engine's and pyarrow's allocators give back their
free pages; past ``USAGELOG_WORKER_MAX_MEMORY_MB`` of its own memory still (default 448, 0: no
bound, and nothing given back), a merge the engine runs in the background aside, the worker leaves
its group, finalizes its archive files and executes itself again in place (same PID, arguments and
worker ID), see :mod:`~usagelog.ingest.recycle`.

With ``--max-idle`` the worker exits once that long passed without messages; if it never got a
partition because no broker answered, it fails with :class:`~usagelog.ingest.errors.KafkaError`
after at most 10 seconds more (without ``--max-idle`` it keeps trying, as a service should).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .archive import StagingArea, open_archive
from .engine_decode import FILE_PATTERN
from .errors import ArchiveError, ArchiveUnavailable, KafkaError, check_reachable, kafka_errors
from .health import WorkerHealth, configure_metrics
from .pipeline import Item, Pipeline, Result, Staged
from .recycle import MB, accept_stop_signals, give_back_arrow_memory, memory_bytes, reexecute
from .settings import WorkerSettings, chdb_path
from .store import WANTED_BY_WORKER, Store, connect, held_by_another, wanted_since

_logger = logging.getLogger("usagelog.worker")

# How long `--max-idle` waits for a broker to answer once the idle time passed without partitions.
PROBE_SECONDS = 10.0
DEFAULT_MESSAGE_BYTES = 1_000_000  # a broker's message.max.bytes unless it is set otherwise
ARCHIVE_RETRY_MAX_SECONDS = 15.0  # the longest wait between two tries of an archive that is down
# At the end of a slice another worker waited through, how long this one leaves the store to it (it
# stages ahead meanwhile) unless the other took it sooner: longer than the other takes to stage a batch.
HANDOVER_SECONDS = 1.0

AHEAD_POLL_SECONDS = 0.05  # with batches staged ahead and nothing to read, how often to look for the store

Offsets = dict[tuple[str, int], int]  # next offset to read, per (topic, partition)


def _offsets(batch: Sequence[Any]) -> Offsets:
    after: Offsets = {}
    for message in batch:
        key = (message.topic(), message.partition())
        after[key] = max(after.get(key, 0), message.offset() + 1)
    return after


def _items(batch: Sequence[Any]) -> list[Item]:
    return [Item("kafka", f"{m.topic()}/{m.partition()}@{m.offset()}", m.value() or b"") for m in batch]


def _stage_directory(state_dir: str, worker_id: str) -> StagingArea:
    """A new folder for staging ahead, ``<state_dir>/stage-ahead/<worker id>-<random>.d`` (on disk,
    where the archive stages: a temporary directory may be memory), held while this process runs,
    and the folders of processes gone removed (their batches were not committed: they are read
    again). The engine's file() reads ``*?{}`` in a path as a pattern: a state directory holding
    one stages in the system's temporary directory instead."""
    root = Path(state_dir, "stage-ahead").absolute()
    if FILE_PATTERN.search(str(root)):
        root = Path(tempfile.gettempdir(), "usagelog-stage-ahead")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)[:64] or "worker"
    own = f"{name}-{os.urandom(4).hex()}.d"  # a new name: nobody else holds it
    area = StagingArea(root, own, taken="is staging ahead")
    for gone in StagingArea.orphans(root, own):
        _remove_folder(gone)
    area.directory.mkdir()
    return area


def _remove_folder(directory: Path) -> None:
    """A staging-ahead folder and its lock file, ``<directory>.lock``, gone."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.with_name(f"{directory.name}.lock").unlink(missing_ok=True)


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.health = WorkerHealth(settings.worker_id, settings.health_interval)
        self.archive = open_archive(settings.archive)
        try:
            with kafka_errors(settings.brokers):  # a bad USAGELOG_KAFKA_CONFIG shows here
                self.producer = Producer(settings.producer_config()) if settings.dead_letter_topic else None
                self.consumer = Consumer(settings.consumer_config())
        except BaseException:
            if self.archive is not None:
                self.archive.close()
            raise
        self.pipeline = Pipeline(
            archive=self.archive,
            health=self.health,
            dead_letter_sink=self._publish_dead_letters if self.producer is not None else None,
        )
        self._pending: list[Any] = []
        self._batch_started = 0.0
        self._stop = False
        self._assigned: set[tuple[str, int]] = set()
        self._last_activity = time.monotonic()
        self._paused = False  # waiting for the archive's store: no flush from a rebalance
        self._archive_down = False  # the last try to publish failed: do not try again at close
        self._session: ExitStack | None = None  # the open store, while a slice lasts
        self._pending_bytes = 0  # payload bytes of the pending batch (USAGELOG_BATCH_MAX_BYTES)
        # The size consume() plans for, a message (a broker's default limit before the first): the
        # largest of the last consume, or half the previous figure if that was larger.
        self._largest_message = DEFAULT_MESSAGE_BYTES
        self._opened_at = 0.0  # time.time() when the store was opened
        self._store: Store | None = None
        self._opened = 0.0
        self.restart = False  # stopped to execute afresh: memory passed the bound
        self._stored = 0  # batches stored and committed by this program
        # The group's committed offset (next to read) of each assigned partition, as far as known:
        # this worker's own commits, else asked of the broker once. Lag is measured from it.
        self._committed: dict[tuple[str, int], int] = {}
        # Batches staged ahead while another worker held the store, oldest first: their offsets,
        # when the batch started, the staged batch. Stored (and committed) before anything newer.
        self._ahead: list[tuple[Offsets, float, Staged]] = []
        self._stager: tuple[ExitStack, Store] | None = None  # the engine batches are staged ahead in
        self._stage_area: StagingArea | None = None  # its chDB directory and the staged batches' files
        self._yield_until = 0.0  # time.monotonic() until which the store is left to another worker

    # -- rebalance callbacks --------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._last_activity = time.monotonic()
        _logger.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._paused:  # uncommitted: the new owner reads them again
            self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in revoked]
        elif (self._pending and any((m.topic(), m.partition()) in revoked for m in self._pending)) or any(
            key in revoked for offsets, _, _ in self._ahead for key in offsets
        ):
            self._flush(wait_for_archive=False, ahead=False)
        self._assigned -= revoked
        for key in revoked:
            self._committed.pop(key, None)
        _logger.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in lost]
        self._assigned -= lost
        for key in lost:
            self._committed.pop(key, None)
        _logger.warning(
            "lost %s; their uncommitted messages go to the new owner", sorted(p.partition for p in partitions)
        )

    # -- the loop -------------------------------------------------------------------------------
    def _flush(self, *, wait_for_archive: bool = True, ahead: bool = True) -> Result | None:
        """Store ``_pending`` (after the batches staged ahead), publish the archive files that are
        due, then commit, batch by batch. In a rebalance callback (``wait_for_archive`` false) a
        store that is down is not waited for: the batch is staged on local disk, and the next
        rotation publishes it. With ``ahead``, while another worker holds the store, the batch is
        staged ahead instead (:meth:`_stage_ahead`) and stored in this worker's next turn."""
        if not self._pending and not self._ahead:
            return None
        batch, self._pending = self._pending, []
        started = self._batch_started
        # The messages hold a copy of the payloads the items hold: let them go before the engine
        # reads the batch.
        offsets, items = _offsets(batch), _items(batch)
        del batch
        if items and ahead and self._stages_ahead():
            self._stage_ahead(offsets, items, started)
            return None
        jobs: list[tuple[Offsets, float, list[Item], Staged | None]] = [
            (offsets, at, staged.items, staged) for offsets, at, staged in self._ahead
        ]
        self._ahead = []
        if items:
            jobs.append((offsets, started, items, None))
        del items
        result: Result | None = None
        for n, (offsets, at, items, staged) in enumerate(jobs):
            try:
                result = self._process_with_retries(items, staged)
                if not self._rotate_archive(wait=wait_for_archive):
                    return result  # stopped while the archive was down: these batches are read again
            except BaseException:
                for _, _, _, left in jobs[n:]:
                    if left is not None:
                        left.discard()
                raise
            finally:
                if staged is not None:
                    staged.discard()
            self._commit(offsets)
            self.health.batch_committed(time.monotonic() - at)
            # Idle time (--max-idle) counts from here: waiting for the store is not a topic gone quiet.
            self._last_activity = time.monotonic()
            self._stored += 1
        self._update_lag()
        slice_over = time.monotonic() - self._opened >= self.settings.store_slice_seconds
        url, opened_at = self.settings.clickhouse_url, self._opened_at
        if slice_over or wanted_since(url, opened_at):
            self._close_store()
            if slice_over and wanted_since(url, opened_at, WANTED_BY_WORKER):
                # Another worker waited during the slice: its turn. Opening again at once, this one
                # took the directory back before the other's next try, slice after slice; it
                # stages ahead until the other took the store, or for HANDOVER_SECONDS.
                self._yield_until = time.monotonic() + HANDOVER_SECONDS
        return result

    def _stages_ahead(self) -> bool:
        """Whether to stage the batch ahead: the store is another worker's (held, or left to it
        at the end of this one's slice), this worker stages in the engine (chDB) and has fewer
        than ``USAGELOG_WORKER_STAGE_AHEAD_BATCHES`` batches waiting."""
        s = self.settings
        if (
            self._store is not None
            or self._stop
            or len(self._ahead) >= s.stage_ahead_batches
            or self.pipeline.decoder != "engine"
            or chdb_path(s.clickhouse_url) is None
        ):
            return False
        # Held by another, or left to another worker: until it takes the store (then held) or the
        # time is up.
        return held_by_another(s.clickhouse_url, WANTED_BY_WORKER) or time.monotonic() < self._yield_until

    def _stage_ahead(self, offsets: Offsets, items: list[Item], started: float) -> None:
        """Decode and verify the batch (``items``) in an engine of the worker's own, into a file:
        what the store's engine does with it in this worker's turn is the insert alone. Two workers on
        one chDB directory take turns; meanwhile each stages ahead (nothing is committed)."""
        if not self._ahead:
            _logger.info(
                "the store is in use by another process: staging up to %d batches ahead until it is free",
                self.settings.stage_ahead_batches,
            )
        stager = self._open_stager()
        assert self._stage_area is not None
        staged = self.pipeline.stage_ahead(items, stager, str(self._stage_area.directory))
        self._ahead.append((offsets, started, staged))

    def _open_stager(self) -> Store:
        if self._stager is None:
            s = self.settings
            if self._stage_area is None:
                self._stage_area = _stage_directory(s.archive.state_dir, s.worker_id)
            session = ExitStack()
            store = session.enter_context(
                connect(
                    f"chdb://{self._stage_area.directory}/engine",
                    database=s.database,
                    wait=s.wait_seconds,
                    migrate_schema=False,
                    announce="",
                )
            )
            try:
                store.client.command(f"CREATE DATABASE IF NOT EXISTS {s.database}")
            except BaseException:
                session.close()
                raise
            self._stager = (session, store)
        return self._stager[1]

    def _close_stager(self) -> None:
        """Let go of the staging engine: one engine a process (chDB), and the store's comes next."""
        if self._stager is not None and self.settings.max_memory_mb:
            self._give_back_free_pages()  # as when the store closes: the last chance to
        stager, self._stager = self._stager, None
        if stager is not None:
            try:
                stager[0].close()
            except Exception:
                _logger.warning("closing the staging engine failed", exc_info=True)

    def _open_store(self) -> Store:
        if self._store is None:
            self._close_stager()
            s = self.settings
            session = ExitStack()
            self._store = session.enter_context(
                connect(s.clickhouse_url, database=s.database, wait=s.wait_seconds, announce=WANTED_BY_WORKER)
            )
            self._session, self._opened, self._opened_at = session, time.monotonic(), time.time()
        return self._store

    def _close_store(self, *, everything: bool = False) -> None:
        """Give the store (a chDB directory) back for others to use; first recompute the rollups of
        the minutes that have ended, or of every noted minute with ``everything`` (nothing left to
        read, or stopping)."""
        if self._store is not None:
            try:
                self.pipeline.refresh_rollups(self._store, force=True, everything=everything)
            except Exception:  # the minutes stay noted: the next session recomputes them
                _logger.warning("recomputing the rollups failed", exc_info=True)
            if self.settings.max_memory_mb:
                # The last chance to: once closed, the engine's free pages stay with the process
                # until the next session, and the bound is checked in between.
                self._give_back_free_pages()
        session, self._session, self._store = self._session, None, None
        if session is not None:
            try:
                session.close()
            except Exception:  # the batch is stored and committed already; the next one reopens
                _logger.warning("closing the store failed", exc_info=True)

    def _give_back_free_pages(self) -> None:
        """The free pages pyarrow's allocator and, while the store is open, the engine's keep."""
        give_back_arrow_memory()
        engine = self._store if self._store is not None else self._stager[1] if self._stager else None
        if engine is not None:
            try:
                engine.give_back_memory()
            except Exception:
                _logger.warning("returning the engine's free memory failed", exc_info=True)

    def _over_memory(self) -> bool:
        """Whether the worker's own memory passed ``USAGELOG_WORKER_MAX_MEMORY_MB``: log it if so."""
        bound = self.settings.max_memory_mb
        if not bound:
            return False
        # The free pages the allocators kept go back after every batch (~10 ms): what is left is
        # what the worker holds, and the next batch starts from there.
        self._give_back_free_pages()
        used = memory_bytes()
        if used is not None and used > bound * MB and self._store is not None:
            # A merge the engine runs in the background holds its memory only while it runs: not
            # the growth the bound is there for.
            try:
                used -= self._store.merging_bytes()
            except Exception:
                _logger.warning("reading the engine's merges failed", exc_info=True)
        if used is None or used <= bound * MB:
            return False
        _logger.warning(
            "worker %s uses %.0f MB, past USAGELOG_WORKER_MAX_MEMORY_MB=%d: "
            "batch stored, restarting in place%s",
            self.settings.worker_id,
            used / MB,
            bound,
            # A bound below what a fresh worker needs restarts it after every batch: say so.
            " (already after its first batch: the bound is too low for this worker)"
            if self._stored == 1
            else "",
        )
        return True

    def _rotate_archive(self, *, wait: bool) -> bool:
        """Publish due archive files; while the store is down, pause consuming and try again.
        False if the worker was stopped before the store came back."""
        if self.archive is None:
            return True
        delay, started, waited = 1.0, time.monotonic(), False
        try:
            while True:
                try:
                    if self.settings.max_memory_mb and self.archive.due():
                        # Finalizing holds a partition's rows several times over: not on top of
                        # the free pages the batch just left with the engine and pyarrow.
                        self._give_back_free_pages()
                    self.archive.maybe_rotate()
                    self._archive_down = False
                    break
                except ArchiveUnavailable as exc:
                    self._archive_down = True
                    if not wait:
                        _logger.warning("%s; trying again at the next batch", exc)
                        return True
                    if not self._paused:
                        _logger.warning(
                            "%s; consuming paused, nothing committed, until the archive answers", exc
                        )
                        self._paused = waited = True
                    else:
                        _logger.warning("archive still unavailable after %.0fs", time.monotonic() - started)
                if not self._idle(delay):
                    return False
                delay = min(delay * 2, ARCHIVE_RETRY_MAX_SECONDS)
        finally:
            if self._paused:
                self._paused = False
                with kafka_errors(self.settings.brokers):
                    self.consumer.resume(self.consumer.assignment())
        if waited:
            _logger.info("archive available again after %.0fs; consuming", time.monotonic() - started)
        return True

    def _idle(self, seconds: float) -> bool:
        """Stay in the group for ``seconds`` without taking new messages (the partitions are
        paused; ones assigned meanwhile are paused too, and what they delivered first is kept
        for later). False if the worker was asked to stop."""
        self._close_store()  # nothing is stored meanwhile: others may have the directory
        deadline = time.monotonic() + seconds
        while not self._stop and time.monotonic() < deadline:
            with kafka_errors(self.settings.brokers):
                self.consumer.pause(self.consumer.assignment())
            for message in self.consumer.consume(
                num_messages=100, timeout=min(0.5, max(0.0, deadline - time.monotonic()))
            ):
                error = message.error()
                if error is None:
                    if not self._pending:
                        self._batch_started = time.monotonic()
                    self._pending.append(message)
                elif error.fatal():
                    raise KafkaError(f"Kafka consumer failed: {error}")
            self._report()
        return not self._stop

    def _commit(self, after: Offsets) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(after.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            for key, offset in after.items():
                if key in self._assigned:
                    self._committed[key] = offset
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and hasattr(error, "fatal") and error.fatal():
                raise KafkaError(f"Kafka at {self.settings.brokers}: committing failed: {exc}") from exc
            # A rebalance moved the partitions while the batch was stored: the new owner reads
            # the batch again and storage skips what is already there. Nothing is lost.
            _logger.warning("offsets not committed (%s); the batch will be read again by its new owner", exc)

    def _process_with_retries(self, items: list[Item], staged: Staged | None, attempts: int = 5) -> Result:
        """Storage hiccups (a busy chDB directory, a server restart) are retried with backoff;
        if they persist the worker stops without committing, and the batch is read again."""
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                return self.pipeline.process(items, self._open_store(), staged)
            except Exception:
                self._close_store()  # opened afresh for the next try
                if attempt == attempts:
                    raise
                _logger.exception(
                    "storing a batch failed (attempt %d of %d); retrying in %.0fs", attempt, attempts, delay
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _publish_dead_letters(self, letters: Sequence[dict[str, Any]]) -> None:
        assert self.producer is not None
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

    def _update_lag(self) -> None:
        """Messages on the assigned partitions not yet stored: per partition, the end offset (high
        watermark) minus the group's committed offset — or minus the partition's beginning when
        nothing is committed (``auto.offset.reset=earliest``) — summed. Fetched messages waiting
        in a batch count: they are not stored yet.

        The end offsets are the consumer's, from its last fetch response: asking the broker
        waits behind the consumer's own fetch (up to ``fetch.wait.max.ms``, 0.5 s, per
        partition), which would slow every batch. Only a partition not fetched yet is asked."""
        from confluent_kafka import TopicPartition

        lag = 0
        try:
            unknown = [TopicPartition(t, p) for t, p in sorted(self._assigned - self._committed.keys())]
            if unknown:
                for tp in self.consumer.committed(unknown, timeout=5):
                    if tp.offset < 0:  # nothing committed: the worker starts at the beginning
                        tp.offset, _ = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                    self._committed[(tp.topic, tp.partition)] = tp.offset
            for topic, partition in self._assigned:
                tp = TopicPartition(topic, partition)
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:  # not fetched yet
                    _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                lag += max(0, high - self._committed[(topic, partition)])
        except Exception:
            _logger.debug("lag not available", exc_info=True)
            return
        self.health.lag = lag

    def _report(self) -> None:
        """The health line, when due, with the lag measured now."""
        if self.health.due():
            self._update_lag()
            self.health.maybe_report(force=True)

    def stop(self, *_: Any) -> None:
        self._stop = True

    def _to_consume(self) -> int:
        """How many messages one consume() may return: what the batch may still hold by count and,
        at the largest message size seen, by bytes. consume() moves messages out of librdkafka's
        bounded queue into this process until it has that many (or its timeout passes): asked for
        a batch's 1000 messages with a backlog, it returned whatever the backlog held (a test:
        2.8 MB of 470 kB messages for a batch of 0.95 MB)."""
        s = self.settings
        by_count = s.batch_max_messages - len(self._pending)
        by_bytes = (s.batch_max_bytes - self._pending_bytes) // max(1, self._largest_message) + 1
        return max(1, min(by_count, by_bytes))

    @property
    def stopped(self) -> bool:
        return self._stop

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
                if self._ahead:  # batches wait for the store: look for it often
                    timeout = min(timeout, AHEAD_POLL_SECONDS)
                messages = self.consumer.consume(num_messages=self._to_consume(), timeout=timeout)
                if messages:
                    largest = max(len(m.value() or b"") for m in messages)
                    self._largest_message = max(1, largest, self._largest_message // 2)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaError(f"Kafka consumer failed: {error}")
                        _logger.warning("Kafka: %s", error)
                        continue
                    if not self._pending:
                        self._batch_started = time.monotonic()
                        self._pending_bytes = 0
                    self._pending.append(message)
                    self._pending_bytes += len(message.value() or b"")
                    self._last_activity = time.monotonic()
                    if self._pending_bytes >= s.batch_max_bytes:
                        self._flush()  # one consume may return more than a batch holds
                        if self._over_memory():
                            # The rest of this consume is not committed: read again after the restart.
                            self.restart = not self._stop
                            break
                if self.restart:
                    break
                due = self._pending and (
                    len(self._pending) >= s.batch_max_messages
                    or self._pending_bytes >= s.batch_max_bytes
                    or time.monotonic() - self._batch_started >= s.batch_max_seconds
                )
                if due or (self._ahead and not self._stages_ahead()):
                    # Due, or batches staged ahead wait and the store is free: they go now, oldest
                    # first, and with them what is pending (a CLI query held the store for a
                    # moment: the batch it delayed is stored when it is done, not a batch later).
                    self._flush(ahead=bool(due))
                    if self._over_memory():
                        self.restart = not self._stop
                        break
                elif not self._pending and not messages:
                    self._close_store(everything=True)  # nothing came: others may have the directory
                    self._update_lag()
                self._report()
                idle = time.monotonic() - self._last_activity
                if max_idle_seconds and not self._pending and not self._ahead and idle > max_idle_seconds:
                    if self._assigned:
                        break
                    # No partitions all this time: a broker that never answered is an error (the
                    # idle limit holds); one that answers has the partitions with other workers,
                    # or no topic yet, and the worker waits on as it would for messages.
                    check_reachable(self.consumer, s.brokers, min(max_idle_seconds, PROBE_SECONDS))
                    self._last_activity = time.monotonic()
            self._flush(ahead=False)
        finally:
            self.close()

    def close(self) -> None:
        self._close_store(everything=True)
        self._close_stager()
        for _, _, staged in self._ahead:  # not stored, not committed: read again
            staged.discard()
        self._ahead = []
        if self._stage_area is not None:
            _remove_folder(self._stage_area.directory)
            self._stage_area.release()
            self._stage_area = None
        try:
            self.consumer.close()
        except Exception:
            _logger.debug("consumer close failed", exc_info=True)
        if self.archive is not None and self._archive_down:
            # Stopped while the store is down: what is staged stays on disk for the next start.
            _logger.warning("archive unavailable: %d partition(s) stay staged", self.archive.pending)
            self.archive.release()
        elif self.archive is not None:
            try:
                self.archive.close()
            except ArchiveError as exc:  # staged on disk: the next start publishes it
                _logger.warning("%s", exc)
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.flush(10)
        del producer  # the client's threads end with it: no log lines after the worker's last word
        self.health.maybe_report(force=True)


def run_worker(settings: WorkerSettings, *, max_idle_seconds: float = 0.0) -> int:
    configure_metrics()
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    accept_stop_signals()  # blocked across a restart in place: handled now
    _logger.info(
        "worker %s consuming %s from %s (%s)",
        settings.worker_id,
        settings.topic,
        settings.brokers,
        settings.security.describe(),
    )
    worker.run(max_idle_seconds=max_idle_seconds)
    if worker.restart:
        reexecute(lambda: worker.stopped)  # a stop asked for while closing wins
    return 0
