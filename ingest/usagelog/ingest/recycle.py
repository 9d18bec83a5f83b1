"""A long-running worker's memory bound: measure its own memory, and start afresh in place.

chDB keeps about 2 MiB for every session a process opened and closed (chdb-io/chdb#298), and a
worker must close its session now and then so that other processes (a CLI query, a second worker
on the same directory) get the chDB directory. No chDB setting or allocator option takes that
memory back, so a worker whose own memory (:func:`memory_bytes`) passes
``USAGELOG_WORKER_MAX_MEMORY_MB`` (default 448; 0 turns the bound off) stops cleanly after a
committed batch and executes itself again: same process ID, arguments, environment and worker
ID — the pattern of celery's ``worker_max_memory_per_child`` and gunicorn's ``max_requests``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

MB = 1024 * 1024
# Blocked across the exec: a stop asked for meanwhile waits, pending, for the new program's handler.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def memory_bytes() -> int | None:
    """This process's own memory now: its resident set but the pages mapped from files (None
    where ``/proc`` is not there: no bound). The engine's code, ~230 MB of the chDB library
    mapped from disk, is resident in every chDB process, shared between them and given back by
    the kernel under pressure; it is not what grows, so the bound leaves it out."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")  # resident - shared
    except (OSError, ValueError, IndexError):
        return None


def give_back_arrow_memory() -> None:
    """Return the free pages of pyarrow's allocator to the system. Its default pool (mimalloc
    here) keeps what the archive's tables of a batch used after they are gone: 40 to 150 MiB
    of a worker's memory after a batch, and everything a large table took (a test frees one of
    ~600 MiB). Nothing when pyarrow was never imported."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()


def accept_stop_signals() -> None:
    """Let SIGTERM and SIGINT in (they were blocked if this program was executed by
    :func:`reexecute`); call once their handlers are installed."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def reexecute(stopped: Callable[[], bool]) -> None:
    """Replace this program with a fresh copy of itself, unless ``stopped()`` says a stop was
    asked for (then return). SIGTERM and SIGINT are blocked first: one that comes after the check
    stays pending for the new program instead of being handled by this one and forgotten."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if stopped():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    logging.shutdown()  # flushes the handlers: the log lines so far come before the new program's
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
