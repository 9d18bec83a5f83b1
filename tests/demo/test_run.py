"""``usagelog demo``: the example API on three instances, simulated users, ingest, and at the end
the overview dashboard over the demo's events as one self-contained HTML report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from usagelog.dashboards.model import find_dashboard
from usagelog.dashboards.render import plotly_bundle

pytestmark = pytest.mark.slow  # three API processes under opentelemetry-instrument


def test_demo_ends_with_a_self_contained_overview_report(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable, "-m", "usagelog.cli", "demo", "--dir", str(workdir), "--users", "3",
            "--rounds", "1", "--clickhouse", "chdb://" + str(tmp_path / "chdb"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stored = re.search(r"usagelog demo: (\d+) of (\d+) requests stored\.", done.stdout)
    assert stored and stored.group(1) == stored.group(2)

    report = workdir / "report-overview.html"
    assert f"overview dashboard written to {report}\n" in done.stdout
    page = report.read_text(encoding="utf-8")
    # Self-contained: Plotly's own bundle inline (megabytes of it), nothing loaded from elsewhere.
    assert len(page) > 1_000_000
    assert plotly_bundle().read_text(encoding="utf-8")[:2000] in page
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page)
    assert tags and [t for t in tags if re.search(r"\b(?:src|href)\s*=", t)] == []

    # Every panel of the overview dashboard, drawn from the demo's events.
    data = json.loads(re.search(r'id="usagelog-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    overview = find_dashboard("overview")
    assert data["dashboard"]["uid"] == overview.uid
    titles = [p.title for p in overview.panels if p.type != "row"]
    assert [p["title"] for p in data["panels"]] == titles and "Top consumers" in titles
    requests = next(p for p in data["panels"] if p["title"] == "Requests")
    assert requests["text"] == stored.group(1)  # the report covers exactly the demo's events


def test_an_api_whose_port_was_taken_after_it_was_picked_starts_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port free when picked can be taken before the API binds it (by another program's
    outgoing connection): the API exits, and starts again on a port picked anew."""
    import socket
    import urllib.request

    from usagelog.demo import run
    from usagelog.process import free_port

    taken = socket.socket()  # bound, not listening: nothing accepts, the API cannot bind it
    taken.bind(("127.0.0.1", 0))
    picks = iter([taken.getsockname()[1]])
    monkeypatch.setattr(run, "free_port", lambda: next(picks, None) or free_port())
    try:
        [instance] = run.start_instances(tmp_path / "spool", tmp_path / "logs", count=1)
        try:
            assert instance.port != taken.getsockname()[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{instance.port}/api/items", timeout=10) as answer:
                assert answer.status == 200
        finally:
            run.stop_instances([instance])
    finally:
        taken.close()
