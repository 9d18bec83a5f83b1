"""``usagelog ingest --spool --follow``: segments are stored as they are sealed, until SIGTERM;
past its memory bound the follower starts afresh in place and goes on; each event once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline import count_events, wait_for
from tests.spoolfill import make_payloads
from usagelog.instrumentation.spool import SpoolWriter

pytestmark = pytest.mark.slow


def _follower(spool: Path, url: str, **env: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "usagelog.cli", "ingest", "--spool", str(spool), "--clickhouse", url,
               "--follow"]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )


def _write(spool: Path, instance: str, rounds: int, per_round: int, url: str, stored_before: int) -> None:
    """Seal a segment, wait until the follower stored it, and again: the follower sees each."""
    writer = SpoolWriter(spool, instance, segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
    for n, payload in enumerate(make_payloads(rounds, per_round, instance=instance)):
        writer.append(payload)
        writer.seal()
        expected = stored_before + (n + 1) * per_round
        wait_for(lambda expected=expected: count_events(url)[0] == expected, 60, f"round {n + 1} stored")


def test_the_follower_stores_segments_as_they_are_sealed_and_stops_on_sigterm(tmp_path: Path) -> None:
    spool, url = tmp_path / "spool", "chdb://" + str(tmp_path / "chdb")
    follower = _follower(spool, url)
    try:
        _write(spool, "a", rounds=4, per_round=25, url=url, stored_before=0)
        # A segment sealed just before the stop is stored on the way out.
        writer = SpoolWriter(spool, "b", segment_bytes=1 << 40, segment_seconds=1e9, fsync=False)
        writer.append(make_payloads(1, 10, instance="b")[0])
        writer.seal()
        follower.send_signal(signal.SIGTERM)
        _, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, stderr
    assert "stopped following; " in stderr
    assert count_events(url) == (110, 110)
    assert list(spool.glob("*.seg")) == []


def test_a_follower_past_its_memory_bound_restarts_in_place_and_stores_everything_once(
    tmp_path: Path,
) -> None:
    spool, url = tmp_path / "spool", "chdb://" + str(tmp_path / "chdb")
    # Below any process's size: a restart after every round.
    follower = _follower(spool, url, USAGELOG_WORKER_MAX_MEMORY_MB="1")
    pid = follower.pid
    try:
        _write(spool, "a", rounds=3, per_round=20, url=url, stored_before=0)
        follower.send_signal(signal.SIGTERM)
        _, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0 and follower.pid == pid, stderr
    assert stderr.count("restarting in place") >= 2, stderr
    assert count_events(url) == (60, 60)
