-- Retention: each table's TTL comes from a USAGELOG_RETENTION_* variable and is (re)applied by
-- usagelog ingest at start (usagelog.ingest.retention). Tables are partitioned by day or month,
-- so expired data leaves as whole parts instead of being rewritten row by row.
ALTER TABLE ${DATABASE}.usage_events MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE ${DATABASE}.monitored_events MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE ${DATABASE}.dead_letters MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE ${DATABASE}.usage_rollup_1m MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE ${DATABASE}.usage_rollup_1h MODIFY SETTING ttl_only_drop_parts = 1;
