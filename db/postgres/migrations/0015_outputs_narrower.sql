-- 0015: a narrower lineage row, as SQLite's 0015: the input's content hash is
-- read through file_version_id instead of copied onto every output, and the
-- reuse lookup finds the versions with the same content by an index on
-- cf_file_version (written per file version, not per job).
DROP INDEX IF EXISTS ix_sentinel_outputs_content;
ALTER TABLE sentinel_outputs DROP COLUMN IF EXISTS content_hash;
CREATE INDEX IF NOT EXISTS ix_cf_file_version_content ON cf_file_version (content_hash);
