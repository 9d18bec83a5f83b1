"""The capture matrix: every way a request can end yields exactly one event, through a real WSGI server.

Each test sends one request (with a W3C traceparent) to the example API served by werkzeug's
threaded server and checks the single event: status, route, error type, user ID, trace ID.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import time
from typing import Any

import pytest
from flask import Flask, g

from usagelog.demo.app import create_app, make_jwt
from usagelog.instrumentation import event as ev


def _request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int | None, str]:
    """Send one request with a fresh traceparent; returns (status or None, trace ID sent)."""
    trace_id = os.urandom(16).hex()
    all_headers = {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01", **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        try:
            response.read()
        except (http.client.IncompleteRead, ConnectionError):
            pass
        return response.status, trace_id
    finally:
        conn.close()


def _jwt(user: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + make_jwt({"sub": user})}


@pytest.fixture
def demo(live_app: Any) -> Any:
    return live_app(create_app(), user_id_from="jwt:sub,basic,g:user")


def _one_event(live: Any, trace_id: str) -> dict[str, Any]:
    rows = live.events(1)
    live.settle()  # every exchange begun so far is recorded: nothing extra can come later
    rows = live.events(1)
    assert len(rows) == 1, rows
    assert rows[0]["trace_id"] == trace_id
    return rows[0]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "route", "error_type"),
    [
        ("GET", "/api/items/7", None, 200, "/api/items/<int:item_id>", ""),
        ("POST", "/api/items", b'{"name": "x"}', 201, "/api/items", ""),
        ("GET", "/api/items/999", None, 404, "/api/items/<int:item_id>", ""),
        ("GET", "/api/orders/3", None, 403, "/api/orders/<int:order_id>", ""),
        ("GET", "/api/no-such-route", None, 404, "", ""),
        ("DELETE", "/api/items/7", None, 405, "", ""),
        ("POST", "/api/items", b"x" * 70_000, 413, "/api/items", ""),
        ("GET", "/api/crash", None, 500, "/api/crash", "ValueError"),
        ("GET", "/api/guarded", None, 500, "/api/guarded", "usagelog.demo.app.GuardError"),
        ("GET", "/api/teapot", None, 500, "/api/teapot", "LookupError"),
    ],
    ids=[
        "ok",
        "created",
        "abort-404",
        "abort-403",
        "unknown-route",
        "method-not-allowed",
        "too-large-413",
        "unhandled-exception",
        "before-request-error",
        "error-handler-error",
    ],
)
def test_every_outcome_yields_exactly_one_event(
    demo: Any, method: str, path: str, body: bytes | None, status: int, route: str, error_type: str
) -> None:
    headers = {**_jwt("alice"), "Content-Type": "application/json"}
    got, trace_id = _request(demo.port, method, path, headers=headers, body=body)
    assert got == status
    event = _one_event(demo, trace_id)
    assert (event["status_code"], event["route"], event["error_type"]) == (status, route, error_type)
    assert event["user_id"] == "alice"
    assert event["method"] == method
    assert event["path"] == path


def test_stream_failing_mid_stream_is_one_event_with_the_error(demo: Any) -> None:
    status, trace_id = _request(demo.port, "GET", "/api/stream", headers=_jwt("bob"))
    assert status == 200  # headers were sent before the generator failed
    event = _one_event(demo, trace_id)
    assert event["error_type"] == "ConnectionAbortedError"
    assert event["status_code"] == 200
    assert event["user_id"] == "bob"
    assert 0 < event["response_size"] < 100


def test_client_disconnecting_mid_response_is_one_event_marked_aborted(demo: Any) -> None:
    trace_id = os.urandom(16).hex()
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as sock:
        sock.sendall(
            (
                "GET /api/slow-stream HTTP/1.1\r\nHost: x\r\n"
                f"traceparent: 00-{trace_id}-{os.urandom(8).hex()}-01\r\n"
                f"Authorization: {_jwt('carol')['Authorization']}\r\n\r\n"
            ).encode()
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    rows = demo.events(1, timeout=15)
    assert len(rows) == 1
    event = rows[0]
    assert event["trace_id"] == trace_id
    assert event["user_id"] == "carol"
    assert event["attributes"].get(ev.CLIENT_ABORTED) == "true"
    assert event["response_size"] < 200 * 50 * 9  # the whole body was never sent


def test_basic_auth_user_and_anonymous_requests(demo: Any) -> None:
    token = base64.b64encode(b"basil:basil-password").decode()
    _, basic_trace = _request(demo.port, "GET", "/api/items", headers={"Authorization": "Basic " + token})
    _, anon_trace = _request(demo.port, "GET", "/api/items")
    rows = demo.events(2)
    assert {r["trace_id"]: r["user_id"] for r in rows} == {basic_trace: "basil", anon_trace: ""}


def test_sequence_numbers_follow_request_start_order_without_gaps(demo: Any) -> None:
    traces = [_request(demo.port, "GET", f"/api/items/{i}")[1] for i in range(1, 11)]
    rows = demo.events(10)
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert [r["trace_id"] for r in rows] == traces
    assert len({r["event_id"] for r in rows}) == 10
    assert len({r["service_instance_id"] for r in rows}) == 1


def test_user_from_flask_g_when_no_header_source_matches(live_app: Any) -> None:
    app = Flask("g-user")

    @app.before_request
    def load_user() -> None:
        g.account = "acct-42"

    @app.get("/")
    def index() -> str:
        return "ok"

    live = live_app(app, user_id_from="header:X-User,g:account")
    _, trace_id = _request(live.port, "GET", "/")
    assert _one_event(live, trace_id)["user_id"] == "acct-42"
    _, trace_id = _request(live.port, "GET", "/", headers={"X-User": "from-header"})
    assert live.events(2)[-1]["user_id"] == "from-header"


def test_events_are_complete_when_traces_are_sampled_out(live_app: Any) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    app = create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    live = live_app(app)
    status, trace_id = _request(live.port, "GET", "/api/items/3")
    assert status == 200
    event = _one_event(live, trace_id)
    assert event["span_id"] and event["route"] == "/api/items/<int:item_id>"


def test_monitored_events_carry_redacted_bodies(live_app: Any) -> None:
    live = live_app(create_app(), user_id_from="jwt:sub", monitor="user:carol", capture_body="monitored")
    body = b'{"name": "gadget", "password": "hunter2"}'
    headers = {"Content-Type": "application/json"}
    _request(live.port, "POST", "/api/items", headers={**headers, **_jwt("carol")}, body=body)
    _request(live.port, "POST", "/api/items", headers={**headers, **_jwt("dave")}, body=body)
    carol, dave = live.events(2)
    assert carol["monitored"] and not dave["monitored"]
    assert '"name":"gadget"' in carol["request_body"] and "hunter2" not in carol["request_body"]
    assert '"id":' in carol["response_body"]
    assert dave["request_body"] == "" and dave["response_body"] == ""


def test_a_failure_inside_usagelog_never_reaches_the_request(
    live_app: Any, monkeypatch: Any, caplog: Any
) -> None:
    live = live_app(create_app())

    def broken_finish(exchange: Any) -> None:
        raise RuntimeError("usagelog bug")

    def broken_begin() -> Any:
        raise RuntimeError("usagelog bug at start")

    monkeypatch.setattr(live.runtime, "next_seq", broken_begin)
    with caplog.at_level(logging.ERROR, logger="usagelog"):
        status, _ = _request(live.port, "GET", "/api/items/1")
    assert status == 200
    assert "capture failed" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(live.runtime, "record", broken_finish)
    with caplog.at_level(logging.ERROR, logger="usagelog"):
        status, _ = _request(live.port, "GET", "/api/items/1")
        deadline = time.monotonic() + 5  # the server finishes the exchange after answering
        while "could not record" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert status == 200
    assert "could not record" in caplog.text


def test_disabled_by_environment_records_nothing(live_app: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("USAGELOG_ENABLED", "false")
    live = live_app(create_app())
    assert _request(live.port, "GET", "/api/items/1")[0] == 200
    # A captured request takes its sequence number before the app runs: none was taken.
    assert live.runtime.sequence.last == 0 and live.runtime.recorder.recorded == 0
    assert live.events(0, timeout=0.1) == []


def test_uninstrument_app_gives_the_app_back(live_app: Any) -> None:
    from usagelog.instrumentation import uninstrument_app

    app = create_app()
    original = app.wsgi_app
    live = live_app(app)
    assert _request(live.port, "GET", "/api/items/1")[0] == 200
    assert len(live.events(1)) == 1
    uninstrument_app(app)
    assert app.wsgi_app == original  # its own wsgi_app, unwrapped (bound methods compare equal)
    assert _request(live.port, "GET", "/api/items/2")[0] == 200
    # Nothing took a sequence number: the request was not captured at all.
    assert live.runtime.sequence.last == 1
    assert len(live.events(1)) == 1


def test_capturing_bodies_leaves_no_reference_cycle_for_the_garbage_collector() -> None:
    """An exchange with its body tee is freed when the last reference goes, as a request without
    bodies is: no cycle for the collector to find (and pay for) on every request."""
    import gc
    import io

    from usagelog.instrumentation.capture import InputTee, UsageMiddleware
    from usagelog.instrumentation.exchange import Exchange

    class Sink:
        active, capture_bodies, body_limit = True, True, 1024
        header_keys: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.recorded: list[Exchange] = []

        def next_seq(self) -> int:
            return 1

        def record(self, exchange: Exchange) -> None:
            self.recorded.append(exchange)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    sink = Sink()
    middleware = UsageMiddleware(app, sink)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_LENGTH": "9",
        "wsgi.input": io.BytesIO(b'{"a": 1}\n'),
    }
    gc.collect()
    gc.disable()
    try:
        response = middleware(environ, lambda status, headers, exc_info=None: None)
        assert b"".join(response) == b'{"a": 1}\n'
        response.close()  # type: ignore[attr-defined]
        assert bytes(sink.recorded[0].request_body or b"") == b'{"a": 1}\n'
        del response, environ
        sink.recorded.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # type(), not isinstance(): the garbage may hold other tests' dead weak proxies, which
        # isinstance() would dereference.
        cyclic = [o for o in gc.garbage if type(o) in (Exchange, InputTee)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []


class _ListSink:
    """What capture needs of a runtime, keeping the exchanges it is handed."""

    active, capture_bodies, body_limit = True, False, 1024
    header_keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.recorded: list[Any] = []
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, exchange: Any) -> None:
        self.recorded.append(exchange)


@pytest.mark.parametrize("bodies", [False, True], ids=["bodies-off", "bodies-on"])
def test_the_servers_side_of_wsgi_each_way_gives_one_event_with_its_size(bodies: bool) -> None:
    """Fully read and closed, closed early, never closed, and the legacy ``write`` callable:
    exactly one exchange each, with the bytes that went out and whether the client was gone."""
    import io

    from usagelog.instrumentation.capture import UsageMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/write":
            write(b"abc")
            return []
        return iter([b"12345", b"678"])

    sink = _ListSink()
    sink.capture_bodies = bodies
    middleware = UsageMiddleware(app, sink)

    def call(path: str) -> Any:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO(b"")}
        return middleware(environ, lambda status, headers, exc_info=None: lambda data: None)

    response = call("/read")
    assert b"".join(response) == b"12345678"
    response.close()
    response = call("/early")
    early = iter(response)
    assert next(early) == b"12345"
    response.close()  # the client went away after the first chunk
    del early
    response = call("/never-closed")
    assert b"".join(response) == b"12345678"
    del response  # a server that never calls close()
    response = call("/write")
    assert list(response) == []
    response.close()
    by_path = {x.path: x for x in sink.recorded}
    assert sorted(by_path) == ["/early", "/never-closed", "/read", "/write"]
    assert len(sink.recorded) == 4
    assert (by_path["/read"].response_size, by_path["/read"].client_aborted) == (8, False)
    assert (by_path["/never-closed"].response_size, by_path["/never-closed"].client_aborted) == (8, False)
    assert (by_path["/write"].response_size, by_path["/write"].client_aborted) == (3, False)
    assert (by_path["/early"].response_size, by_path["/early"].client_aborted) == (5, True)
    assert all(x.error_type == "" for x in sink.recorded)
    if bodies:
        assert b"".join(by_path["/read"].response_body) == b"12345678"
