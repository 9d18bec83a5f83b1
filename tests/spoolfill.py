"""Builds spools of real encoded events for ingest tests."""

from __future__ import annotations

from pathlib import Path


def write_spool(directory: Path, segments: int, per_segment: int, instance: str = "bulk") -> int:
    """Fill a spool with ``segments`` sealed segments of real encoded events; returns the count."""
    import os as _os

    from usagelog.instrumentation.builder import EventBuilder
    from usagelog.instrumentation.capture import Exchange
    from usagelog.instrumentation.config import Settings
    from usagelog.instrumentation.spool import SpoolWriter
    from usagelog.instrumentation.userid import UserResolver
    from usagelog.instrumentation.wire import export_logs_request, resource_prefix

    resource = {"service.name": "bulk", "service.instance.id": instance, "host.name": "h", "process.pid": 1}
    builder = EventBuilder(Settings(), UserResolver(["header:X-User"]), dict(resource))
    res, scope = resource_prefix(sorted(resource.items()), "usagelog", "test")
    writer = SpoolWriter(directory, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    seq = 0
    for _ in range(segments):
        records = []
        for _ in range(per_segment):
            seq += 1
            x = Exchange({}, seq)
            x.method, x.path, x.route, x.status_code = "GET", f"/items/{seq}", "/items/<id>", 200
            x.user_headers = {"HTTP_X_USER": f"user-{seq % 7}"}
            x.trace_id, x.span_id, x.trace_flags = int.from_bytes(_os.urandom(16), "big"), 1, 1
            records.append(builder.encode(x))
        writer.append(export_logs_request(res, scope, records))
        writer.seal()
    return seq
