-- 0011: lineage of file outputs (issue #20), as SQLite's 0011: one row per
-- artifact of every COMPLETED attempt (artifact_index -1 and a NULL uri when
-- the job reported none), written in the transaction that completes the job;
-- a reused job gets copies of the earlier job's rows. Two B-trees only, as on
-- SQLite: the primary key (by input version) and the reuse key's index.
-- Numbered 0011 like SQLite's (0010 is taken there).
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_outputs (
    file_version_id BIGINT NOT NULL,
    job_id          BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    artifact_index  INTEGER NOT NULL,
    plugin_name     TEXT NOT NULL,
    artifact_hash   TEXT NOT NULL DEFAULT '',
    content_hash    TEXT NOT NULL DEFAULT '',
    sinks_hash      TEXT NOT NULL DEFAULT '',
    topic           TEXT,
    uri             TEXT,
    row_count       BIGINT,
    byte_count      BIGINT,
    reused_from_job BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (file_version_id, job_id, attempt, artifact_index)
);
CREATE INDEX IF NOT EXISTS ix_sentinel_outputs_content ON sentinel_outputs (left(content_hash, 16));

ALTER TABLE sentinel_plugin_settings ADD COLUMN IF NOT EXISTS reuse BOOLEAN;
