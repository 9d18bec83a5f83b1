"""Canary secrets sent in an Authorization header, a cookie, a JSON password field and an
api_key query parameter appear nowhere in the spool or in ClickHouse, even with bodies captured;
nor do those in shapes a name list alone misses: Basic credentials without a colon, a
``;``-separated query, an XML body, JSON held in a JSON string, a name/value pair and an ``X-Key``."""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path

import pytest

from usagelog.demo.run import start_instances, stop_instances
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect
from usagelog.instrumentation import event as ev

pytestmark = pytest.mark.slow

CANARY = "zq-canary-5e1b"


def _send(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_canaries_reach_no_sink(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    instances = start_instances(spool, tmp_path / "logs", {"USAGELOG_CAPTURE_BODY": "all"}, count=1)
    port = instances[0].port
    try:
        statuses = [
            _send(port, "GET", "/api/items", {"Authorization": f"Bearer {CANARY}-auth"}),
            _send(port, "GET", "/api/items", {"Cookie": f"session={CANARY}-cookie; theme=dark"}),
            _send(
                port,
                "POST",
                "/api/login",
                {"Content-Type": "application/json"},
                json.dumps({"username": "u", "password": f"{CANARY}-password"}).encode(),
            ),
            _send(
                port,
                "POST",
                "/api/login",
                {"Content-Type": "application/x-www-form-urlencoded"},
                f"username=u&password={CANARY}-form".encode(),
            ),
            _send(port, "GET", f"/api/items?limit=2&api_key={CANARY}-query", {}),
            _send(port, "GET", "/api/items", {"X-Api-Key": f"{CANARY}-header"}),
        ]
        basic_key = base64.b64encode(f"sk_live_{CANARY}-basic".encode()).decode()
        shapes = [
            _send(port, "GET", "/api/items", {"Authorization": f"Basic {basic_key}"}),
            _send(port, "GET", f"/api/items?limit=2;password={CANARY}-semicolon", {}),
            _send(
                port,
                "POST",
                "/api/login",
                {"Content-Type": "application/xml"},
                f"<login><user>u</user><password>{CANARY}-xml</password></login>".encode(),
            ),
            _send(
                port,
                "POST",
                "/api/login",
                {"Content-Type": "application/json"},
                json.dumps(
                    {"username": "u", "password": "p", "data": json.dumps({"api_key": f"{CANARY}-nested"})}
                ).encode(),
            ),
            _send(
                port,
                "POST",
                "/api/items",
                {"Content-Type": "application/json"},
                json.dumps(
                    {"name": "x", "params": [{"name": "password", "value": f"{CANARY}-pair"}]}
                ).encode(),
            ),
            _send(port, "GET", "/api/items", {"X-Key": f"{CANARY}-xkey"}),
        ]
    finally:
        stop_instances(instances)
    assert statuses == [401, 200, 200, 200, 200, 200]
    assert all(status < 500 for status in shapes), shapes

    spooled = b"".join(p.read_bytes() for p in spool.iterdir())
    assert spooled and CANARY.encode() not in spooled
    assert b"theme=dark" not in spooled  # no cookie value at all, not even the harmless one

    url = "chdb://" + str(tmp_path / "chdb")
    stats = ingest_spool(str(spool), url, "usagelog")
    assert stats.inserted == 12
    with connect(url) as store:
        # Stored columns and the logical ones (ALIAS columns are not in *).
        _, rows = store.query(f"SELECT *, {', '.join(ev.COLUMNS)} FROM usagelog.usage_events")
        _, dead = store.query("SELECT * FROM usagelog.dead_letters")
    stored = repr(rows) + repr(dead)
    assert "password" in stored  # bodies really were captured: the field name is there
    assert CANARY not in stored
