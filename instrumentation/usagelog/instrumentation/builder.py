"""Turns a captured exchange into an encoded usage event, off the request path.

Everything costly happens here, in the background thread: resolving the user ID from
headers, redaction, the monitored decision, body rendering, the event ID, the checksum
and the OTLP encoding.
"""

from __future__ import annotations

import json
import os
import time
from hashlib import sha256
from typing import TYPE_CHECKING

from . import event as ev
from .config import Settings
from .monitor import MonitorRules
from .redact import Redactor
from .userid import UserResolver
from .wire import AttrValue, KeyCache, log_record

if TYPE_CHECKING:
    from .capture import Exchange


def _utf8(text: str) -> str:
    """``text`` made encodable as UTF-8 (OTLP strings must be): lone surrogates, which JSON
    escapes and JWT claims can carry, become U+FFFD before the checksum is taken."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


class EventBuilder:
    def __init__(self, settings: Settings, resolver: UserResolver, resource: dict[str, AttrValue]) -> None:
        self.settings = settings
        self.resolver = resolver
        self.monitor = MonitorRules(settings.monitor)
        self.redactor = Redactor(settings.redact_fields)
        self.keys = KeyCache()
        self.set_resource(resource)

    def set_resource(self, resource: dict[str, AttrValue]) -> None:
        self.resource = resource
        # Identity fields that take part in the checksum, fixed for the process.
        identity = (
            resource.get(ev.SERVICE_NAME, ""),
            resource.get(ev.SERVICE_INSTANCE_ID, ""),
            resource.get(ev.HOST_NAME, ""),
            resource.get(ev.PROCESS_PID, 0),
            resource.get(ev.CLUSTER, ""),
            resource.get(ev.REGION, ""),
        )
        self._identity_canonical = "\x1f".join(str(v) for v in identity)
        self._id_prefix = os.urandom(8).hex()

    def encode(self, x: Exchange) -> bytes:
        """The bytes of the ``LogRecord`` for one exchange."""
        settings = self.settings
        redactor = self.redactor
        user_id = _utf8(self.resolver.resolve(x.user_headers, x.context_users))
        monitored = self.monitor.matches(user_id, x.route, x.path)
        capture = settings.capture_body == "all" or (settings.capture_body == "monitored" and monitored)
        request_body = response_body = ""
        if capture:
            if x.request_body is not None:
                request_body = redactor.body(
                    bytes(x.request_body), x.request_content_type, x.request_size, settings.body_max_bytes
                )
            if x.response_body is not None:
                response_body = redactor.body(
                    b"".join(x.response_body),
                    x.response_content_type,
                    x.response_size,
                    settings.body_max_bytes,
                )
            request_body, response_body = _utf8(request_body), _utf8(response_body)
        trace_hex = f"{x.trace_id:032x}" if x.trace_id else ""
        span_hex = f"{x.span_id:016x}" if x.span_id else ""
        # Unique without a random draw per event: a random per-process prefix and the sequence.
        event_id = self._id_prefix + f"{x.seq:016x}"
        query = redactor.redact_query(x.query) if x.query else ""
        # The canonical form of event.checksum(), built directly (the identity part is fixed
        # per process); the decoder recomputes it with event.checksum() and must agree.
        canonical = (
            f"{event_id}\x1f{x.start_ns}\x1f{x.duration_ns}\x1f{user_id}\x1f{trace_hex}\x1f{span_hex}\x1f"
            f"{self._identity_canonical}\x1f{x.method}\x1f{x.route}\x1f{x.path}\x1f{query}\x1f"
            f"{x.status_code}\x1f{x.error_type}\x1f{x.request_size}\x1f{x.response_size}\x1f"
            f"{request_body}\x1f{response_body}\x1f{x.seq}\x1f{'1' if monitored else '0'}"
        )
        digest = sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        keys = self.keys
        s, i = keys.str_kv, keys.int_kv
        parts = [
            s(ev.EVENT_ID, event_id),
            i(ev.SEQ, x.seq),
            s(ev.METHOD, x.method),
            i(ev.STATUS, x.status_code),
            i(ev.REQUEST_SIZE, x.request_size),
            i(ev.RESPONSE_SIZE, x.response_size),
            i(ev.DURATION_NS, x.duration_ns),
            keys.bool_kv(ev.MONITORED, monitored),
            s(ev.CHECKSUM, digest),
        ]
        # Empty strings are left out: an absent attribute reads back as empty.
        for key, text in (
            (ev.ROUTE, x.route),
            (ev.PATH, x.path),
            (ev.QUERY, query),
            (ev.ERROR_TYPE, x.error_type),
            (ev.USER_ID, user_id),
            (ev.CLIENT_ADDRESS, x.client_address),
            (ev.USER_AGENT, x.user_agent),
            (ev.REQUEST_BODY, request_body),
            (ev.RESPONSE_BODY, response_body),
        ):
            if text:
                parts.append(s(key, text))
        if capture and x.request_headers:
            headers = redactor.redact_headers(x.request_headers)
            parts.append(s(ev.REQUEST_HEADERS, json.dumps(headers, sort_keys=True)))
        if x.client_aborted:
            parts.append(keys.bool_kv(ev.CLIENT_ABORTED, True))
        return log_record(
            time_unix_nano=x.start_ns,
            observed_time_unix_nano=time.time_ns(),
            event_name=ev.EVENT_NAME,
            encoded_attributes=b"".join(parts),
            trace_id=x.trace_id.to_bytes(16, "big") if x.trace_id else b"",
            span_id=x.span_id.to_bytes(8, "big") if x.span_id else b"",
            flags=x.trace_flags,
        )
