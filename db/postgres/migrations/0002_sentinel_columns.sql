-- 0002: the Go Sentinel's own state in the cf_* tables: the columns SQLite's
-- migrations 0002 and 0003 add (see ../../migrate.go), as nullable columns
-- so that the Casparian tools keep reading and writing the tables as
-- before, plus the one several Sentinels need. ADD COLUMN IF NOT EXISTS
-- skips a column a table already has.
--
-- Times are TIMESTAMPTZ here where SQLite keeps RFC 3339 text or unix
-- milliseconds: PostgreSQL compares and indexes them natively, and with
-- several Sentinels on several hosts the server's now() is the one clock
-- they share.
ALTER TABLE cf_processing_queue
    ADD COLUMN IF NOT EXISTS claimed_by          TEXT,        -- worker identity key holding the claim
    ADD COLUMN IF NOT EXISTS attempt             INTEGER,     -- incremented on every claim; fencing token
    ADD COLUMN IF NOT EXISTS next_run_at         TIMESTAMPTZ, -- NULL = claimable now (a retry's backoff)
    ADD COLUMN IF NOT EXISTS metrics_json        TEXT,        -- receipt metrics {name: int64}
    ADD COLUMN IF NOT EXISTS artifacts_json      TEXT,        -- receipt artifacts [{k: v}]
    ADD COLUMN IF NOT EXISTS updated_at          TIMESTAMPTZ, -- last state change
    ADD COLUMN IF NOT EXISTS cancel_requested_at TIMESTAMPTZ, -- an operator cancelled the RUNNING job; it ends SKIPPED
    -- The lease id (sentinel_lease.id) of the Sentinel the claim was made
    -- through. Crash recovery requeues the RUNNING jobs of Sentinels whose
    -- lease expired, and only those. No foreign key: lease rows go away,
    -- the jobs' history stays.
    ADD COLUMN IF NOT EXISTS sentinel_id         TEXT;

ALTER TABLE cf_file_location
    ADD COLUMN IF NOT EXISTS missing_since TIMESTAMPTZ; -- the last scan did not find the file; NULL while it is there

-- The claim path's indexes; SQLite's migrations 0002–0005 give the reasons.
-- The claim indexes are partial (status = 'QUEUED'): a claim removes one
-- entry from each and a conclusion touches neither.
CREATE INDEX IF NOT EXISTS ix_cf_queue_claimable
    ON cf_processing_queue (plugin_name, priority DESC, id) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS ix_cf_queue_claimable_any
    ON cf_processing_queue (priority DESC, id) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS ix_cf_queue_next_run
    ON cf_processing_queue (next_run_at) WHERE status = 'QUEUED';
-- RUNNING jobs of one worker (reconciliation when it re-identifies).
CREATE INDEX IF NOT EXISTS ix_cf_queue_claimed_by
    ON cf_processing_queue (claimed_by) WHERE status = 'RUNNING';
-- RUNNING jobs claimed through one Sentinel (recovery after its lease
-- expired).
CREATE INDEX IF NOT EXISTS ix_cf_queue_sentinel
    ON cf_processing_queue (sentinel_id) WHERE status = 'RUNNING';
-- Rows other tools inserted with NULL status, priority or retry_count.
CREATE INDEX IF NOT EXISTS ix_cf_queue_nulls
    ON cf_processing_queue (id)
    WHERE status IS NULL OR priority IS NULL OR retry_count IS NULL;
-- Listing jobs of one plugin, newest first.
CREATE INDEX IF NOT EXISTS ix_cf_queue_plugin
    ON cf_processing_queue (plugin_name, id);
