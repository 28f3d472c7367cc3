-- 0010: fewer index writes per job. Every claim and every conclusion updated
-- these two partial indexes although nearly nothing reads them:
--
-- ix_cf_queue_claimed_by (claimed_by) WHERE status = 'RUNNING' had a row
-- inserted by every claim and deleted by every conclusion; it served only
-- JobsRunning(worker), which runs when a worker (re)identifies. The RUNNING
-- jobs are at most the slots in flight, and the original schema's
-- ix_cf_processing_queue_status (status) finds them all.
--
-- ix_cf_queue_next_run (next_run_at) WHERE status = 'QUEUED' held every
-- QUEUED job, though only backed-off ones have a next_run_at: each enqueue
-- inserted a NULL entry and each claim deleted it. It now holds only the
-- jobs that wait for a time.
DROP INDEX IF EXISTS ix_cf_queue_claimed_by;
DROP INDEX IF EXISTS ix_cf_queue_next_run;
CREATE INDEX IF NOT EXISTS ix_cf_queue_next_run
    ON cf_processing_queue (next_run_at) WHERE status = 'QUEUED' AND next_run_at IS NOT NULL;
