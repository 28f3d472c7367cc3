-- 0015: a narrower lineage row (issue #20's 10 % budget). sentinel_outputs
-- kept a copy of the input's 64-digit content hash on every row, with an
-- expression index on its prefix for the reuse lookup: one more B-tree and a
-- read of cf_file_version per completed job. The hash is the input version's
-- own (versions never change), so the lookup now goes the other way: the
-- versions with the same content through an index on cf_file_version, which
-- is written once per file version the scanner records, not per job, then
-- their outputs by the primary key, which starts with file_version_id.
DROP INDEX IF EXISTS ix_sentinel_outputs_content;
ALTER TABLE sentinel_outputs DROP COLUMN content_hash;
CREATE INDEX IF NOT EXISTS ix_cf_file_version_content ON cf_file_version (content_hash);
