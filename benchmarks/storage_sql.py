# ruff: noqa: E501
# (SQL text and the table of codec options read better one option to a line.)
"""SQL for ``benchmarks/storage.py``: the event generator and the candidate stored forms of ``usage_events``.

The generator runs in the engine (``INSERT ... SELECT FROM numbers(N)``), so 10M events take seconds,
not the minutes a Python loop would. Every value is a hash of the event's number, so a run is
reproducible. What it models:

- 30 service instances (3 services, 10 hosts, 2 regions and clusters), events dealt round-robin: each
  instance has its own random event ID prefix and a dense sequence 1, 2, 3, ...; timestamps rise with
  the event number (nanosecond jitter inside a step), so each instance's seq follows its time;
- ~2000 consumers with log-uniform (Zipf s=1) activity: the busiest has ~9% of all events; 4% of
  requests anonymous; a 401's user is only claimed (``user_id_claimed``), as the builder does;
- 30 routes (log-uniform popularity) with their methods, paths with IDs that depend on the consumer,
  a query string on 15%; status mostly 200 (88%), 201, 204, 4xx, 0.7% 5xx with error types on some;
- durations log-normal around 15 ms (nanoseconds), request sizes for POST/PUT/PATCH, response sizes
  log-normal around 1.8 kB; six user agents, one address per consumer (a second one sometimes);
- random 16-byte trace IDs and 8-byte span IDs (hex, as stored today); observed time = start +
  duration + 20 µs..2 ms; inserted_at a batch's time 0.3..2.3 s later; no bodies, no extra attributes;
- the checksum the way ``usagelog audit`` recomputes it (``queries._checksum_sql``).

Codecs are explicit wherever a size is compared: chDB compresses a column without a codec with LZ4
in small parts (a day of today's table) but with ZSTD in large ones (hundreds of MB), so "the
default" would measure the part size, not the codec. "(now)" in the codec lab is LZ4, what today's
day parts get.
"""

from __future__ import annotations

ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/api/v1/items/<int:item_id>"),
    ("GET", "/api/v1/items"),
    ("GET", "/api/v1/users/<user_id>/orders"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders/<int:order_id>"),
    ("GET", "/api/v1/search"),
    ("GET", "/health"),
    ("PUT", "/api/v1/items/<int:item_id>"),
    ("GET", "/api/v1/invoices/<int:invoice_id>"),
    ("POST", "/api/v1/payments"),
    ("GET", "/api/v1/payments/<int:payment_id>"),
    ("GET", "/api/v1/catalog/<slug>"),
    ("DELETE", "/api/v1/items/<int:item_id>"),
    ("GET", "/api/v1/accounts/<int:account_id>"),
    ("PATCH", "/api/v1/accounts/<int:account_id>"),
    ("GET", "/api/v1/reports/daily"),
    ("POST", "/api/v1/reports"),
    ("GET", "/api/v1/reports/<int:report_id>"),
    ("GET", "/api/v2/items/<int:item_id>"),
    ("GET", "/api/v2/items"),
    ("POST", "/api/v2/items"),
    ("GET", "/api/v1/carts/<int:cart_id>"),
    ("POST", "/api/v1/carts/<int:cart_id>/lines"),
    ("DELETE", "/api/v1/carts/<int:cart_id>/lines/<int:line_id>"),
    ("GET", "/api/v1/shipping/quote"),
    ("POST", "/api/v1/webhooks/<provider>"),
    ("GET", "/api/v1/me"),
    ("POST", "/api/v1/login"),
    ("GET", "/api/v1/export/<int:export_id>"),
    ("", ""),  # no route matched (404 on an unknown path)
)

USER_AGENTS = (
    "python-requests/2.32.3",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "axios/1.7.7",
)


def _sql_array(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values) + "]"


