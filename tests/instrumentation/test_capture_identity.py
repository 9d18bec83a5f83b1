"""Who and what an event records, through a real WSGI server: claimed vs. accepted user IDs,
pseudonyms, client address truncation, UTF-8 paths and bodies sent without a length."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request

from usagelog.demo.app import JWT_SECRET, create_app, make_jwt
from usagelog.instrumentation.builder import wsgi_text


def _send(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    chunked: bool = False,
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsigned_jwt(claims: dict[str, Any]) -> str:
    header = _b64(b'{"alg":"none","typ":"JWT"}')
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def forged_jwt(claims: dict[str, Any]) -> str:
    """Signed, but with a key the app does not know."""
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(b"attacker-key", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def echo_app() -> Flask:
    """An app that authenticates nothing and reads whatever body it is sent."""
    app = Flask("echo")

    @app.route("/p/<name>", methods=["GET"])
    def named(name: str) -> str:
        return name

    @app.route("/upload", methods=["POST"])
    def upload() -> dict[str, int]:
        return {"received": len(request.get_data())}

    return app


# -- 401: a claimed identity is not the event's user ------------------------------------------------


def test_forged_token_rejected_with_401_is_only_a_claimed_user(live_app: Any) -> None:
    live = live_app(create_app(), user_id_from="jwt:sub,basic")
    assert _send(live.port, "GET", "/api/items", _bearer(unsigned_jwt({"sub": "mallory"}))) == 401
    assert _send(live.port, "GET", "/api/items", _bearer(forged_jwt({"sub": "mallory"}))) == 401
    assert _send(live.port, "GET", "/api/items", _bearer(make_jwt({"sub": "alice"}))) == 200
    rows = live.events(3)
    assert [(r["status_code"], r["user_id"], r["user_id_claimed"]) for r in rows] == [
        (401, "", "mallory"),
        (401, "", "mallory"),
        (200, "alice", ""),
    ]


def test_403_keeps_the_user_the_app_authenticated(live_app: Any) -> None:
    """403 means "authenticated, not allowed": who was refused is what an audit wants."""
    live = live_app(create_app(), user_id_from="jwt:sub")
    assert _send(live.port, "GET", "/api/orders/3", _bearer(make_jwt({"sub": "alice"}))) == 403
    [row] = live.events(1)
    assert (row["user_id"], row["user_id_claimed"]) == ("alice", "")


# -- optional signature verification -------------------------------------------------------------


def test_with_a_key_configured_only_verified_tokens_give_a_user(live_app: Any) -> None:
    live = live_app(echo_app(), user_id_from="jwt:sub", jwt_key=JWT_SECRET.decode())
    for token in (make_jwt({"sub": "alice"}), forged_jwt({"sub": "mallory"}), unsigned_jwt({"sub": "eve"})):
        assert _send(live.port, "GET", "/p/x", _bearer(token)) == 200  # this app checks nothing
    rows = live.events(3)
    assert [(r["user_id"], r["user_id_claimed"]) for r in rows] == [
        ("alice", ""),
        ("", "mallory"),
        ("", "eve"),
    ]


# -- pseudonyms and client addresses --------------------------------------------------------------


def test_user_ids_are_pseudonymised_with_the_hmac_key_and_addresses_truncated(live_app: Any) -> None:
    live = live_app(
        create_app(),
        user_id_from="jwt:sub",
        user_id_hmac_key="team-key",
        client_ip="truncate",
        monitor="user:alice",
    )
    _send(live.port, "GET", "/api/items", _bearer(make_jwt({"sub": "alice"})))
    _send(live.port, "GET", "/api/items", _bearer(unsigned_jwt({"sub": "mallory"})))
    alice, mallory = live.events(2)
    expected = hmac.new(b"team-key", b"alice", hashlib.sha256).hexdigest()[:32]
    assert alice["user_id"] == expected and "alice" not in json.dumps(alice, default=str)
    assert alice["monitored"]  # monitor rules name real IDs
    assert mallory["user_id_claimed"] == hmac.new(b"team-key", b"mallory", hashlib.sha256).hexdigest()[:32]
    assert alice["client_address"] == "127.0.0.0"


def test_client_address_can_be_left_out(live_app: Any) -> None:
    live = live_app(echo_app(), client_ip="none")
    _send(live.port, "GET", "/p/x")
    assert live.events(1)[0]["client_address"] == ""


# -- paths and request sizes ----------------------------------------------------------------------


def test_percent_encoded_utf8_path_is_stored_as_the_text_flask_sees(live_app: Any) -> None:
    live = live_app(echo_app())
    _send(live.port, "GET", "/p/caf%C3%A9")
    _send(live.port, "GET", "/p/%E2%82%AC%F0%9F%98%80")
    cafe, symbols = live.events(2)
    assert cafe["path"] == "/p/café"
    assert symbols["path"] == "/p/\u20ac\U0001f600"


@pytest.mark.parametrize(
    ("environ_text", "stored"),
    [
        ("/p/caf\xc3\xa9", "/p/café"),  # UTF-8 bytes as WSGI's latin-1 string
        ("/p/\xe9t\xe9", "/p/%E9t%E9"),  # bytes that are not UTF-8: percent-encoded, never raising
        ("/p/caf\xc3", "/p/caf%C3"),  # a cut multi-byte sequence
        ("/plain", "/plain"),
        ("/p/\u20ac", "/p/\u20ac"),  # already text (not latin-1): kept
    ],
)
def test_wsgi_latin1_strings_are_decoded_back_to_utf8(environ_text: str, stored: str) -> None:
    assert wsgi_text(environ_text) == stored


def test_chunked_upload_without_content_length_counts_the_bytes_the_app_read(live_app: Any) -> None:
    live = live_app(echo_app())  # bodies off: nothing else wraps the input

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 10_000

    assert _send(live.port, "POST", "/upload", {"Content-Type": "text/plain"}, chunks(), chunked=True) == 200
    assert _send(live.port, "POST", "/upload", {"Content-Type": "text/plain"}, b"y" * 1234) == 200
    chunked, sized = live.events(2)
    assert chunked["request_size"] == 200_000
    assert sized["request_size"] == 1234
