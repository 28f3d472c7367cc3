-- 0009: per-plugin settings an operator sets through the API (pause, job
-- timeout, max retries). Numbered 0009, not 0008: another branch adds 0008
-- (enqueued_at) at the same time, and the two must not share a number.
-- A plugin without a row has the defaults: not paused, the global
-- --job-timeout and --max-retries.
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_plugin_settings (
    plugin_name    TEXT PRIMARY KEY,
    paused_at      TEXT,     -- RFC 3339 UTC; NULL: not paused (its QUEUED jobs are claimed)
    job_timeout_ms INTEGER,  -- NULL: --job-timeout; 0: no timeout for this plugin
    max_retries    INTEGER,  -- NULL: --max-retries
    updated_at     TEXT NOT NULL
);
