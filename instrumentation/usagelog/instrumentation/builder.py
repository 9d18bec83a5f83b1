"""Turns a captured exchange into an encoded usage event, off the request path.

Everything costly happens here, in the background thread: resolving the user ID from
headers, redaction, the monitored decision, body rendering, the event ID, the checksum
and the OTLP encoding.
"""

from __future__ import annotations

import json
import time
import uuid
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
        self._identity = {
            "service_name": resource.get(ev.SERVICE_NAME, ""),
            "service_instance_id": resource.get(ev.SERVICE_INSTANCE_ID, ""),
            "host_name": resource.get(ev.HOST_NAME, ""),
            "process_pid": resource.get(ev.PROCESS_PID, ""),
            "cluster": resource.get(ev.CLUSTER, ""),
            "region": resource.get(ev.REGION, ""),
        }

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
        fields = {
            "event_id": uuid.uuid4().hex,
            "timestamp_ns": x.start_ns,
            "duration_ns": x.duration_ns,
            "user_id": user_id,
            "trace_id": trace_hex,
            "span_id": span_hex,
            **self._identity,
            "method": x.method,
            "route": x.route,
            "path": x.path,
            "query": redactor.redact_query(x.query) if x.query else "",
            "status_code": x.status_code,
            "error_type": x.error_type,
            "request_size": x.request_size,
            "response_size": x.response_size,
            "request_body": request_body,
            "response_body": response_body,
            "seq": x.seq,
            "monitored": monitored,
        }
        attrs: list[tuple[str, AttrValue]] = [
            (ev.EVENT_ID, fields["event_id"]),
            (ev.SEQ, x.seq),
            (ev.METHOD, x.method),
            (ev.ROUTE, x.route),
            (ev.PATH, x.path),
            (ev.QUERY, fields["query"]),
            (ev.STATUS, x.status_code),
            (ev.ERROR_TYPE, x.error_type),
            (ev.USER_ID, user_id),
            (ev.CLIENT_ADDRESS, x.client_address),
            (ev.USER_AGENT, x.user_agent),
            (ev.REQUEST_SIZE, x.request_size),
            (ev.RESPONSE_SIZE, x.response_size),
            (ev.DURATION_NS, x.duration_ns),
            (ev.MONITORED, monitored),
            (ev.CHECKSUM, ev.checksum(fields)),
        ]
        if request_body:
            attrs.append((ev.REQUEST_BODY, request_body))
        if response_body:
            attrs.append((ev.RESPONSE_BODY, response_body))
        if capture and x.request_headers:
            headers = redactor.redact_headers(x.request_headers)
            attrs.append((ev.REQUEST_HEADERS, json.dumps(headers, sort_keys=True)))
        if x.client_aborted:
            attrs.append((ev.CLIENT_ABORTED, True))
        return log_record(
            time_unix_nano=x.start_ns,
            observed_time_unix_nano=time.time_ns(),
            event_name=ev.EVENT_NAME,
            encoded_attributes=self.keys.attributes(attrs),
            trace_id=x.trace_id.to_bytes(16, "big") if x.trace_id else b"",
            span_id=x.span_id.to_bytes(8, "big") if x.span_id else b"",
            flags=x.trace_flags,
        )
