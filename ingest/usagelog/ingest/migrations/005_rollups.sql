-- Rollups: per minute and per hour, by service, route, method, status, region, cluster and
-- instance. Dashboards read them for ranges longer than raw events are worth scanning (and
-- longer than raw retention); see docs/analytics.md for where they win.
--
-- Exact under duplicates: ingest recomputes every minute (and hour) a batch touched, from
-- usage_events with each event ID counted once, and inserts the result with a newer
-- `version`; ReplacingMergeTree keeps the newest, and readers use FINAL. A batch delivered
-- twice recomputes the same minutes to the same numbers, where a plain materialized view would
-- count it twice. The recompute runs before a spool segment is deleted or Kafka offsets are
-- committed, so a crash in between recomputes on the retry.
CREATE TABLE IF NOT EXISTS ${DATABASE}.usage_rollup_1m
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
    duration_q          AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), UInt64),
    version             DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toDate(minute)
ORDER BY (minute, service_name, route, method, status_code, region, cluster, service_instance_id);

CREATE TABLE IF NOT EXISTS ${DATABASE}.usage_rollup_1h
(
    hour                DateTime('UTC'),
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
    duration_q          AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), UInt64),
    version             DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, service_name, route, method, status_code, region, cluster, service_instance_id);

-- consumers and instances: first and last seen, kept by materialized views. min and max give
-- the same answer however often an event arrives, so these stay exact under redelivery.
CREATE TABLE IF NOT EXISTS ${DATABASE}.consumers
(
    user_id             String,
    service_name        LowCardinality(String),
    first_seen          SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    last_seen           SimpleAggregateFunction(max, DateTime64(9, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (user_id, service_name);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.consumers_mv TO ${DATABASE}.consumers AS
SELECT user_id, service_name, min(timestamp) AS first_seen, max(timestamp) AS last_seen
FROM ${DATABASE}.usage_events
GROUP BY user_id, service_name;

CREATE TABLE IF NOT EXISTS ${DATABASE}.instances
(
    service_instance_id String,
    service_name        SimpleAggregateFunction(any, String),
    host_name           SimpleAggregateFunction(any, String),
    region              SimpleAggregateFunction(any, String),
    cluster             SimpleAggregateFunction(any, String),
    first_seen          SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    last_seen           SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    last_stored         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    max_seq             SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY service_instance_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.instances_mv TO ${DATABASE}.instances AS
SELECT service_instance_id, any(service_name) AS service_name, any(host_name) AS host_name,
       any(region) AS region, any(cluster) AS cluster, min(timestamp) AS first_seen,
       max(timestamp) AS last_seen, max(inserted_at) AS last_stored, max(seq) AS max_seq
FROM ${DATABASE}.usage_events
GROUP BY service_instance_id;

-- Events stored before this migration.
INSERT INTO ${DATABASE}.consumers
SELECT user_id, service_name, min(timestamp), max(timestamp) FROM ${DATABASE}.usage_events
GROUP BY user_id, service_name;

INSERT INTO ${DATABASE}.instances
SELECT service_instance_id, any(service_name), any(host_name), any(region), any(cluster), min(timestamp),
       max(timestamp), max(inserted_at), max(seq)
FROM ${DATABASE}.usage_events
GROUP BY service_instance_id;
