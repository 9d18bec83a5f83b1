-- losses: the loss reports instances send (log records named usagelog.loss): events dropped at
-- the memory bound, a final flush that could not write, the tail a killed process left unwritten.
-- One row per report: a report redelivered (at-least-once, a spool read twice) folds into one
-- by report_id, and readers use FINAL. usagelog audit reconciles them with the stored sequence.
CREATE TABLE IF NOT EXISTS ${DATABASE}.losses
(
    report_id           String,
    reported_at         DateTime64(9, 'UTC'),
    service_name        LowCardinality(String),
    service_instance_id String,
    host_name           LowCardinality(String),
    reason              LowCardinality(String),
    count               UInt64,
    first_seq           UInt64,
    last_seq            UInt64,
    allocated_seq       UInt64,
    detail              String,
    location            String,
    received_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY report_id;
