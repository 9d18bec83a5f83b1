"""Capture at the WSGI boundary: exactly one exchange per request, whatever happens inside.

The middleware sits outside Flask's ``wsgi_app``, so it sees outcomes that Flask hooks
cannot: exceptions escaping error handlers, responses whose generator raises mid-stream,
clients that disconnect before the body is sent. An exchange is finished exactly once, when
the server closes the response (or when the app raised), and handed to the recorder.

The hot path does as little as possible: a clock read, a sequence number, wrapping
``start_response`` and the response iterable. User ID resolution, redaction and encoding
happen later in the background thread. Every usagelog step is guarded: a failure is logged
and the request goes on untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from .event import error_type_of

if TYPE_CHECKING:
    from .runtime import Runtime

_logger = logging.getLogger("usagelog")

EXCHANGE_KEY = "usagelog.exchange"
ERROR_KEY = "usagelog.error_type"
ROUTE_KEY = "usagelog.route"
_OTEL_FLASK_SPAN_KEY = "opentelemetry-flask.span_key"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Exchange:
    """What one request did, as captured; turned into an event by ``EventBuilder``."""

    __slots__ = (
        "client_aborted",
        "client_address",
        "context_users",
        "duration_ns",
        "environ",
        "error_type",
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

    def __init__(self, environ: dict[str, Any], seq: int) -> None:
        self.start_ns = time.time_ns()
        self.start_perf = time.perf_counter_ns()
        self.seq = seq
        self.environ: dict[str, Any] | None = environ
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


class _InputTee:
    """Wraps ``wsgi.input`` to keep the first ``limit`` bytes the app reads, and count them all."""

    def __init__(self, stream: Any, exchange: Exchange, limit: int) -> None:
        self._stream = stream
        self._exchange = exchange
        self._limit = limit
        self.total = 0
        exchange.request_body = bytearray()

    def _keep(self, data: bytes) -> bytes:
        self.total += len(data)
        body = self._exchange.request_body
        if body is not None and len(body) < self._limit:
            body += data[: self._limit - len(body)]
        return data

    def read(self, *args: Any) -> bytes:
        return self._keep(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._keep(self._stream.readline(*args))

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._keep(line) for line in self._stream.readlines(*args)]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield self._keep(line)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _Response:
    """The response iterable handed to the server; finishes the exchange on ``close``."""

    __slots__ = ("_exchange", "_iterator", "_limit", "_result", "_runtime", "_state")

    def __init__(self, result: Iterable[bytes], exchange: Exchange, runtime: Runtime) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._runtime = runtime
        self._limit = runtime.body_limit if exchange.response_body is not None else 0
        self._state = 0  # 0 open, 1 exhausted, 2 failed, 3 finished

    def __iter__(self) -> _Response:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._result)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._state = 1
            raise
        except BaseException as exc:
            self._state = 2
            try:
                self._exchange.error_type = error_type_of(exc)
            except Exception:
                pass
            raise
        exchange = self._exchange
        exchange.response_size += len(chunk)
        body = exchange.response_body
        if body is not None and self._limit > 0:
            body.append(chunk[: self._limit])
            self._limit -= len(body[-1])
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            if not self._exchange.error_type:
                self._exchange.error_type = error_type_of(exc)
            raise
        finally:
            if self._state != 3:
                if self._state == 0:
                    self._exchange.client_aborted = True
                self._state = 3
                self._runtime.finish(self._exchange)

    def __del__(self) -> None:
        # A server that never calls close() (a WSGI violation) still yields one event.
        if getattr(self, "_state", 3) != 3:
            self._state = 3
            try:
                self._runtime.finish(self._exchange)
            except Exception:
                pass


class UsageMiddleware:
    """WSGI middleware producing one usage event per request."""

    def __init__(self, app: WSGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.usagelog_wrapped = True

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        runtime = self.runtime
        if not runtime.active or EXCHANGE_KEY in environ:
            return self.app(environ, start_response)
        try:
            exchange = runtime.begin(environ)
        except Exception:
            _logger.exception("usagelog: capture failed at request start; request continues unlogged")
            return self.app(environ, start_response)

        def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            exchange.status = status
            # Flask calls start_response while the request context still exists; it drops
            # the request from the environ right after, so the route is read here.
            request = environ.get("werkzeug.request")
            if request is not None:
                rule = getattr(request, "url_rule", None)
                if rule is not None:
                    exchange.route = rule.rule
            if exchange.response_body is not None:
                for name, value in headers:
                    if name.lower() == "content-type":
                        exchange.response_content_type = value
            write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            def _write(data: bytes) -> Any:
                exchange.response_size += len(data)
                return write(data)

            return _write

        try:
            result = self.app(environ, _start_response)
        except BaseException as exc:
            try:
                exchange.error_type = error_type_of(exc)
                if not exchange.status:
                    exchange.status = "500 INTERNAL SERVER ERROR"
                runtime.finish(exchange)
            except Exception:
                _logger.exception("usagelog: capture failed for a failing request")
            raise
        return _Response(result, exchange, runtime)


def span_ids(environ: dict[str, Any]) -> tuple[int, int, int]:
    """Trace ID, span ID and flags of the request's server span.

    The stock Flask instrumentation keeps its span in the environ. Without it (the app was
    not instrumented, or Flask failed before its hooks ran), the client's ``traceparent`` is
    honoured and a server span is started and ended here so the event still has IDs.
    """
    span = environ.get(_OTEL_FLASK_SPAN_KEY)
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            return ctx.trace_id, ctx.span_id, int(ctx.trace_flags)
    carrier = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    parent = propagate.extract(carrier)
    tracer = trace.get_tracer("usagelog")
    fallback = tracer.start_span(
        f"{environ.get('REQUEST_METHOD', 'GET')}", context=parent, kind=trace.SpanKind.SERVER
    )
    fallback.end()
    ctx = fallback.get_span_context()
    if ctx.is_valid:
        return ctx.trace_id, ctx.span_id, int(ctx.trace_flags)
    parent_ctx = trace.get_current_span(parent).get_span_context()
    return parent_ctx.trace_id, 0, int(parent_ctx.trace_flags)
