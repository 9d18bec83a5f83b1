-- usage_events in a compact stored form (docs/pipeline.md, "Storage"); readers keep every column
-- name and value they had: the columns stored differently are given back by ALIAS columns.
--
-- - IDs as bytes: trace_bin (16) and span_bin (8), zero bytes for none; trace_id and span_id are
--   their hex text again ('' for none).
-- - checksum64: the first 64 bits of the event's 128-bit checksum (ingest verifies all 128 bits on
--   arrival; the audit recomputes the first 64 over the stored columns); checksum: its 16 hex digits.
-- - The event ID, <16 hex digits random per process><seq as 16 hex digits>, is not stored: only its
--   first half (event_prefix) is, and event_id_other holds any ID of another form whole.
-- - observed_timestamp as nanoseconds after the request's end (timestamp + duration_ns; Int64
--   arithmetic wraps both ways, so any value comes back exact), inserted_at as milliseconds after
--   timestamp.
-- - No partitions (a consumer's events, whatever their span, are one key range in few parts: by day,
--   a year was 365 partitions to visit, by month 12, each costing more than the read itself), ordered
--   by consumer and time as before; codecs per column, and ZSTD for the projections' columns (they
--   do not take the table's codecs: default_compression_codec applies to them). Retention: expired
--   rows leave in TTL merges (ttl_only_drop_parts off: there is no partition to drop).
-- - Projections: by_time (what dashboards, alert rules and rollups read by time) and by_instance
--   (an instance's sequence: ingest's duplicate check reads a batch's (instance, seq) pairs there).
--
-- Converted by copy and exchange; every statement can run again after a crash at any point: the
-- conversion reads only the logical columns, which the converted table gives back too.
DROP TABLE IF EXISTS ${DATABASE}.usage_events_new;

CREATE TABLE ${DATABASE}.usage_events_new
(
    event_prefix        UInt64 CODEC(ZSTD(1)),
    event_id_other      String CODEC(ZSTD(1)),
    timestamp           DateTime64(9, 'UTC') CODEC(T64, ZSTD(1)),
    duration_ns         UInt64 CODEC(T64, ZSTD(1)),
    user_id             String CODEC(ZSTD(1)),
    trace_bin           FixedString(16) CODEC(NONE),
    span_bin            FixedString(8) CODEC(NONE),
    service_name        LowCardinality(String) CODEC(ZSTD(1)),
    service_instance_id LowCardinality(String) CODEC(ZSTD(1)),
    host_name           LowCardinality(String) CODEC(ZSTD(1)),
    host_id             LowCardinality(String) CODEC(ZSTD(1)),
    process_pid         UInt32 CODEC(T64, ZSTD(1)),
    cluster             LowCardinality(String) CODEC(ZSTD(1)),
    region              LowCardinality(String) CODEC(ZSTD(1)),
    method              LowCardinality(String) CODEC(ZSTD(1)),
    route               LowCardinality(String) CODEC(ZSTD(1)),
    path                String CODEC(ZSTD(3)),
    query               String CODEC(ZSTD(1)),
    status_code         UInt16 CODEC(ZSTD(1)),
    error_type          LowCardinality(String) CODEC(ZSTD(1)),
    client_address      String CODEC(ZSTD(1)),
    user_agent          LowCardinality(String) CODEC(ZSTD(1)),
    request_body        String CODEC(ZSTD(3)),
    response_body       String CODEC(ZSTD(3)),
    request_size        UInt64 CODEC(T64, ZSTD(1)),
    response_size       UInt64 CODEC(T64, ZSTD(1)),
    seq                 UInt64 CODEC(ZSTD(1)),
    monitored           Bool CODEC(ZSTD(1)),
    checksum64          UInt64 CODEC(NONE),
    observed_offset_ns  Int64 CODEC(T64, ZSTD(1)),
    user_id_claimed     String CODEC(ZSTD(1)),
    attributes          Map(String, String) CODEC(ZSTD(1)),
    inserted_offset_ms  Int64 DEFAULT toUnixTimestamp64Milli(now64(3)) - intDiv(toUnixTimestamp64Nano(timestamp), 1000000) CODEC(T64, ZSTD(1)),
    event_id            String ALIAS if(event_id_other != '', event_id_other, concat(leftPad(lower(hex(event_prefix)), 16, '0'), leftPad(lower(hex(seq)), 16, '0'))),
    trace_id            String ALIAS if(trace_bin = toFixedString('', 16), '', lower(hex(trace_bin))),
    span_id             String ALIAS if(span_bin = toFixedString('', 8), '', lower(hex(span_bin))),
    checksum            String ALIAS leftPad(lower(hex(checksum64)), 16, '0'),
    observed_timestamp  DateTime64(9, 'UTC') ALIAS fromUnixTimestamp64Nano(toUnixTimestamp64Nano(timestamp) + toInt64(duration_ns) + observed_offset_ns, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') ALIAS fromUnixTimestamp64Milli(intDiv(toUnixTimestamp64Nano(timestamp), 1000000) + inserted_offset_ms, 'UTC'),
    PROJECTION by_time
    (
        SELECT timestamp, event_prefix, event_id_other, user_id, service_name, service_instance_id, host_name,
               cluster, region, method, route, path, status_code, error_type, duration_ns, request_size,
               response_size, seq, monitored, observed_offset_ns, inserted_offset_ms
        ORDER BY timestamp
    ),
    PROJECTION by_instance
    (
        SELECT service_instance_id, seq, event_prefix, event_id_other
        ORDER BY service_instance_id, seq
    )
)
ENGINE = ReplacingMergeTree
PARTITION BY tuple()
ORDER BY (user_id, timestamp, service_instance_id, seq, event_prefix, event_id_other)
SETTINGS deduplicate_merge_projection_mode = 'rebuild', ttl_only_drop_parts = 0,
    default_compression_codec = 'ZSTD(1)';

INSERT INTO ${DATABASE}.usage_events_new
    (event_prefix, event_id_other, timestamp, duration_ns, user_id, trace_bin, span_bin, service_name,
     service_instance_id, host_name, host_id, process_pid, cluster, region, method, route, path, query,
     status_code, error_type, client_address, user_agent, request_body, response_body, request_size,
     response_size, seq, monitored, checksum64, observed_offset_ns, user_id_claimed, attributes,
     inserted_offset_ms)
SELECT
    if(match(event_id, '^[0-9a-f]{32}$') AND substring(event_id, 17) = leftPad(lower(hex(seq)), 16, '0'),
       reinterpretAsUInt64(reverse(unhex(substring(event_id, 1, 16)))), 0),
    if(match(event_id, '^[0-9a-f]{32}$') AND substring(event_id, 17) = leftPad(lower(hex(seq)), 16, '0'),
       '', event_id),
    timestamp, duration_ns, user_id,
    toFixedString(substring(unhex(trace_id), 1, 16), 16),
    toFixedString(substring(unhex(span_id), 1, 8), 8),
    service_name, service_instance_id, host_name, host_id, process_pid, cluster, region, method, route,
    path, query, status_code, error_type, client_address, user_agent, request_body, response_body,
    request_size, response_size, seq, monitored,
    reinterpretAsUInt64(reverse(unhex(substring(checksum, 1, 16)))),
    toUnixTimestamp64Nano(observed_timestamp) - toUnixTimestamp64Nano(timestamp) - toInt64(duration_ns),
    user_id_claimed, attributes,
    toUnixTimestamp64Milli(inserted_at) - intDiv(toUnixTimestamp64Nano(timestamp), 1000000)
FROM ${DATABASE}.usage_events
SETTINGS max_partitions_per_insert_block = 0;

EXCHANGE TABLES ${DATABASE}.usage_events AND ${DATABASE}.usage_events_new;

DROP TABLE ${DATABASE}.usage_events_new;
