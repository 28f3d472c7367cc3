-- 0011: lineage of file outputs (issue #20). One row per artifact of every
-- COMPLETED attempt (a job that reported no artifact gets one row with a NULL
-- uri and artifact_index -1), written in the transaction that completes the
-- job. A job reused instead of run gets copies of the earlier job's rows,
-- reused_from_job naming it. Rows outlive their jobs (pruning the queue keeps
-- the history). No cf_ prefix: the Casparian tools' schema check compares
-- cf_* tables. Numbered 0011: 0010 is taken by another change.
--
-- Every completion writes this table, so it has two B-trees only: the rows
-- themselves, clustered by input version (WITHOUT ROWID: the lineage of a
-- version is one range, with no separate index), and the reuse key's index
-- on the first 16 hex digits of the input's content hash (the whole hash is
-- compared on the rows). A URI has no index: provenance reads the table.
CREATE TABLE IF NOT EXISTS sentinel_outputs (
    file_version_id INTEGER NOT NULL,           -- the input file version
    job_id          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    artifact_index  INTEGER NOT NULL,           -- in the receipt's artifacts; -1: none reported
    plugin_name     TEXT NOT NULL,
    artifact_hash   TEXT NOT NULL DEFAULT '',   -- the manifest that ran ('' = unknown)
    content_hash    TEXT NOT NULL DEFAULT '',   -- the input's content hash (reuse key)
    sinks_hash      TEXT NOT NULL DEFAULT '',   -- hash of the resolved sinks ('' = unknown: never reused)
    topic           TEXT,
    uri             TEXT,
    row_count       INTEGER,                    -- the artifact's "rows", or the job's metrics when it has one artifact
    byte_count      INTEGER,
    reused_from_job INTEGER,                    -- the job that made these outputs, for a reused job
    created_at      TEXT NOT NULL,
    PRIMARY KEY (file_version_id, job_id, attempt, artifact_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_sentinel_outputs_content ON sentinel_outputs (substr(content_hash, 1, 16));

-- The per-plugin reuse setting: NULL follows the default (on for
-- deterministic plugins: built-ins and WebAssembly), 0 off, 1 on.
ALTER TABLE sentinel_plugin_settings ADD COLUMN reuse INTEGER;
