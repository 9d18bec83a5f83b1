"""The offline dashboards in a real browser: Debian's chromium, headless, driven by Playwright.

Every dashboard is opened as ``usagelog dashboards serve`` serves it and as ``usagelog report``
writes it, with every request that is not to the local server (or, for a report, every request
at all) aborted and recorded: the pages must draw all their panels from what they carry, with
no CDN. Screenshots are decoded here (a small PNG reader on zlib and struct) to prove that
pixels were drawn, not only DOM nodes made.
"""

from __future__ import annotations

import datetime as dt
import html.parser
import http.client
import json
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.dashboards.conftest import HistoryStore
from usagelog.dashboards.model import load_dashboards
from usagelog.dashboards.render import MAX_TABLE_ROWS, plotly_bundle
from usagelog.dashboards.runner import resolve, run_dashboard
from usagelog.dashboards.serve import DashboardServer, serve
from usagelog.ingest.store import Store, connect

pytestmark = pytest.mark.slow  # a browser process, an HTTP server and CLI subprocesses

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: tests may run as root in a container. The rest keeps chromium from phoning home,
# so the only requests the route handler sees are the page's own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted(path.stem for path in (GRAFANA / "dashboards").glob("*.json"))

# A whole day of the generated history (it ends 2026-11-23, before the machine's "now"), with
# the dead-letter burst and the sequence gap inside it: every panel of every dashboard has data.
DAY = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}
# Six night hours: alice sends more than the Timeline's 500 rows, bob fewer, so bob's page
# must list every one of his requests.
NIGHT = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T06:00:00Z"}
CHARTS = ("timeseries", "barchart", "piechart")
PAGE_BACKGROUND = (0x11, 0x12, 0x17)  # --bg in dashboard.css
PANEL_BACKGROUND = (0x18, 0x1B, 0x1F)  # --panel
FIRST_SERIES = (0x7E, 0xB2, 0x6D)  # PALETTE[0] in dashboard.js: a solid bar is exactly this


# --- a PNG reader: enough of the format for chromium's screenshots --------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    pixels: list[tuple[int, int, int]]

    def colors(self) -> Counter[tuple[int, int, int]]:
        return Counter(self.pixels)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    """8-bit RGB or RGBA, not interlaced (what chromium writes); alpha is dropped."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, compressed, header = 8, bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    assert header is not None, "PNG without IHDR"
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(bytes(compressed))
    stride = width * bpp
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind_of_filter, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind_of_filter == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_of_filter == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, previous, strict=True))
        elif kind_of_filter == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind_of_filter == 4:  # Paeth
            for i in range(stride):
                left, upper_left = (line[i - bpp], previous[i - bpp]) if i >= bpp else (0, 0)
                line[i] = (line[i] + _paeth(left, previous[i], upper_left)) & 255
        pixels.extend(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        previous = line
    return Image(width, height, pixels)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(history_store: HistoryStore) -> Iterator[DashboardServer]:
    """The dashboards server on a free port (default host), in a thread of this process."""
    running = serve(history_store.url, "usagelog", port=0, grafana=GRAFANA)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=10)


def base_url(server: DashboardServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@dataclass
class Visit:
    """A page with every request outside ``allowed`` aborted and recorded, and its script errors."""

    page: Page
    aborted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


Allowed = Callable[[str], bool]
Opener = Callable[[Allowed], Visit]


@pytest.fixture
def visit(browser: Browser) -> Iterator[Opener]:
    """Factory: ``visit(allowed)`` opens a fresh page that may only fetch URLs ``allowed`` accepts."""
    contexts = []

    def open_page(allowed: Allowed) -> Visit:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        seen = Visit(context.new_page())

        def guard(route: Route) -> None:
            if allowed(route.request.url):
                route.continue_()
            else:
                seen.aborted.append(route.request.url)
                route.abort()

        seen.page.route("**/*", guard)
        seen.page.on("pageerror", lambda error: seen.errors.append(str(error)))
        seen.page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        return seen

    yield open_page
    for context in contexts:
        context.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", *args], capture_output=True, text=True, timeout=120
    )


def report(
    history_store: HistoryStore, dashboard: str, out: Path, *extra: str, grafana: Path = GRAFANA
) -> Path:
    """``usagelog report`` of the day in a subprocess: the file it wrote."""
    done = _cli(
        "report",
        "--dashboard",
        dashboard,
        "--clickhouse",
        history_store.url,
        "--since",
        DAY["from"],
        "--until",
        DAY["to"],
        "--out",
        str(out),
        "--grafana-dir",
        str(grafana),
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return out


# --- what every drawn dashboard must show ----------------------------------------------------


def json_panels(grafana: Path, name: str) -> list[dict[str, Any]]:
    """The dashboard file's panels as Grafana sees them (a collapsed row keeps its panels inside)."""

    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            if item.get("type") == "row":
                yield from walk(item.get("panels", []))
            else:
                yield item

    data = json.loads((grafana / "dashboards" / f"{name}.json").read_text())
    return list(walk(data.get("panels", [])))


def epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def wait_ready(page: Page) -> None:
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)


def table_rows(page: Page, panel_id: int) -> list[list[str]]:
    cells: list[list[str]] = page.eval_on_selector_all(
        f"section.panel[data-panel-id='{panel_id}'] table.data tbody tr",
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))",
    )
    return cells


def stored_rows(
    store: Store, name: str, span: dict[str, str], chosen: dict[str, list[str]] | None = None
) -> dict[int, int]:
    """Rows each panel's queries return from the store: what the page has to show."""
    resolved = resolve(store, load_dashboards(GRAFANA)[name], span["from"], span["to"], chosen or {})
    return {r.panel.id: sum(len(f.rows) for f in r.frames) for r in run_dashboard(store, resolved)}


def check_dashboard(page: Page, name: str, rows: dict[int, int], span: dict[str, str]) -> None:
    """Every panel of the file is on the page, drawn, without an error, showing its ``rows``;
    time axes span the dashboard's range ``span``."""
    wait_ready(page)
    expected = json_panels(GRAFANA, name)
    shown = page.eval_on_selector_all(
        "section.panel",
        "ps => ps.map(p => [Number(p.dataset.panelId), p.dataset.type, p.dataset.kind,"
        " p.querySelector('h3').textContent, p.dataset.drawn || ''])",
    )
    assert sorted((p[0], p[1], p[3]) for p in shown) == sorted(
        (int(p["id"]), p["type"], p["title"]) for p in expected
    )
    assert [p[3] for p in shown if p[4] != "1"] == [], "panels not drawn"
    errors = page.locator(".panel-error").all_text_contents()
    assert errors == [], f"{name}: {errors}"
    # The range was picked for this: a panel without data would check nothing below.
    assert [title for panel_id, _, _, title, _ in shown if not rows[panel_id]] == []
    for panel_id, panel_type, kind, title, _ in shown:
        box = page.locator(f"section.panel[data-panel-id='{panel_id}']")
        if panel_type in CHARTS:
            assert kind in ("timeseries", "bar", "pie"), f"{name}/{title}: {kind}"
            assert box.locator("svg.main-svg").count() > 0, f"{name}/{title}: no chart"
            # Plotly makes one g.trace per drawn series; an empty plot has the svg but no trace.
            assert box.locator("g.trace").count() > 0, f"{name}/{title}: chart without data"
            if kind == "timeseries":
                shown_range = box.locator(".chart").evaluate(
                    "c => c._fullLayout.xaxis.range.map(c._fullLayout.xaxis.r2l)"
                )
                assert shown_range == [epoch_ms(span["from"]), epoch_ms(span["to"])], f"{name}/{title}"
        elif panel_type == "stat":
            text = box.locator(".stat").inner_text().strip()
            assert text not in ("", "—"), f"{name}/{title}: stat shows {text!r}"
        elif panel_type == "table":
            assert kind == "table"
            assert len(table_rows(page, panel_id)) == min(rows[panel_id], MAX_TABLE_ROWS), f"{name}/{title}"


# Plotly keeps what it drew on the chart's element: charts whose first series is drawn as solid
# areas wide enough to count its pixels (pies, category bars, time bars at up to 24 times).
SOLID_CHARTS = """ps => ps.filter(p => {
    const chart = p.querySelector('.chart');
    const solid = chart && chart.data ? chart.data.filter(t => t.type === 'bar' || t.type === 'pie') : [];
    if (!solid.length || solid.length !== chart.data.length) return false;
    if (solid[0].type === 'pie') return true;
    return new Set(solid.flatMap(t => t.orientation === 'h' ? t.y : t.x)).size <= 24;
}).map(p => p.dataset.panelId)"""


