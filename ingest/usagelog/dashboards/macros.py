"""Turning a Grafana panel or alert query into the SQL ClickHouse runs, as Grafana does.

Two passes, in Grafana's order:

1. **Dashboard variables** (Grafana's frontend, ``templateSrv.replace``, then the ClickHouse
   plugin's ``applyTemplateVariables``): ``$__conditionalAll(cond, $var)``, ``$var``,
   ``${var}``, ``${var:format}``, ``[[var]]`` and the built-ins ``$__interval``,
   ``$__interval_ms``, ``$__from``, ``$__to`` and ``$__range*``. Alert rules skip this pass:
   Grafana evaluates them in its backend, where no dashboard exists.
2. **Plugin macros** (the plugin's backend, ``pkg/macros`` of grafana-clickhouse-datasource
   4.20 on ``macropro``): comments are blanked first, then every ``$__name`` or
   ``$__name(args)`` with a handler is replaced; unknown names are left as they are.

One deliberate difference from Grafana: formats that quote a value (``singlequote``,
``sqlstring``, ``doublequote`` and the plugin's default list format) also escape backslashes,
as ClickHouse string literals need; Grafana does not, which lets a value ending in ``\\``
break out of its quotes. Values are identical otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from .model import DashboardError

ALL_VALUE = "$__all"


class MacroError(DashboardError):
    """A query uses a macro or variable wrongly (bad arguments, unknown format, unbalanced parentheses)."""


@dataclass(frozen=True)
class TimeRange:
    """A query's time range (UTC) and interval, as Grafana hands it to the datasource."""

    start: dt.datetime
    end: dt.datetime
    interval_ms: int = 1000

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# --- intervals ----------------------------------------------------------------------------

