"""Where encoded usage events go: the spool (embedded mode) or memory (tests, benchmarks).

An exporter receives whole ``ExportLogsServiceRequest`` payloads from the background thread.
"""

from __future__ import annotations

import threading
from typing import Protocol

from .spool import SpoolWriter


class EventExporter(Protocol):
    def export(self, payload: bytes, count: int) -> None:
        """Deliver one encoded batch of ``count`` events; raise only if it could not be kept."""

    def spill(self, payload: bytes, count: int) -> None:
        """Keep a batch durably without waiting on anything remote (a request thread calls this
        when the background thread is behind)."""

    def tick(self) -> None:
        """Called by the background thread on every wake-up (time-based housekeeping)."""

    def after_fork(self, instance_id: str) -> None:
        """Reset per-process state in a forked child."""

    def shutdown(self) -> None:
        """Flush and release resources; called at process exit."""


class SpoolExporter:
    """Appends each batch to the durable spool (``USAGELOG_EXPORTER=spool``)."""

    def __init__(self, writer: SpoolWriter) -> None:
        self.writer = writer

    def export(self, payload: bytes, count: int) -> None:
        self.writer.append(payload)

    def spill(self, payload: bytes, count: int) -> None:
        self.writer.append(payload)

    def tick(self) -> None:
        self.writer.maybe_seal()

    def after_fork(self, instance_id: str) -> None:
        self.writer.abandon_after_fork()
        self.writer.instance_id = instance_id

    def shutdown(self) -> None:
        self.writer.seal()


class MemoryExporter:
    """Keeps encoded batches in memory: for tests and benchmarks, never for production."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.count = 0
        self._lock = threading.Lock()

    def export(self, payload: bytes, count: int) -> None:
        with self._lock:
            self.payloads.append(payload)
            self.count += count

    def spill(self, payload: bytes, count: int) -> None:
        self.export(payload, count)

    def tick(self) -> None:
        pass

    def after_fork(self, instance_id: str) -> None:
        self.payloads = []
        self.count = 0

    def shutdown(self) -> None:
        pass

    def clear(self) -> None:
        with self._lock:
            self.payloads.clear()
            self.count = 0
