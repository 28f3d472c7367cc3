-- 0014: shadow runs of a new plugin version (issue #20 part 5). A deploy
-- with --shadow stores the new manifest with status SHADOW (the ACTIVE one
-- keeps serving) and queues low-priority jobs that run it over the file
-- versions the ACTIVE version completed, into shadow sinks. Numbered 0014:
-- 0013 is taken by another change. No cf_ prefix: the Casparian tools'
-- schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_shadow_runs (
    id               INTEGER PRIMARY KEY,
    plugin_name      TEXT NOT NULL,
    manifest_id      INTEGER NOT NULL,  -- the shadow version's cf_plugin_manifest row
    version          TEXT NOT NULL,
    base_manifest_id INTEGER NOT NULL,  -- the version ACTIVE when the run began
    base_version     TEXT NOT NULL,
    state            TEXT NOT NULL,     -- RUNNING, PROMOTED or DISCARDED
    jobs             INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    ended_at         TEXT
);
CREATE INDEX IF NOT EXISTS ix_sentinel_shadow_runs_plugin ON sentinel_shadow_runs (plugin_name, state);

-- One row per shadow job: the manifest it runs (a claim reads it while a run
-- is RUNNING) and the base job it mirrors, whose receipt (artifacts and
-- metrics, as cf_processing_queue held them) is copied here when the run
-- begins, so that pruning the base job does not lose what compare needs.
CREATE TABLE IF NOT EXISTS sentinel_shadow_jobs (
    job_id          INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL,
    manifest_id     INTEGER NOT NULL,
    file_version_id INTEGER NOT NULL,
    base_job_id     INTEGER NOT NULL,
    base_artifacts  TEXT,
    base_metrics    TEXT
);
CREATE INDEX IF NOT EXISTS ix_sentinel_shadow_jobs_run ON sentinel_shadow_jobs (run_id);
