-- 0016: lineage kept on the job row that completed (issue #20's
-- 10 % budget). Until now every completion also wrote a sentinel_outputs row
-- per artifact: one more statement with eight bound values per job and a
-- second B-tree in every commit. The job row already holds all of it except
-- the two hashes: the input version, plugin, attempt, end_time, the receipt's
-- metrics_json and artifacts_json. The hashes are a pair that few jobs differ
-- in, so the row holds a small key into sentinel_output_keys instead
-- (output_key; NULL: nothing recorded, because lineage was off, or the job
-- was a shadow run or reused).
--
-- sentinel_outputs keeps what the job row cannot: the outputs of jobs that
-- were reused (written at enqueue, as before) and the history. A job row's
-- outputs are copied there when the row stops being their record: when it
-- is deleted (pruned by us or removed by another tool: the trigger below)
-- or claimed to run again. Rows outlive their jobs as before.
--
-- sentinel_lineage is what readers read: the table and the job rows'
-- outputs, the same columns either way. A row with a key is COMPLETED, or
-- was set to another status by another tool and has not run again.
--
-- cf_processing_queue.output_key is added by the Go side (migrate.go).

CREATE TABLE IF NOT EXISTS sentinel_output_keys (
    id            INTEGER PRIMARY KEY,
    artifact_hash TEXT NOT NULL,   -- the manifest that ran ('' = unknown)
    sinks_hash    TEXT NOT NULL,   -- hash of the resolved sinks ('' = unknown: never reused)
    UNIQUE (artifact_hash, sinks_hash)
);

-- The lineage of a version, and reuse's lookup, start from the input
-- version. Only rows with a key are in the index: one small entry per
-- completion with lineage on, none otherwise.
CREATE INDEX IF NOT EXISTS ix_cf_queue_output_version
    ON cf_processing_queue (file_version_id) WHERE output_key IS NOT NULL;

-- The outputs a job row records, whatever its status: one row with
-- artifact_index -1 when the receipt named no artifact, else one per
-- artifact. Rows and bytes are the artifact's own "rows" and "bytes" when
-- they are whole numbers (at most 18 digits, as on PostgreSQL), else the
-- job's metrics when it has at most one artifact.
DROP VIEW IF EXISTS sentinel_job_outputs;
CREATE VIEW sentinel_job_outputs AS
SELECT q.file_version_id, q.id AS job_id, COALESCE(q.attempt, 0) AS attempt, -1 AS artifact_index,
    COALESCE(q.plugin_name, '') AS plugin_name, k.artifact_hash, k.sinks_hash,
    NULL AS topic, NULL AS uri,
    json_extract(q.metrics_json, '$.rows') AS row_count, json_extract(q.metrics_json, '$.bytes') AS byte_count,
    NULL AS reused_from_job, q.end_time AS created_at, q.status
FROM cf_processing_queue q JOIN sentinel_output_keys k ON k.id = q.output_key
WHERE q.output_key IS NOT NULL AND COALESCE(json_array_length(q.artifacts_json), 0) = 0
UNION ALL
SELECT q.file_version_id, q.id, COALESCE(q.attempt, 0), a.key,
    COALESCE(q.plugin_name, ''), k.artifact_hash, k.sinks_hash,
    json_extract(a.value, '$.topic'), json_extract(a.value, '$.uri'),
    CASE WHEN json_extract(a.value, '$.rows') GLOB '[0-9]*' AND NOT json_extract(a.value, '$.rows') GLOB '*[^0-9]*'
            AND length(json_extract(a.value, '$.rows')) <= 18
        THEN CAST(json_extract(a.value, '$.rows') AS INTEGER)
        WHEN json_array_length(q.artifacts_json) = 1 THEN json_extract(q.metrics_json, '$.rows') END,
    CASE WHEN json_extract(a.value, '$.bytes') GLOB '[0-9]*' AND NOT json_extract(a.value, '$.bytes') GLOB '*[^0-9]*'
            AND length(json_extract(a.value, '$.bytes')) <= 18
        THEN CAST(json_extract(a.value, '$.bytes') AS INTEGER)
        WHEN json_array_length(q.artifacts_json) = 1 THEN json_extract(q.metrics_json, '$.bytes') END,
    NULL, q.end_time, q.status
FROM cf_processing_queue q JOIN sentinel_output_keys k ON k.id = q.output_key, json_each(q.artifacts_json) a
WHERE q.output_key IS NOT NULL AND json_array_length(q.artifacts_json) > 0;

DROP VIEW IF EXISTS sentinel_lineage;
CREATE VIEW sentinel_lineage AS
SELECT file_version_id, job_id, attempt, artifact_index, plugin_name, artifact_hash, sinks_hash,
    topic, uri, row_count, byte_count, reused_from_job, created_at
FROM sentinel_outputs
UNION ALL
SELECT file_version_id, job_id, attempt, artifact_index, plugin_name, artifact_hash, sinks_hash,
    topic, uri, row_count, byte_count, reused_from_job, created_at
FROM sentinel_job_outputs;

-- A deleted row's outputs are copied to the table first (pruned by us, or
-- removed by another tool). OR IGNORE: a row already there stays.
DROP TRIGGER IF EXISTS cf_queue_outputs_kept_on_delete;
CREATE TRIGGER cf_queue_outputs_kept_on_delete
    BEFORE DELETE ON cf_processing_queue
    FOR EACH ROW
    WHEN OLD.output_key IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index, plugin_name,
        artifact_hash, sinks_hash, topic, uri, row_count, byte_count, reused_from_job, created_at)
    SELECT file_version_id, job_id, attempt, artifact_index, plugin_name, artifact_hash, sinks_hash,
        topic, uri, row_count, byte_count, reused_from_job, COALESCE(created_at, '')
    FROM sentinel_job_outputs WHERE job_id = OLD.id AND file_version_id IS NOT NULL;
END;

-- A row that runs again keeps its outputs until the claim: our conclusions
-- never move a COMPLETED job, but another tool may set it QUEUED, and the
-- row's outputs stay its lineage until then. The claim that takes a row
-- with a key copies its outputs to the table and clears the key, in its
-- transaction (db/outputs.go). Not a trigger on UPDATE: SQLite runs a row
-- trigger's program for every row a claim or a completion updates, which
-- cost 3–5 % of the throughput with lineage off.
