-- by_time: usage_events is ordered by user (a timeline is one range read), so a time range
-- across all users would read whole day partitions. This projection keeps the columns that
-- dashboards, alert rules and rollups read, ordered by time; the engine picks it for any query
-- that filters on timestamp and reads only these columns. Bodies, headers, trace IDs and other
-- per-event detail stay in the table only (read per user, or by event ID).
-- A ReplacingMergeTree rebuilds the projection of parts it merges, so folded duplicates leave it too.
ALTER TABLE ${DATABASE}.usage_events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE ${DATABASE}.usage_events ADD PROJECTION IF NOT EXISTS by_time
(
    SELECT timestamp, event_id, user_id, service_name, service_instance_id, host_name, cluster, region,
           method, route, path, status_code, error_type, duration_ns, request_size, response_size, seq,
           monitored, observed_timestamp, inserted_at
    ORDER BY timestamp
);
-- Events stored before this migration get the projection too (once, synchronously).
ALTER TABLE ${DATABASE}.usage_events MATERIALIZE PROJECTION by_time SETTINGS mutations_sync = 1;
