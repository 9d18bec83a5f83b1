"""``usagelog.wait.wait_until``: the one deadline loop (chDB turns, child processes, health checks)."""

from __future__ import annotations

import time

import pytest

from usagelog.wait import wait_until


def test_returns_the_predicates_value_once_it_holds_and_tells_once() -> None:
    tries: list[float] = []
    told: list[bool] = []

    def third_time_lucky() -> str | None:
        tries.append(time.monotonic())
        return "open" if len(tries) == 3 else None

    assert wait_until(third_time_lucky, timeout=5, interval=0.01, on_wait=lambda: told.append(True)) == "open"
    assert len(tries) == 3
    assert told == [True]


def test_gives_none_after_the_timeout_having_tried_until_then() -> None:
    tries: list[float] = []
    started = time.monotonic()
    assert wait_until(lambda: tries.append(time.monotonic()), timeout=0.3, interval=0.05) is None
    assert 0.3 <= time.monotonic() - started < 2
    assert len(tries) >= 4 and tries[-1] - started >= 0.3  # the last try is at or after the deadline


def test_a_zero_timeout_is_one_try_and_no_wait() -> None:
    told: list[bool] = []
    tries: list[int] = []
    assert wait_until(lambda: tries.append(1), timeout=0, on_wait=lambda: told.append(True)) is None
    assert tries == [1] and told == []


def test_a_predicate_that_holds_at_once_never_waits() -> None:
    told: list[bool] = []
    assert wait_until(lambda: True, timeout=10, on_wait=lambda: told.append(True)) is True
    assert told == []


def test_exceptions_from_the_predicate_propagate() -> None:
    def broken() -> bool:
        raise OSError("no such directory")

    with pytest.raises(OSError, match="no such directory"):
        wait_until(broken, timeout=5)
