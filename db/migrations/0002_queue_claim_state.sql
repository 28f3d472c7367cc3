-- 0002: indexes for the Go Sentinel's claim state on cf_processing_queue.
--
-- The columns themselves (claimed_by, attempt, next_run_at, metrics_json,
-- artifacts_json, updated_at) are added by the Go side of this migration
-- (see migrate.go), only where missing, before this file runs.

-- Claims for a set of plugins: equality on status and plugin_name, then the
-- claim order.
CREATE INDEX IF NOT EXISTS ix_cf_queue_claim
    ON cf_processing_queue (status, plugin_name, priority DESC, id);

-- Claims for a worker that runs any plugin ("*"): the same order without the
-- plugin column, so no sort is needed.
CREATE INDEX IF NOT EXISTS ix_cf_queue_claim_any
    ON cf_processing_queue (status, priority DESC, id);

-- RUNNING jobs of one worker (reconciliation after a restart). Partial, so
-- finished jobs, which keep claimed_by as history, cost nothing.
CREATE INDEX IF NOT EXISTS ix_cf_queue_claimed_by
    ON cf_processing_queue (claimed_by) WHERE status = 'RUNNING';

-- Rows other tools inserted with NULL status, priority or retry_count. Only
-- such rows are in this index, so normalising them before each claim is a
-- lookup of (usually) nothing rather than a table scan.
CREATE INDEX IF NOT EXISTS ix_cf_queue_nulls
    ON cf_processing_queue (id)
    WHERE status IS NULL OR priority IS NULL OR retry_count IS NULL;