def generate_sql(
    table: str, events: int, days: int, end_ns: int, checksum_sql: str, users: int = 2000
) -> str:
    """INSERT the generated events into ``table`` (the current schema's columns)."""
    start_ns = end_ns - days * 86_400 * 10**9
    step = days * 86_400 * 10**9 // events
    routes = _sql_array([r for _, r in ROUTES])
    methods = _sql_array([m or "GET" for m, _ in ROUTES])

    def u(k: int) -> str:  # uniform in [0, 1) from the event number
        return f"(cityHash64(number, {k}) / 18446744073709551616.0)"

    def normal(k: int) -> str:  # a standard normal (Box-Muller)
        return f"(sqrt(-2 * log({u(k)} + 1e-12)) * cos(2 * pi() * {u(k + 1)}))"

    def hex64(k: int) -> str:
        return f"leftPad(lower(hex(cityHash64(number, {k}))), 16, '0')"

    return f"""
INSERT INTO {table}
SELECT event_id, timestamp, duration_ns, user_id, trace_id, span_id, service_name, service_instance_id,
       host_name, host_id, process_pid, cluster, region, method, route, path, query, status_code,
       error_type, client_address, user_agent, request_body, response_body, request_size, response_size,
       seq, monitored, {checksum_sql} AS checksum, observed_timestamp, user_id_claimed, attributes,
       inserted_at
FROM (
    SELECT
        number % 30 AS i,
        intDiv(number, 30) + 1 AS seq,
        concat(lower(hex(substring(SHA256(concat('prefix-', toString(i))), 1, 8))),
               leftPad(lower(hex(seq)), 16, '0')) AS event_id,
        toInt64({start_ns}) + toInt64(number) * {step} + toInt64(cityHash64(number, 1) % {max(step, 1)})
            AS start_ns,
        fromUnixTimestamp64Nano(start_ns, 'UTC') AS timestamp,
        toUInt64(greatest(exp(log(15e6) + 0.9 * {normal(2)}), 50000)) AS duration_ns,
        toUInt32(floor(pow({users}, {u(4)}))) AS u,
        toUInt8(floor(pow(30, {u(5)}))) AS r,
        {routes}[r] AS route,
        {methods}[r] AS method,
        multiIf({u(6)} < 0.88, 200, {u(6)} < 0.92, 201, {u(6)} < 0.93, 204, {u(6)} < 0.955, 404,
                {u(6)} < 0.97, 400, {u(6)} < 0.98, 401, {u(6)} < 0.985, 403, {u(6)} < 0.993, 429,
                {u(6)} < 0.998, 500, 503) AS status0,
        if(route = '', toUInt16(404), toUInt16(status0)) AS status_code,
        {u(7)} < 0.04 AS anonymous,
        concat('user-', leftPad(toString(u), 6, '0')) AS name,
        if(anonymous OR status_code = 401, '', name) AS user_id,
        if(NOT anonymous AND status_code = 401, name, '') AS user_id_claimed,
        if(status_code >= 500 AND {u(8)} < 0.6,
           ['ValueError', 'KeyError', 'TimeoutError', 'sqlalchemy.exc.OperationalError'][1 + cityHash64(number, 9) % 4],
           '') AS error_type,
        if(route = '', concat('/api/v1/unknown/', toString(cityHash64(number, 10) % 1000)),
           replaceRegexpAll(route, '<[^>]+>', toString(u * 1000 + cityHash64(number, 10) % 200))) AS path,
        if({u(11)} < 0.15, concat('page=', toString(1 + cityHash64(number, 12) % 5), '&limit=50'), '') AS query,
        concat({hex64(13)}, {hex64(14)}) AS trace_id,
        {hex64(15)} AS span_id,
        ['orders-api', 'billing-api', 'search-api'][1 + i % 3] AS service_name,
        UUIDNumToString(toFixedString(substring(SHA256(concat('instance-', toString(i))), 1, 16), 16))
            AS service_instance_id,
        concat('web-', toString(intDiv(i, 3))) AS host_name,
        lower(hex(substring(SHA256(host_name), 1, 16))) AS host_id,
        toUInt32(100 + i * 13) AS process_pid,
        ['prod-eu', 'prod-us'][1 + i % 2] AS cluster,
        ['eu-west-1', 'us-east-1'][1 + i % 2] AS region,
        IPv4NumToString(toUInt32(167772160 + (if(anonymous, cityHash64(number, 16) % 100000, u) * 4)
                                 + if({u(17)} < 0.1, 1, 0))) AS client_address,
        {_sql_array(list(USER_AGENTS))}[1 + (u + if({u(18)} < 0.05, 1, 0)) % {len(USER_AGENTS)}] AS user_agent,
        '' AS request_body,
        '' AS response_body,
        if(method IN ('POST', 'PUT', 'PATCH'), toUInt64(exp(log(400) + 0.7 * {normal(19)})), 0) AS request_size,
        if(status_code = 204, 0, toUInt64(exp(log(1800) + 1.0 * {normal(21)}))) AS response_size,
        {u(23)} < 0.001 AS monitored,
        fromUnixTimestamp64Nano(start_ns + toInt64(duration_ns) + 20000
                                + toInt64(cityHash64(number, 24) % 1980000), 'UTC') AS observed_timestamp,
        map() :: Map(String, String) AS attributes,
        fromUnixTimestamp64Milli(intDiv(start_ns, 1000000) + 300 + toInt64(cityHash64(intDiv(number, 5000)) % 2000),
                                 'UTC') AS inserted_at
    FROM numbers({events})
)
SETTINGS max_partitions_per_insert_block = 0
"""


