-- 0012: the attempts of a job that did not complete (see the SQLite
-- migration of the same number): one row per attempt that ended FAILED,
-- REQUEUED or SKIPPED, written by its conclusion; completions write none.
CREATE TABLE IF NOT EXISTS sentinel_job_attempts (
    job_id     INTEGER NOT NULL REFERENCES cf_processing_queue (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    worker     TEXT,
    claim_time TIMESTAMP WITHOUT TIME ZONE,
    end_time   TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    outcome    TEXT NOT NULL,
    message    TEXT,
    PRIMARY KEY (job_id, attempt)
);
