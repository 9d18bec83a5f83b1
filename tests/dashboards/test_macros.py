"""Grafana's variable interpolation and the ClickHouse plugin's macros, as the plugin (4.20) expands them."""

from __future__ import annotations

import datetime as dt

import pytest

from usagelog.dashboards.macros import (
    ALL_VALUE,
    Builtins,
    MacroError,
    TimeRange,
    Variable,
    calculate_interval_ms,
    expand_macros,
    format_go_duration,
    format_interval,
    render_query,
    replace_variables,
)

# The plugin's own test vectors use these instants (pkg/macros/macros_test.go).
FROM = dt.datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=dt.timezone.utc)
TO = dt.datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=dt.timezone.utc)
RANGE = TimeRange(FROM, TO, interval_ms=30_000)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__fromTime", "toDateTime(1415792726)"),
        ("$__toTime", "toDateTime(1447328726)"),
        ("$__fromTime_ms", "fromUnixTimestamp64Milli(1415792726371)"),
        ("$__toTime_ms", "fromUnixTimestamp64Milli(1447328726371)"),
        ("$__timeFilter(ts)", "ts >= toDateTime(1415792726) AND ts <= toDateTime(1447328726)"),
        (
            "$__timeFilter_ms(ts)",
            "ts >= fromUnixTimestamp64Milli(1415792726371) AND ts <= fromUnixTimestamp64Milli(1447328726371)",
        ),
        ("$__dateFilter(d)", "d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"),
        (
            "$__dateTimeFilter(d, t)",
            "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
            "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))",
        ),
        ("$__timeInterval(ts)", "toStartOfInterval(toDateTime(ts), INTERVAL 30 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30000 millisecond)"),
        ("$__interval_s", "30"),
        ("$__interval_ms", "30000"),
        ("$__interval", "30s"),
        ("$__timeFrom(ts)", "ts >= toDateTime(1415792726)"),
        ("$__timeTo(ts)", "ts <= toDateTime(1447328726)"),
        ("$__timeGroup(ts, '5m')", "toStartOfInterval(toDateTime(ts), INTERVAL 300 second)"),
    ],
)
def test_plugin_macros_expand_to_the_plugins_sql(sql: str, expected: str) -> None:
    assert expand_macros(sql, RANGE) == expected


def test_macro_arguments_may_hold_calls_commas_in_strings_and_nested_parentheses() -> None:
    sql = "SELECT $__timeInterval(toDateTime64(ts, 3)) AS t WHERE $__timeFilter(coalesce(a, 'x,y)'))"
    assert expand_macros(sql, RANGE) == (
        "SELECT toStartOfInterval(toDateTime(toDateTime64(ts, 3)), INTERVAL 30 second) AS t "
        "WHERE coalesce(a, 'x,y)') >= toDateTime(1415792726) "
        "AND coalesce(a, 'x,y)') <= toDateTime(1447328726)"
    )


def test_comments_are_blanked_first_so_a_macro_in_a_comment_never_expands() -> None:
    sql = "SELECT 1 -- $__timeFilter(x)\n/* $__fromTime */ FROM t WHERE $__timeFilter(ts)"
    out = expand_macros(sql, RANGE)
    assert "$__" not in out and out.count("toDateTime(1415792726)") == 1
    assert out.startswith("SELECT 1 " + " " * len("-- $__timeFilter(x)") + "\n")
    # A quote inside a string, escaped with a backslash, does not end the string.
    assert expand_macros("SELECT 'it\\'s -- not a comment', $__interval_s", RANGE) == (
        "SELECT 'it\\'s -- not a comment', 30"
    )


def test_unknown_macros_stay_and_wrong_arguments_are_an_error() -> None:
    assert expand_macros("SELECT $__unknown(x), $__", RANGE) == "SELECT $__unknown(x), $__"
    with pytest.raises(MacroError, match="expected 1 argument"):
        expand_macros("WHERE $__timeFilter(a, b)", RANGE)
    with pytest.raises(MacroError, match="statement macro"):
        expand_macros("SELECT $__columns(t, k, v) FROM x", RANGE)


