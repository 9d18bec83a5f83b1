"""``usagelog dashboards serve`` and ``usagelog report``: the Grafana dashboards without Grafana.

The server answers Grafana's own dashboard URLs (``/d/<uid>/<name>?from=now-24h&to=now&var-x=v``),
so the links inside the dashboards work here too. It only reads: every page opens the store
briefly (so ingest can take turns on a chDB directory) with the engine's ``readonly = 1``
(:mod:`usagelog.ingest.readonly`: no change to any table or setting, no table function reading
files or the network), and the only SQL it runs is the dashboards' own, with variable values
limited to each variable's options. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from usagelog.ingest.readonly import ReadOnlyStore
from usagelog.ingest.redact import redact
from usagelog.ingest.store import Store, connect

from .model import Dashboard, DashboardError, load_dashboards
from .render import plotly_bundle, render_page
from .runner import resolve, run_dashboard

_logger = logging.getLogger("usagelog.dashboards")

OpenStore = Callable[[], Any]
__all__ = ["DashboardServer", "ReadOnlyStore", "chosen_variables", "render_dashboard", "serve"]


def chosen_variables(query: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``var-name=value`` parameters (repeated for several values), as Grafana's URLs carry them."""
    return {key[len("var-") :]: list(values) for key, values in query.items() if key.startswith("var-")}


def render_dashboard(
    store: Store,
    dashboard: Dashboard,
    *,
    served: bool,
    dashboards: Sequence[Dashboard] = (),
    time_from: str | None = None,
    time_to: str | None = None,
    chosen: Mapping[str, Sequence[str]] | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Resolve, run and render one dashboard: the page both the server and the report produce."""
    reader = ReadOnlyStore(store)
    resolved = resolve(reader, dashboard, time_from, time_to, chosen, now=now)
    results = run_dashboard(reader, resolved)
    return render_page(
        results,
        resolved,
        served=served,
        dashboards=dashboards,
        generated_at=now,
        time_from=time_from or dashboard.time_from,
        time_to=time_to or dashboard.time_to,
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    server: DashboardServer

    def log_message(self, format: str, *args: Any) -> None:
        _logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/":
                first = next(iter(self.server.dashboards().values()))
                self._redirect(f"/d/{first.uid}/{first.name}")
            elif path == "/static/plotly.min.js":
                self._send(200, "application/javascript", self.server.plotly(), cache=True)
            elif path == "/health":
                self._send(200, "text/plain", b"ok\n")
            elif path.startswith("/d/"):
                self._dashboard(path, parse_qs(url.query))
            else:
                self._send(404, "text/plain", b"not found\n")
        except BrokenPipeError:
            pass

    def _dashboard(self, path: str, query: dict[str, list[str]]) -> None:
        parts = path.split("/")
        uid = parts[2] if len(parts) > 2 else ""
        dashboards = self.server.dashboards()
        dashboard = next((d for d in dashboards.values() if uid in (d.uid, d.name)), None)
        if dashboard is None:
            self._send(404, "text/plain", f"no dashboard {uid!r}\n".encode())
            return
        try:
            with self.server.open_store() as store:
                page = render_dashboard(
                    store,
                    dashboard,
                    served=True,
                    dashboards=list(dashboards.values()),
                    time_from=query["from"][0] if query.get("from") else None,
                    time_to=query["to"][0] if query.get("to") else None,
                    chosen=chosen_variables(query),
                )
        except (ValueError, DashboardError) as exc:
            self._send(400, "text/plain; charset=utf-8", f"{redact(str(exc))}\n".encode())
            return
        except Exception as exc:
            _logger.exception("rendering %s failed", dashboard.name)
            self._send(500, "text/plain; charset=utf-8", f"usagelog: {redact(str(exc))}\n".encode())
            return
        self._send(200, "text/html; charset=utf-8", page.encode())

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, content_type: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'none'",
        )
        self.end_headers()
        self.wfile.write(body)


class DashboardServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], url: str, database: str, grafana: Path | None = None
    ) -> None:
        super().__init__(address, _Handler)
        self.url = url
        self.database = database
        self.grafana = grafana
        self._plotly: bytes | None = None
        # chDB admits one engine per process: pages are rendered one at a time.
        self._turn = threading.Lock()

    def dashboards(self) -> dict[str, Dashboard]:
        # Read on every request, so edits to the JSON files show on reload.
        return load_dashboards(self.grafana)

    def plotly(self) -> bytes:
        if self._plotly is None:
            self._plotly = plotly_bundle().read_bytes()
        return self._plotly

    @contextmanager
    def open_store(self) -> Iterator[Store]:
        with self._turn, connect(self.url, database=self.database, migrate_schema=False) as store:
            yield store


def serve(
    url: str, database: str, host: str = "127.0.0.1", port: int = 3001, grafana: Path | None = None
) -> DashboardServer:
    """A server ready to ``serve_forever()`` (port 0 picks a free one: see ``server_address``)."""
    load_dashboards(grafana)  # fail at start, not at the first request, when the folder is missing
    return DashboardServer((host, port), url, database, grafana)
