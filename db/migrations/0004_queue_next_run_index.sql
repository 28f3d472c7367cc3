-- The Sentinel asks for the earliest future next_run_at of QUEUED jobs (when
-- to look for claimable jobs again). Without an index that reads every QUEUED
-- row, which a deep queue turns into a full scan on every poll.
CREATE INDEX IF NOT EXISTS ix_cf_queue_next_run
    ON cf_processing_queue (next_run_at) WHERE status = 'QUEUED';
