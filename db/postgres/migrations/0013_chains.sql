-- 0013: chaining by topic (issue #20 part 4); see the SQLite migration of
-- the same number. sentinel_chain_pending holds artifacts of completed jobs
-- waiting for the chain step; sentinel_chains links the file version made
-- for an artifact to the job that wrote it and to the chain's first version.
CREATE TABLE IF NOT EXISTS sentinel_chain_pending (
    job_id         BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,
    artifact_index BIGINT NOT NULL,
    topic          TEXT NOT NULL,
    uri            TEXT NOT NULL,
    created_at     TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    PRIMARY KEY (job_id, attempt, artifact_index)
);

CREATE TABLE IF NOT EXISTS sentinel_chains (
    upstream_job_id     BIGINT NOT NULL,
    upstream_attempt    BIGINT NOT NULL,
    artifact_index      BIGINT NOT NULL,
    producer            TEXT NOT NULL,
    topic               TEXT NOT NULL,
    uri                 TEXT NOT NULL,
    upstream_version_id BIGINT NOT NULL,
    original_version_id BIGINT NOT NULL,
    derived_version_id  BIGINT NOT NULL,
    created_at          TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    PRIMARY KEY (upstream_job_id, upstream_attempt, artifact_index)
);
CREATE INDEX IF NOT EXISTS ix_sentinel_chains_derived ON sentinel_chains (derived_version_id);
CREATE INDEX IF NOT EXISTS ix_sentinel_chains_upstream ON sentinel_chains (upstream_version_id);
