-- 0012: the attempts of a job that did not complete, for the job's history
-- (the console's job detail, GET /api/v1/jobs/{id}). The queue row holds the
-- latest attempt; every attempt that ended FAILED, REQUEUED or SKIPPED gets
-- a row here, written by its conclusion in the same transaction. Completions,
-- nearly all conclusions, write nothing here: the row itself is their record.
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_job_attempts (
    job_id     INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT,             -- claimed_by of that attempt
    claim_time TEXT,             -- as cf_processing_queue.claim_time
    end_time   TEXT NOT NULL,
    outcome    TEXT NOT NULL,    -- FAILED, REQUEUED or SKIPPED
    message    TEXT,             -- the reason, as error_message
    PRIMARY KEY (job_id, attempt)
);

-- A pruned job (or one another tool deletes) takes its history with it.
DROP TRIGGER IF EXISTS cf_queue_attempts_gone;
CREATE TRIGGER cf_queue_attempts_gone
    AFTER DELETE ON cf_processing_queue
    FOR EACH ROW
BEGIN
    DELETE FROM sentinel_job_attempts WHERE job_id = OLD.id;
END;
