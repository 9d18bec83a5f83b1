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
    kind: str  # "truncate", "flip", "zero", "garbage"
    start: int  # fraction of the file, in 1/1000
    length: int  # bytes
    byte: int


damages = st.builds(
    Damage,
    kind=st.sampled_from(["truncate", "flip", "zero", "garbage"]),
    start=st.integers(0, 999),
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


def _damage(data: bytes, damage: Damage) -> tuple[bytes, int, int]:
    """The damaged file and the byte range [low, high) of the original that changed (a
    truncation changes everything from the cut on; empty when no byte changed)."""
    start = damage.start * len(data) // 1000
    if damage.kind == "truncate":
        return data[:start], start, len(data)
    end = min(len(data), start + damage.length)
    changed = bytearray(data)
    for i in range(start, end):
        if damage.kind == "flip":
            changed[i] ^= damage.byte
        elif damage.kind == "zero":
            changed[i] = 0
        else:
            changed[i] = (changed[i] + damage.byte) % 256
    differ = [i for i in range(start, end) if changed[i] != data[i]]  # zeroing a zero changes nothing
    return bytes(changed), (differ[0] if differ else 0), (differ[-1] + 1 if differ else 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=payloads, damage=damages)
def test_every_intact_frame_is_read_and_every_damaged_byte_reported(
    tmp_path: Path, frames: list[bytes], damage: Damage
) -> None:
    original, spans = _segment(frames)
    damaged, low, high = _damage(original, damage)
    path = tmp_path / "segment.seg"
    path.write_bytes(damaged)
    read = list(read_frames(path))

    # What was read covers the file exactly, in order: no byte skipped, none read twice.
    position = 0
    for item in read:
        assert item.offset == position, read
        assert item.size > 0
        position += item.size
    assert position == len(damaged)

    good = {f.offset: f.payload for f in read if isinstance(f, Frame)}
    for (start, end), payload in zip(spans, frames, strict=True):
        if end <= low or start >= high:  # a frame the damage did not touch
            assert good.get(start) == payload, (start, read)
    # Every frame read is one that was written, where it was written, or an empty one: zeroed
    # length and checksum fields make a valid empty frame (the CRC-32 of nothing is 0), which
    # carries no events.
    written = {(s, p) for (s, _), p in zip(spans, frames, strict=True)}
    assert all(p == b"" for o, p in good.items() if (o, p) not in written), read
    # Any frame the damage reached is reported.
    touched = [(s, e) for s, e in spans if s < high and e > low and s < len(damaged)]
    if touched:
        assert any(isinstance(f, DamagedFrame) for f in read), read
