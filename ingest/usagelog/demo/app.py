"""An example Flask API that knows nothing of usagelog.

It has the usual ways for a request to go right and wrong, so the demo and the tests can show
one usage event for each: JSON CRUD, ``abort()``, an unhandled exception, a failing
``before_request`` hook, an error handler that itself fails, a body over ``MAX_CONTENT_LENGTH``,
a streamed response that fails mid-stream, and a slow stream a client may walk away from.
Users authenticate with an HS256 JWT (``Authorization: Bearer``) or HTTP Basic.

Run: ``python -m usagelog.demo.app --port 8000`` (under ``opentelemetry-instrument`` to log usage).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, g, jsonify, request, stream_with_context

JWT_SECRET = b"demo-secret-not-for-production"
BASIC_USERS = {"basil": "basil-password"}


class TeapotError(Exception):
    """Raised by /api/teapot; its error handler fails too."""


class GuardError(RuntimeError):
    """Raised by the before_request guard of /api/guarded."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _verify_jwt(token: str) -> dict[str, Any] | None:
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_b64(expected), signature):
            return None
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims
    except (ValueError, json.JSONDecodeError):
        return None


def create_app() -> Flask:
    app = Flask("usagelog_demo_api")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    items: dict[int, dict[str, Any]] = {i: {"id": i, "name": f"item-{i}"} for i in range(1, 21)}

    @app.before_request
    def authenticate() -> Any:
        g.user = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            claims = _verify_jwt(auth[7:])
            if claims is None:
                abort(401)
            g.user = claims.get("sub")
        elif request.authorization and request.authorization.type == "basic":
            if BASIC_USERS.get(request.authorization.username or "") != request.authorization.password:
                abort(401)
            g.user = request.authorization.username
        if request.path == "/api/guarded":
            raise GuardError("the guard refused this request")
        return None

    @app.get("/api/items")
    def list_items() -> Any:
        limit = request.args.get("limit", default=10, type=int)
        return jsonify(list(items.values())[:limit])

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Any:
        if item_id not in items:
            abort(404)
        return jsonify(items[item_id])

    @app.post("/api/items")
    def create_item() -> Any:
        data = request.get_json(force=True)
        new_id = max(items) + 1
        items[new_id] = {"id": new_id, "name": str(data.get("name", ""))}
        return jsonify(items[new_id]), 201

    @app.post("/api/login")
    def login() -> Any:
        data = request.get_json(silent=True) or request.form
        if not data.get("username") or not data.get("password"):
            abort(400)
        return jsonify({"token": make_jwt({"sub": data["username"]})})

    @app.get("/api/orders/<int:order_id>")
    def get_order(order_id: int) -> Any:
        if g.user is None:
            abort(401)
        if order_id % 2:
            abort(403)
        return jsonify({"order": order_id, "owner": g.user})

    @app.get("/api/crash")
    def crash() -> Any:
        raise ValueError("the view failed")

    @app.get("/api/guarded")
    def guarded() -> Any:
        return "unreachable"

    @app.errorhandler(TeapotError)
    def teapot_handler(exc: TeapotError) -> Any:
        raise LookupError("the error handler failed as well")

    @app.get("/api/teapot")
    def teapot() -> Any:
        raise TeapotError("teapot")

    @app.get("/api/stream")
    def broken_stream() -> Response:
        def generate() -> Iterator[str]:
            yield '{"rows": ['
            yield '{"n": 1},'
            raise ConnectionAbortedError("the upstream feed broke mid-stream")

        return Response(stream_with_context(generate()), mimetype="application/json")

    @app.get("/api/slow-stream")
    def slow_stream() -> Response:
        def generate() -> Iterator[bytes]:
            for i in range(200):
                yield (f"chunk {i}\n" * 50).encode()
                time.sleep(0.01)

        return Response(generate(), mimetype="text/plain")

    @app.get("/admin/stats")
    def admin_stats() -> Any:
        if g.user is None:
            abort(401)
        return jsonify({"items": len(items)})

    return app


def main() -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="usagelog example API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Import by name so exception classes are usagelog.demo.app.*, not __main__.*, when run with -m.
    from usagelog.demo.app import create_app as create_named_app

    server = make_server(args.host, args.port, create_named_app(), threaded=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
