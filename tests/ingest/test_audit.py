"""``usagelog audit`` is the proof of completeness: it finds every kind of loss — sequence gaps,
tail loss, counted drops, torn spool segments — says per instance how many events and where,
and exits 1 by default when it finds any, so cron or CI can run it as is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lossreports import loss_payload, loss_record
from tests.spoolfill import make_payloads, write_spool
from usagelog.ingest.pipeline import Item, Pipeline
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.spool import SpoolWriter, read_frames


def _audit(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--clickhouse", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "60"},
    )


def _spool(spool: Path, instance: str, *payloads: bytes) -> SpoolWriter:
    writer = SpoolWriter(spool, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for payload in payloads:
        writer.append(payload)
    writer.seal()
    return writer


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One store with an instance for each kind of loss, and one without any."""
    base = tmp_path_factory.mktemp("audit")
    spool, url = base / "spool", "chdb://" + str(base / "chdb")
    write_spool(spool, segments=2, per_segment=10, instance="clean")
    # seq 1-10 and 16-30: 11-15 never arrived.
    _spool(spool, "gappy", make_payloads(1, 10, "gappy")[0], make_payloads(1, 15, "gappy", first_seq=16)[0])
    # seq 1-20 stored; the process allocated up to 25 before it was killed.
    _spool(
        spool,
        "tail",
        make_payloads(1, 20, "tail")[0],
        loss_payload("tail", [loss_record("tail-1", ev.LOSS_TAIL, count=5, allocated_seq=25)]),
    )
    # 7 events dropped at the memory bound, their numbers unknown: no gap shows it.
    _spool(
        spool,
        "dropped",
        make_payloads(1, 12, "dropped")[0],
        loss_payload("dropped", [loss_record("drop-1", ev.LOSS_DROPPED, count=7, detail="queue full")]),
    )
    # Three frames of 10 events, the file cut inside the third.
    torn = _spool(spool, "torn", *make_payloads(3, 10, "torn"))
    del torn
    (segment,) = spool.glob("*-torn-*.seg")
    offsets = [f.offset for f in read_frames(segment)]
    segment.write_bytes(segment.read_bytes()[: offsets[2] + 25])
    stats = ingest_spool(str(spool), url, "usagelog")
    assert stats.inserted == 20 + 25 + 20 + 12 + 20 and stats.losses == 2 and stats.dead_letters == 1
    return {"url": url, "torn": f"{segment.name}@{offsets[2]}"}


def test_audit_of_a_store_without_loss_exits_0_and_says_so(tmp_path: Path, chdb_url: str) -> None:
    write_spool(tmp_path / "spool", segments=2, per_segment=10, instance="clean")
    ingest_spool(str(tmp_path / "spool"), chdb_url, "usagelog")
    result = _audit(chdb_url, "--format", "json")
    assert result.returncode == 0, result.stderr
    (clean,) = json.loads(result.stdout)
    assert clean["ok"] and (clean["events"], clean["lost"], clean["missing"]) == (20, 0, [])
    assert "audit: no loss (1 instances, 20 events stored)" in result.stderr


def test_audit_finds_every_kind_of_loss_per_instance_and_exits_1(lossy: dict[str, Any]) -> None:
    result = _audit(lossy["url"], "--format", "json")
    assert result.returncode == 1, result.stderr
    by = {i["instance"]: i for i in json.loads(result.stdout)}
    assert sorted(by) == ["clean", "dropped", "gappy", "tail", "torn"]
    assert by["clean"]["ok"] and by["clean"]["lost"] == 0
    gappy = by["gappy"]
    assert (gappy["ok"], gappy["events"], gappy["gaps"], gappy["lost"]) == (False, 25, 5, 5)
    assert gappy["missing"] == [[11, 15]] and gappy["missing_ranges"] == 1
    tail = by["tail"]
    assert (tail["max_seq"], tail["allocated_seq"], tail["tail_lost"], tail["lost"]) == (20, 25, 5, 5)
    assert tail["gaps"] == 0 and tail["missing"] == [[21, 25]]
    assert [(r["report_id"], r["reason"], r["count"]) for r in tail["reports"]] == [("tail-1", "tail", 5)]
    dropped = by["dropped"]
    assert (dropped["gaps"], dropped["tail_lost"], dropped["reported_lost"], dropped["lost"]) == (0, 0, 7, 7)
    assert dropped["reports"][0]["detail"] == "queue full" and "@" in dropped["reports"][0]["location"]
    torn = by["torn"]
    assert (torn["events"], torn["dead_letters"], torn["ok"]) == (20, 1, False)
    (letter,) = torn["dead_letter_list"]
    assert letter["source"] == "spool" and letter["location"] == lossy["torn"]
    assert letter["reason"].startswith("torn frame") and "bytes missing" in letter["reason"]
    assert "audit: 17 events lost, 1 dead letter in 4 of 5 instances" in result.stderr


