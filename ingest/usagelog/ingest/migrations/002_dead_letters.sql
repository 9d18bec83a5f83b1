-- dead_letters: what ingest could not store, with the reason and where it came from
-- (spool segment and offset, or Kafka topic/partition/offset). Kept 30 days.
-- Only the first 64 KiB of a payload is kept.
CREATE TABLE IF NOT EXISTS ${DATABASE}.dead_letters
(
    received_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    source              LowCardinality(String),
    location            String,
    reason              String,
    event_id            String,
    service_instance_id String,
    payload             String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toDate(received_at)
ORDER BY (received_at, source)
TTL toDateTime(received_at) + INTERVAL 30 DAY;