def check_pixels(page: Page, name: str) -> None:
    """A full-page screenshot: the dark theme (also a check of the decoder) with much drawn on
    it; and every solid chart shows its first series' color."""
    image = decode_png(page.screenshot(full_page=True))
    colors = image.colors()
    dominant, count = colors.most_common(1)[0]
    assert dominant in (PAGE_BACKGROUND, PANEL_BACKGROUND), f"{name}: dominant color {dominant}"
    assert count < 0.9 * len(image.pixels), f"{name}: the page is mostly one color"
    assert len(colors) > 300, f"{name}: only {len(colors)} colors on the page"
    solid = page.eval_on_selector_all("section.panel", SOLID_CHARTS)
    categorical = page.locator("section.panel[data-kind='bar'], section.panel[data-kind='pie']")
    assert len(solid) >= categorical.count(), f"{name}: bar or pie charts left unchecked"
    for panel_id in solid:
        chart = decode_png(page.locator(f"section.panel[data-panel-id='{panel_id}'] .chart").screenshot())
        assert chart.colors()[FIRST_SERIES] > 50, f"{name}: panel {panel_id} shows no bar or slice"


# --- the served pages ------------------------------------------------------------------------


def only_server(server: DashboardServer) -> Allowed:
    prefix = base_url(server) + "/"
    return lambda url: url.startswith(prefix)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_served_dashboard_draws_every_panel_without_network(
    name: str, server: DashboardServer, visit: Opener
) -> None:
    with server.open_store() as store:  # the server's turn on the chDB engine: it is idle now
        rows = stored_rows(store, name, DAY)
    seen = visit(only_server(server))
    response = seen.page.goto(f"{base_url(server)}/d/{name}/{name}?{urlencode(DAY)}")
    assert response is not None and response.status == 200
    check_dashboard(seen.page, name, rows, DAY)
    check_pixels(seen.page, name)
    assert seen.aborted == []
    assert seen.errors == []
    # Controls work in served mode; the range picked stays in the form.
    assert seen.page.locator("select:disabled, input:disabled").count() == 0
    assert seen.page.locator("select[name='from']").input_value() == DAY["from"]


def test_choosing_another_consumer_reloads_with_their_timeline(
    server: DashboardServer, visit: Opener
) -> None:
    seen = visit(only_server(server))
    page = seen.page
    page.goto(f"{base_url(server)}/d/consumer/consumer?{urlencode({**NIGHT, 'var-consumer': 'alice'})}")
    wait_ready(page)
    timeline = next(int(p["id"]) for p in json_panels(GRAFANA, "consumer") if p["title"] == "Timeline")
    alice = table_rows(page, timeline)
    assert len(alice) == 500  # the panel's LIMIT: alice sends more than that in these hours

    with page.expect_navigation():
        page.select_option("select[data-variable='consumer']", "bob")  # the form submits on change
    wait_ready(page)
    query = parse_qs(urlparse(page.url).query)
    assert query["var-consumer"] == ["bob"]
    assert query["from"] == [NIGHT["from"]] and query["to"] == [NIGHT["to"]]  # the range is kept
    assert page.locator("select[data-variable='consumer']").input_value() == "bob"
    bob = table_rows(page, timeline)
    assert seen.aborted == [] and seen.errors == []

    # bob's requests from the store itself, taking the server's turn on the chDB engine.
    with server.open_store() as store:
        stored = store.client.query(
            "SELECT trace_id FROM usagelog.usage_events FINAL WHERE user_id = 'bob'"
            " AND timestamp >= parseDateTimeBestEffort({start:String})"
            " AND timestamp <= parseDateTimeBestEffort({end:String})"
            " ORDER BY timestamp",
            parameters={"start": NIGHT["from"], "end": NIGHT["to"]},
        ).result_rows
    header = page.eval_on_selector_all(
        f"section.panel[data-panel-id='{timeline}'] table.data thead th", "ths => ths.map(t => t.textContent)"
    )
    trace = header.index("trace ID")
    assert 0 < len(stored) < 500
    assert [row[trace] for row in bob] == [row[0] for row in stored]
    assert {row[trace] for row in bob}.isdisjoint(row[trace] for row in alice)
    requests = next(int(p["id"]) for p in json_panels(GRAFANA, "consumer") if p["title"] == "Requests")
    stat = page.locator(f"section.panel[data-panel-id='{requests}'] .stat").inner_text()
    assert stat == str(len(stored))


def column(page: Page, panel_id: int, name: str) -> list[str]:
    header: list[str] = page.eval_on_selector_all(
        f"section.panel[data-panel-id='{panel_id}'] table.data thead th", "ths => ths.map(t => t.textContent)"
    )
    return [row[header.index(name)] for row in table_rows(page, panel_id)]


