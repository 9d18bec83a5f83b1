"""The on-disk spool: segment files, frames, crash tolerance and claiming across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from usagelog.instrumentation import spool
from usagelog.instrumentation.spool import (
    HEADER_SIZE,
    DamagedFrame,
    Frame,
    SpoolWriter,
    claim_segments,
    encode_frame,
    list_segments,
    read_frames,
)

PAYLOADS = [b"first", b"\x00\x01binary\xff" * 3, b"", b"x" * 1000, b"ULS1 inside a payload"]


def suffixes(directory: Path) -> list[str]:
    return sorted(p.suffix for p in directory.iterdir())


def payloads_of(path: Path) -> list[bytes]:
    frames = list(read_frames(path))
    assert all(isinstance(f, Frame) for f in frames), frames
    return [f.payload for f in frames]  # type: ignore[union-attr]


def write_segment(path: Path, payloads: list[bytes]) -> list[int]:
    """Write frames to ``path``; returns the offset of each frame."""
    offsets, data = [], b""
    for payload in payloads:
        offsets.append(len(data))
        data += encode_frame(payload)
    path.write_bytes(data)
    return offsets


# -- writer --------------------------------------------------------------------------------------


def test_nothing_is_created_before_the_first_append(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "spool", "i1", fsync=False)
    writer.seal()
    writer.maybe_seal()
    assert not (tmp_path / "spool").exists()


def test_appended_frames_round_trip_after_seal(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "inst-1", fsync=False)
    for payload in PAYLOADS:
        writer.append(payload)
    (open_segment,) = tmp_path.iterdir()
    assert open_segment.suffix == ".open"
    assert payloads_of(open_segment) == PAYLOADS  # readable while still open
    writer.seal()
    (sealed,) = tmp_path.iterdir()
    assert sealed.suffix == ".seg"
    assert sealed.stem == open_segment.stem
    assert payloads_of(sealed) == PAYLOADS


def test_frame_offsets_are_their_positions_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = write_segment(path, PAYLOADS)
    assert [f.offset for f in read_frames(path)] == offsets


def test_segment_is_sealed_when_it_reaches_the_size_limit(tmp_path: Path) -> None:
    writer = SpoolWriter(
        tmp_path, "i", segment_bytes=3 * (HEADER_SIZE + 10), segment_seconds=3600, fsync=False
    )
    for n in range(7):
        writer.append(bytes([n]) * 10)
    sealed = sorted(p for p in tmp_path.iterdir() if p.suffix == ".seg")
    still_open = [p for p in tmp_path.iterdir() if p.suffix == ".open"]
    assert len(sealed) == 2 and len(still_open) == 1
    assert [payloads_of(p) for p in sealed] == [
        [bytes([n]) * 10 for n in range(3)],
        [bytes([n]) * 10 for n in range(3, 6)],
    ]
    assert payloads_of(still_open[0]) == [bytes([6]) * 10]


def test_a_single_frame_larger_than_the_limit_gets_its_own_segment(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", segment_bytes=64, fsync=False)
    writer.append(b"z" * 500)
    assert suffixes(tmp_path) == [".seg"]


def test_segment_is_sealed_by_age_only_via_maybe_seal(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", segment_seconds=0.05, fsync=False)
    writer.append(b"one")
    writer.maybe_seal()
    assert suffixes(tmp_path) == [".open"]  # too young
    time.sleep(0.08)
    assert suffixes(tmp_path) == [".open"]  # age alone does nothing until maybe_seal
    writer.maybe_seal()
    assert suffixes(tmp_path) == [".seg"]
    writer.append(b"two")  # a fresh segment
    assert suffixes(tmp_path) == [".open", ".seg"]


def test_each_segment_gets_a_distinct_name_in_creation_order(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", fsync=False)
    for n in range(3):
        writer.append(bytes([n]))
        writer.seal()
    segments = list_segments(tmp_path)
    assert len(segments) == 3
    assert [payloads_of(p) for p in segments] == [[b"\x00"], [b"\x01"], [b"\x02"]]


def test_instance_id_is_sanitised_for_file_names(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "pod/../../etc passwd:1", fsync=False)
    writer.append(b"x")
    (path,) = tmp_path.iterdir()
    assert path.parent == tmp_path
    assert "/" not in path.name and " " not in path.name and ":" not in path.name


def test_fsync_mode_writes_the_same_frames(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", fsync=True)
    writer.append(b"durable")
    writer.seal()
    (path,) = tmp_path.iterdir()
    assert payloads_of(path) == [b"durable"]


# -- reading damaged segments --------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 3, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 2])
def test_torn_frame_at_the_tail_is_reported_after_the_complete_frames(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "torn.open"
    offsets = write_segment(path, [b"a" * 10, b"b" * 10, b"c" * 10])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - (HEADER_SIZE + 10) + cut])  # keep ``cut`` bytes of the last frame
    *good, torn = read_frames(path)
    assert [f.payload for f in good] == [b"a" * 10, b"b" * 10]  # type: ignore[union-attr]
    assert isinstance(torn, DamagedFrame)
    assert torn.offset == offsets[2] and torn.size == cut and torn.reason.startswith("torn frame")
    missing = HEADER_SIZE + 10 - cut
    assert (f"({missing} bytes missing)" if cut >= HEADER_SIZE else "bytes missing") in torn.reason


def test_a_segment_cut_in_the_middle_reports_the_frame_it_cut_and_how_much_is_missing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.seg"
    offsets = write_segment(path, [b"x" * 100 for _ in range(8)])
    path.write_bytes(path.read_bytes()[: offsets[5] + 40])
    frames = list(read_frames(path))
    assert [f.offset for f in frames if isinstance(f, Frame)] == offsets[:5]
    (torn,) = [f for f in frames if isinstance(f, DamagedFrame)]
    assert torn.offset == offsets[5]
    assert torn.reason == (
        f"torn frame: the segment ends 40 bytes into a {HEADER_SIZE + 100}-byte frame "
        f"({HEADER_SIZE + 100 - 40} bytes missing)"
    )


def test_the_instance_is_read_back_from_a_segment_name(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "6c1f6f0e-1111.host-a", fsync=False)
    writer.append(b"x")
    (open_path,) = tmp_path.iterdir()
    writer.seal()
    (sealed,) = tmp_path.iterdir()
    assert spool.segment_instance(open_path) == spool.segment_instance(sealed) == "6c1f6f0e-1111.host-a"
    assert spool.segment_instance(tmp_path / "notes.seg") == ""


def test_corrupted_payload_byte_in_the_middle_frame_is_reported_and_later_frames_survive(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.seg"
    offsets = write_segment(path, [b"a" * 20, b"b" * 20, b"c" * 20])
    data = bytearray(path.read_bytes())
    data[offsets[1] + HEADER_SIZE + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    frames = list(read_frames(path))
    assert [type(f) for f in frames] == [Frame, DamagedFrame, Frame]
    assert frames[0].payload == b"a" * 20  # type: ignore[union-attr]
    assert frames[1].offset == offsets[1]
    assert "checksum" in frames[1].reason  # type: ignore[union-attr]
    assert frames[2].payload == b"c" * 20  # type: ignore[union-attr]


def test_corrupted_magic_is_reported_and_reading_resumes_at_the_next_frame(tmp_path: Path) -> None:
    path = tmp_path / "bad.seg"
    offsets = write_segment(path, [b"a" * 20, b"b" * 20, b"c" * 20])
    data = bytearray(path.read_bytes())
    data[offsets[1]] = ord("X")
    path.write_bytes(bytes(data))
    frames = list(read_frames(path))
    assert [type(f) for f in frames] == [Frame, DamagedFrame, Frame]
    assert frames[1].offset == offsets[1] and "header" in frames[1].reason  # type: ignore[union-attr]
    assert frames[2].payload == b"c" * 20  # type: ignore[union-attr]


def test_garbage_without_any_frame_is_one_damaged_frame(tmp_path: Path) -> None:
    path = tmp_path / "junk.seg"
    path.write_bytes(b"this is not a spool segment at all")
    (frame,) = read_frames(path)
    assert isinstance(frame, DamagedFrame)
    assert frame.offset == 0 and frame.raw == path.read_bytes()


@pytest.mark.parametrize(
    ("length_byte", "flip"),
    [(0, 0x40), (3, 0x01)],
    ids=["length-20-to-84-inside-file", "length-20-to-16MiB-past-end"],
)
def test_corrupted_length_of_the_middle_frame_does_not_hide_later_frames(
    tmp_path: Path, length_byte: int, flip: int
) -> None:
    """The module promises that one bad write cannot hide the frames after it."""
    path = tmp_path / "bad.seg"
    offsets = write_segment(path, [b"a" * 20, b"b" * 20, b"c" * 20, b"d" * 20])
    data = bytearray(path.read_bytes())
    data[offsets[1] + 4 + length_byte] ^= flip  # a bit flip in the little-endian length field
    path.write_bytes(bytes(data))
    frames = list(read_frames(path))
    good = [f.payload for f in frames if isinstance(f, Frame)]
    assert any(isinstance(f, DamagedFrame) for f in frames)
    assert good == [b"a" * 20, b"c" * 20, b"d" * 20]


# -- listing and claiming ------------------------------------------------------------------------


def test_new_files_are_never_listed_or_claimed(tmp_path: Path) -> None:
    (tmp_path / "0000000000001-i-1-000001.new").write_bytes(encode_frame(b"half-made"))
    (tmp_path / "notes.txt").write_text("x")
    write_segment(tmp_path / "0000000000002-i-1-000002.seg", [b"ready"])
    assert [p.name for p in list_segments(tmp_path)] == ["0000000000002-i-1-000002.seg"]
    claimed = list(claim_segments(tmp_path))
    assert [c.path.suffix for c in claimed] == [".seg"]
    for c in claimed:
        c.release()


def test_segments_are_listed_oldest_first(tmp_path: Path) -> None:
    for name in (
        "0000000000300-b-1-000001.seg",
        "0000000000100-z-1-000001.open",
        "0000000000200-a-1-000001.seg",
    ):
        write_segment(tmp_path / name, [b"x"])
    assert [p.name[:13] for p in list_segments(tmp_path)] == [
        "0000000000100",
        "0000000000200",
        "0000000000300",
    ]
    assert list_segments(tmp_path / "missing") == []


def test_two_claimers_cannot_hold_the_same_segment(tmp_path: Path) -> None:
    write_segment(tmp_path / "0000000000001-i-1-000001.seg", [b"one"])
    write_segment(tmp_path / "0000000000002-i-1-000002.seg", [b"two"])
    first = claim_segments(tmp_path)
    held = next(first)  # the first claimer holds the oldest segment
    others = list(claim_segments(tmp_path))
    assert [c.path.name for c in others] == ["0000000000002-i-1-000002.seg"]
    for c in others:
        c.release()
    first.close()
    held.release()
    again = list(claim_segments(tmp_path))
    assert len(again) == 2  # released segments can be claimed again
    for c in again:
        c.release()


def test_claimed_segment_frames_and_delete(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", fsync=False)
    writer.append(b"p1")
    writer.append(b"p2")
    writer.seal()
    (claimed,) = claim_segments(tmp_path)
    assert [f.payload for f in claimed.frames()] == [b"p1", b"p2"]  # type: ignore[union-attr]
    claimed.delete()
    assert list(tmp_path.iterdir()) == []
    claimed.release()  # idempotent after delete
    assert list(claim_segments(tmp_path)) == []


def test_in_process_writer_segment_is_not_claimable_while_open(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "i", fsync=False)
    writer.append(b"live")
    assert list(claim_segments(tmp_path)) == []
    writer.seal()
    (claimed,) = claim_segments(tmp_path)
    assert claimed.path.suffix == ".seg"
    claimed.release()


_CHILD_WRITER = textwrap.dedent(
    """
    import sys, time
    from usagelog.instrumentation.spool import SpoolWriter
    writer = SpoolWriter(sys.argv[1], "child", segment_seconds=3600, fsync=True)
    for n in range(3):
        writer.append(b"frame-%d" % n)
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def child_writer(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A live writer in another process that appended three frames and now idles."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_open_segment_of_a_live_writer_process_is_skipped_then_claimed_after_sigkill(
    tmp_path: Path, child_writer: subprocess.Popen[str]
) -> None:
    (segment,) = tmp_path.iterdir()
    assert segment.suffix == ".open"
    assert list(claim_segments(tmp_path)) == []  # the writer is alive and holds the lock
    os.kill(child_writer.pid, signal.SIGKILL)
    child_writer.wait(timeout=10)
    assert child_writer.returncode == -signal.SIGKILL
    (claimed,) = claim_segments(tmp_path)
    try:
        assert claimed.path == segment  # still .open: claimed as it is
        assert [f.payload for f in claimed.frames()] == [b"frame-0", b"frame-1", b"frame-2"]  # type: ignore[union-attr]
        assert list(claim_segments(tmp_path)) == []  # and now held by this claimer
    finally:
        claimed.delete()
    assert list(tmp_path.iterdir()) == []


def test_module_constants_describe_the_frame_format() -> None:
    frame = encode_frame(b"abc")
    assert frame[:4] == spool.MAGIC == b"ULS1"
    assert int.from_bytes(frame[4:8], "little") == 3
    assert len(frame) == HEADER_SIZE + 3 == 15