# -- candidate stored forms --------------------------------------------------------------------------

# The columns of the recommended form, with the expression converting each from the current table.
# Stored columns first; ALIAS columns give back the current names and hex text for readers.
TYPED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # name, type and codec, conversion from the current row
    ("timestamp", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))", "timestamp"),
    ("duration_ns", "UInt64 CODEC(T64, ZSTD(1))", "duration_ns"),
    ("user_id", "String CODEC(ZSTD(1))", "user_id"),
    ("trace_bin", "FixedString(16) CODEC(NONE)", "toFixedString(unhex(trace_id), 16)"),
    ("span_bin", "FixedString(8) CODEC(NONE)", "toFixedString(unhex(span_id), 8)"),
    ("service_name", "LowCardinality(String) CODEC(ZSTD(1))", "service_name"),
    ("service_instance_id", "LowCardinality(String) CODEC(ZSTD(1))", "service_instance_id"),
    (
        "event_prefix",
        "UInt64 CODEC(ZSTD(1))",
        "reinterpretAsUInt64(reverse(unhex(substring(event_id, 1, 16))))",
    ),
    ("event_id_other", "String CODEC(ZSTD(1))", "''"),
    ("host_name", "LowCardinality(String) CODEC(ZSTD(1))", "host_name"),
    ("host_id", "LowCardinality(String) CODEC(ZSTD(1))", "host_id"),
    ("process_pid", "UInt32 CODEC(ZSTD(1))", "process_pid"),
    ("cluster", "LowCardinality(String) CODEC(ZSTD(1))", "cluster"),
    ("region", "LowCardinality(String) CODEC(ZSTD(1))", "region"),
    ("method", "LowCardinality(String) CODEC(ZSTD(1))", "method"),
    ("route", "LowCardinality(String) CODEC(ZSTD(1))", "route"),
    ("path", "String CODEC(ZSTD(3))", "path"),
    ("query", "String CODEC(ZSTD(1))", "query"),
    ("status_code", "UInt16 CODEC(ZSTD(1))", "status_code"),
    ("error_type", "LowCardinality(String) CODEC(ZSTD(1))", "error_type"),
    ("client_address", "String CODEC(ZSTD(1))", "client_address"),
    ("user_agent", "LowCardinality(String) CODEC(ZSTD(1))", "user_agent"),
    ("request_body", "String CODEC(ZSTD(3))", "request_body"),
    ("response_body", "String CODEC(ZSTD(3))", "response_body"),
    ("request_size", "UInt64 CODEC(T64, ZSTD(1))", "request_size"),
    ("response_size", "UInt64 CODEC(T64, ZSTD(1))", "response_size"),
    ("seq", "UInt64 CODEC(ZSTD(1))", "seq"),
    ("monitored", "Bool CODEC(ZSTD(1))", "monitored"),
    ("checksum_bin", "FixedString(8) CODEC(NONE)", "toFixedString(unhex(substring(checksum, 1, 16)), 8)"),
    (
        "observed_lag_ns",
        "Int64 CODEC(T64, ZSTD(1))",
        "toUnixTimestamp64Nano(observed_timestamp) - toUnixTimestamp64Nano(timestamp) - toInt64(duration_ns)",
    ),
    ("user_id_claimed", "String CODEC(ZSTD(1))", "user_id_claimed"),
    ("attributes", "Map(String, String) CODEC(ZSTD(1))", "attributes"),
    (
        "inserted_lag_ms",
        "Int64 CODEC(T64, ZSTD(1))",
        "toUnixTimestamp64Milli(inserted_at) - toUnixTimestamp64Milli(timestamp)",
    ),
)

