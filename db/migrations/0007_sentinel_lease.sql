-- The Sentinel that owns this database. With SQLite the owner is whoever
-- holds the flock on the sidecar file "<db>.lock"; this row only says who
-- that is, so that a second Sentinel can name it when it refuses to start.
-- It is shaped as the lease several Sentinels sharing one PostgreSQL will
-- take instead: a row per leased name, taken when expires_at has passed
-- and renewed by its owner (owner_id fences renewals) until then.
-- No cf_ prefix: the Casparian tools' schema check compares cf_* tables.
CREATE TABLE IF NOT EXISTS sentinel_lease (
    name         TEXT PRIMARY KEY,        -- what is leased; 'sentinel' = the whole database
    owner_id     TEXT NOT NULL,           -- random per start; a renewal must name it
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    endpoint     TEXT NOT NULL DEFAULT '',-- the ZeroMQ endpoint the owner bound
    started_at   TEXT NOT NULL,           -- RFC 3339 UTC, when the owner took the lease
    heartbeat_at TEXT NOT NULL,           -- the last renewal
    expires_at   TEXT NOT NULL            -- heartbeat_at + TTL; free after that
);