def test_intervals_follow_grafanas_rounding_and_the_panels_minimum() -> None:
    day = 86400
    assert calculate_interval_ms(day, 600) == 120_000  # 144 s per point, rounded to 2 m
    assert calculate_interval_ms(7 * day, 600) == 900_000
    assert calculate_interval_ms(30 * day, 600) == 3_600_000
    assert calculate_interval_ms(3600, 1200) == 2000
    assert calculate_interval_ms(3600, 1200, "1m") == 60_000
    assert [format_interval(ms) for ms in (1000, 120_000, 3_600_000, 86_400_000)] == ["1s", "2m", "1h", "1d"]
    assert [format_go_duration(ms) for ms in (500, 30_000, 86_400_000)] == ["500ms", "30s", "24h"]


SERVICE = Variable("service", ["orders-api", "billing-api"], ["orders-api", "billing-api", "search"])
ROUTE_ALL = Variable("route", ALL_VALUE, ["/a", "/b"])
CONSUMER = Variable("consumer", "o'brien\\", ["o'brien\\"], all_value="''")
CONSUMER_ALL = Variable("consumer", ALL_VALUE, ["alice"], all_value="''")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("service IN (${service:singlequote})", "service IN ('orders-api','billing-api')"),
        ("service IN ($service)", "service IN ('orders-api','billing-api')"),  # the plugin's own format
        ("[[service:csv]]", "orders-api,billing-api"),
        ("${service:pipe}", "orders-api|billing-api"),
        ("${service:regex}", "(orders-api|billing-api)"),
        ("${service:json}", '["orders-api", "billing-api"]'),
        ("route IN (${route:singlequote})", "route IN ('/a','/b')"),  # All without allValue: every option
        ("${route:text}", "/a, /b"),
        # Quotes and backslashes are escaped the way ClickHouse reads them.
        ("u = ${consumer:singlequote}", "u = 'o\\'brien\\\\'"),
        ("u = ${consumer:sqlstring}", "u = 'o''brien\\\\'"),
        ("u = ${consumer:doublequote}", 'u = "o\'brien\\\\"'),
        # A custom All value is pasted as written, whatever the format (Grafana's CustomAllValue).
        ("${consumer_all:singlequote} = ''", "'' = ''"),
        ("$unknown stays", "$unknown stays"),
    ],
)
def test_variables_are_formatted_as_grafana_formats_them(sql: str, expected: str) -> None:
    variables = {"service": SERVICE, "route": ROUTE_ALL, "consumer": CONSUMER, "consumer_all": CONSUMER_ALL}
    assert replace_variables(sql, variables) == expected


def test_conditional_all_drops_the_condition_when_the_variable_is_all() -> None:
    sql = (
        "WHERE $__conditionalAll(route IN (${route:singlequote}), $route) "
        "AND $__conditionalAll(s IN ($service), ${service})"
    )
    out = replace_variables(sql, {"route": ROUTE_ALL, "service": SERVICE})
    assert out == "WHERE 1=1 AND s IN ('orders-api','billing-api')"


def test_builtin_variables_and_the_two_passes_in_order() -> None:
    time = TimeRange(FROM, TO, interval_ms=60_000)
    assert replace_variables(
        "$__interval $__interval_ms $__from ${__to:date:seconds}", {}, Builtins(time)
    ) == ("1m 60000 1415792726371 1447328726")
    # A panel query: variables first (frontend), macros second (backend); $__interval_s is left
    # to the backend because the frontend knows no such variable.
    sql = (
        "SELECT $__timeInterval(ts) t, count() / $__interval_s FROM e "
        "WHERE $__timeFilter(ts) AND s = '$__interval'"
    )
    assert render_query(sql, time, {}) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) t, count() / 60 FROM e "
        "WHERE ts >= toDateTime(1415792726) AND ts <= toDateTime(1447328726) AND s = '1m'"
    )
    # An alert query skips the variables pass; the backend spells the interval its own way.
    assert render_query("SELECT '$service', $__interval", time, {"service": SERVICE}, dashboard=False) == (
        "SELECT '$service', 1m"
    )
