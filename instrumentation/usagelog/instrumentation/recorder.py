"""The in-memory queue of captured exchanges and the background thread that drains it.

Request threads only append a captured exchange to a deque (a few hundred nanoseconds). A
daemon thread wakes every ``USAGELOG_FLUSH_INTERVAL_MS`` (or sooner when a batch is ready),
has the batch encoded and hands it to the exporter. If the thread falls behind by more than
``USAGELOG_MAX_QUEUE`` events, or the queue holds more than ``USAGELOG_MAX_QUEUE_BYTES``
(estimated: bodies, headers, strings), the request thread that notices writes a batch of the
backlog itself: slower for that one request, but memory stays bounded. The request path does
not size exchanges: the background thread samples their average size and turns the byte bound
into a number of events, so the check is one comparison.

Nothing leaves memory before it is written: a batch the exporter refuses goes back to the
queue (or stays first in line). Only when the queue is over its byte bound and nothing can be
written (the spool's disk is full or read-only) are the newest events dropped, each counted in
the instance's loss account (:mod:`usagelog.instrumentation.accounting`), and a loss report
(reason ``dropped``) goes through the exporter as soon as writing works again. Write failures
are logged once per 30 s, with counts.

After ``fork`` the child starts with an empty queue and no thread; the hook is registered
through a weak reference, so a recorder that was discarded does not run in forked children.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from .accounting import LossAccount
from .exchange import Exchange
from .exporters import EventExporter
from .journal import Journal
from .losses import encode_reports

_logger = logging.getLogger("usagelog")

BATCH_WAKE = 512  # wake the thread early once this many events wait
BATCH_MAX = 2048  # events per encoded batch
SAMPLE = 64  # the newest exchanges whose sizes are averaged on every wake
WRITE_RETRY_SECONDS = 1.0  # after a failed write, request threads wait this long before trying again
EXCHANGE_OVERHEAD = 1024  # bytes an exchange takes beyond its strings and bodies (objects, dicts)
UNSENT_SEQ_BYTES = 40  # an encoded batch keeps each event's sequence number (an int in a list)

Encode = Callable[[Sequence[Exchange], Callable[[Exchange], None]], tuple[bytes, int]]


def estimated_size(x: Exchange) -> int:
    """Roughly the memory an exchange holds: cheap, deterministic (fields no longer change once
    recorded), so what is added when queued is what is taken off when it leaves."""
    size = EXCHANGE_OVERHEAD + len(x.path) + len(x.query) + len(x.user_agent) + len(x.route)
    if x.user_headers:
        for value in x.user_headers.values():
            size += 64 + len(value)
    if x.request_body is not None:
        size += len(x.request_body)
    if x.response_body:
        for chunk in x.response_body:
            size += 64 + len(chunk)
    if x.request_headers:
        for key, value in x.request_headers:
            size += 96 + len(key) + len(value)
    return size


class Recorder:
    def __init__(
        self,
        encode: Encode,
        exporter: EventExporter,
        *,
        flush_interval_ms: int,
        max_queue: int,
        max_queue_bytes: int = 64 * 1024 * 1024,
        account: LossAccount | None = None,
        housekeeping: Callable[[], None] | None = None,
    ) -> None:
        self.encode = encode
        self.exporter = exporter
        self.flush_interval = flush_interval_ms / 1000.0
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.account = account if account is not None else LossAccount()
        self.housekeeping = housekeeping
        self.journal: Journal | None = None  # USAGELOG_JOURNAL: set by the runtime
        self.exported = 0
        self.failed_batches = 0
        self.build_errors = 0
        self._stopping = False
        self._reset()
        weak = weakref.WeakMethod(self._reset)

        def after_fork_in_child() -> None:
            reset = weak()
            if reset is not None:
                reset()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _reset(self) -> None:
        """A new, empty recorder (at start, and in a forked child: the parent's thread is gone)."""
        self._queue: deque[Exchange] = deque()
        # Encoded batches the exporter has not accepted yet: (payload, events, their seqs, bytes).
        self._unsent: deque[tuple[bytes, int, list[int], int]] = deque()
        self.unsent_bytes = 0
        self._average = float(EXCHANGE_OVERHEAD)  # bytes per queued exchange, sampled
        self._limit, self._wake_at = self._limits()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._recorded = itertools.count(1)
        self._write_retry_at = 0.0
        self.recorded = 0

    @property
    def held_bytes(self) -> int:
        """Estimated bytes held in memory: the queue at its sampled average size, and the
        encoded batches not accepted yet."""
        return int(len(self._queue) * self._average) + self.unsent_bytes

    def _limits(self) -> tuple[int, int]:
        """(events beyond which request threads write or drop, events that wake the thread)."""
        room = max(0, self.max_queue_bytes - self.unsent_bytes)  # encoded batches count too
        limit = max(1, min(self.max_queue, int(room / self._average)))
        return limit, min(BATCH_WAKE, limit)

    def _sample(self, exchanges: Sequence[Exchange]) -> None:
        """Update the average size from ``exchanges`` (the background thread, off the request path)."""
        if exchanges:
            self._average = max(1.0, sum(estimated_size(x) for x in exchanges) / len(exchanges))
            self._limit, self._wake_at = self._limits()

    # -- request path --------------------------------------------------------------------
    def record(self, exchange: Exchange) -> None:
        journal = self.journal
        if journal is not None:
            try:
                journal.write(exchange)
            except Exception as exc:  # never into the user's request; the event still goes on
                self.account.throttle.warn("journal", "usagelog: could not write the journal (%s)", exc)
        queue = self._queue
        queue.append(exchange)
        self.recorded = next(self._recorded)  # count.__next__ is atomic under the GIL
        if self._thread is None:  # first event in this process (a fork resets it)
            self._start_thread()
        n = len(queue)
        if n >= self._wake_at:
            self._wake.set()
            if n > self._limit:
                try:
                    self._relieve()
                except Exception:  # never into the user's request
                    _logger.debug("usagelog: could not relieve the event backlog", exc_info=True)

    def _relieve(self) -> None:
        """The background thread is behind (a slow collector, say) or memory is at its bound:
        write a batch of the backlog from this request thread, or, if nothing can be written
        and memory is over its bound, drop the newest events (counted)."""
        now = time.monotonic()
        if now >= self._write_retry_at:
            try:
                self._spill()
                return
            except Exception as exc:
                self._write_retry_at = now + WRITE_RETRY_SECONDS
                self._write_failed(exc)
        queue = self._queue
        while self.held_bytes > self.max_queue_bytes:
            try:
                victim = queue.pop()
            except IndexError:
                break
            self.account.dropped(victim.seq, self._last_error)

    _last_error = "no write attempted yet"

    def _write_failed(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        warned = self.account.throttle.warn(
            "write",
            "usagelog: could not write usage events (%s); holding %d (about %d KiB) in memory, retrying",
            self._last_error,
            len(self._queue) + sum(u[1] for u in tuple(self._unsent)),
            self.held_bytes // 1024,
        )
        if warned:
            _logger.debug("usagelog: the write failure's traceback", exc_info=exc)

    def _spill(self) -> None:
        """Move a batch from memory to the exporter's durable overflow (the spool) without
        waiting on anything remote. The batch leaves the queue only while it is being written:
        if the write fails it goes back, and the error propagates."""
        queue = self._queue
        batch: list[Exchange] = []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(queue.popleft())
            except IndexError:
                break
        if not batch:
            return
        try:
            payload, count = self.encode(batch, self._build_failed)
            if count:
                self.exporter.spill(payload, count)
        except BaseException:
            queue.extendleft(reversed(batch))
            raise
        self.exported += count
        self.account.written([x.seq for x in batch])

    # -- background ----------------------------------------------------------------------
    def _start_thread(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="usagelog-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                if self.housekeeping is not None:
                    self.housekeeping()
            except Exception:
                _logger.debug("usagelog: housekeeping failed", exc_info=True)
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                # The newest exchanges, as the byte bound applies to what is coming in (the
                # flush that follows goes by this estimate).
                self._sample(list(itertools.islice(reversed(self._queue), SAMPLE)))
            except Exception:
                _logger.debug("usagelog: could not sample exchange sizes", exc_info=True)
            try:
                self.flush()
                self.exporter.tick()
            except Exception as exc:
                self._write_failed(exc)

    def _build_failed(self, exchange: Exchange) -> None:
        # Only a bug in usagelog gets here; retrying the same input would block every later
        # event, so count it, log it loudly and go on.
        self.build_errors += 1
        _logger.exception("usagelog: could not build a usage event (seq %s)", exchange.seq)

    def flush(self) -> int:
        """Encode and export everything queued so far; returns the number of events exported.

        A batch the exporter refuses stays in ``_unsent`` and is retried first next time,
        so an exporter failure delays events but never drops them. Once something was
        written, drops not reported yet are reported through the exporter.
        """
        with self._flush_lock:
            total = 0
            queue = self._queue
            while queue or self._unsent:
                if not self._unsent:
                    batch = [queue.popleft() for _ in range(min(len(queue), BATCH_MAX))]
                    payload, count = self.encode(batch, self._build_failed)
                    seqs = [x.seq for x in batch]
                    # What a batch holds once encoded: its bytes and its sequence numbers.
                    nbytes = len(payload) + UNSENT_SEQ_BYTES * len(seqs)
                    self._unsent.append((payload, count, seqs, nbytes))
                    self.unsent_bytes += nbytes
                    self._limit, self._wake_at = self._limits()
                payload, count, seqs, nbytes = self._unsent[0]
                if count:
                    try:
                        self.exporter.export(payload, count)
                    except Exception:
                        self.failed_batches += 1
                        raise
                self._unsent.popleft()
                self.unsent_bytes -= nbytes
                self._limit, self._wake_at = self._limits()
                self.account.written(seqs)
                self.exported += count
                total += count
            self._report_drops()
            if self.journal is not None:
                self.journal.settle(self.account.low)
            return total

    def _report_drops(self) -> None:
        report = self.account.take_drop_report()
        if report is None:
            return
        try:
            self.exporter.export(encode_reports(self.account.resource, [report]), 0)
        except BaseException:
            self.account.drop_report_failed(report)
            raise
        self.account.drop_report_done(report)

    def shutdown(self) -> None:
        """Stop the thread, export what is queued, and shut the exporter down. Events the final
        flush cannot write are counted (reason ``write_failed``) in the loss account."""
        self._stopping = True
        self._wake.set()
        try:
            self.flush()
        except Exception as exc:
            self._final_flush_failed(exc)
        try:
            self.exporter.shutdown()
        except Exception:
            _logger.exception("usagelog: exporter shutdown failed")

    def _final_flush_failed(self, exc: BaseException) -> None:
        seqs = [seq for _, _, batch, _ in self._unsent for seq in batch]
        seqs += [x.seq for x in self._queue]
        self._unsent.clear()
        self._queue.clear()
        self.unsent_bytes = 0
        detail = f"final flush failed: {type(exc).__name__}: {exc}"
        self.account.failed(seqs, detail)
        where = self.account.counters.path or "memory only (no counters file)"
        _logger.error(
            "usagelog: %s; %d events (seq %s..%s) could not be written anywhere and are lost; "
            "counted in %s for audit",
            detail,
            len(seqs),
            min(seqs, default=0),
            max(seqs, default=0),
            where,
        )
