-- 0001: the Casparian cf_* schema (README.md, Database).
--
-- Every statement is IF NOT EXISTS: on an existing Casparian database this
-- migration changes nothing and its tables and rows stay as they are. On an
-- empty file it creates the schema the other Casparian tools expect.
-- Timestamps are TEXT (RFC 3339 UTC from this program; older rows may hold
-- "YYYY-MM-DD HH:MM:SS[.ffffff]").

CREATE TABLE IF NOT EXISTS cf_source_root (
    id      INTEGER PRIMARY KEY,
    path    TEXT NOT NULL UNIQUE,
    type    TEXT DEFAULT 'local',
    active  INTEGER DEFAULT 1
);

CREATE TABLE IF NOT EXISTS cf_file_hash_registry (
    content_hash TEXT PRIMARY KEY,
    first_seen   TEXT,
    size_bytes   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS cf_file_location (
    id                 INTEGER PRIMARY KEY,
    source_root_id     INTEGER NOT NULL REFERENCES cf_source_root(id),
    rel_path           TEXT NOT NULL,
    filename           TEXT,
    last_known_mtime   REAL,
    last_known_size    INTEGER,
    current_version_id INTEGER REFERENCES cf_file_version(id),
    discovered_time    TEXT,
    last_seen_time     TEXT,
    UNIQUE (source_root_id, rel_path)
);

CREATE TABLE IF NOT EXISTS cf_file_version (
    id            INTEGER PRIMARY KEY,
    location_id   INTEGER NOT NULL REFERENCES cf_file_location(id),
    content_hash  TEXT NOT NULL REFERENCES cf_file_hash_registry(content_hash),
    size_bytes    INTEGER,
    modified_time TEXT,
    detected_at   TEXT,
    applied_tags  TEXT DEFAULT ''
);

CREATE TABLE IF NOT EXISTS cf_processing_queue (
    id               INTEGER PRIMARY KEY,
    file_version_id  INTEGER REFERENCES cf_file_version(id),
    plugin_name      TEXT NOT NULL,
    config_overrides TEXT,
    status           TEXT DEFAULT 'QUEUED',
    priority         INTEGER DEFAULT 0,
    worker_host      TEXT,
    worker_pid       INTEGER,
    claim_time       TEXT,
    end_time         TEXT,
    result_summary   TEXT,
    error_message    TEXT,
    retry_count      INTEGER DEFAULT 0
);

CREATE INDEX IF NOT EXISTS ix_cf_processing_queue_status
    ON cf_processing_queue (status, priority, id);

CREATE TABLE IF NOT EXISTS cf_plugin_config (
    plugin_name        TEXT PRIMARY KEY,
    subscription_tags  TEXT DEFAULT '',
    default_parameters TEXT DEFAULT '{}',
    last_updated       TEXT
);

CREATE TABLE IF NOT EXISTS cf_topic_config (
    id          INTEGER PRIMARY KEY,
    plugin_name TEXT NOT NULL REFERENCES cf_plugin_config(plugin_name),
    topic_name  TEXT NOT NULL,
    uri         TEXT NOT NULL,
    mode        TEXT DEFAULT 'append',
    schema_json TEXT
);

CREATE TABLE IF NOT EXISTS cf_plugin_environment (
    hash             TEXT PRIMARY KEY,
    lockfile_content TEXT NOT NULL DEFAULT '',
    size_mb          REAL,
    last_used        TEXT,
    created_at       TEXT
);

CREATE TABLE IF NOT EXISTS cf_publisher (
    id          INTEGER PRIMARY KEY,
    azure_oid   TEXT UNIQUE,
    name        TEXT NOT NULL,
    email       TEXT,
    created_at  TEXT,
    last_active TEXT
);

CREATE TABLE IF NOT EXISTS cf_plugin_manifest (
    id                  INTEGER PRIMARY KEY,
    plugin_name         TEXT NOT NULL,
    version             TEXT NOT NULL,
    source_code         TEXT NOT NULL,
    source_hash         TEXT NOT NULL UNIQUE,
    status              TEXT DEFAULT 'PENDING',
    signature           TEXT,
    validation_error    TEXT,
    created_at          TEXT,
    deployed_at         TEXT,
    env_hash            TEXT REFERENCES cf_plugin_environment(hash),
    artifact_hash       TEXT,
    publisher_id        INTEGER REFERENCES cf_publisher(id),
    system_requirements TEXT
);

CREATE INDEX IF NOT EXISTS ix_cf_plugin_manifest_plugin_status
    ON cf_plugin_manifest (plugin_name, status);

CREATE TABLE IF NOT EXISTS cf_routing_rule (
    id       INTEGER PRIMARY KEY,
    pattern  TEXT NOT NULL,
    tag      TEXT NOT NULL,
    priority INTEGER DEFAULT 0
);

CREATE TABLE IF NOT EXISTS cf_ignore_rule (
    id             INTEGER PRIMARY KEY,
    source_root_id INTEGER REFERENCES cf_source_root(id), -- NULL: global
    pattern        TEXT NOT NULL,
    active         INTEGER DEFAULT 1,
    created_at     TEXT
);

CREATE TABLE IF NOT EXISTS cf_file_tag (
    file_id INTEGER NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (file_id, tag)
);

CREATE TABLE IF NOT EXISTS cf_plugin_subscription (
    id          INTEGER PRIMARY KEY,
    plugin_name TEXT NOT NULL,
    topic_name  TEXT NOT NULL,
    is_active   INTEGER DEFAULT 1,
    UNIQUE (plugin_name, topic_name)
);

CREATE TABLE IF NOT EXISTS cf_worker_node (
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    ip_address     TEXT,
    env_signature  TEXT,
    started_at     TEXT,
    last_heartbeat TEXT,
    status         TEXT,
    current_job_id INTEGER,
    PRIMARY KEY (hostname, pid)
);

-- The last three are part of the original schema but unused by the
-- Sentinel; their columns are a plausible minimum so the schema is complete.
CREATE TABLE IF NOT EXISTS cf_library_whitelist (
    id          INTEGER PRIMARY KEY,
    library     TEXT NOT NULL UNIQUE,
    version     TEXT,
    description TEXT,
    added_at    TEXT
);

CREATE TABLE IF NOT EXISTS cf_surveyor_session (
    id             INTEGER PRIMARY KEY,
    source_root_id INTEGER,
    status         TEXT,
    started_at     TEXT,
    ended_at       TEXT,
    summary        TEXT
);

CREATE TABLE IF NOT EXISTS cf_surveyor_decision (
    id         INTEGER PRIMARY KEY,
    session_id INTEGER REFERENCES cf_surveyor_session(id),
    file_path  TEXT,
    decision   TEXT,
    reason     TEXT,
    decided_at TEXT
);