def test_picking_a_value_while_all_is_selected_filters_by_that_value(
    server: DashboardServer, visit: Opener
) -> None:
    seen = visit(only_server(server))
    page = seen.page
    page.goto(f"{base_url(server)}/d/overview/overview?{urlencode(DAY)}")
    wait_ready(page)
    instances = next(
        int(p["id"]) for p in json_panels(GRAFANA, "overview") if p["title"] == "Requests by instance"
    )
    assert set(column(page, instances, "service")) == {"orders-api", "billing-api"}
    service = "select[data-variable='service']"
    assert page.locator(service).evaluate("s => Array.from(s.selectedOptions, o => o.value)") == ["$__all"]

    with page.expect_navigation() as navigation:
        # What a ctrl-click on billing-api gives the multi-select: All and billing-api.
        page.select_option(service, ["$__all", "billing-api"])
    response = navigation.value
    assert response is not None and response.status == 200  # All with a value is refused (400)
    assert parse_qs(urlparse(page.url).query)["var-service"] == ["billing-api"]
    wait_ready(page)
    assert set(column(page, instances, "service")) == {"billing-api"}
    assert page.locator(".panel-error").count() == 0
    assert seen.aborted == [] and seen.errors == []


def test_choosing_a_preset_range_after_a_custom_one_ends_it_now(
    server: DashboardServer, visit: Opener
) -> None:
    seen = visit(only_server(server))
    page = seen.page
    page.goto(f"{base_url(server)}/d/pipeline/pipeline?{urlencode(DAY)}")
    wait_ready(page)
    with page.expect_navigation() as navigation:
        page.select_option("select[name='from']", "now-7d")
    response = navigation.value
    # Keeping to=2026-11-21 would make "the last 7 days" end before they start: a 400 page.
    assert response is not None and response.status == 200
    query = parse_qs(urlparse(page.url).query)
    assert query["from"] == ["now-7d"] and query["to"] == ["now"]
    wait_ready(page)
    assert page.locator("section.panel:not([data-drawn='1']), .panel-error").count() == 0
    assert page.locator("select[name='from']").input_value() == "now-7d"
    assert seen.aborted == [] and seen.errors == []


# --- the report --------------------------------------------------------------------------------


