-- 0008: when a job was enqueued (cf_processing_queue.enqueued_at, unix ms,
-- added by the Go side of this migration; see migrate.go), for the queue's
-- age and the enqueue-to-start latency.
--
-- The Sentinel's own inserts set it. SQLite cannot give a column added by
-- ALTER TABLE a non-constant DEFAULT, so the trigger stamps the rows other
-- tools insert without it; the WHEN clause keeps it off our inserts.
DROP TRIGGER IF EXISTS cf_queue_enqueued_at;
CREATE TRIGGER cf_queue_enqueued_at
    AFTER INSERT ON cf_processing_queue
    FOR EACH ROW
    WHEN NEW.enqueued_at IS NULL
BEGIN
    UPDATE cf_processing_queue
        SET enqueued_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
        WHERE id = NEW.id;
END;

-- Jobs waiting now were enqueued at their last state change at the latest.
UPDATE cf_processing_queue
    SET enqueued_at = CAST((julianday(COALESCE(updated_at, 'now')) - 2440587.5) * 86400000 AS INTEGER)
    WHERE enqueued_at IS NULL AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING');
