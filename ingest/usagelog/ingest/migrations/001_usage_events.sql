-- usage_events: one row per request, ordered for per-user timelines, partitioned by day.
-- ReplacingMergeTree on the full sorting key (which ends with event_id) folds any copy of an
-- event that reached storage twice (at-least-once delivery); writers also skip IDs already
-- stored, and readers that must be exact use FINAL.
CREATE TABLE IF NOT EXISTS ${DATABASE}.usage_events
(
    event_id            String,
    timestamp           DateTime64(9, 'UTC'),
    duration_ns         UInt64,
    user_id             String,
    trace_id            String,
    span_id             String,
    service_name        LowCardinality(String),
    service_instance_id String,
    host_name           LowCardinality(String),
    host_id             String,
    process_pid         UInt32,
    cluster             LowCardinality(String),
    region              LowCardinality(String),
    method              LowCardinality(String),
    route               String,
    path                String,
    query               String,
    status_code         UInt16,
    error_type          LowCardinality(String),
    client_address      String,
    user_agent          String,
    request_body        String CODEC(ZSTD(3)),
    response_body       String CODEC(ZSTD(3)),
    request_size        UInt64,
    response_size       UInt64,
    seq                 UInt64,
    monitored           Bool,
    checksum            String,
    observed_timestamp  DateTime64(9, 'UTC'),
    attributes          Map(String, String),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (user_id, timestamp, service_instance_id, seq, event_id);
