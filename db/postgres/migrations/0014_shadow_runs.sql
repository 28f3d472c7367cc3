-- 0014: shadow runs of a new plugin version (issue #20 part 5), as SQLite's
-- 0014: the runs, and per shadow job the manifest it runs and the base
-- job's receipt it is compared with. Numbered 0014 like SQLite's (0013 is
-- taken by another change). No cf_ prefix: the Casparian tools' schema
-- check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_shadow_runs (
    id               BIGSERIAL PRIMARY KEY,
    plugin_name      TEXT NOT NULL,
    manifest_id      BIGINT NOT NULL,
    version          TEXT NOT NULL,
    base_manifest_id BIGINT NOT NULL,
    base_version     TEXT NOT NULL,
    state            TEXT NOT NULL,
    jobs             BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    ended_at         TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS ix_sentinel_shadow_runs_plugin ON sentinel_shadow_runs (plugin_name, state);

CREATE TABLE IF NOT EXISTS sentinel_shadow_jobs (
    job_id          BIGINT PRIMARY KEY,
    run_id          BIGINT NOT NULL,
    manifest_id     BIGINT NOT NULL,
    file_version_id BIGINT NOT NULL,
    base_job_id     BIGINT NOT NULL,
    base_artifacts  TEXT,
    base_metrics    TEXT
);
CREATE INDEX IF NOT EXISTS ix_sentinel_shadow_jobs_run ON sentinel_shadow_jobs (run_id);

-- A shadow deploy stores its manifest with status SHADOW, which the
-- original's PluginStatusEnum lacks (as 0003 did for SUPERSEDED). The value
-- is not used in this transaction, so it may be added here.
DO $$
BEGIN
    IF to_regtype('pluginstatusenum') IS NOT NULL THEN
        ALTER TYPE pluginstatusenum ADD VALUE IF NOT EXISTS 'SHADOW';
    END IF;
END $$;
