-- monitored_events: the events matching USAGELOG_MONITOR, kept apart for quick debugging
-- access (a small table, short retention: 7 days; change with ALTER TABLE ... MODIFY TTL).
CREATE TABLE IF NOT EXISTS ${DATABASE}.monitored_events AS ${DATABASE}.usage_events
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (user_id, timestamp, service_instance_id, seq, event_id)
TTL toDateTime(timestamp) + INTERVAL 7 DAY;