def test_the_table_lists_where_events_were_lost_and_exit_zero_only_reports(lossy: dict[str, Any]) -> None:
    result = _audit(lossy["url"], "--exit-zero")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    gappy = next(line for line in lines if line.startswith("gappy"))
    assert gappy.split()[-1] == "11-15"
    assert "== tail: 5 events lost" in result.stdout and "tail-1" in result.stdout
    assert "== torn: 0 events lost, 1 dead letter" in result.stdout and lossy["torn"] in result.stdout
    assert _audit(lossy["url"], "--strict", "--format", "csv").returncode == 1


def test_copies_of_an_event_and_events_sharing_a_number_are_duplicates(tmp_path: Path, chdb_url: str) -> None:
    """What ingest's duplicate check keeps out, written past it: a second copy of seq 3, and an
    event of another ID given seq 4 again (its checksum, over the ID, no longer holds either)."""
    write_spool(tmp_path / "spool", segments=1, per_segment=10, instance="twice")
    ingest_spool(str(tmp_path / "spool"), chdb_url, "usagelog")
    with connect(chdb_url) as store:
        for sql in (
            "INSERT INTO usagelog.usage_events SELECT * FROM usagelog.usage_events WHERE seq = 3",
            "INSERT INTO usagelog.usage_events SELECT * REPLACE (event_prefix + 1 AS event_prefix) "
            "FROM usagelog.usage_events WHERE seq = 4",
        ):
            store.client.command(sql)
    result = _audit(chdb_url, "--format", "json")
    assert result.returncode == 1, result.stderr
    (twice,) = json.loads(result.stdout)
    assert (twice["events"], twice["duplicates"], twice["checksum_failures"], twice["lost"]) == (12, 2, 1, 0)


def test_events_without_a_number_are_no_gap_and_no_number(tmp_path: Path, chdb_url: str) -> None:
    """seq 0 is no sequence number: two events stored with it (as copies of 5 and 6 under other
    IDs) fill no gap, and only the second of them shares a number with another row."""
    spool = tmp_path / "spool"
    _spool(spool, "zeros", make_payloads(1, 10, "zeros")[0], make_payloads(1, 5, "zeros", first_seq=12)[0])
    ingest_spool(str(spool), chdb_url, "usagelog")
    with connect(chdb_url) as store:
        store.client.command(
            "INSERT INTO usagelog.usage_events SELECT * REPLACE (0 AS seq, event_prefix + 7 AS event_prefix) "
            "FROM (SELECT * FROM usagelog.usage_events WHERE seq IN (5, 6))"  # the alias would be filtered
        )
    result = _audit(chdb_url, "--format", "json")
    (zeros,) = json.loads(result.stdout)
    assert (zeros["events"], zeros["max_seq"], zeros["gaps"], zeros["missing"]) == (17, 16, 1, [[11, 11]])
    assert (zeros["duplicates"], zeros["checksum_failures"]) == (1, 2)


def test_dead_letters_of_no_known_instance_are_reported_too(chdb_url: str) -> None:
    with connect(chdb_url) as store:
        Pipeline().process([Item("kafka", "usagelog.events/2@41", b"\xff not OTLP")], store)
    result = _audit(chdb_url, "--format", "json")
    assert result.returncode == 1
    (unknown,) = json.loads(result.stdout)
    assert unknown["instance"] == "" and unknown["dead_letters"] == 1
    assert unknown["dead_letter_list"][0]["location"] == "usagelog.events/2@41"


def test_the_help_documents_the_exit_status_and_the_opt_out() -> None:
    from click.testing import CliRunner

    from usagelog.cli import cli

    shown = CliRunner().invoke(cli, ["audit", "--help"])
    assert shown.exit_code == 0
    assert "Exit status 1 when anything is lost" in shown.output and "--exit-zero" in shown.output
    both = subprocess.run(
        [sys.executable, "-m", "usagelog.cli", "audit", "--strict", "--exit-zero"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2 and "contradict" in both.stderr
