"""The spool reader under any damage (hypothesis): every intact frame is read, and the damage is
reported where it is, so that nothing in a segment is skipped silently."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagelog.instrumentation.spool import MAGIC, DamagedFrame, Frame, encode_frame, read_frames

# Payloads never contain the frame marker: a marker inside a payload is where the reader may
# resume after damage before it, which the format accepts (see read_frames); real payloads are
# protobuf, in which the four bytes are rare, and a resume there is still reported as damage.
payloads = st.lists(st.binary(max_size=64).filter(lambda p: MAGIC not in p), min_size=1, max_size=12)


@dataclass(frozen=True)
class Damage:
    kind: str  # "truncate" (cut the file), "flip", "zero" (bytes changed in place), "insert" (bytes added)
    start: int  # where, in thousandths of the file
    length: int  # bytes changed or inserted
    byte: int


damages = st.builds(
    Damage,
    kind=st.sampled_from(["truncate", "flip", "zero", "insert"]),
    start=st.integers(0, 1000),
    length=st.integers(1, 40),
    byte=st.integers(1, 255),
)


def _segment(frames: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    data, spans = b"", []
    for payload in frames:
        frame = encode_frame(payload)
        spans.append((len(data), len(data) + len(frame)))
        data += frame
    return data, spans


def _damage(
    data: bytes, spans: list[tuple[int, int]], frames: list[bytes], damage: Damage
) -> tuple[bytes, dict[int, bytes], bool]:
    """The damaged file, the frames it still holds intact (by their offset in it), and whether
    any frame was damaged or anything else added (then the reader must report damage)."""
    at = damage.start * len(data) // 1000
    if damage.kind == "insert":
        # Bytes a failed or interleaved write could leave, e.g. a frame's start.
        extra = bytes((damage.byte + 31 * i) % 256 for i in range(damage.length))
        intact = {
            s + (len(extra) if s >= at else 0): p
            for (s, e), p in zip(spans, frames, strict=True)
            if e <= at or s >= at
        }
        return data[:at] + extra + data[at:], intact, True
    if damage.kind == "truncate":
        # A cut exactly between frames leaves a valid, shorter segment: the reader cannot tell
        # (the frames cut off show in the instance's sequence, as gaps or tail loss in audit).
        # A cut inside a frame must be reported.
        intact = {s: p for (s, e), p in zip(spans, frames, strict=True) if e <= at}
        return data[:at], intact, all(s != at for s, _ in spans) and at < len(data)
    buffer = bytearray(data)
    for i in range(at, min(len(data), at + damage.length)):
        buffer[i] = buffer[i] ^ damage.byte if damage.kind == "flip" else 0
    damaged = bytes(buffer)
    changed = [i for i in range(len(data)) if damaged[i] != data[i]]  # zeroing a zero changes nothing
    low, high = (changed[0], changed[-1] + 1) if changed else (0, 0)
    intact = {s: p for (s, e), p in zip(spans, frames, strict=True) if e <= low or s >= high}
    return damaged, intact, bool(changed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=payloads, damage=damages)
def test_every_intact_frame_is_read_and_every_damaged_byte_reported(
    tmp_path: Path, frames: list[bytes], damage: Damage
) -> None:
    original, spans = _segment(frames)
    damaged, intact, reported = _damage(original, spans, frames, damage)
    path = tmp_path / "segment.seg"
    path.write_bytes(damaged)
    read = list(read_frames(path))
    # Read mapped (the payloads views of the file, as ingest reads claimed segments): the same.
    mapped = [
        Frame(f.offset, bytes(f.payload)) if isinstance(f, Frame) else f
        for f in read_frames(path, mapped=True)
    ]
    assert mapped == read

    # What was read covers the file exactly, in order: no byte skipped, none read twice.
    position = 0
    for item in read:
        assert item.offset == position, read
        assert item.size > 0
        position += item.size
    assert position == len(damaged)

    good = {f.offset: f.payload for f in read if isinstance(f, Frame)}
    for offset, payload in intact.items():
        assert good.get(offset) == payload, (offset, read)
    # Every other frame read is empty: zeroed length and checksum fields make a valid empty
    # frame (the CRC-32 of nothing is 0), which carries no events.
    assert all(payload == b"" for offset, payload in good.items() if offset not in intact), read
    if reported:
        assert any(isinstance(f, DamagedFrame) for f in read), read
    else:
        assert good == intact and len(read) == len(intact)  # nothing damaged: only frames
