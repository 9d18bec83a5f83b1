"""The in-memory queue of captured exchanges and the background thread that drains it.

Request threads only append a captured exchange to a deque (a few hundred nanoseconds). A
daemon thread wakes every ``USAGELOG_FLUSH_INTERVAL_MS`` (or sooner when a batch is ready),
has the batch encoded and hands it to the exporter. If the thread falls behind by more than
``USAGELOG_MAX_QUEUE`` events, the request thread that notices writes a batch of the backlog
itself: slower for that one request, but memory stays bounded.

After ``fork`` the child starts with an empty queue and no thread; the hook is registered
through a weak reference, so a recorder that was discarded does not run in forked children.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from .exchange import Exchange
from .exporters import EventExporter

_logger = logging.getLogger("usagelog")

BATCH_WAKE = 512  # wake the thread early once this many events wait
BATCH_MAX = 2048  # events per encoded batch

Encode = Callable[[Sequence[Exchange], Callable[[Exchange], None]], tuple[bytes, int]]


class Recorder:
    def __init__(
        self, encode: Encode, exporter: EventExporter, *, flush_interval_ms: int, max_queue: int
    ) -> None:
        self.encode = encode
        self.exporter = exporter
        self.flush_interval = flush_interval_ms / 1000.0
        self.max_queue = max_queue
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
        self._unsent: deque[tuple[bytes, int]] = deque()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._recorded = itertools.count(1)
        self.recorded = 0

    # -- request path --------------------------------------------------------------------
    def record(self, exchange: Exchange) -> None:
        queue = self._queue
        queue.append(exchange)
        self.recorded = next(self._recorded)  # count.__next__ is atomic under the GIL
        if self._thread is None:  # first event in this process (a fork resets it)
            self._start_thread()
        n = len(queue)
        if n >= BATCH_WAKE:
            self._wake.set()
            if n > self.max_queue:
                try:
                    self._spill()
                except Exception:  # never into the user's request
                    _logger.exception("usagelog: could not write the event backlog")

    def _spill(self) -> None:
        """The background thread is behind (a slow collector, say): this request thread moves a
        batch from memory to the exporter's durable overflow (the spool) without waiting for it."""
        queue = self._queue
        batch: list[Exchange] = []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(queue.popleft())
            except IndexError:
                break
        if batch:
            payload, count = self.encode(batch, self._build_failed)
            if count:
                self.exporter.spill(payload, count)
                self.exported += count

    # -- background ----------------------------------------------------------------------
    def _start_thread(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="usagelog-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
                self.exporter.tick()
            except Exception:
                _logger.exception("usagelog: background flush failed; will retry")

    def _build_failed(self, exchange: Exchange) -> None:
        # Only a bug in usagelog gets here; retrying the same input would block every later
        # event, so count it, log it loudly and go on.
        self.build_errors += 1
        _logger.exception("usagelog: could not build a usage event (seq %s)", exchange.seq)

    def flush(self) -> int:
        """Encode and export everything queued so far; returns the number of events exported.

        A batch the exporter refuses stays in ``_unsent`` and is retried first next time,
        so an exporter failure delays events but never drops them.
        """
        with self._flush_lock:
            total = 0
            queue = self._queue
            while queue or self._unsent:
                if not self._unsent:
                    batch = [queue.popleft() for _ in range(min(len(queue), BATCH_MAX))]
                    payload, count = self.encode(batch, self._build_failed)
                    if not count:
                        continue
                    self._unsent.append((payload, count))
                payload, count = self._unsent[0]
                try:
                    self.exporter.export(payload, count)
                except Exception:
                    self.failed_batches += 1
                    raise
                self._unsent.popleft()
                self.exported += count
                total += count
            return total

    def shutdown(self) -> None:
        """Stop the thread, export what is queued, and shut the exporter down."""
        self._stopping = True
        self._wake.set()
        try:
            self.flush()
        except Exception:
            _logger.exception("usagelog: final flush failed")
        try:
            self.exporter.shutdown()
        except Exception:
            _logger.exception("usagelog: exporter shutdown failed")
