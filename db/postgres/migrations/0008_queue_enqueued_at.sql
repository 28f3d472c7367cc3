-- 0008: when a job was enqueued, for the queue's age and the
-- enqueue-to-start latency. The DEFAULT stamps every insert, the
-- Sentinel's and other tools'. It is set after the column is added so that
-- existing rows stay NULL (unknown) instead of taking the migration's time;
-- the jobs waiting now were enqueued at their last state change at the
-- latest.
ALTER TABLE cf_processing_queue ADD COLUMN IF NOT EXISTS enqueued_at TIMESTAMPTZ;
ALTER TABLE cf_processing_queue ALTER COLUMN enqueued_at SET DEFAULT now();
UPDATE cf_processing_queue
    SET enqueued_at = COALESCE(updated_at, now())
    WHERE enqueued_at IS NULL AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING');