# What readers see under the current names (ALIAS: computed on read, nothing stored).
ALIASES: tuple[tuple[str, str, str], ...] = (
    (
        "event_id",
        "String",
        "if(event_id_other != '', event_id_other, "
        "concat(leftPad(lower(hex(event_prefix)), 16, '0'), leftPad(lower(hex(seq)), 16, '0')))",
    ),
    ("trace_id", "String", "if(empty(trace_bin), '', lower(hex(trace_bin)))"),
    ("span_id", "String", "if(empty(span_bin), '', lower(hex(span_bin)))"),
    ("checksum", "String", "lower(hex(checksum_bin))"),
    (
        "observed_timestamp",
        "DateTime64(9, 'UTC')",
        "fromUnixTimestamp64Nano(toUnixTimestamp64Nano(timestamp) + toInt64(duration_ns) + observed_lag_ns, 'UTC')",
    ),
    (
        "inserted_at",
        "DateTime64(3, 'UTC')",
        "fromUnixTimestamp64Milli(toUnixTimestamp64Milli(timestamp) + inserted_lag_ms, 'UTC')",
    ),
)

PARTITIONS = {
    "day": "toDate(timestamp)",
    "week": "toMonday(timestamp)",
    "month": "toYYYYMM(timestamp)",
    "none": "tuple()",
}

RECOMMENDED_ORDER = "(user_id, timestamp, service_instance_id, seq)"


def typed_table_sql(table: str, partition: str, order: str = RECOMMENDED_ORDER) -> str:
    stored = [f"    {name} {kind}" for name, kind, _ in TYPED_COLUMNS]
    aliases = [f"    {name} {kind} ALIAS {expr}" for name, kind, expr in ALIASES]
    return (
        f"CREATE TABLE {table}\n(\n"
        + ",\n".join(stored + aliases)
        + f"\n)\nENGINE = ReplacingMergeTree\nPARTITION BY {PARTITIONS[partition]}\nORDER BY {order}"
    )


def typed_insert_sql(table: str, source: str) -> str:
    names = ", ".join(name for name, _, _ in TYPED_COLUMNS)
    exprs = ", ".join(f"{expr} AS {name}" for name, _, expr in TYPED_COLUMNS)
    return (
        f"INSERT INTO {table} ({names}) SELECT {exprs} FROM {source} "
        "SETTINGS max_partitions_per_insert_block = 0"
    )


