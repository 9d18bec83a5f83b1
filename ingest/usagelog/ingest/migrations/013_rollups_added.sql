-- rollup_added: the sums of each insert's new events, per minute and dimensions, until ingest
-- folds them into usage_rollup_1m (usagelog.ingest.rollup.fold). Where the store is chDB, which
-- stores each event once, the store's migrate then creates the materialized view filling it from
-- every insert into ${DATABASE}.usage_events (rollup.added_view_sql) and drops that table's by_time
-- projection: the rollups no longer read minutes of events again, and nothing else needs a copy of
-- every event ordered by time (time-range reads scan the table). A ClickHouse server, where two
-- writers can store one event at once, keeps by_time and the recompute (the table stays empty).
-- Its columns are the minute rollup's (version unused: left at its default).
CREATE TABLE IF NOT EXISTS ${DATABASE}.rollup_added AS ${DATABASE}.usage_rollup_1m
ENGINE = MergeTree
ORDER BY minute;
