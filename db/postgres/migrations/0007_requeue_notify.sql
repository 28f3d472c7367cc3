-- 0007: a job that becomes QUEUED again (a requeue after a lost worker or a
-- retryable failure, an operator's retry) notifies casparian_queue as an
-- insert does (0005). Every Sentinel then looks again at when the next job
-- is due, whoever requeued it: without this, one whose own writes did not
-- requeue the job would learn of it only from another insert.
DROP TRIGGER IF EXISTS sentinel_queue_notify_requeue ON cf_processing_queue;
CREATE TRIGGER sentinel_queue_notify_requeue
    AFTER UPDATE OF status ON cf_processing_queue
    FOR EACH ROW
    WHEN (NEW.status = 'QUEUED' AND OLD.status IS DISTINCT FROM 'QUEUED')
    EXECUTE FUNCTION sentinel_queue_notify();
