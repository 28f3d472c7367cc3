-- 0009: per-plugin settings an operator sets through the API (pause, job
-- timeout, max retries), as SQLite's 0009. Numbered 0009, skipping 0008:
-- another branch adds 0008 (enqueued_at) at the same time. A plugin
-- without a row has the defaults: not paused, the global --job-timeout
-- and --max-retries.
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_plugin_settings (
    plugin_name    TEXT PRIMARY KEY,
    paused_at      TIMESTAMPTZ,  -- NULL: not paused (its QUEUED jobs are claimed)
    job_timeout_ms BIGINT,       -- NULL: --job-timeout; 0: no timeout for this plugin
    max_retries    INTEGER,      -- NULL: --max-retries
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
