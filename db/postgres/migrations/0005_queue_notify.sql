-- 0005: every job inserted into the queue, by a Sentinel or by any other
-- tool, sends a NOTIFY on the channel casparian_queue (notify.go) whose
-- payload is the job's plugin_name, so that a listening Sentinel can claim
-- it at once instead of polling.
--
-- PostgreSQL delivers notifications when the inserting transaction commits,
-- and folds identical ones (same channel and payload) within one
-- transaction into one: a batch of ten thousand jobs for one plugin is one
-- notification.
CREATE OR REPLACE FUNCTION sentinel_queue_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('casparian_queue', COALESCE(NEW.plugin_name, ''));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sentinel_queue_notify ON cf_processing_queue;
CREATE TRIGGER sentinel_queue_notify
    AFTER INSERT ON cf_processing_queue
    FOR EACH ROW EXECUTE FUNCTION sentinel_queue_notify();