# Grafana's ``rangeutil.roundInterval``: (below this many ms, use this interval).
_ROUNDING: tuple[tuple[int, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}


def round_interval(ms: float) -> int:
    for below, interval in _ROUNDING:
        if ms < below:
            return interval
    return 31_536_000_000


def parse_duration_ms(text: str) -> int:
    """``"30s"``, ``"1m"``, ``"2h"``, ``"7d"`` → milliseconds (Grafana's interval strings)."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d|w|y)\s*", text)
    if not match:
        raise MacroError(f"{text!r} is not a duration like 30s, 5m, 1h or 7d")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def calculate_interval_ms(seconds: float, resolution: int, min_interval: str = "") -> int:
    """Grafana's panel interval: the range over the resolution (max data points), rounded to a
    friendly interval, at least the panel's minimum interval."""
    interval = round_interval(seconds * 1000 / max(resolution, 1))
    if min_interval:
        interval = max(interval, parse_duration_ms(min_interval))
    return interval


def format_interval(ms: int) -> str:
    """The frontend's ``$__interval`` text (``rangeutil.secondsToHms``: the largest whole unit)."""
    for unit, size in (
        ("y", 31_536_000_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_go_duration(ms: int) -> str:
    """The backend's ``$__interval`` text (macropro's ``FormatDuration``: exact hours, minutes,
    seconds or milliseconds)."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms else "0s"


# --- pass 1: dashboard variables -------------------------------------------------------------


@dataclass
class Variable:
    """A dashboard variable's current value(s), as the frontend holds them.

    ``value`` is a string, a list of strings (multi-value), or ``ALL_VALUE``; ``options`` are
    all the values the variable offers (what "All" stands for when ``all_value`` is empty).
    """

    name: str
    value: str | list[str]
    options: list[str] = field(default_factory=list)
    all_value: str = ""
    text: str = ""

    @property
    def is_all(self) -> bool:
        return self.value == ALL_VALUE or self.value == [ALL_VALUE]


def _quote_single(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_sql(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _quote_double(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_escape(value: str) -> str:
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def _each(fn: Callable[[str], str], sep: str = ",") -> Callable[[list[str]], str]:
    return lambda values: sep.join(fn(v) for v in values)


# Grafana's format registry, for the formats a SQL query has use for. Each takes the list of
# values (one element for a single value).
_FORMATS: dict[str, Callable[[list[str]], str]] = {
    "raw": _each(str),
    "csv": _each(str),
    "singlequote": _each(_quote_single),
    "sqlstring": _each(_quote_sql),
    "doublequote": _each(_quote_double),
    "pipe": _each(str, "|"),
    "json": lambda values: json.dumps(values if len(values) != 1 else values[0]),
    "percentencode": _each(lambda v: quote(v, safe="")),
    "regex": lambda values: (
        _regex_escape(values[0])
        if len(values) == 1
        else "(" + "|".join(_regex_escape(v) for v in values) + ")"
    ),
    "glob": lambda values: values[0] if len(values) == 1 else "{" + ",".join(values) + "}",
}


def _plugin_default(values: list[str], multi: bool) -> str:
    """The ClickHouse plugin's own format (no format named): a list becomes ``'a','b'``, a single
    value is pasted as it is."""
    if multi:
        return ",".join(_quote_single(v) for v in values)
    return values[0] if values else ""


_VARIABLE = re.compile(
    r"\$(\w+)"  # $name
    r"|\[\[(\w+?)(?::(\w+))?\]\]"  # [[name]] or [[name:format]]
    r"|\$\{(\w+)(?::([^}]+))?\}"  # ${name} or ${name:format}
)


@dataclass(frozen=True)
class Builtins:
    """The values of Grafana's built-in variables for one panel query."""

    time: TimeRange

    def value(self, name: str, fmt: str | None) -> str | None:
        start_ms = int(self.time.start.timestamp() * 1000)
        end_ms = int(self.time.end.timestamp() * 1000)
        if name == "__interval":
            return format_interval(self.time.interval_ms)
        if name == "__interval_ms":
            return str(self.time.interval_ms)
        if name in ("__from", "__to"):
            ms = start_ms if name == "__from" else end_ms
            if fmt is None:
                return str(ms)
            if fmt in ("date:seconds",):
                return str(ms // 1000)
            if fmt in ("date", "date:iso"):
                return (
                    dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")
                )
            raise MacroError(f"${{{name}:{fmt}}}: unsupported format")
        if name == "__range_s":
            return str(int((end_ms - start_ms) / 1000))
        if name == "__range_ms":
            return str(end_ms - start_ms)
        if name == "__range":
            return format_interval(max(end_ms - start_ms, 1000) // 1000 * 1000)
        return None


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    """``$__conditionalAll(condition, $var)``: the condition, or ``1=1`` when ``$var`` is All or empty
    (the plugin's frontend, applied before variables)."""
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        open_at = index + len(macro) - 1
        close_at = _closing_paren(sql, open_at)
        args = _split_args(sql[open_at + 1 : close_at])
        if len(args) != 2:
            raise MacroError("$__conditionalAll takes a condition and a variable")
        ref = re.search(r"(?<=\$\{)\w+(?=[}:])|(?<=\$)\w+", args[1])
        phrase = args[0]
        if ref:
            variable = variables.get(ref.group(0))
            if variable is not None and (variable.is_all or variable.value in ("", [])):
                phrase = "1=1"
        sql = sql[:index] + phrase + sql[close_at + 1 :]
        index = sql.rfind(macro)
    return sql


def replace_variables(sql: str, variables: Mapping[str, Variable], builtins: Builtins | None = None) -> str:
    """Pass 1: what reaches the plugin's backend from a dashboard panel."""
    sql = apply_conditional_all(sql, variables)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        variable = variables.get(name)
        if variable is None:
            value = builtins.value(name, fmt) if builtins is not None else None
            return match.group(0) if value is None else value
        return format_variable(variable, fmt)

    return _VARIABLE.sub(substitute, sql)


def format_variable(variable: Variable, fmt: str | None) -> str:
    if variable.is_all:
        if variable.all_value:
            # A custom "All" value is pasted as it is, whatever the format (Grafana's CustomAllValue).
            return "All" if fmt == "text" else variable.all_value
        values, multi = list(variable.options), True
    elif isinstance(variable.value, list):
        values, multi = list(variable.value), True
    else:
        values, multi = [variable.value], False
    if fmt is None:
        return _plugin_default(values, multi)
    if fmt == "text":
        return variable.text or ", ".join(values)
    formatter = _FORMATS.get(fmt)
    if formatter is None:
        raise MacroError(f"${{{variable.name}:{fmt}}}: unknown variable format {fmt!r}")
    return formatter(values)


# --- pass 2: the plugin's backend macros ------------------------------------------------------


def _strip_comments(sql: str) -> str:
    """Blank ``--`` and ``/* */`` comments to spaces (same length), leaving string literals,
    backtick identifiers and ``$tag$`` strings alone (macropro with the plugin's comment style)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = _scan_quoted(sql, i, backslash=True)
            out.append(sql[i:j])
            i = j
        elif c == "`":
            j = _scan_quoted(sql, i, backslash=False)
            out.append(sql[i:j])
            i = j
        elif c == "$":
            end = _dollar_quote_end(sql, i)
            if end > 0:
                out.append(sql[i:end])
                i = end
            else:
                out.append(c)
                i += 1
        elif sql.startswith("--", i):
            j = i
            while j < n and sql[j] not in "\r\n":
                j += 1
            out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _scan_quoted(s: str, pos: int, backslash: bool) -> int:
    quote_char = s[pos]
    j = pos + 1
    while j < len(s):
        if backslash and s[j] == "\\" and j + 1 < len(s):
            j += 2
            continue
        if s[j] == quote_char:
            if j + 1 < len(s) and s[j + 1] == quote_char:
                j += 2
                continue
            return j + 1
        j += 1
    return j


def _dollar_quote_end(s: str, pos: int) -> int:
    match = re.match(r"\$([A-Za-z0-9_]*)\$", s[pos:])
    if not match:
        return -1
    tag = match.group(0)
    close = s.find(tag, pos + len(tag))
    return -1 if close < 0 else close + len(tag)


def _scan_plain_quoted(s: str, pos: int) -> int:
    """macropro's argument scanner: quotes with doubled-quote escapes only."""
    return _scan_quoted(s, pos, backslash=False)


def _closing_paren(s: str, open_at: int) -> int:
    depth = 0
    i = open_at
    while i < len(s):
        c = s[i]
        if c in "'\"":
            i = _scan_plain_quoted(s, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise MacroError("unbalanced parentheses")


def _split_args(raw: str) -> list[str]:
    raw = raw.strip()
    if not raw:
        return []
    args: list[str] = []
    depth = start = 0
    i = 0
    while i < len(raw):
        c = raw[i]
        if c in "'\"":
            i = _scan_plain_quoted(raw, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                raise MacroError(f"unexpected ')' at position {i}")
            depth -= 1
        elif c == "," and depth == 0:
            args.append(raw[start:i].strip())
            start = i + 1
        i += 1
    if depth:
        raise MacroError("unbalanced parentheses in arguments")
    args.append(raw[start:].strip())
    return args


def _seconds(t: dt.datetime) -> int:
    return math.floor(t.timestamp())


def _ms(t: dt.datetime) -> int:
    return math.floor(t.timestamp() * 1000)


def _one(name: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise MacroError(f"$__{name} expected 1 argument(s), received {len(args)}")
    return args[0]


def _date(t: dt.datetime) -> str:
    return f"toDate('{t.astimezone(dt.timezone.utc):%Y-%m-%d}')"


def _time_group(args: Sequence[str]) -> str:
    if len(args) != 2:
        raise MacroError(f"$__timeGroup expected 2 argument(s), received {len(args)}")
    seconds = round(parse_duration_ms(args[1].strip().strip("'\"")) / 1000)
    if seconds <= 0:
        raise MacroError("$__timeGroup: interval must be positive")
    return f"toStartOfInterval(toDateTime({args[0].strip()}), INTERVAL {seconds} second)"


def _macro_table(t: TimeRange) -> dict[str, Callable[[Sequence[str]], str]]:
    start_s, end_s = _seconds(t.start), _seconds(t.end)
    start_ms, end_ms = _ms(t.start), _ms(t.end)
    interval_s = max(int(t.interval_ms / 1000), 1)
    return {
        "fromTime": lambda a: f"toDateTime({start_s})",
        "toTime": lambda a: f"toDateTime({end_s})",
        "fromTime_ms": lambda a: f"fromUnixTimestamp64Milli({start_ms})",
        "toTime_ms": lambda a: f"fromUnixTimestamp64Milli({end_ms})",
        "timeFilter": lambda a: (
            f"{_one('timeFilter', a)} >= toDateTime({start_s}) AND {a[0]} <= toDateTime({end_s})"
        ),
        "timeFilter_ms": lambda a: (
            f"{_one('timeFilter_ms', a)} >= fromUnixTimestamp64Milli({start_ms}) "
            f"AND {a[0]} <= fromUnixTimestamp64Milli({end_ms})"
        ),
        "timeFrom": lambda a: f"{_one('timeFrom', a)} >= toDateTime({start_s})",
        "timeTo": lambda a: f"{_one('timeTo', a)} <= toDateTime({end_s})",
        "dateFilter": lambda a: f"{_one('dateFilter', a)} >= {_date(t.start)} AND {a[0]} <= {_date(t.end)}",
        "dateTimeFilter": lambda a: _date_time_filter(a, t),
        "dt": lambda a: _date_time_filter(a, t),
        "timeInterval": lambda a: (
            f"toStartOfInterval(toDateTime({_one('timeInterval', a)}), INTERVAL {interval_s} second)"
        ),
        "timeInterval_ms": lambda a: (
            f"toStartOfInterval(toDateTime64({_one('timeInterval_ms', a)}, 3), "
            f"INTERVAL {max(t.interval_ms, 1)} millisecond)"
        ),
        "interval_s": lambda a: str(interval_s),
        "interval": lambda a: format_go_duration(t.interval_ms),
        "interval_ms": lambda a: str(t.interval_ms),
        "timeGroup": _time_group,
    }


def _date_time_filter(args: Sequence[str], t: TimeRange) -> str:
    if len(args) != 2:
        raise MacroError(f"$__dateTimeFilter expected 2 argument(s), received {len(args)}")
    date_col, time_col = args
    return (
        f"({date_col} >= {_date(t.start)} AND {date_col} <= {_date(t.end)}) AND "
        f"({time_col} >= toDateTime({_seconds(t.start)}) AND {time_col} <= toDateTime({_seconds(t.end)}))"
    )


# Statement macros rewrite a whole query; usagelog's dashboards do not use them.
_STATEMENT_MACROS = ("columns", "rateColumns", "perSecondColumns", "increaseColumns", "lttb")


def expand_macros(sql: str, time: TimeRange) -> str:
    """Pass 2: the SQL the plugin sends to ClickHouse."""
    if "$__" not in sql:
        return sql
    work = _strip_comments(sql)
    handlers = _macro_table(time)
    out: list[str] = []
    i = 0
    while True:
        found = work.find("$__", i)
        if found < 0:
            out.append(work[i:])
            break
        out.append(work[i:found])
        name_start = found + 3
        name_end = name_start
        while name_end < len(work) and (work[name_end].isalnum() or work[name_end] == "_"):
            name_end += 1
        name = work[name_start:name_end]
        if name in _STATEMENT_MACROS:
            raise MacroError(f"$__{name} (a statement macro) is not supported here")
        handler = handlers.get(name)
        if handler is None:
            out.append(work[found:name_end])
            i = name_end
            continue
        raw, after = "", name_end
        if after < len(work) and work[after] == "(":
            try:
                close = _closing_paren(work, after)
                raw, after = work[after + 1 : close], close + 1
            except MacroError:
                pass
        out.append(handler(_split_args(raw)))
        i = after
    return "".join(out)


def render_query(
    sql: str, time: TimeRange, variables: Mapping[str, Variable] | None = None, dashboard: bool = True
) -> str:
    """Both passes: a panel query (``dashboard=True``) or an alert query (variables not applied)."""
    if dashboard:
        sql = replace_variables(sql, variables or {}, Builtins(time))
    return expand_macros(sql, time)
