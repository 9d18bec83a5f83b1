"""The recorder: queue and background thread, the request threads' spill when the thread is behind,
fork hooks that do not keep a discarded recorder (or runtime) alive."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from usagelog.ingest.decode import decode_payload
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import Settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.recorder import BATCH_WAKE, Recorder
from usagelog.instrumentation.runtime import Runtime
from usagelog.instrumentation.userid import UserResolver


class StuckExporter:
    """An exporter whose normal path blocks (a collector that stopped answering) until released;
    ``spill`` (the durable overflow) answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported: list[bytes] = []
        self.spilled: list[bytes] = []
        self.lock = threading.Lock()

    def export(self, payload: bytes, count: int) -> None:
        self.release.wait(30)
        with self.lock:
            self.exported.append(payload)

    def spill(self, payload: bytes, count: int) -> None:
        with self.lock:
            self.spilled.append(payload)

    def tick(self) -> None:
        pass

    def after_fork(self, instance_id: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


def builder() -> EventBuilder:
    identity = Identity(
        {"service.name": "s", "service.instance.id": "i-1", "host.name": "h", "process.pid": 1}
    )
    return EventBuilder(Settings(), UserResolver(["header:X-User"]), identity, "test")


def exchanges(first: int, count: int) -> list[Exchange]:
    made = []
    for seq in range(first, first + count):
        x = Exchange(None, seq)
        x.method, x.path, x.route, x.status_code = "GET", f"/items/{seq}", "/items/<id>", 200
        made.append(x)
    return made


def seqs(payloads: Sequence[bytes]) -> list[int]:
    return sorted(row["seq"] for payload in payloads for row in decode_payload(payload).rows)


def test_request_threads_spill_the_backlog_when_the_background_thread_is_stuck() -> None:
    exporter = StuckExporter()
    recorder = Recorder(builder().encode_batch, exporter, flush_interval_ms=20, max_queue=600)
    total = 3000
    for exchange in exchanges(1, total):  # as request threads would, while the thread is stuck
        recorder.record(exchange)
    # Memory stayed bounded: what exceeded the cap left the queue, encoded, through spill().
    assert len(recorder._queue) <= 600 + BATCH_WAKE
    assert exporter.spilled, "no request thread spilled"
    exporter.release.set()
    recorder.shutdown()
    assert seqs(exporter.spilled + exporter.exported) == list(range(1, total + 1))
    assert recorder.exported == total and recorder.build_errors == 0


def test_a_broken_exchange_is_left_out_counted_and_the_rest_exported() -> None:
    exporter = StuckExporter()
    exporter.release.set()
    recorder = Recorder(builder().encode_batch, exporter, flush_interval_ms=20, max_queue=10_000)
    batch = exchanges(1, 5)
    batch[2].user_headers = None  # type: ignore[assignment]  # a usagelog bug, say
    for exchange in batch:
        recorder.record(exchange)
    recorder.shutdown()
    assert seqs(exporter.exported) == [1, 2, 4, 5]
    assert recorder.build_errors == 1


def _collected(make: Any) -> bool:
    obj = make()
    ref = weakref.ref(obj)
    del obj
    gc.collect()
    return ref() is None


def test_fork_hooks_do_not_keep_a_discarded_recorder_or_runtime_alive() -> None:
    exporter = StuckExporter()
    assert _collected(lambda: Recorder(builder().encode_batch, exporter, flush_interval_ms=20, max_queue=10))
    assert _collected(lambda: Runtime(Settings(), exporter))
