"""Per-instance counters kept where a process kill cannot erase them: a memory-mapped file.

Each instance (each process start, each forked worker) that exports through the spool
directory (``USAGELOG_SPOOL_DIR``, default ``.usagelog/spool``; also with the ``otlp`` exporter,
whose fallback it is) keeps ``<instance>.counters`` there. Request threads store the sequence
number they allocate into it (one 8-byte store into shared memory, no system call); the
background thread stores what it handed to the exporter and what it had to drop or could not
write. The page belongs to the kernel's page cache, so a SIGKILL loses nothing stored in it
(a machine crash may).

The process holds an exclusive ``flock`` on the file while it lives, like the spool's open
segments: whoever can take the lock knows the owner is gone. Such an orphan is turned into loss
reports by :func:`usagelog.instrumentation.losses.reap_orphans`. On a clean exit with every
allocated event written, the owner deletes its file.

Layout: 32 little-endian unsigned 64-bit slots (the ``SLOT_*`` constants), then at
:data:`INFO_OFFSET` a length-prefixed JSON object (the instance's resource attributes and a
detail text), in a file of :data:`FILE_SIZE` bytes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".counters"
NEW_SUFFIX = ".counters-new"
MAGIC = 0x3143_4C55  # "ULC1"
FILE_SIZE = 4096
SLOTS = 32
INFO_OFFSET = SLOTS * 8
_INFO_LEN = struct.Struct("<I")

SLOT_MAGIC = 0
SLOT_ALLOCATED = 1  # highest sequence number allocated (request threads)
SLOT_WRITTEN = 2  # events handed to the exporter and accepted by it
SLOT_LOW = 3  # every sequence number below this one is written, dropped or failed
SLOT_DROPPED = 4  # events dropped at the memory bound, in total
SLOT_DROPPED_REPORTED = 5  # ... of which a loss report was handed to the exporter
SLOT_DROP_FIRST = 6  # lowest and highest sequence number dropped since the last report
SLOT_DROP_LAST = 7
SLOT_FAILED = 8  # events the final flush could not write anywhere
SLOT_FAILED_FIRST = 9
SLOT_FAILED_LAST = 10
SLOT_PID = 11
SLOT_CREATED_MS = 12


def safe_name(instance_id: str) -> str:
    """The instance ID as a file name part (the spool's segment names use the same rule)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in instance_id)[:80]


class Counters:
    """The counter slots of one instance: a memory-mapped file, or plain memory.

    ``cells`` is a ``memoryview`` of unsigned 64-bit integers; ``cells[SLOT_ALLOCATED] = seq``
    is the request path's only cost.
    """

    def __init__(self, buffer: Any, *, path: Path | None = None, fd: int = -1) -> None:
        self._buffer = buffer
        whole = memoryview(buffer).cast("B")
        head = whole[:INFO_OFFSET]
        self.cells = head.cast("Q")
        self._views = (self.cells, head, whole)  # released in this order before an unmap
        self.path = path
        self._fd = fd

    @classmethod
    def in_memory(cls) -> Counters:
        counters = cls(bytearray(FILE_SIZE))
        counters.cells[SLOT_MAGIC] = MAGIC
        return counters

    @classmethod
    def create(cls, directory: str | os.PathLike[str], instance_id: str, info: dict[str, Any]) -> Counters:
        """A new, locked counter file for ``instance_id`` in ``directory`` (raises ``OSError``)."""
        base = Path(directory)
        base.mkdir(parents=True, exist_ok=True)
        stem = f"{safe_name(instance_id)}-{os.getpid()}"
        new_path = base / (stem + NEW_SUFFIX)
        path = base / (stem + SUFFIX)
        fd = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Written, not ftruncate'd: a sparse page written through the mapping on a full disk
            # would kill the process with SIGBUS.
            if os.write(fd, bytes(FILE_SIZE)) != FILE_SIZE:
                raise OSError(errno.ENOSPC, "no room for the counters file")
            buffer = mmap.mmap(fd, FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            counters = cls(buffer, path=path, fd=fd)
            cells = counters.cells
            cells[SLOT_PID] = os.getpid()
            cells[SLOT_CREATED_MS] = int(time.time() * 1000)
            counters.set_info(info)
            cells[SLOT_MAGIC] = MAGIC
            # Only a complete, locked file gets the name readers look for.
            os.rename(new_path, path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(new_path)
            except OSError:
                pass
            raise
        return counters

    @property
    def durable(self) -> bool:
        """Whether the counters live in a file (survive a kill), not only in this process."""
        return self.path is not None

    def set_info(self, info: dict[str, Any]) -> None:
        data = json.dumps(info, sort_keys=True, ensure_ascii=True).encode()
        room = FILE_SIZE - INFO_OFFSET - _INFO_LEN.size
        if len(data) > room:  # keep the resource; shorten the free text
            info = {**info, "detail": str(info.get("detail", ""))[:200]}
            data = json.dumps(info, sort_keys=True, ensure_ascii=True).encode()[:room]
        view = memoryview(self._buffer).cast("B")
        view[INFO_OFFSET + _INFO_LEN.size : INFO_OFFSET + _INFO_LEN.size + len(data)] = data
        _INFO_LEN.pack_into(view, INFO_OFFSET, len(data))

    def close(self, *, remove: bool) -> None:
        """Release the file; ``remove`` deletes it first (a clean exit with nothing lost)."""
        if self._fd < 0:
            return
        if remove and self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self._let_go()

    def abandon_after_fork(self) -> None:
        """In a forked child: let go of the parent's file without touching it, so that only the
        parent holds its lock (the descriptor and the mapping were inherited)."""
        self._let_go()

    def _let_go(self) -> None:
        # The mapping keeps the file open (mmap holds a duplicate descriptor, and with it the
        # lock): the counts move to plain memory and the mapping goes. Whoever still writes to
        # the old cells gets ValueError (Sequence ignores it).
        if self._fd < 0:
            return
        kept = bytearray(FILE_SIZE)
        kept[:INFO_OFFSET] = self._views[2][:INFO_OFFSET]
        for view in self._views:
            view.release()
        if isinstance(self._buffer, mmap.mmap):
            self._buffer.close()
        fd = self._fd
        self.__init__(kept)  # type: ignore[misc]
        try:
            os.close(fd)  # releases the lock (in a forked child: only the child's reference)
        except OSError:
            pass


# -- reading what others left -----------------------------------------------------------------


@dataclass
class Snapshot:
    """The counters of an instance as its file holds them."""

    path: Path
    cells: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, slot: int) -> int:
        return self.cells[slot]


def read_snapshot(path: Path, data: bytes) -> Snapshot | None:
    """The counters in ``data`` (a counter file's bytes), or None if it is not one."""
    if len(data) < INFO_OFFSET + _INFO_LEN.size:
        return None
    cells = list(struct.unpack_from(f"<{SLOTS}Q", data, 0))
    if cells[SLOT_MAGIC] != MAGIC:
        return None
    (length,) = _INFO_LEN.unpack_from(data, INFO_OFFSET)
    start = INFO_OFFSET + _INFO_LEN.size
    try:
        info = json.loads(data[start : start + length]) if length else {}
    except ValueError:
        info = {}
    return Snapshot(path, cells, info if isinstance(info, dict) else {})


class OrphanFile:
    """A counter file whose owner is gone, locked by this process until :meth:`delete`/:meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def snapshot(self) -> Snapshot | None:
        return read_snapshot(self.path, os.pread(self._fd, FILE_SIZE, 0))

    def delete(self) -> None:
        os.unlink(self.path)
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def remove_stale_new_files(directory: str | os.PathLike[str], older_than: float = 60.0) -> int:
    """Delete counter files a process was killed while creating (unlocked, older than
    ``older_than`` seconds: a live creator locks its file right after creating it)."""
    removed = 0
    try:
        paths = [p for p in Path(directory).iterdir() if p.name.endswith(NEW_SUFFIX)]
    except OSError:
        return 0
    for path in paths:
        try:
            if time.time() - path.stat().st_mtime < older_than:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def claim_orphans(directory: str | os.PathLike[str]) -> Iterator[OrphanFile]:
    """Counter files in ``directory`` nobody holds the lock of (their owner died or exited
    leaving something to report), each locked for the caller. Files being created (their
    temporary name) and files of live processes are skipped."""
    base = Path(directory)
    try:
        names = sorted(p for p in base.iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return
    for path in names:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not path.exists():  # deleted by its owner (clean exit) or by another reaper meanwhile
            os.close(fd)
            continue
        yield OrphanFile(path, fd)