# Per-column codec options, side by side in one table sorted like the candidates (user, time).
# Each row: a label, the column's type and codec, and its value converted from the current row.
LAB_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("event_id String LZ4 (now)", "String CODEC(LZ4)", "event_id"),
    ("event_id String ZSTD(3)", "String CODEC(ZSTD(3))", "event_id"),
    ("event_id FixedString(16) ZSTD(1)", "FixedString(16) CODEC(ZSTD(1))", "toFixedString(unhex(event_id), 16)"),
    ("event_prefix UInt64 ZSTD(1)", "UInt64 CODEC(ZSTD(1))", "reinterpretAsUInt64(reverse(unhex(substring(event_id, 1, 16))))"),
    ("event_prefix LowCardinality(FixedString(8))", "LowCardinality(FixedString(8)) CODEC(ZSTD(1))", "toFixedString(unhex(substring(event_id, 1, 16)), 8)"),
    ("seq UInt64 LZ4 (now)", "UInt64 CODEC(LZ4)", "seq"),
    ("seq UInt64 ZSTD(1)", "UInt64 CODEC(ZSTD(1))", "seq"),
    ("seq UInt64 T64 ZSTD(1)", "UInt64 CODEC(T64, ZSTD(1))", "seq"),
    ("timestamp LZ4 (now)", "DateTime64(9, 'UTC') CODEC(LZ4)", "timestamp"),
    ("timestamp Delta ZSTD(1)", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))", "timestamp"),
    ("timestamp DoubleDelta ZSTD(1)", "DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1))", "timestamp"),
    ("timestamp Delta ZSTD(3)", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(3))", "timestamp"),
    ("timestamp ZSTD(3)", "DateTime64(9, 'UTC') CODEC(ZSTD(3))", "timestamp"),
    ("timestamp µs Delta ZSTD(1)", "DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))", "toDateTime64(timestamp, 6, 'UTC')"),
    ("observed LZ4 (now)", "DateTime64(9, 'UTC') CODEC(LZ4)", "observed_timestamp"),
    ("observed Delta ZSTD(1)", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))", "observed_timestamp"),
    ("observed - timestamp T64 ZSTD(1)", "Int64 CODEC(T64, ZSTD(1))", "toUnixTimestamp64Nano(observed_timestamp) - toUnixTimestamp64Nano(timestamp)"),
    ("observed - (timestamp + duration) T64 ZSTD(1)", "Int64 CODEC(T64, ZSTD(1))", "toUnixTimestamp64Nano(observed_timestamp) - toUnixTimestamp64Nano(timestamp) - toInt64(duration_ns)"),
    ("duration_ns LZ4 (now)", "UInt64 CODEC(LZ4)", "duration_ns"),
    ("duration_ns ZSTD(1)", "UInt64 CODEC(ZSTD(1))", "duration_ns"),
    ("duration_ns T64 ZSTD(1)", "UInt64 CODEC(T64, ZSTD(1))", "duration_ns"),
    ("duration_ns T64 ZSTD(3)", "UInt64 CODEC(T64, ZSTD(3))", "duration_ns"),
    ("duration µs UInt32 T64 ZSTD(1)", "UInt32 CODEC(T64, ZSTD(1))", "toUInt32(intDiv(duration_ns, 1000))"),
    ("trace_id String LZ4 (now)", "String CODEC(LZ4)", "trace_id"),
    ("trace_id FixedString(16) NONE", "FixedString(16) CODEC(NONE)", "toFixedString(unhex(trace_id), 16)"),
    ("span_id FixedString(8) NONE", "FixedString(8) CODEC(NONE)", "toFixedString(unhex(span_id), 8)"),
    ("checksum String LZ4 (now)", "String CODEC(LZ4)", "checksum"),
    ("checksum FixedString(16) NONE", "FixedString(16) CODEC(NONE)", "toFixedString(unhex(checksum), 16)"),
    ("checksum FixedString(8) NONE", "FixedString(8) CODEC(NONE)", "toFixedString(unhex(substring(checksum, 1, 16)), 8)"),
    ("checksum UInt32 NONE", "UInt32 CODEC(NONE)", "reinterpretAsUInt32(reverse(unhex(substring(checksum, 1, 8))))"),
    ("user_id String LZ4 (now)", "String CODEC(LZ4)", "user_id"),
    ("user_id LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "user_id"),
    ("service_instance_id String LZ4 (now)", "String CODEC(LZ4)", "service_instance_id"),
    ("service_instance_id LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "service_instance_id"),
    ("service_instance_id LowCardinality ZSTD(1)", "LowCardinality(String) CODEC(ZSTD(1))", "service_instance_id"),
    ("host_id String LZ4 (now)", "String CODEC(LZ4)", "host_id"),
    ("host_id LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "host_id"),
    ("host_id LowCardinality ZSTD(1)", "LowCardinality(String) CODEC(ZSTD(1))", "host_id"),
    ("service_name LowCardinality (now)", "LowCardinality(String) CODEC(LZ4)", "service_name"),
    ("service_name LowCardinality ZSTD(1)", "LowCardinality(String) CODEC(ZSTD(1))", "service_name"),
    ("process_pid LZ4 (now)", "UInt32 CODEC(LZ4)", "process_pid"),
    ("process_pid ZSTD(1)", "UInt32 CODEC(ZSTD(1))", "process_pid"),
    ("route String LZ4 (now)", "String CODEC(LZ4)", "route"),
    ("route LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "route"),
    ("route LowCardinality ZSTD(1)", "LowCardinality(String) CODEC(ZSTD(1))", "route"),
    ("path String LZ4 (now)", "String CODEC(LZ4)", "path"),
    ("path String ZSTD(1)", "String CODEC(ZSTD(1))", "path"),
    ("path String ZSTD(3)", "String CODEC(ZSTD(3))", "path"),
    ("query String LZ4 (now)", "String CODEC(LZ4)", "query"),
    ("query String ZSTD(1)", "String CODEC(ZSTD(1))", "query"),
    ("query LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "query"),
    ("status_code LZ4 (now)", "UInt16 CODEC(LZ4)", "status_code"),
    ("status_code ZSTD(1)", "UInt16 CODEC(ZSTD(1))", "status_code"),
    ("status_code T64 ZSTD(1)", "UInt16 CODEC(T64, ZSTD(1))", "status_code"),
    ("client_address String LZ4 (now)", "String CODEC(LZ4)", "client_address"),
    ("client_address String ZSTD(1)", "String CODEC(ZSTD(1))", "client_address"),
    ("client_address LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "client_address"),
    ("user_agent String LZ4 (now)", "String CODEC(LZ4)", "user_agent"),
    ("user_agent LowCardinality LZ4", "LowCardinality(String) CODEC(LZ4)", "user_agent"),
    ("request_size LZ4 (now)", "UInt64 CODEC(LZ4)", "request_size"),
    ("request_size T64 ZSTD(1)", "UInt64 CODEC(T64, ZSTD(1))", "request_size"),
    ("response_size LZ4 (now)", "UInt64 CODEC(LZ4)", "response_size"),
    ("response_size T64 ZSTD(1)", "UInt64 CODEC(T64, ZSTD(1))", "response_size"),
    ("response_size ZSTD(3)", "UInt64 CODEC(ZSTD(3))", "response_size"),
    ("monitored LZ4 (now)", "Bool CODEC(LZ4)", "monitored"),
    ("inserted_at LZ4 (now)", "DateTime64(3, 'UTC') CODEC(LZ4)", "inserted_at"),
    ("inserted_at Delta ZSTD(1)", "DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))", "inserted_at"),
    ("inserted_at - timestamp ms T64 ZSTD(1)", "Int64 CODEC(T64, ZSTD(1))", "toUnixTimestamp64Milli(inserted_at) - toUnixTimestamp64Milli(timestamp)"),
    ("user_id_claimed String LZ4 (now)", "String CODEC(LZ4)", "user_id_claimed"),
    ("attributes Map LZ4 (now)", "Map(String, String) CODEC(LZ4)", "attributes"),
    ("request_body String ZSTD(3) (now)", "String CODEC(ZSTD(3))", "request_body"),
)  # fmt: skip


def lab_sql(table: str, source: str) -> tuple[str, str, dict[str, str]]:
    """CREATE and INSERT of the codec lab; the map from its column names (c0, c1, ...) to labels."""
    names = {f"c{k}": label for k, (label, _, _) in enumerate(LAB_COLUMNS)}
    cols = ",\n".join(f"    c{k} {kind}" for k, (_, kind, _) in enumerate(LAB_COLUMNS))
    create = (
        f"CREATE TABLE {table}\n(\n    k_user String, k_ts DateTime64(9, 'UTC'), k_inst String, k_seq UInt64,\n"
        f"{cols}\n)\nENGINE = MergeTree PARTITION BY toYYYYMM(k_ts) ORDER BY (k_user, k_ts, k_inst, k_seq)"
    )
    exprs = ", ".join(f"{expr}" for _, _, expr in LAB_COLUMNS)
    insert = (
        f"INSERT INTO {table} SELECT user_id, timestamp, service_instance_id, seq, {exprs} FROM {source} "
        "SETTINGS max_partitions_per_insert_block = 0"
    )
    return create, insert, names


# What dashboards, alert rules and rollups read by time, ordered by time: the projection's columns
# as a plain table (the same bytes a projection with this SELECT and ORDER BY would take).
NARROW_BY_TIME: tuple[tuple[str, str], ...] = (
    ("timestamp", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))"),
    ("user_id", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("service_name", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("service_instance_id", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("region", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("cluster", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("method", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("route", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("status_code", "UInt16 CODEC(ZSTD(1))"),
    ("error_type", "LowCardinality(String) CODEC(ZSTD(1))"),
    ("duration_ns", "UInt64 CODEC(T64, ZSTD(1))"),
    ("request_size", "UInt64 CODEC(T64, ZSTD(1))"),
    ("response_size", "UInt64 CODEC(T64, ZSTD(1))"),
    ("seq", "UInt64 CODEC(T64, ZSTD(1))"),  # with the instance: the rollups' dedup key (was event_id)
    # What the Errors dashboard's newest errors (path, event ID), the Pipeline dashboard's freshness
    # and the alert rules (inserted_at, observed_timestamp) read by time.
    ("path", "String CODEC(ZSTD(3))"),
    ("event_prefix", "UInt64 CODEC(ZSTD(1))"),
    ("observed_lag_ns", "Int64 CODEC(T64, ZSTD(1))"),
    ("inserted_lag_ms", "Int64 CODEC(T64, ZSTD(1))"),
)


def narrow_projection_sql(table: str) -> list[str]:
    """The narrow by_time as a real projection of a typed table (its codecs are the table's)."""
    names = ", ".join(name for name, _ in NARROW_BY_TIME)
    return [
        f"ALTER TABLE {table} MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'",
        f"ALTER TABLE {table} ADD PROJECTION by_time (SELECT {names} ORDER BY timestamp)",
    ]


def narrow_sql(table: str, source: str) -> tuple[str, str]:
    cols = ",\n".join(f"    {name} {kind}" for name, kind in NARROW_BY_TIME)
    create = f"CREATE TABLE {table}\n(\n{cols}\n)\nENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY timestamp"
    names = ", ".join(name for name, _ in NARROW_BY_TIME)
    insert = f"INSERT INTO {table} SELECT {names} FROM {source} SETTINGS max_partitions_per_insert_block = 0"
    return create, insert
