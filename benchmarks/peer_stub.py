"""The local HTTP endpoint the peers (Apitally, Moesif) send to during the benchmark.

It stands in for their vendors' ingestion APIs so that their request path and background
export run as in production while no network time is spent on the wire. Every worker process
of the benchmark sends under its own path prefix (``/<worker-id>/...``) and the stub counts what
each one delivered, decoding the payloads the way the vendor would receive them:

- Apitally: ``POST /<id>/v1/traces`` (gzip, concatenated OTLP ``ExportTraceServiceRequest``s):
  one request log per SERVER span; ``/v1/logs`` and ``/v1/metrics`` are accepted and counted
  in bytes only.
- Moesif: ``POST /<id>/v1/events/batch`` (gzip JSON array): one event per element;
  ``GET /<id>/v1/config`` answers ``{}`` with an ETag and ``GET /<id>/v1/rules`` ``[]``, as an
  application with no sampling or governance rules would.

``GET /__counts/<id>`` returns what that worker delivered: events, payloads, bytes and the
field names of its first event (to show what a peer captures). The stub runs in its own
process (``python benchmarks/peer_stub.py --fd N``) so its CPU is not the measured processes'.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_counts: dict[str, dict[str, Any]] = {}


def _entry(worker: str) -> dict[str, Any]:
    return _counts.setdefault(worker, {"events": 0, "payloads": 0, "bytes": 0, "fields": None})


def _decode_body(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        # Apitally's spool file is one gzip stream; Moesif gzips each batch.
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _flatten_keys(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        keys: list[str] = []
        for k, v in value.items():
            keys += _flatten_keys(v, f"{prefix}{k}.") if k not in ("headers", "body") else [prefix + k]
        return keys
    return [prefix.rstrip(".")]


def _server_spans(payload: bytes) -> tuple[int, list[str] | None]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    # Concatenated protobuf messages of one type parse as their merge: all spans of the file.
    request = ExportTraceServiceRequest.FromString(payload)
    count, fields = 0, None
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.kind == Span.SPAN_KIND_SERVER:
                    count += 1
                    if fields is None:
                        fields = sorted(a.key for a in span.attributes)
    return count, fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the vendors' endpoints do

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/", 1)
        if parts[0] == "__counts" and len(parts) == 2:
            with _lock:
                entry = dict(_entry(parts[1]))
            self._reply(200, entry)
        elif self.path.endswith("/v1/config"):
            self._reply(200, {}, {"X-Moesif-Config-ETag": "bench"})
        elif self.path.endswith("/v1/rules"):
            self._reply(200, [])
        else:
            self._reply(404, {})

    def do_POST(self) -> None:
        worker, _, route = self.path.split("?")[0].strip("/").partition("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        events, fields = 0, None
        try:
            body = _decode_body(raw, (self.headers.get("Content-Encoding") or "").lower())
            if route.endswith("v1/traces"):
                events, fields = _server_spans(body)
            elif route.endswith("v1/events/batch"):
                batch = json.loads(body)
                events = len(batch)
                fields = sorted(_flatten_keys(batch[0])) if batch else None
        except Exception as exc:  # a payload the vendor could not read either: say so
            self._reply(400, {"error": str(exc)})
            return
        with _lock:
            entry = _entry(worker)
            entry["events"] += events
            entry["payloads"] += 1
            entry["bytes"] += len(raw)
            if entry["fields"] is None and fields is not None:
                entry["fields"] = fields
        self._reply(200, {}, {"X-Moesif-Config-ETag": "bench"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="a listening socket inherited from the parent")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
