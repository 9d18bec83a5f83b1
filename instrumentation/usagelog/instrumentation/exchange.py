"""The record of one request as captured, passed from the WSGI boundary to the event builder.

It imports nothing of usagelog: every other module may use it. The key under which capture
keeps the exchange in the WSGI environ is here too.
"""

from __future__ import annotations

import time
from typing import Any

EXCHANGE_KEY = "usagelog.exchange"


class Exchange:
    """What one request did, as captured; turned into an event by the builder."""

    __slots__ = (
        "client_aborted",
        "client_address",
        "context_users",
        "duration_ns",
        "environ",
        "error_type",
        "input",
        "method",
        "path",
        "query",
        "request_body",
        "request_content_type",
        "request_headers",
        "request_size",
        "response_body",
        "response_content_type",
        "response_size",
        "route",
        "seq",
        "span_id",
        "start_ns",
        "start_perf",
        "status",
        "status_code",
        "trace_flags",
        "trace_id",
        "user_agent",
        "user_headers",
    )

    def __init__(self, environ: dict[str, Any] | None, seq: int) -> None:
        self.start_ns = time.time_ns()
        self.start_perf = time.perf_counter_ns()
        self.seq = seq
        self.environ = environ
        self.input: Any = None  # the tee around wsgi.input, when bodies are captured
        self.status: str = ""
        self.status_code = 0
        self.error_type = ""
        self.response_size = 0
        self.response_body: list[bytes] | None = None
        self.response_content_type = ""
        self.request_body: bytearray | None = None
        self.request_content_type = ""
        self.request_headers: list[tuple[str, str]] | None = None
        self.context_users: dict[str, str] | None = None
        self.client_aborted = False
        self.duration_ns = 0
        self.route = ""
        self.trace_id = 0
        self.span_id = 0
        self.trace_flags = 0
        self.method = self.path = self.query = self.client_address = self.user_agent = ""
        self.request_size = 0
        self.user_headers: dict[str, str] = {}
