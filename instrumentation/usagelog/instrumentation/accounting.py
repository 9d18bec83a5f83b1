"""What became of each allocated sequence number, kept in the instance's counters.

Every sequence number a request takes ends one of three ways in this process: written (handed
to the exporter, which accepted it), dropped (memory was at its bound and nothing could be
written) or failed (the final flush at exit could not write it). :class:`LossAccount` keeps the
totals in the instance's :class:`~usagelog.instrumentation.counters.Counters`, plus the lowest
sequence number not accounted for yet, so that when the process is killed the counter file says
what it never handed over.

Drops are also counted on the OpenTelemetry metric ``usagelog.events.dropped`` (a no-op unless
the app configured a ``MeterProvider``) and logged as one warning per :data:`WARN_SECONDS` with
the counts, never one line per event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from opentelemetry import metrics

from . import counters as c
from . import event as ev
from .identity import AttrValue
from .losses import LossReport

_logger = logging.getLogger("usagelog")

WARN_SECONDS = 30.0
MAX_PENDING = 200_000  # sequence numbers accounted above the low mark kept individually


class Throttled:
    """Logs a warning at most once per ``interval`` per key, saying how many it held back."""

    def __init__(self, interval: float = WARN_SECONDS) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, key: str, message: str, *args: object) -> bool:
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        self._next[key] = now + self.interval
        if held:
            message += " (%d similar warnings in the last %.0fs not shown)"
            args = (*args, held, self.interval)
        _logger.warning(message, *args)
        return True


class LossAccount:
    """The fate of this instance's sequence numbers; thread-safe (one lock, off the hot path:
    the background thread takes it once per batch, request threads only when they drop)."""

    def __init__(
        self,
        counters: c.Counters | None = None,
        resource: Mapping[str, AttrValue] | None = None,
        *,
        meter: metrics.Meter | None = None,
    ) -> None:
        self.counters = counters if counters is not None else c.Counters.in_memory()
        self.resource = dict(resource or {})
        self.instance_id = str(self.resource.get(ev.SERVICE_INSTANCE_ID, ""))
        self._lock = threading.Lock()
        self._closed = False
        self._low = 1
        self._above: set[int] = set()
        self.throttle = Throttled()
        self._dropped_since_warning = 0
        meter = meter if meter is not None else metrics.get_meter("usagelog")
        self._dropped_metric = meter.create_counter(
            "usagelog.events.dropped",
            unit="{event}",
            description="Usage events dropped in the API process (memory bound reached, nothing writable)",
        )

    @property
    def low(self) -> int:
        """Every sequence number below this one is written, dropped or failed."""
        return self._low

    @property
    def cells(self) -> memoryview:
        return self.counters.cells

    def attach(self, counters: c.Counters) -> None:
        """Move the counts to ``counters`` (a file that could not be created earlier)."""
        with self._lock:
            old = self.counters.cells
            for slot in range(1, c.SLOTS):
                if slot not in (c.SLOT_PID, c.SLOT_CREATED_MS):
                    counters.cells[slot] = old[slot]
            self.counters = counters

    # -- outcomes ----------------------------------------------------------------------------
    def _settle(self, seqs: Iterable[int]) -> None:
        above = self._above
        above.update(seqs)
        low = self._low
        while low in above:
            above.discard(low)
            low += 1
        if len(above) > MAX_PENDING:
            # A request that never finishes keeps the mark down; do not let that grow memory.
            low = min(above)
            while low in above:
                above.discard(low)
                low += 1
        self._low = low
        self.cells[c.SLOT_LOW] = low

    def written(self, seqs: list[int]) -> None:
        with self._lock:
            self.cells[c.SLOT_WRITTEN] += len(seqs)
            self._settle(seqs)

    def dropped(self, seq: int, reason: str) -> None:
        with self._lock:
            cells = self.cells
            cells[c.SLOT_DROPPED] += 1
            first = cells[c.SLOT_DROP_FIRST]
            if not first or seq < first:
                cells[c.SLOT_DROP_FIRST] = seq
            if seq > cells[c.SLOT_DROP_LAST]:
                cells[c.SLOT_DROP_LAST] = seq
            self._settle((seq,))
            self._dropped_since_warning += 1
            since = self._dropped_since_warning
        try:
            self._dropped_metric.add(1, {"usagelog.loss.reason": ev.LOSS_DROPPED})
        except Exception:
            pass
        if self.throttle.warn(
            "dropped",
            "usagelog: memory is at its bound and nothing can be written (%s): dropped %d events "
            "(%d in all, unreported seq %d..%d); a loss report follows once writing works again",
            reason,
            since,
            self.cells[c.SLOT_DROPPED],
            self.cells[c.SLOT_DROP_FIRST],
            self.cells[c.SLOT_DROP_LAST],
        ):
            with self._lock:
                self._dropped_since_warning -= since

    def failed(self, seqs: list[int], detail: str) -> None:
        """Events the final flush could not write: counted in the file, for audit."""
        if not seqs:
            return
        with self._lock:
            cells = self.cells
            cells[c.SLOT_FAILED] += len(seqs)
            low, high = min(seqs), max(seqs)
            if not cells[c.SLOT_FAILED_FIRST] or low < cells[c.SLOT_FAILED_FIRST]:
                cells[c.SLOT_FAILED_FIRST] = low
            cells[c.SLOT_FAILED_LAST] = max(cells[c.SLOT_FAILED_LAST], high)
            self._settle(seqs)
            self.counters.set_info({"resource": self.resource, "detail": detail})

    # -- the report of drops, from a live process -------------------------------------------
    def take_drop_report(self) -> LossReport | None:
        """The drops not reported yet, as a report; call :meth:`drop_report_done` once it was
        written, or :meth:`drop_report_failed`."""
        with self._lock:
            cells = self.cells
            dropped, reported = cells[c.SLOT_DROPPED], cells[c.SLOT_DROPPED_REPORTED]
            if dropped <= reported:
                return None
            report = LossReport(
                ev.LOSS_DROPPED,
                dropped - reported,
                cells[c.SLOT_DROP_FIRST],
                cells[c.SLOT_DROP_LAST],
                cells[c.SLOT_ALLOCATED],
                "dropped at the in-memory bound while nothing could be written",
            ).with_id(self.instance_id, dropped)
            # Later drops start a new range; if the process dies before this report is written,
            # the orphan report says how many with the range unknown (0).
            cells[c.SLOT_DROP_FIRST] = cells[c.SLOT_DROP_LAST] = 0
            return report

    def drop_report_done(self, report: LossReport) -> None:
        with self._lock:
            cumulative = int(report.report_id.rsplit("/", 1)[-1])
            self.cells[c.SLOT_DROPPED_REPORTED] = max(self.cells[c.SLOT_DROPPED_REPORTED], cumulative)
        _logger.warning(
            "usagelog: reported %d dropped events (seq %d..%d) as lost",
            report.count,
            report.first_seq,
            report.last_seq,
        )

    def drop_report_failed(self, report: LossReport) -> None:
        with self._lock:
            cells = self.cells
            first = cells[c.SLOT_DROP_FIRST]
            if report.first_seq and (not first or report.first_seq < first):
                cells[c.SLOT_DROP_FIRST] = report.first_seq
            cells[c.SLOT_DROP_LAST] = max(cells[c.SLOT_DROP_LAST], report.last_seq)

    # -- the end -----------------------------------------------------------------------------
    def complete(self) -> bool:
        """Whether every allocated sequence number was written or reported dropped."""
        cells = self.cells
        return (
            cells[c.SLOT_FAILED] == 0
            and cells[c.SLOT_DROPPED] == cells[c.SLOT_DROPPED_REPORTED]
            and cells[c.SLOT_WRITTEN] + cells[c.SLOT_DROPPED] >= cells[c.SLOT_ALLOCATED]
        )

    def close(self) -> None:
        """At exit: delete the counter file if nothing is left to report, else keep it for
        :func:`~usagelog.instrumentation.losses.reap_orphans` (and log where it is)."""
        if self._closed:
            return
        self._closed = True
        complete = self.complete()
        if not complete and self.counters.durable:
            cells = self.cells
            _logger.warning(
                "usagelog: exiting with events not written: allocated %d, written %d, dropped %d "
                "(%d reported), failed %d; counts kept in %s for audit",
                cells[c.SLOT_ALLOCATED],
                cells[c.SLOT_WRITTEN],
                cells[c.SLOT_DROPPED],
                cells[c.SLOT_DROPPED_REPORTED],
                cells[c.SLOT_FAILED],
                self.counters.path,
            )
        self.counters.close(remove=complete)
