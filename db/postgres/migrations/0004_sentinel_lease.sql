-- 0004: the Sentinels serving this database, a row each (lease.go). A
-- Sentinel inserts its row when it starts, renews it while it runs and
-- deletes it when it stops; a row whose expires_at has passed belongs to a
-- Sentinel that died or lost the database, whose RUNNING jobs (by
-- cf_processing_queue.sentinel_id) the leader requeues before removing the
-- row. Every time is the server's now(), so the hosts' clocks never matter.
--
-- SQLite's sentinel_lease has a row per leased name, because one Sentinel
-- owns a SQLite file; here there is a row per Sentinel.
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_lease (
    id           TEXT PRIMARY KEY,          -- random per start; renewals must name it
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    endpoint     TEXT NOT NULL DEFAULT '',  -- the ZeroMQ endpoint it bound
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(), -- the last renewal
    expires_at   TIMESTAMPTZ NOT NULL       -- heartbeat_at + TTL
);
