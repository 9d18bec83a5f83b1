"""Times as people type them: ``now``, ``now-24h``, ``7d`` (back from now), ISO-8601, epoch milliseconds."""

from __future__ import annotations

import datetime as dt
import re

_RELATIVE = re.compile(r"^now(?:\s*([+-])\s*(\d+)\s*(s|m|h|d|w|M|y))?(?:/(s|m|h|d|w|M|y))?$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 30 * 86400, "y": 365 * 86400}


def parse_time(expr: str, now: dt.datetime, end: bool = False) -> dt.datetime:
    """A Grafana time: ``now``, ``now-24h``, ``now-7d/d`` (rounded to the day; to its end when
    ``end``), an ISO-8601 time (UTC unless it says otherwise) or epoch milliseconds."""
    text = expr.strip()
    match = _RELATIVE.match(text)
    if match:
        sign, amount, unit, round_to = match.groups()
        moment = now
        if amount:
            try:
                delta = dt.timedelta(seconds=int(amount) * _SECONDS[unit])
                moment = moment - delta if sign == "-" else moment + delta
            except OverflowError:  # now-99999999999d: before year 1 or after 9999
                raise ValueError(f"{expr!r} is out of range") from None
        if round_to:
            size = _SECONDS[round_to]
            floor = int(moment.timestamp()) // size * size
            moment = dt.datetime.fromtimestamp(floor + (size if end else 0), dt.timezone.utc)
        return moment
    try:
        if text.isdigit():
            return dt.datetime.fromtimestamp(int(text) / 1000, dt.timezone.utc)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        # OverflowError/OSError: epoch milliseconds beyond what the platform's time functions take.
        raise ValueError(f"{expr!r} is not a time (now, now-24h, 7d, an ISO-8601 time or epoch ms)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def parse_since(text: str) -> str:
    """``24h`` / ``7d`` / ``30m`` (a duration back from now) → ``now-24h``; anything else as it is."""
    stripped = text.strip()
    return f"now-{stripped}" if re.fullmatch(r"\d+\s*[smhdwMy]", stripped) else stripped


def time_range(
    since: str,
    until: str = "now",
    now: dt.datetime | None = None,
    names: tuple[str, str] = ("--since", "--until"),
) -> tuple[dt.datetime, dt.datetime]:
    """``--since`` / ``--until`` as a (start, end) pair; refuses an empty or reversed range.

    Errors name the option (``names``: the CLI's by default; the Python API passes its own)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    since_name, until_name = names
    try:
        start = parse_time(parse_since(since), now)
    except ValueError as exc:
        raise ValueError(f"{since_name}: {exc}") from None
    try:
        end = parse_time(parse_since(until), now, end=True)
    except ValueError as exc:
        raise ValueError(f"{until_name}: {exc}") from None
    if end <= start:
        raise ValueError(
            f"{until_name} ({end:%Y-%m-%d %H:%M:%S}) is not after {since_name} ({start:%Y-%m-%d %H:%M:%S})"
        )
    return start, end
