-- rollup_added: the sums of each insert's new events, per minute and dimensions, until ingest
-- folds them into usage_rollup_1m (usagelog.ingest.rollup.fold). Where the store is chDB, which
-- stores each event once, the store's migrate then creates the materialized view filling it from
-- every insert into ${DATABASE}.usage_events (rollup.added_view_sql) and drops that table's by_time
-- projection: the rollups no longer read minutes of events again, and nothing else needs a copy of
-- every event ordered by time (time-range reads scan the table). A ClickHouse server, where two
-- writers can store one event at once, keeps by_time and the recompute (the table stays empty).
CREATE TABLE IF NOT EXISTS ${DATABASE}.rollup_added
(
    minute              DateTime('UTC'),
    service_name        LowCardinality(String),
    route               LowCardinality(String),
    method              LowCardinality(String),
    status_code         UInt16,
    region              LowCardinality(String),
    cluster             LowCardinality(String),
    service_instance_id String,
    requests            UInt64,
    exceptions          UInt64,
    request_bytes       UInt64,
    response_bytes      UInt64,
    duration_ns_sum     UInt64,
    duration_ns_max     UInt64,
    duration_q          AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), UInt64)
)
ENGINE = MergeTree
ORDER BY minute;
