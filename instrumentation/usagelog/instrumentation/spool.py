"""The durable on-disk spool: append-only segment files of OTLP ``ExportLogsServiceRequest`` frames.

Layout of ``USAGELOG_SPOOL_DIR`` (shared safely by many processes):

- ``<created_ms>-<instance>-<n>.open``: the segment a live process is appending to. The writer
  holds an exclusive ``flock`` on it for as long as it lives, so a reader that can take the
  lock knows the writer is gone (crashed or killed) and may read the file as it is.
- ``<...>.seg``: a sealed segment (renamed from ``.open`` after an fsync), ready for ingest.
- ``<...>.new``: a segment being created; never read (it is renamed to ``.open`` once locked).

Each frame is ``MAGIC | length (u32 LE) | crc32 (u32 LE) | payload``. A write that fails part
way (a full disk) is cut back to the frame's start. A damaged frame is reported (as a
:class:`DamagedFrame`, with its offset) and skipped, so one bad write cannot hide the frames after
it; a torn frame at the end of a segment (a writer killed mid-write, a file cut short) is reported
the same way, with the bytes missing. Segments are deleted by the reader
only after their events are stored.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"ULS1"
_HEADER = struct.Struct("<4sII")
HEADER_SIZE = _HEADER.size
MAX_FRAME = 256 * 1024 * 1024

OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"
NEW_SUFFIX = ".new"


def encode_frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class SpoolWriter:
    """Appends frames to this process's current segment, sealing it by size and age.

    Thread-safe: the background thread writes here, and so does a request thread that finds
    the in-memory queue over its limit.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        instance_id: str,
        *,
        segment_bytes: int = 8 * 1024 * 1024,
        segment_seconds: float = 1.0,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.instance_id = instance_id
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.fsync = fsync
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._counter = 0
        self._lock = threading.RLock()

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @instance_id.setter
    def instance_id(self, value: str) -> None:
        # Part of segment file names: keep it to safe characters whoever sets it.
        self._instance_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in value)[:80]

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        stem = f"{int(time.time() * 1000):013d}-{self.instance_id}-{os.getpid()}-{self._counter:06d}"
        new_path = self.directory / (stem + NEW_SUFFIX)
        fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        open_path = self.directory / (stem + OPEN_SUFFIX)
        os.rename(new_path, open_path)
        self._fd, self._path = fd, open_path
        self._opened_at = time.monotonic()
        self._size = 0

    def append(self, payload: bytes) -> None:
        """Write one frame durably (fsync when configured)."""
        with self._lock:
            self._append(payload)

    @property
    def pending(self) -> bool:
        """Whether the current segment holds frames not sealed yet."""
        return self._fd is not None and self._size > 0

    def _append(self, payload: bytes) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        frame = encode_frame(payload)
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except BaseException:
            self._undo_partial_write()
            raise
        self._size += len(frame)
        if self._size >= self.segment_bytes:
            self.seal()

    def _undo_partial_write(self) -> None:
        """A write failed (a full disk writes part of a frame, then fails): cut the segment back
        to where the frame started, so no half frame sits before the frames written later (the
        reader would take it for damage). If even that fails, the segment is closed as it is,
        the half frame at its end (which readers take for a torn tail), and the next append
        starts a new segment."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            return
        except OSError:
            pass
        fd, path = self._fd, self._path
        self._fd = self._path = None
        try:
            if path is not None:
                os.rename(path, path.with_suffix(SEALED_SUFFIX))
        except OSError:
            pass  # left ``.open``: claimable once this process has let go of it
        finally:
            os.close(fd)

    def maybe_seal(self) -> None:
        """Seal the current segment if it is non-empty and older than the age limit."""
        with self._lock:
            if (
                self._fd is not None
                and self._size
                and time.monotonic() - self._opened_at >= self.segment_seconds
            ):
                self.seal()

    def seal(self) -> None:
        with self._lock:
            self._seal()

    def _seal(self) -> None:
        if self._fd is None or self._path is None:
            return
        fd, path = self._fd, self._path
        self._fd = self._path = None
        try:
            if self._size:
                os.fsync(fd)
                os.rename(path, path.with_suffix(SEALED_SUFFIX))
            else:
                os.unlink(path)
        finally:
            os.close(fd)

    def abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's segment without touching it."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = self._path = None
        self._size = 0
        self._lock = threading.RLock()


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    offset: int
    payload: bytes | memoryview  # a view of the mapped segment when read ``mapped``

    @property
    def size(self) -> int:
        """Bytes of the segment the frame takes, header included."""
        return HEADER_SIZE + len(self.payload)


@dataclass(frozen=True)
class DamagedFrame:
    """Bytes of a segment that are not a valid frame: ``size`` bytes from ``offset``; ``raw``
    holds what may be kept of them (the payload part of a frame whose checksum is wrong)."""

    offset: int
    reason: str
    raw: bytes
    size: int = 0


class ClaimedSegment:
    """A segment this reader holds the lock of; ``delete`` once its events are stored."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def frames(self, *, mapped: bool = False) -> Iterator[Frame | DamagedFrame]:
        return read_frames(self.path, mapped=mapped)

    def delete(self) -> None:
        os.unlink(self.path)
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not os.path.exists(path):  # sealed (renamed) or deleted between listing and locking
        os.close(fd)
        return None
    return fd