class _ResourceRefs(html.parser.HTMLParser):
    """URLs the document itself would load: script/img/iframe sources, stylesheet links, CSS urls."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "data", "poster"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and ("url(" in data or "@import" in data):
            self.urls.append(data)


def only_file(path: Path) -> Allowed:
    own = path.resolve().as_uri()
    return lambda url: url == own


@pytest.mark.parametrize("name", DASHBOARDS)
def test_report_draws_every_panel_offline(
    name: str, history_store: HistoryStore, tmp_path: Path, visit: Opener
) -> None:
    chosen = {"consumer": ["carol"]} if name == "consumer" else {}
    with connect(history_store.url, migrate_schema=False) as store:  # closed before the CLI opens it
        rows = stored_rows(store, name, DAY, chosen)
    extra = [f"--var={variable}={value}" for variable, values in chosen.items() for value in values]
    out = report(history_store, name, tmp_path / f"{name}.html", *extra)
    text = out.read_text()
    refs = _ResourceRefs()
    refs.feed(text)
    assert refs.urls == []  # Plotly, style and data are inline: nothing to fetch, no CDN

    seen = visit(only_file(out))  # not even the local server: all network is refused
    seen.page.goto(out.resolve().as_uri())
    check_dashboard(seen.page, name, rows, DAY)
    check_pixels(seen.page, name)
    assert seen.aborted == []
    assert seen.errors == []
    # A report is a snapshot: its controls show the choices but cannot change them.
    controls = seen.page.locator("form.controls select, form.controls input")
    assert controls.count() > 0
    assert seen.page.locator("form.controls select:enabled, form.controls input:enabled").count() == 0
    if name == "consumer":
        assert seen.page.locator("select[data-variable='consumer']").input_value() == "carol"


def _panel(panel_id: int, kind: str, title: str, x: int, y: int, sql: str) -> dict[str, Any]:
    datasource = {"type": "grafana-clickhouse-datasource", "uid": "usagelog-clickhouse"}
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "datasource": datasource,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "targets": [{"refId": "A", "datasource": datasource, "format": 1, "rawSql": sql}],
    }


@pytest.fixture
def edited_grafana(tmp_path: Path) -> Path:
    """A copy of grafana/ whose pipeline dashboard has, below its own panels, a panel type the
    page does not draw, a panel whose SQL the engine refuses, and two panels without data."""
    copy = tmp_path / "grafana"
    shutil.copytree(GRAFANA, copy)
    path = copy / "dashboards" / "pipeline.json"
    data = json.loads(path.read_text())
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in data["panels"])
    per_route = (
        "SELECT route, count() AS requests FROM usagelog.usage_events"
        " WHERE $__timeFilter(timestamp) GROUP BY route ORDER BY route"
    )
    nothing = "SELECT timestamp AS time, seq FROM usagelog.usage_events WHERE $__timeFilter(timestamp) AND 0"
    data["panels"] += [
        _panel(901, "xychart", "Requests per route (xy)", 0, bottom, per_route),
        _panel(902, "table", "Broken query", 12, bottom, "SELECT no_such_column FROM usagelog.usage_events"),
        _panel(903, "timeseries", "Nothing over time", 0, bottom + 8, nothing),
        _panel(904, "table", "Nothing in a table", 12, bottom + 8, nothing),
    ]
    path.write_text(json.dumps(data, indent=2))
    return copy


def test_unknown_panels_failed_queries_and_empty_results_are_shown_not_dropped(
    history_store: HistoryStore, edited_grafana: Path, tmp_path: Path, visit: Opener
) -> None:
    out = report(history_store, "pipeline", tmp_path / "edited.html", grafana=edited_grafana)
    seen = visit(only_file(out))
    page = seen.page
    page.goto(out.resolve().as_uri())
    wait_ready(page)

    unknown = page.locator("section.panel[data-panel-id='901']")
    assert unknown.get_attribute("data-type") == "xychart"
    assert unknown.get_attribute("data-kind") == "table"
    assert unknown.get_attribute("data-drawn") == "1"
    assert "'xychart' is not drawn offline" in unknown.locator(".panel-note").inner_text()
    routes = [row[0] for row in table_rows(page, 901)]
    assert "/v1/orders" in routes and routes == sorted(routes)

    broken = page.locator("section.panel[data-panel-id='902']")
    assert broken.get_attribute("data-kind") == "error"
    message = broken.locator(".panel-error").inner_text()
    assert "no_such_column" in message and "UNKNOWN_IDENTIFIER" in message  # the engine's words
    assert page.locator(".panel-error").count() == 1

    # No rows: the panel stays, says so once, and draws no empty chart or bare header.
    for panel_id in (903, 904):
        empty = page.locator(f"section.panel[data-panel-id='{panel_id}']")
        assert empty.get_attribute("data-drawn") == "1"
        assert empty.inner_text().count("No data in this time range.") == 1
        assert empty.locator("svg.main-svg").count() == 0
    assert table_rows(page, 904) == []

    # Everything else is drawn as usual: only the broken panel shows an error.
    drawn = page.eval_on_selector_all("section.panel[data-drawn='1']", "ps => ps.length")
    assert drawn == len(json_panels(edited_grafana, "pipeline")) == len(json_panels(GRAFANA, "pipeline")) + 4
    assert page.locator("section.panel[data-type='timeseries'] g.trace").count() > 0
    assert seen.aborted == [] and seen.errors == []


# --- the server's own safety -----------------------------------------------------------------


def _request(server: DashboardServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=30)
    try:
        connection.request(method, path, body=b"x=1" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_server_listens_on_loopback_by_default(server: DashboardServer) -> None:
    assert server.server_address[0] == "127.0.0.1"  # the fixture passes no host


def test_variable_value_outside_its_options_is_refused(server: DashboardServer) -> None:
    injected = quote("x' OR 1=1 --")
    status, _, body = _request(
        server, "GET", f"/d/consumer/consumer?{urlencode(DAY)}&var-consumer={injected}"
    )
    assert status == 400
    assert b"is not one of its values" in body
    status, _, _ = _request(server, "GET", f"/d/consumer/consumer?{urlencode(DAY)}&var-consumer=bob")
    assert status == 200  # the same URL with a real consumer renders


def test_server_only_reads(server: DashboardServer) -> None:
    status, _, _ = _request(server, "POST", f"/d/consumer/consumer?{urlencode(DAY)}")
    assert status in (405, 501)


def test_server_serves_the_plotly_bundle(server: DashboardServer) -> None:
    status, headers, body = _request(server, "GET", "/static/plotly.min.js")
    assert status == 200
    assert "javascript" in headers["Content-Type"]
    assert body == plotly_bundle().read_bytes()
