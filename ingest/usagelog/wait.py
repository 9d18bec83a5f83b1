"""Waiting until something holds, up to a deadline: one loop for every wait in usagelog.

A chDB directory another process holds, a child process that should be listening, a health check
that should answer: each is a predicate tried until it holds or the time is up. The caller
decides what a timeout means (an error with its own message, a retry, a skip)::

    client = wait_until(try_open, timeout=60, interval=0.1, on_wait=say_we_wait)
    if client is None:
        raise StoreError("... gave up after 60s")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    on_wait: Callable[[], object] | None = None,
) -> T | None:
    """Call ``predicate`` until it returns something truthy, and return that.

    The predicate is always called at least once, and once more after the last sleep, so a
    ``timeout`` of 0 is a single try. Returns None when ``timeout`` seconds passed without
    success. ``on_wait`` is called once, when the first try failed and there is time left to
    wait (to tell the user, say). Exceptions from either callable propagate.
    """
    deadline = time.monotonic() + timeout
    told = False
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        if on_wait is not None and not told:
            on_wait()
            told = True
        time.sleep(interval)