_SEGMENT_NAME = re.compile(r"^\d{13}-(?P<instance>.*)-\d+-\d{6}$")


def segment_instance(path: str | os.PathLike[str]) -> str:
    """The instance ID a segment's name carries (as the writer made it safe for file names),
    or empty when the name is not a writer's."""
    match = _SEGMENT_NAME.match(Path(path).stem)
    return match.group("instance") if match else ""


def list_segments(directory: str | os.PathLike[str]) -> list[Path]:
    """Sealed and ``.open`` segments, oldest first (names start with their creation time)."""
    base = Path(directory)
    if not base.is_dir():
        return []
    return sorted(
        (p for p in base.iterdir() if p.suffix in (SEALED_SUFFIX, OPEN_SUFFIX)), key=lambda p: p.name
    )


def claim_segments(directory: str | os.PathLike[str]) -> Iterator[ClaimedSegment]:
    """Yield readable segments, each locked: sealed ones, and ``.open`` ones whose writer is gone.

    Segments locked by a live writer or by another reader are skipped.
    """
    for path in list_segments(directory):
        fd = _try_lock(path)
        if fd is not None:
            yield ClaimedSegment(path, fd)


def has_claimable(directory: str | os.PathLike[str]) -> bool:
    """Whether any segment could be claimed now (sealed, or left by a writer that is gone)."""
    for path in list_segments(directory):
        fd = _try_lock(path)
        if fd is not None:
            os.close(fd)
            return True
    return False


def read_frames(path: str | os.PathLike[str], *, mapped: bool = False) -> Iterator[Frame | DamagedFrame]:
    """Frames of a segment, in order. Damage never hides a good frame: whenever a header or
    checksum is wrong, reading resumes at the next frame marker. Nothing is skipped silently:
    the frames and damaged frames yielded cover every byte of the file, in order, a torn frame
    at the end (a writer killed mid-write, a truncated file) included.

    ``mapped``: the file is mapped and the frames' payloads are views of it, not copies: held
    while they wait to be stored, they are the kernel's page cache, not the reader's memory.
    Only for a segment nothing writes to any more (one claimed: sealed, or left by a writer that
    is gone): a mapped file cut short under its reader faults it."""
    data: bytes | mmap.mmap
    if mapped:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)  # keeps the file open itself
        view: bytes | memoryview = memoryview(data)
    else:
        data = view = Path(path).read_bytes()
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < HEADER_SIZE:
            yield _torn_or_garbage(data, pos)
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        if magic != MAGIC or length > MAX_FRAME:
            nxt = data.find(MAGIC, pos + 1)
            stop = nxt if nxt >= 0 else end
            yield DamagedFrame(pos, "bad frame header", data[pos:stop], stop - pos)
            pos = stop
            continue
        body_start = pos + HEADER_SIZE
        body_end = body_start + length
        if body_end > end:
            nxt = data.find(MAGIC, pos + 1)
            if nxt < 0:
                # The segment ends inside this frame: the rest of it was never written, or
                # was cut off. Its events are lost; say where and how much.
                yield DamagedFrame(
                    pos,
                    f"torn frame: the segment ends {end - pos} bytes into a {HEADER_SIZE + length}-byte "
                    f"frame ({body_end - end} bytes missing)",
                    data[pos:end],
                    end - pos,
                )
                return
            # Another frame follows, so this is a damaged length, not a torn write.
            yield DamagedFrame(pos, "bad frame length", data[pos:nxt], nxt - pos)
            pos = nxt
            continue
        payload = view[body_start:body_end]
        if zlib.crc32(payload) == crc:
            yield Frame(pos, payload)
            pos = body_end
            continue
        # A damaged length may span later frames: resume at the first marker inside it.
        nxt = data.find(MAGIC, pos + 1)
        stop = nxt if 0 <= nxt < body_end else body_end
        yield DamagedFrame(
            pos,
            "frame checksum mismatch",
            data[body_start:stop] if stop > body_start else b"",
            stop - pos,
        )
        pos = stop


def _torn_or_garbage(data: bytes | mmap.mmap, pos: int) -> DamagedFrame:
    """The last bytes of a segment, too few for a frame header: the start of a frame whose
    writer stopped (a prefix of the marker), or garbage."""
    rest = data[pos:]
    if MAGIC.startswith(rest[: len(MAGIC)]):
        reason = (
            f"torn frame: the segment ends {len(rest)} bytes into a frame header "
            f"(at least {HEADER_SIZE - len(rest)} bytes missing)"
        )
    else:
        reason = "bad frame header"
    return DamagedFrame(pos, reason, rest, len(rest))
