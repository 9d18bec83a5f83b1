"""Real encoded usage events for ingest tests: OTLP payloads, and spools made of them."""

from __future__ import annotations

import os
from pathlib import Path

from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import Settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.spool import SpoolWriter
from usagelog.instrumentation.userid import UserResolver


def make_payloads(
    batches: int,
    per_batch: int,
    instance: str = "bulk",
    monitor: str = "",
    first_seq: int = 1,
    at_ns: int | None = None,
) -> list[bytes]:
    """``batches`` ExportLogsServiceRequest payloads of ``per_batch`` events each, sequence numbers
    consecutive from ``first_seq``; users cycle through user-0 .. user-6. Stamped as they are
    made, or from ``at_ns`` on (one nanosecond apart)."""
    resource = {"service.name": "bulk", "service.instance.id": instance, "host.name": "h", "process.pid": 1}
    settings = Settings(monitor=tuple(m for m in monitor.split(",") if m))
    builder = EventBuilder(settings, UserResolver(["header:X-User"]), Identity(dict(resource)), "test")
    payloads = []
    seq = first_seq - 1
    for _ in range(batches):
        exchanges = []
        for _ in range(per_batch):
            seq += 1
            x = Exchange({}, seq)
            if at_ns is not None:
                x.start_ns = at_ns + seq - first_seq
            x.method, x.path, x.route, x.status_code = "GET", f"/items/{seq}", "/items/<id>", 200
            x.user_headers = {"HTTP_X_USER": f"user-{seq % 7}"}
            x.trace_id, x.span_id, x.trace_flags = int.from_bytes(os.urandom(16), "big"), 1, 1
            exchanges.append(x)
        payloads.append(builder.encode_batch(exchanges)[0])
    return payloads


def write_spool(directory: Path, segments: int, per_segment: int, instance: str = "bulk") -> int:
    """Fill a spool with ``segments`` sealed segments of real encoded events; returns the count."""
    writer = SpoolWriter(directory, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for payload in make_payloads(segments, per_segment, instance):
        writer.append(payload)
        writer.seal()
    return segments * per_segment
