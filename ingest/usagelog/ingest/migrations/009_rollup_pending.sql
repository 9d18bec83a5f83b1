-- rollup_pending: the minutes whose rollups are due for a recompute. Ingest notes the minutes a
-- batch touched here in the same step as it stores the batch, and recomputes them (then forgets
-- them) at most every few seconds and before it gives up its session, instead of after every batch:
-- at high rates the current minute holds millions of events, and recomputing it after each batch
-- made ingest quadratic within a minute. A crash between the two leaves the minutes noted here;
-- the next ingest recomputes them.
CREATE TABLE IF NOT EXISTS ${DATABASE}.rollup_pending
(
    minute              DateTime('UTC'),
    noted_at            DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY minute;
