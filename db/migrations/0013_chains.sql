-- 0013: chaining by topic (issue #20 part 4). A plugin subscribed (in
-- cf_plugin_subscription, topic_name "PRODUCER:TOPIC") to another plugin's
-- topic gets a job for each artifact of that topic, on a file version that
-- stands for the artifact's file.
--
-- sentinel_chain_pending: artifacts of completed jobs that some plugin is
-- subscribed to, written by the completion's transaction and deleted by the
-- chain step that settles them (chained, or refused), so that a crash
-- between the two loses nothing. Written only while a subscription exists.
CREATE TABLE IF NOT EXISTS sentinel_chain_pending (
    job_id         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    artifact_index INTEGER NOT NULL,          -- in the receipt's artifacts
    topic          TEXT NOT NULL,
    uri            TEXT NOT NULL,             -- as the worker reported it (absolute)
    created_at     TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, artifact_index)
);

-- sentinel_chains: the file version made for (or found with the content of)
-- an artifact, linked to the job that wrote it, that job's input version,
-- and the first version of the chain (original_version_id: a file no job
-- wrote, as far as the Sentinel knows). Rows outlive their jobs.
CREATE TABLE IF NOT EXISTS sentinel_chains (
    upstream_job_id     INTEGER NOT NULL,
    upstream_attempt    INTEGER NOT NULL,
    artifact_index      INTEGER NOT NULL,
    producer            TEXT NOT NULL,        -- the upstream job's plugin
    topic               TEXT NOT NULL,
    uri                 TEXT NOT NULL,
    upstream_version_id INTEGER NOT NULL,
    original_version_id INTEGER NOT NULL,
    derived_version_id  INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    PRIMARY KEY (upstream_job_id, upstream_attempt, artifact_index)
);
CREATE INDEX IF NOT EXISTS ix_sentinel_chains_derived ON sentinel_chains (derived_version_id);
CREATE INDEX IF NOT EXISTS ix_sentinel_chains_upstream ON sentinel_chains (upstream_version_id);
