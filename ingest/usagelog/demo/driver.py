"""Simulated users: each sends a known sequence of requests, alternating between API instances.

Every request carries a fresh W3C ``traceparent``, so the stored events can be checked against
the trace IDs the client propagated. What each user sent is returned in order, with the
status the client saw (None when the client itself walked away).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
from dataclasses import dataclass, field

from .app import make_jwt

CANARY = "canary-7f3a9c"


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    route: str
    expected_status: int
    error_type: str = ""
    body: bytes | None = None
    content_type: str = ""
    disconnect: bool = False


# Every outcome the capture must handle, in the order a user goes through them.
SCRIPT: tuple[Step, ...] = (
    Step("GET", "/api/items?limit=3", "/api/items", 200),
    Step("GET", "/api/items/7", "/api/items/<int:item_id>", 200),
    Step("GET", "/api/items/999", "/api/items/<int:item_id>", 404),
    Step(
        "POST", "/api/items", "/api/items", 201, body=b'{"name": "widget"}', content_type="application/json"
    ),
    Step("GET", "/api/orders/3", "/api/orders/<int:order_id>", 403),
    Step("GET", "/api/orders/4", "/api/orders/<int:order_id>", 200),
    Step("GET", "/api/no-such-route", "", 404),
    Step("DELETE", "/api/items/7", "", 405),
    Step(
        "POST",
        "/api/items",
        "/api/items",
        413,
        body=b'{"name": "' + b"x" * 70_000 + b'"}',
        content_type="application/json",
    ),
    Step("GET", "/api/crash", "/api/crash", 500, "ValueError"),
    Step("GET", "/api/guarded", "/api/guarded", 500, "usagelog.demo.app.GuardError"),
    Step("GET", "/api/teapot", "/api/teapot", 500, "LookupError"),
    Step("GET", "/api/stream", "/api/stream", 200, "ConnectionAbortedError"),
    Step("GET", "/api/slow-stream", "/api/slow-stream", 200, disconnect=True),
    Step("GET", "/admin/stats", "/admin/stats", 200),
    Step(
        "POST",
        f"/api/login?api_key={CANARY}-query",
        "/api/login",
        200,
        body=json.dumps({"username": "someone", "password": f"{CANARY}-password"}).encode(),
        content_type="application/json",
    ),
)


@dataclass
class Sent:
    user: str
    index: int
    instance: int
    method: str
    path: str
    route: str
    expected_status: int
    error_type: str
    trace_id: str
    status: int | None


@dataclass
class User:
    name: str
    auth: str  # "jwt", "basic" or "none"
    sent: list[Sent] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        if self.auth == "jwt":
            return {"Authorization": "Bearer " + make_jwt({"sub": self.name})}
        if self.auth == "basic":
            token = base64.b64encode(f"{self.name}:{self.name}-password".encode()).decode()
            return {"Authorization": "Basic " + token}
        return {}


def _traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def send(port: int, step: Step, headers: dict[str, str], timeout: float = 30.0) -> int | None:
    if step.disconnect:
        _send_and_walk_away(port, step, headers)
        return None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = dict(headers)
        all_headers["Cookie"] = f"session={CANARY}-cookie"
        if step.content_type:
            all_headers["Content-Type"] = step.content_type
        conn.request(step.method, step.path, body=step.body, headers=all_headers)
        response = conn.getresponse()
        try:
            response.read()
        except (http.client.IncompleteRead, ConnectionError):
            pass  # the mid-stream failure: the server cut the body short
        return response.status
    finally:
        conn.close()


def _send_and_walk_away(port: int, step: Step, headers: dict[str, str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = [f"{step.method} {step.path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.recv(256)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return None


def run_user(user: User, ports: list[int], rounds: int, offset: int = 0) -> None:
    n = 0
    for _ in range(rounds):
        for step in SCRIPT:
            instance = (n + offset) % len(ports)
            trace_id, traceparent = _traceparent()
            headers = {
                **user.headers(),
                "traceparent": traceparent,
                "User-Agent": f"usagelog-demo/{user.name}",
            }
            status = send(ports[instance], step, headers)
            user.sent.append(
                Sent(
                    user.name,
                    n,
                    instance,
                    step.method,
                    step.path,
                    step.route,
                    step.expected_status,
                    step.error_type,
                    trace_id,
                    status,
                )
            )
            n += 1


def make_users(count: int) -> list[User]:
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    users = []
    for i in range(count):
        name = names[i % len(names)] + ("" if i < len(names) else str(i))
        users.append(User(name, "jwt"))
    users.append(User("basil", "basic"))
    return users


def drive(ports: list[int], users: list[User], rounds: int) -> list[User]:
    """Run every user concurrently (each one's requests in sequence); returns the users."""
    threads = [
        threading.Thread(target=run_user, args=(user, ports, rounds, i), name=f"user-{user.name}")
        for i, user in enumerate(users)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return users
