"""Capture at the WSGI boundary: exactly one exchange per request, whatever happens inside.

The middleware sits outside Flask's ``wsgi_app``, so it sees outcomes that Flask hooks
cannot: exceptions escaping error handlers, responses whose generator raises mid-stream,
clients that disconnect before the body is sent. An exchange is finished exactly once, when
the server closes the response (or when the app raised), and handed to the recorder.

This module is the only one that reads the WSGI environ. The hot path does as little as
possible: a clock read, a sequence number, wrapping ``start_response`` and the response
iterable. User ID resolution, redaction and encoding happen later in the background thread.
Every usagelog step is guarded: a failure is logged and the request goes on untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.wsgi import wsgi_getter

from .event import error_type_of
from .exchange import EXCHANGE_KEY, Exchange

_logger = logging.getLogger("usagelog")

_OTEL_FLASK_SPAN_KEY = "opentelemetry-flask.span_key"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Sink(Protocol):
    """What capture needs of the runtime: whether to capture, how, and where exchanges go."""

    active: bool
    capture_bodies: bool
    body_limit: int
    header_keys: tuple[str, ...]

    def next_seq(self) -> int: ...

    def record(self, exchange: Exchange) -> None: ...


class InputTee:
    """Wraps ``wsgi.input`` to keep the first ``limit`` bytes the app reads, and count them all."""

    __slots__ = ("_body", "_limit", "_stream", "total")

    def __init__(self, stream: Any, exchange: Exchange, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.total = 0
        # The tee holds the body, not the exchange: no reference cycle (exchange -> tee ->
        # exchange) for the garbage collector to find on every request.
        self._body = exchange.request_body = bytearray()

    def _keep(self, data: bytes) -> bytes:
        self.total += len(data)
        body = self._body
        if len(body) < self._limit:
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


class InputCounter:
    """Wraps ``wsgi.input`` to count the bytes the app reads, for a body sent without a
    ``Content-Length`` (``Transfer-Encoding: chunked``) while bodies are not captured."""

    __slots__ = ("_stream", "total")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.total = 0

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self.total += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self.total += len(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        self.total += sum(len(line) for line in lines)
        return lines

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self.total += len(line)
            yield line

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


# --- the request's start and end ------------------------------------------------------------


def begin(environ: dict[str, Any], sink: Sink) -> Exchange:
    """The request's exchange, kept in the environ; the input wrapped when bodies are captured
    or a chunked body must be counted."""
    exchange = Exchange(environ, sink.next_seq())
    environ[EXCHANGE_KEY] = exchange
    if sink.capture_bodies:
        exchange.response_body = []
        exchange.request_content_type = environ.get("CONTENT_TYPE", "")
        stream = environ.get("wsgi.input")
        if stream is not None:
            exchange.input = InputTee(stream, exchange, sink.body_limit)
            environ["wsgi.input"] = exchange.input
    elif "HTTP_TRANSFER_ENCODING" in environ and not environ.get("CONTENT_LENGTH"):
        # No Content-Length to report: count what the app reads (two dict lookups otherwise).
        stream = environ.get("wsgi.input")
        if stream is not None:
            exchange.input = InputCounter(stream)
            environ["wsgi.input"] = exchange.input
    return exchange


def finish(exchange: Exchange, sink: Sink) -> None:
    """Complete the exchange from the environ and queue it; runs once per request."""
    try:
        environ = exchange.environ
        if environ is None:
            return
        exchange.environ = None
        exchange.duration_ns = time.perf_counter_ns() - exchange.start_perf
        status = exchange.status
        exchange.status_code = int(status[:3]) if status[:3].isdigit() else 500
        get = environ.get
        exchange.method = get("REQUEST_METHOD", "")
        exchange.path = get("SCRIPT_NAME", "") + get("PATH_INFO", "")
        exchange.query = get("QUERY_STRING", "")
        exchange.client_address = get("REMOTE_ADDR", "")
        exchange.user_agent = get("HTTP_USER_AGENT", "")
        length = get("CONTENT_LENGTH")
        if length and length.isdigit():
            exchange.request_size = int(length)
        elif exchange.input is not None:
            exchange.request_size = exchange.input.total
        for key in sink.header_keys:
            value = get(key)
            if value:
                exchange.user_headers[key] = value
        if sink.capture_bodies:
            exchange.request_headers = [
                (k[5:].replace("_", "-").lower(), v) for k, v in environ.items() if k.startswith("HTTP_")
            ]
            content_type = get("CONTENT_TYPE")
            if content_type:
                exchange.request_headers.append(("content-type", content_type))
        span = get(_OTEL_FLASK_SPAN_KEY)
        ctx = span.get_span_context() if span is not None and _VALID >= 0 else None
        if ctx is not None and ctx[_VALID]:
            exchange.trace_id, exchange.span_id, exchange.trace_flags = ctx[0], ctx[1], int(ctx[_FLAGS])
        else:
            exchange.trace_id, exchange.span_id, exchange.trace_flags = span_ids(environ)
        sink.record(exchange)
    except Exception:
        _logger.exception("usagelog: could not record a usage event")


def _span_context_layout() -> tuple[int, int]:
    """Where a ``SpanContext`` (a tuple) keeps its flags and validity, to read them by index on
    the request path: a property call less each. Checked against the properties once, here;
    should a release of the API keep them elsewhere, (-1, -1) sends every request through
    :func:`span_ids`, which reads the properties."""
    try:
        context = trace.SpanContext(3, 5, False, trace.TraceFlags(1))
        flags = next(i for i, v in enumerate(context) if v is context.trace_flags)
        valid = next(i for i, v in enumerate(context) if v is True and i != flags)
        invalid = trace.INVALID_SPAN_CONTEXT
        if context[:2] == (3, 5) and context[valid] is context.is_valid and invalid[valid] is False:
            return flags, valid
    except Exception:
        pass
    return -1, -1


_FLAGS, _VALID = _span_context_layout()


def exchange_of(environ: dict[str, Any]) -> Exchange | None:
    """The exchange of the request whose environ this is (for the Flask hooks)."""
    exchange = environ.get(EXCHANGE_KEY)
    return exchange if isinstance(exchange, Exchange) else None


def span_ids(environ: dict[str, Any]) -> tuple[int, int, int]:
    """Trace ID, span ID and flags of the request's server span.

    The stock Flask instrumentation keeps its span in the environ. Without it (the app was
    not instrumented, or Flask failed before its hooks ran), the client's ``traceparent`` is
    honoured (through the configured propagators) and a server span is started and ended here
    so the event still has IDs.
    """
    span = environ.get(_OTEL_FLASK_SPAN_KEY)
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            return ctx.trace_id, ctx.span_id, int(ctx.trace_flags)
    parent = propagate.extract(environ, getter=wsgi_getter)
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


# --- the middleware ---------------------------------------------------------------------------


class _Response:
    """One request as the server sees it: the ``start_response`` the app calls, the response
    iterable handed back to the server, and its ``close``, which finishes the exchange.

    The server iterates a generator over the app's iterable: counting each chunk's bytes (and
    keeping the first of them when bodies are captured) is a line of a loop, and the end of
    the iterable is the loop's end, not an exception caught per response."""

    __slots__ = ("_exchange", "_result", "_sink", "_start", "_state", "_write")

    def __init__(self, start_response: Callable[..., Any], exchange: Exchange, sink: Sink) -> None:
        self._start = start_response
        self._exchange = exchange
        self._sink = sink
        self._result: Iterable[bytes] = ()
        self._write: Callable[[bytes], Any] | None = None
        self._state = 0  # 0 open, 1 exhausted, 2 failed, 3 finished

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        exchange = self._exchange
        exchange.status = status
        # Flask calls start_response while the request context still exists; it drops the
        # request from the environ right after, so the route is read here.
        environ = exchange.environ
        request = environ.get("werkzeug.request") if environ is not None else None
        if request is not None:
            rule = getattr(request, "url_rule", None)
            if rule is not None:
                exchange.route = rule.rule
        if exchange.response_body is not None:
            for name, value in headers:
                if name.lower() == "content-type":
                    exchange.response_content_type = value
        start = self._start
        self._write = start(status, headers, exc_info) if exc_info else start(status, headers)
        return self.write

    def write(self, data: bytes) -> Any:
        """The legacy ``write`` callable ``start_response`` returns, counting what goes through it."""
        self._exchange.response_size += len(data)
        assert self._write is not None
        return self._write(data)

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        body = exchange.response_body
        limit = self._sink.body_limit if body is not None else 0
        try:
            for chunk in self._result:
                exchange.response_size += len(chunk)
                if limit > 0:
                    assert body is not None
                    body.append(chunk[:limit])
                    limit -= len(body[-1])
                yield chunk
        except GeneratorExit:  # the server stopped reading (a client gone): close() says so
            raise
        except BaseException as exc:
            self._state = 2
            try:
                exchange.error_type = error_type_of(exc)
            except Exception:
                pass
            raise
        self._state = 1

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
                finish(self._exchange, self._sink)

    def __del__(self) -> None:
        # A server that never calls close() (a WSGI violation) still yields one event.
        if getattr(self, "_state", 3) != 3:
            self._state = 3
            try:
                finish(self._exchange, self._sink)
            except Exception:
                pass


def serve(app: WSGIApp, sink: Sink, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """Run ``app`` for one request, capturing it: the middleware's call, and the patched
    ``Flask.__call__``'s."""
    if not sink.active or EXCHANGE_KEY in environ:
        return app(environ, start_response)
    try:
        exchange = begin(environ, sink)
        response = _Response(start_response, exchange, sink)
    except Exception:
        _logger.exception("usagelog: capture failed at request start; request continues unlogged")
        return app(environ, start_response)
    try:
        response._result = app(environ, response.start_response)
    except BaseException as exc:
        response._state = 3  # finished here: nothing for close() or __del__ to do
        try:
            exchange.error_type = error_type_of(exc)
            if not exchange.status:
                exchange.status = "500 INTERNAL SERVER ERROR"
            finish(exchange, sink)
        except Exception:
            _logger.exception("usagelog: capture failed for a failing request")
        raise
    return response


class UsageMiddleware:
    """WSGI middleware producing one usage event per request."""

    def __init__(self, app: WSGIApp, sink: Sink) -> None:
        self.app = app
        self.sink = sink
        self.usagelog_wrapped = True

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return serve(self.app, self.sink, environ, start_response)  # type: ignore[no-any-return]
