-- 0003: indexes for the operator API and the scanner.
--
-- The columns (cf_processing_queue.cancel_requested_at,
-- cf_file_location.missing_since) are added by the Go side of this migration
-- (see migrate.go), only where missing, before this file runs.

-- Listing jobs of one plugin, newest first.
CREATE INDEX IF NOT EXISTS ix_cf_queue_plugin
    ON cf_processing_queue (plugin_name, id);

-- A scan reads every location of one root.
CREATE INDEX IF NOT EXISTS ix_cf_file_location_root
    ON cf_file_location (source_root_id);
