"""The optional per-instance journal (``USAGELOG_JOURNAL=true``; default ``false``): each finished
exchange is encoded and written to the page cache by the request thread before it returns.

A process kill (SIGKILL, the OOM killer) cannot lose what is in the page cache, only a machine
crash can; so with the journal on, a kill loses no answered request, where the default loses
those of the last flush interval (``USAGELOG_FLUSH_INTERVAL_MS``, see ``docs/inapp-loss.md`` for
the measurements). The price is encoding every event twice (once here, once in the batch) on
the request thread, plus a ``write`` system call.

Journal files are spool segments in all but name: ``<created_ms>-<instance>-<pid>-j<n>.journal``
in ``USAGELOG_SPOOL_DIR``, one frame (one event) per request. The background thread starts a new
file every :data:`ROTATE_BYTES` and deletes an old one once every sequence number that could be
in it was written through the normal path. On a clean exit they are deleted; when the instance
is gone, :func:`~usagelog.instrumentation.losses.reap_orphans` renames them to sealed segments,
so their events are stored (ingest keeps one copy of an event written both ways).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .counters import safe_name
from .exchange import Exchange
from .spool import encode_frame

SUFFIX = ".journal"
ROTATE_BYTES = 4 * 1024 * 1024

EncodeOne = Callable[[Sequence[Exchange]], tuple[bytes, int]]


def journal_marker(instance_id: str, pid: int) -> str:
    """The part of a journal file's name that says whose it is."""
    return f"-{safe_name(instance_id)}-{pid}-j"


class Journal:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        instance_id: str,
        encode: EncodeOne,
        allocated: Callable[[], int],
        *,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.instance_id = instance_id
        self.encode = encode
        self.allocated = allocated
        self.rotate_bytes = rotate_bytes
        self._n = 0
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        # Rotated files: (path, fd, highest sequence number allocated when it was rotated out).
        self._old: list[tuple[Path, int, int]] = []
        self._open()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._n += 1
        marker = journal_marker(self.instance_id, os.getpid())
        path = self.directory / f"{int(time.time() * 1000):013d}{marker}{self._n:06d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._path = path
        self._size = 0

    # -- request path --------------------------------------------------------------------
    def write(self, exchange: Exchange) -> None:
        """Encode one exchange and append it (one ``write``: the kernel appends it whole)."""
        payload, count = self.encode((exchange,))
        if count:
            frame = encode_frame(payload)
            os.write(self._fd, frame)
            self._size += len(frame)  # approximate across threads; only decides rotation

    # -- background ------------------------------------------------------------------------
    def settle(self, low: int) -> None:
        """``low``: every sequence number below it was written. Rotate a big file; delete old
        files all of whose events are written."""
        if self._size >= self.rotate_bytes and self._path is not None:
            path, fd = self._path, self._fd
            self._open()  # request threads pick up the new descriptor from here on
            # Read after the switch: whoever still writes to the old file took its number before.
            self._old.append((path, fd, self.allocated()))
        keep = []
        for path, fd, last in self._old:
            # A request writes here only before its number is written, and its number was
            # allocated before the file was rotated out: all such numbers are below ``low``.
            if last < low:
                os.unlink(path)
                os.close(fd)
            else:
                keep.append((path, fd, last))
        self._old = keep

    def close(self, *, remove: bool) -> None:
        files = [(p, fd) for p, fd, _ in self._old]
        if self._path is not None:
            files.append((self._path, self._fd))
        for path, fd in files:
            if remove:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            try:
                os.close(fd)
            except OSError:
                pass
        self._old, self._path, self._fd = [], None, -1

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent's files stay the parent's."""
        self.close(remove=False)


def orphan_journals(directory: str | os.PathLike[str], instance_id: str, pid: int) -> list[Path]:
    marker = journal_marker(instance_id, pid)
    try:
        return sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX) and marker in p.name)
    except OSError:
        return []
