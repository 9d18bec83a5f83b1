"""Numbers shown with a Grafana unit (``percent``, ``ms``, ``reqps``, ``bytes``, ...) on the offline page."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

# unit -> (suffix after the number, whether large values get an SI prefix)
_SUFFIX = {
    "short": ("", True),
    "none": ("", False),
    "percent": ("%", False),
    "percentunit": ("%", False),
    "reqps": (" req/s", True),
    "ops": (" ops/s", True),
    "ms": (" ms", False),
    "s": (" s", False),
    "ns": (" ns", False),
    "bytes": ("B", True),
    "decbytes": ("B", True),
    "Bps": ("B/s", True),
    "binBps": ("B/s", True),
}

# What Grafana accepts as a unit id in usagelog's dashboards (a structural test checks them).
KNOWN_UNITS = frozenset({*_SUFFIX, "dateTimeAsIso", "dateTimeFromNow", "string"})


def _si(value: float) -> tuple[str, str]:
    magnitude = abs(value)
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:.3g}", prefix
    return _plain(value), ""


def _plain(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def format_value(value: Any, unit: str = "", decimals: int | None = None) -> str:
    """``value`` as the page shows it: dates as ISO-8601, numbers with their unit."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if unit in ("dateTimeAsIso", "dateTimeFromNow"):
        if number <= 0:
            return "—"
        return dt.datetime.fromtimestamp(number / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if unit in ("", "none") and decimals is None:
        # No unit: the number as it is (a sequence number, a status), as Grafana shows it.
        return str(int(number)) if number == int(number) and abs(number) < 1e15 else f"{number:.6g}"
    suffix, scaled = _SUFFIX.get(unit, ("", True))
    if unit == "percentunit":
        number *= 100
    if unit == "s" and number >= 120 and decimals is None:
        return _duration(number)
    prefix = ""
    if decimals is not None:
        text = f"{number:,.{decimals}f}"
    elif scaled:
        text, prefix = _si(number)
    else:
        text = _plain(number)
    if suffix.startswith(" "):  # a word: 1.2k req/s
        return f"{text}{prefix}{suffix}"
    if suffix and (prefix or suffix[0].isalpha()):  # a symbol with a prefix: 1.2 kB, 30 B/s
        return f"{text} {prefix}{suffix}"
    return f"{text}{prefix}{suffix}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {rest}s"


def axis_suffix(unit: str) -> str:
    """The suffix a chart axis puts after its tick labels."""
    return _SUFFIX.get(unit, ("", True))[0]
