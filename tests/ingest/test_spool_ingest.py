"""Spool ingest is idempotent and crash-safe, and dead-letters what it cannot read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.rollups import assert_rollups_exact
from tests.spoolfill import make_payloads, write_spool
from usagelog.ingest.archive import read_archive
from usagelog.ingest.engine_decode import EngineDecoder
from usagelog.ingest.errors import StoreError
from usagelog.ingest.settings import ArchiveSettings
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import Store, connect
from usagelog.instrumentation.spool import SpoolWriter, read_frames


def _counts(url: str) -> tuple[int, int]:
    with connect(url) as store:
        _, rows = store.query("SELECT count(), uniqExact(event_id) FROM usagelog.usage_events")
    return int(rows[0][0]), int(rows[0][1])


def _rollups_exact(url: str) -> None:
    with connect(url) as store:
        assert_rollups_exact(store)


def test_ingest_twice_stores_each_event_once(tmp_path: Path, chdb_url: str) -> None:
    spool = tmp_path / "spool"
    total = write_spool(spool, segments=3, per_segment=50)
    first = ingest_spool(str(spool), chdb_url, "usagelog")
    assert (first.segments, first.inserted) == (3, total)
    assert list(spool.iterdir()) == []
    second = ingest_spool(str(spool), chdb_url, "usagelog")
    assert second.inserted == 0
    assert _counts(chdb_url) == (total, total)


def test_crash_between_insert_and_delete_does_not_duplicate(
    tmp_path: Path, chdb_url: str, monkeypatch: Any
) -> None:
    spool = tmp_path / "spool"
    total = write_spool(spool, segments=4, per_segment=25)
    from usagelog.instrumentation import spool as spool_module

    calls = {"n": 0}
    real_delete = spool_module.ClaimedSegment.delete

    def crash_on_third(self: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed after storing, before deleting")
        real_delete(self)

    monkeypatch.setattr(spool_module.ClaimedSegment, "delete", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        ingest_spool(str(spool), chdb_url, "usagelog")
    monkeypatch.undo()
    # Segments are deleted after the whole slice is stored (and its rollups brought up to date):
    # the two left are stored already, and a second run only finds duplicates.
    assert len(list(spool.glob("*.seg"))) == 2
    again = ingest_spool(str(spool), chdb_url, "usagelog")
    assert again.duplicates == 50 and again.inserted == 0
    assert _counts(chdb_url) == (total, total)
    _rollups_exact(chdb_url)


def _stored_ids(url: str) -> list[str]:
    with connect(url) as store:
        _, rows = store.query("SELECT event_id FROM usagelog.usage_events")
    return sorted(r[0] for r in rows)


@pytest.mark.slow
def test_ingest_killed_half_way_then_rerun_gives_exact_counts_and_archive(
    tmp_path: Path, chdb_url: str
) -> None:
    spool = tmp_path / "spool"
    archive = tmp_path / "archive"
    # ~57 MB: several groups of 16 MiB, so a kill after the first lands half-way.
    total = write_spool(spool, segments=60, per_segment=2000)
    command = [
        sys.executable,
        "-m",
        "usagelog.cli",
        "ingest",
        "--spool",
        str(spool),
        "--clickhouse",
        chdb_url,
        "--archive",
        str(archive),
    ]
    # Each run is its own archive owner (<host>-<pid>): the rerun finalizes what the killed
    # run staged.
    env = {
        **os.environ,
        "USAGELOG_STATE_DIR": str(tmp_path / "state"),
        "USAGELOG_BATCH_MAX_BYTES": str(16 << 20),
    }
    env.pop("USAGELOG_WORKER_ID", None)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while len(list(spool.glob("*.seg"))) == 60 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    remaining = len(list(spool.glob("*.seg")))
    assert 0 < remaining < 60, "the kill should land half-way"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert list(spool.glob("*.seg")) == []
    assert _counts(chdb_url) == (total, total)
    _rollups_exact(chdb_url)  # whatever the kill left (events without their sums, notes)
    assert [r["event_id"] for r in read_archive(str(archive), unique=True)] != []
    assert sorted(r["event_id"] for r in read_archive(str(archive), unique=True)) == _stored_ids(chdb_url)
    assert list((tmp_path / "state").rglob("chunk-*")) == []


def test_a_failed_store_keeps_the_segments_and_the_archive_ends_with_each_event_once(
    tmp_path: Path, chdb_url: str, monkeypatch: Any
) -> None:
    spool = tmp_path / "spool"
    total = write_spool(spool, segments=3, per_segment=40)
    archive = ArchiveSettings(url=str(tmp_path / "archive"), state_dir=str(tmp_path / "state"), owner="t")

    def unreachable(self: Any, rows: Any, table: str = "usage_events") -> tuple[int, int]:
        raise StoreError("ClickHouse at http://db:8123 did not answer")

    def engine_unreachable(self: Any, result: Any) -> None:
        raise StoreError("ClickHouse at http://db:8123 did not answer")

    monkeypatch.setattr(Store, "insert_events", unreachable)
    monkeypatch.setattr(EngineDecoder, "store_staged", engine_unreachable)
    with pytest.raises(StoreError):
        ingest_spool(str(spool), chdb_url, "usagelog", archive=archive)
    monkeypatch.undo()
    assert len(list(spool.glob("*.seg"))) == 3
    stats = ingest_spool(str(spool), chdb_url, "usagelog", archive=archive)
    assert (stats.segments, stats.inserted) == (3, total) and stats.archived
    assert list(spool.glob("*.seg")) == []
    archived = read_archive(str(tmp_path / "archive"), unique=True)
    assert sorted(r["event_id"] for r in archived) == _stored_ids(chdb_url)
    assert len(archived) == total


def test_damaged_frames_are_dead_lettered_and_the_rest_stored(tmp_path: Path, chdb_url: str) -> None:
    spool = tmp_path / "spool"
    total = write_spool(spool, segments=1, per_segment=10)
    writer = SpoolWriter(spool, "junk", fsync=False)
    writer.append(b"\x0a\xff\xff\xff\xff\x0f this is not OTLP")
    writer.seal()
    segment = sorted(spool.glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    data[30] ^= 0xFF  # corrupt the first (only) frame of the good segment
    segment.write_bytes(bytes(data))
    total += write_spool(spool, segments=1, per_segment=5, instance="second")
    stats = ingest_spool(str(spool), chdb_url, "usagelog")
    assert stats.inserted == 5 and stats.dead_letters == 2
    with connect(chdb_url) as store:
        _, rows = store.query("SELECT source, reason, location FROM usagelog.dead_letters ORDER BY reason")
    reasons = [r[1] for r in rows]
    assert reasons[0] == "frame checksum mismatch"
    assert reasons[1].startswith("not an OTLP logs payload")
    assert all(r[0] == "spool" and "@" in r[2] for r in rows)


def _one_segment(spool: Path, instance: str, batches: int, per_batch: int, suffix: str = ".seg") -> Path:
    """One segment of ``batches`` frames (``per_batch`` events each), renamed to ``suffix``."""
    writer = SpoolWriter(spool, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for payload in make_payloads(batches, per_batch, instance):
        writer.append(payload)
    writer.seal()
    (path,) = spool.glob(f"*-{instance}-*.seg")
    return path.rename(path.with_suffix(suffix))


def test_a_sealed_segment_cut_mid_frame_is_a_dead_letter_with_its_location(
    tmp_path: Path, chdb_url: str
) -> None:
    """Eight frames of 100 events, the file cut 40 bytes into the sixth frame: the five whole
    frames are stored, the cut one is a dead letter saying where and how many bytes are missing,
    attributed to the instance, and the spool's other segments are read as usual."""
    spool = tmp_path / "spool"
    segment = _one_segment(spool, "cut-instance", batches=8, per_batch=100)
    offsets = [f.offset for f in read_frames(segment)]
    frame_size = offsets[6] - offsets[5]
    segment.write_bytes(segment.read_bytes()[: offsets[5] + 40])
    write_spool(spool, segments=2, per_segment=50, instance="intact")
    stats = ingest_spool(str(spool), chdb_url, "usagelog")
    assert (stats.inserted, stats.dead_letters) == (500 + 100, 1)
    assert list(spool.iterdir()) == []
    with connect(chdb_url) as store:
        _, rows = store.query(
            "SELECT source, location, reason, service_instance_id FROM usagelog.dead_letters"
        )
    assert rows == [
        (
            "spool",
            f"{segment.name}@{offsets[5]}",
            f"torn frame: the segment ends 40 bytes into a {frame_size}-byte frame "
            f"({frame_size - 40} bytes missing)",
            "cut-instance",
        )
    ]


def test_the_torn_tail_of_a_dead_writers_open_segment_is_a_dead_letter(tmp_path: Path, chdb_url: str) -> None:
    """A writer killed mid-write leaves its ``.open`` segment ending inside a frame: the frames
    before are stored and the torn one is reported, not dropped quietly."""
    spool = tmp_path / "spool"
    segment = _one_segment(spool, "killed", batches=3, per_batch=20, suffix=".open")
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 7])
    stats = ingest_spool(str(spool), chdb_url, "usagelog")
    assert (stats.inserted, stats.dead_letters) == (40, 1)
    with connect(chdb_url) as store:
        _, [(location, reason, instance)] = store.query(
            "SELECT location, reason, service_instance_id FROM usagelog.dead_letters"
        )
    assert location.startswith(segment.name + "@") and instance == "killed"
    assert reason.startswith("torn frame") and reason.endswith("(7 bytes missing)")
