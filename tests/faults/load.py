"""Steady load for the fault suite: threads send GETs to the API processes at a fixed total rate.

Each request carries a fresh W3C ``traceparent``, so what was answered can be matched one by one
with what was stored (the event's ``trace_id`` is the client's). Every request ends in one of
three records:

- ``answered``: the client got a response (its status is kept): the event must be stored;
- ``refused``: the connection was refused, nothing reached the app: no event can exist;
- ``unsure``: sent, then the connection broke or timed out: the app may or may not have handled
  it, so its event may or may not exist (the scenarios arrange for this set to stay empty by
  taking a process out of the targets before stopping it).

Requests are spread round-robin over :attr:`Load.targets`, which a scenario may change while
the load runs (:meth:`Load.retarget`, e.g. to take an API process out before signalling it).
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    """What happened to the requests sent so far (trace ID → port)."""

    answered: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: dict[str, int] = field(default_factory=dict)
    unsure: dict[str, int] = field(default_factory=dict)


class Load:
    """``rate`` requests per second in total over ``targets`` (ports), from ``threads`` threads.

    The schedule is fixed: request ``n`` is due at ``start + n / rate``. A thread that falls
    behind sends at once, so the rate holds as long as the APIs keep up on average.
    """

    def __init__(self, targets: list[int], rate: float, threads: int = 8, timeout: float = 30.0) -> None:
        if rate <= 0 or not targets:
            raise ValueError("a load needs a positive rate and at least one target")
        self.rate = rate
        self.timeout = timeout
        self._targets = list(targets)
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"load-{i}") for i in range(threads)
        ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._started = 0.0
        self._stopped = 0.0
        self._in_flight: Counter[int] = Counter()
        self.tally = Tally()

    # -- control --------------------------------------------------------------------------------
    def start(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        """Stop sending; every request already sent is finished (answered or not) on return."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self._stopped = time.monotonic()
        return self.tally

    @property
    def targets(self) -> list[int]:
        with self._lock:
            return list(self._targets)

    def retarget(self, targets: list[int], settle: float = 30.0) -> None:
        """Send to ``targets`` from now on; returns once no request to a port left out is in flight."""
        if not targets:
            raise ValueError("a load needs at least one target")
        with self._lock:
            left_out = set(self._targets) - set(targets)
            self._targets = list(targets)
        deadline = time.monotonic() + settle
        while any(self._in_flight[port] for port in left_out):
            if time.monotonic() > deadline:
                raise AssertionError(f"requests to {sorted(left_out)} still in flight after {settle:.0f}s")
            time.sleep(0.01)

    # -- what happened --------------------------------------------------------------------------
    @property
    def answered(self) -> int:
        with self._lock:
            return len(self.tally.answered)

    @property
    def seconds(self) -> float:
        """How long the load ran (so far)."""
        end = self._stopped or time.monotonic()
        return end - self._started if self._started else 0.0

    @property
    def achieved_rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    # -- the senders ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = self._next
                self._next += 1
            delay = self._started + n / self.rate - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self._lock:
                port = self._targets[n % len(self._targets)]  # retargeted while waiting
                self._in_flight[port] += 1
            try:
                trace_id, outcome, status = self._send(port)
            finally:
                with self._lock:
                    self._in_flight[port] -= 1
            with self._lock:
                if outcome == "answered":
                    self.tally.answered[trace_id] = port
                    self.tally.statuses[status] += 1
                elif outcome == "refused":
                    self.tally.refused[trace_id] = port
                else:
                    self.tally.unsure[trace_id] = port

    def _send(self, port: int) -> tuple[str, str, int]:
        trace_id = os.urandom(16).hex()
        headers = {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01", "User-Agent": "usagelog-faults"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                return trace_id, "refused", 0
            conn.request(
                "GET", f"/api/items/{int.from_bytes(os.urandom(1), 'big') % 20 + 1}", headers=headers
            )
            response = conn.getresponse()
            response.read()
            return trace_id, "answered", int(response.status)
        except (OSError, http.client.HTTPException):
            return trace_id, "unsure", 0
        finally:
            conn.close()
