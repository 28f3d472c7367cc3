-- The claim indexes only ever serve status = 'QUEUED' lookups, yet as full
-- indexes every status change of every job moved an entry in each of them,
-- and finished jobs piled up in both. As partial indexes a claim removes one
-- entry from each and a conclusion touches neither.
DROP INDEX IF EXISTS ix_cf_queue_claim;
DROP INDEX IF EXISTS ix_cf_queue_claim_any;

CREATE INDEX IF NOT EXISTS ix_cf_queue_claimable
    ON cf_processing_queue (plugin_name, priority DESC, id) WHERE status = 'QUEUED';

CREATE INDEX IF NOT EXISTS ix_cf_queue_claimable_any
    ON cf_processing_queue (priority DESC, id) WHERE status = 'QUEUED';
