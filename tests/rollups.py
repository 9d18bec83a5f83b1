"""The rollups' exactness for tests: every minute and hour of the rollups equal to the aggregates of
the stored events, each event once."""

from __future__ import annotations

from typing import Any

from usagelog.ingest import rollup

DIMS = ", ".join(rollup.DIMENSIONS)

# The same aggregates rollups keep, computed from usage_events with each event once.
RAW_BY_MINUTE = f"""
SELECT toStartOfMinute(timestamp) AS minute, {DIMS}, count() AS requests,
       countIf(error_type != '') AS exceptions, sum(request_size), sum(response_size),
       sum(duration_ns), max(duration_ns)
FROM usagelog.usage_events FINAL
GROUP BY minute, {DIMS}
ORDER BY minute, {DIMS}
"""
ROLLUP_BY_MINUTE = f"""
SELECT minute, {DIMS}, requests, exceptions, request_bytes, response_bytes, duration_ns_sum, duration_ns_max
FROM usagelog.usage_rollup_1m FINAL
ORDER BY minute, {DIMS}
"""
RAW_BY_HOUR = f"""
SELECT toStartOfHour(timestamp) AS hour, {DIMS},
       count(), sum(request_size), sum(response_size), sum(duration_ns)
FROM usagelog.usage_events FINAL GROUP BY hour, {DIMS} ORDER BY hour, {DIMS}
"""
ROLLUP_BY_HOUR = f"""
SELECT hour, {DIMS}, requests, request_bytes, response_bytes, duration_ns_sum
FROM usagelog.usage_rollup_1h FINAL ORDER BY hour, {DIMS}
"""


def assert_rollups_exact(store: Any) -> None:
    """Every minute and hour of the rollups equals the stored events' aggregates (some events stored)."""
    raw = store.query(RAW_BY_MINUTE)[1]
    assert raw, "no events to compare"
    assert store.query(ROLLUP_BY_MINUTE)[1] == raw
    assert store.query(ROLLUP_BY_HOUR)[1] == store.query(RAW_BY_HOUR)[1]
