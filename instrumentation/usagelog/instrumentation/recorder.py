"""The per-process recorder: sequence numbers, the in-memory queue and the background thread.

Request threads only append a captured exchange to a deque (a few hundred nanoseconds).
A daemon thread wakes every ``USAGELOG_FLUSH_INTERVAL_MS`` (or sooner when a batch is
ready), builds and encodes the events and hands each batch to the exporter. If the thread
falls behind by more than ``USAGELOG_MAX_QUEUE`` events, the request thread that notices
writes the backlog itself: slower for that one request, but memory stays bounded and no
event is dropped.

At exit (``atexit``, or SIGTERM when the app has no handler of its own) requests in flight
get up to 3 s to finish, then the queue is
flushed and the current spool segment sealed. After ``fork`` the child starts over with a
new instance ID, sequence, queue, thread and spool segment.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import threading
import time
from collections import deque
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import event as ev
from .builder import EventBuilder
from .exporters import EventExporter
from .identity import resource_attributes
from .wire import export_logs_request, resource_prefix

if TYPE_CHECKING:
    from .capture import Exchange

_logger = logging.getLogger("usagelog")

BATCH_WAKE = 512  # wake the thread early once this many events wait
SHUTDOWN_WAIT_SECONDS = 3.0  # at exit, how long requests in flight may take to finish


class Recorder:
    def __init__(
        self,
        builder: EventBuilder,
        exporter: EventExporter,
        *,
        flush_interval_ms: int,
        max_queue: int,
        version: str,
    ) -> None:
        self.builder = builder
        self.exporter = exporter
        self.flush_interval = flush_interval_ms / 1000.0
        self.max_queue = max_queue
        self.version = version
        self._queue: deque[Exchange] = deque()
        self._unsent: deque[tuple[bytes, int]] = deque()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.exported = 0
        self.failed_batches = 0
        self.build_errors = 0
        self._reset_identity()
        os.register_at_fork(after_in_child=self._after_fork)

    # -- identity and sequence ---------------------------------------------------------
    def _reset_identity(self, fresh_instance: bool = False) -> None:
        resource = resource_attributes()
        if fresh_instance:
            import uuid

            resource[ev.SERVICE_INSTANCE_ID] = str(uuid.uuid4())
        self.builder.set_resource(resource)
        self._resource_bytes, self._scope_bytes = resource_prefix(
            sorted(resource.items()), ev.SCOPE_NAME, self.version
        )
        self._seq = itertools.count(1)
        self._recorded = itertools.count(1)
        self._last_seq = 0
        self.recorded = 0

    @property
    def instance_id(self) -> str:
        return str(self.builder.resource[ev.SERVICE_INSTANCE_ID])

    def next_seq(self) -> int:
        # itertools.count.__next__ is atomic under the GIL: no lock on the request path.
        seq = next(self._seq)
        self._last_seq = seq
        return seq

    def _after_fork(self) -> None:
        self._queue = deque()
        self._unsent = deque()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        try:
            self._reset_identity(fresh_instance=True)
            self.exporter.after_fork(self.instance_id)
        except Exception:
            _logger.exception("usagelog: could not reset after fork")

    # -- request path --------------------------------------------------------------------
    def record(self, exchange: Exchange) -> None:
        queue = self._queue
        queue.append(exchange)
        self.recorded = next(self._recorded)
        if self._thread is None:  # first event in this process (a fork resets it)
            self._start_thread()
        n = len(queue)
        if n >= BATCH_WAKE:
            self._wake.set()
            if n > self.max_queue:
                try:
                    self._spill()
                except Exception:  # never into the user's request; the events stay queued
                    _logger.exception("usagelog: could not write the event backlog")

    def _spill(self) -> None:
        """The background thread is behind (a slow collector, say): this request thread moves a
        batch from memory to the exporter's durable overflow (the spool) without waiting for it."""
        queue = self._queue
        batch: list[bytes] = []
        while len(batch) < 2048:
            try:
                exchange = queue.popleft()
            except IndexError:
                break
            batch.append(self.builder.encode(exchange))
        if batch:
            payload = export_logs_request(self._resource_bytes, self._scope_bytes, batch)
            self.exporter.spill(payload, len(batch))
            self.exported += len(batch)

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

    def flush(self) -> int:
        """Encode and export everything queued so far; returns the number of events exported.

        A batch the exporter refuses stays in ``_unsent`` and is retried first next time,
        so an exporter failure delays events but never drops them.
        """
        with self._flush_lock:
            total = 0
            queue = self._queue
            encode = self.builder.encode
            while queue or self._unsent:
                if not self._unsent:
                    batch: list[bytes] = []
                    while queue and len(batch) < 2048:
                        exchange = queue.popleft()
                        try:
                            batch.append(encode(exchange))
                        except Exception:
                            # Only a bug in usagelog gets here; retrying the same input would
                            # block every later event, so count it, log it loudly and go on.
                            self.build_errors += 1
                            _logger.exception(
                                "usagelog: could not build a usage event (seq %s)", exchange.seq
                            )
                    if not batch:
                        continue
                    payload = export_logs_request(self._resource_bytes, self._scope_bytes, batch)
                    self._unsent.append((payload, len(batch)))
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

    def wait_in_flight(self, timeout: float) -> None:
        """Give requests already started up to ``timeout`` seconds to finish and be queued."""
        deadline = time.monotonic() + timeout
        while self.recorded < self._last_seq and time.monotonic() < deadline:
            time.sleep(0.01)

    def shutdown(self, in_flight_timeout: float = 0.0) -> None:
        if in_flight_timeout > 0:
            self.wait_in_flight(in_flight_timeout)
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

    def install_exit_hooks(self) -> None:
        atexit.register(self.shutdown, SHUTDOWN_WAIT_SECONDS)
        _install_sigterm_flush(self)


def _install_sigterm_flush(recorder: Recorder) -> None:
    """On SIGTERM, flush before dying, but only if the app has not set its own handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def _on_sigterm(signum: int, frame: FrameType | None) -> Any:
            try:
                recorder.shutdown(SHUTDOWN_WAIT_SECONDS)
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        _logger.debug("usagelog: SIGTERM handler not installed", exc_info=True)
