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
    traffic: bool = False,
) -> list[bytes]:
    """``batches`` ExportLogsServiceRequest payloads of ``per_batch`` events each, sequence numbers
    consecutive from ``first_seq``; users cycle through user-0 .. user-6. Stamped as they are
    made, or from ``at_ns`` on (one nanosecond apart). Each a ``GET /items/<seq>`` answered 200,
    with no duration, sizes, client or user agent; with ``traffic``, what an API's log holds
    instead (see :func:`as_traffic`)."""
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
            if traffic:
                as_traffic(x, seq)
            exchanges.append(x)
        payloads.append(builder.encode_batch(exchanges)[0])
    return payloads


_AGENTS = ("python-requests/2.32.3", "curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0")


def as_traffic(x: Exchange, seq: int) -> None:
    """Make ``x`` a request as an API serves them, varied by ``seq`` alone: a fifth are POSTs with
    a body (201), one in 40 a 404, one in 500 a 500 with an exception; a duration of 0.2-50 ms,
    response sizes of 200-2,000 bytes, a query on every fourth GET, one of a few hundred client
    addresses and three user agents; every one in its own span."""
    x.duration_ns = 200_000 + seq * 7_919 % 50_000_000
    x.client_address = f"10.0.{seq % 7}.{seq % 61}"
    x.user_agent = _AGENTS[seq % 3]
    x.span_id = seq * 2_654_435_761 % (1 << 64) or 1
    if seq % 5 == 0:
        x.method, x.path, x.route, x.status_code = "POST", "/items", "/items", 201
        x.request_size = 100 + seq % 400
    elif seq % 4 == 0:
        x.query = f"page={seq % 9}"
    if seq % 40 == 0:
        x.status_code = 404
    elif seq % 500 == 0:
        x.status_code, x.error_type = 500, "builtins.KeyError"
    x.response_size = 0 if x.status_code == 500 else 200 + seq * 31 % 1_800


def write_spool(
    directory: Path, segments: int, per_segment: int, instance: str = "bulk", traffic: bool = False
) -> int:
    """Fill a spool with ``segments`` sealed segments of real encoded events (``traffic``: as
    :func:`make_payloads`); returns the count."""
    writer = SpoolWriter(directory, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for payload in make_payloads(segments, per_segment, instance, traffic=traffic):
        writer.append(payload)
        writer.seal()
    return segments * per_segment
