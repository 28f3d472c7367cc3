-- 0006: the cf_* tables exactly as the original Casparian creates them.
--
-- 0001 declared the tables loosely (TEXT for every string, no NOT NULL on
-- some original columns, defaults of our own instead of the original's
-- DEFAULT CURRENT_TIMESTAMP, other index names) and invented the columns of
-- cf_library_whitelist, cf_surveyor_session and cf_surveyor_decision. Rows
-- the original tools inserted got NULL timestamps, and the original's
-- initialize_database refused our files ("Schema does not match application
-- version").
--
-- After this file, rebuildOriginalSchema (original_schema.go) rebuilds every
-- cf_* table with the original's DDL (../../shared/original-schema.sql is the
-- reference) plus our nullable extra columns, by SQLite's twelve-step
-- procedure: create the new table, copy the rows, drop the old one, rename,
-- recreate the indexes; foreign keys off around the one transaction and
-- checked before it commits. Every row is kept, except:
--
--   * cf_processing_queue rows with NULL file_version_id (NOT NULL in the
--     original; they could never be dispatched);
--   * cf_surveyor_session rows of our invented layout with NULL
--     source_root_id (NOT NULL in the original);
--   * every cf_surveyor_decision row of our invented layout: the original's
--     phase, decision_type and decision_data are NOT NULL and have no
--     counterpart in file_path/decision/reason.
--
-- Those rows are not lost: each table that loses rows, and each of the three
-- invented tables that had any rows at all, is first copied whole into
-- backup_0006_<table>. From the invented layouts what maps is carried over:
-- library → library_name, version → version_constraint, description,
-- added_at; a session's id, source_root_id, started_at, ended_at →
-- completed_at. A session's status and summary are not carried over (the
-- original's current_phase is an enum of its own); they stay in the backup.
--
-- NOT NULL columns of the original that ours allowed to be NULL are filled
-- instead of dropping the row: cf_file_location.filename from rel_path's
-- last element, cf_file_version.size_bytes from the hash registry (else 0),
-- cf_file_version.modified_time from detected_at (else the Unix epoch).
-- Timestamps that are NULL stay NULL: the defaults apply to new rows only.

-- The original declares cf_processing_queue.plugin_name and
-- cf_plugin_subscription.plugin_name as foreign keys of cf_plugin_config,
-- which 0001 did not. A plugin named only there gets the config row the
-- original tools would have made (no subscriptions, default parameters {}),
-- so the new keys hold.
INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters)
SELECT DISTINCT plugin_name, '', '{}' FROM (
    SELECT plugin_name FROM cf_processing_queue
    UNION
    SELECT plugin_name FROM cf_plugin_subscription
)
WHERE plugin_name IS NOT NULL
  AND plugin_name NOT IN (SELECT plugin_name FROM cf_plugin_config WHERE plugin_name IS NOT NULL);
