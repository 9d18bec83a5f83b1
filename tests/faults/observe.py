"""Watching processes while a scenario runs: resident memory sampled in the background."""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Callable
from pathlib import Path


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def own_bytes(pid: int) -> int | None:
    """What a worker's memory bound counts of ``pid`` (:func:`usagelog.ingest.recycle.memory_bytes`):
    its resident set but the pages mapped from files (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MemorySampler:
    """Every ``interval`` seconds, the RSS (or what ``measure`` gives) of each process ``pids()``
    names (role → pid)."""

    def __init__(
        self,
        pids: Callable[[], dict[str, int]],
        interval: float = 2.0,
        measure: Callable[[int], int | None] = rss_bytes,
    ) -> None:
        self.pids = pids
        self.interval = interval
        self.measure = measure
        self.samples: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[int]]:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        return self.samples

    def _run(self) -> None:
        while True:
            for role, pid in self.pids().items():
                rss = self.measure(pid)
                if rss is not None:
                    self.samples.setdefault(role, []).append(rss)
            if self._stop.wait(self.interval):
                return


def thirds(samples: list[int]) -> tuple[float, float]:
    """Median of the first third and of the last third of ``samples``."""
    third = max(1, len(samples) // 3)
    return statistics.median(samples[:third]), statistics.median(samples[-third:])
