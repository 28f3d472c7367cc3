-- 0001: the Casparian cf_* schema (SPEC part B) as the original's SQLAlchemy
-- models create it on PostgreSQL.
--
-- The reference is ../../../../shared/original-schema.sql, the same models'
-- DDL on SQLite, read through SQLAlchemy's PostgreSQL dialect:
--
--   * an Integer primary key of one column is SERIAL (a sequence named
--     <table>_id_seq owns it); pid in cf_worker_node's two-column key and
--     file_id in cf_file_tag's stay INTEGER;
--   * DateTime is TIMESTAMP WITHOUT TIME ZONE, server_default=func.now()
--     is DEFAULT now(), Float is FLOAT, Boolean is BOOLEAN;
--   * an Enum column is a native PostgreSQL enum type named after the
--     Python class (statusenum, pluginstatusenum, phaseenum) holding the
--     members' names; on SQLite the same columns are VARCHAR(n) with n the
--     longest name;
--   * the foreign keys cf_file_location.current_version_id and
--     cf_file_version.location_id form a cycle, which SQLAlchemy breaks by
--     adding them with ALTER TABLE after both tables exist. Unnamed
--     constraints get PostgreSQL's names (<table>_<column>_fkey, _key,
--     _pkey) whichever way they are declared.
--
-- Every statement is conditional: on a database the original created, this
-- migration changes nothing and its tables and rows stay as they are; later
-- migrations only add our columns, indexes, tables and a trigger.

-- A transaction-local mark: did this migration create cf_file_location?
-- Only then does it add the cycle's foreign key below. A table that
-- existed without that key is left as it is: adding the key would check
-- every existing row and could refuse the whole migration.
SELECT set_config('casparian.fresh_file_location',
                  CASE WHEN to_regclass('cf_file_location') IS NULL THEN 'on' ELSE 'off' END,
                  true);

DO $$
BEGIN
    IF to_regtype('statusenum') IS NULL THEN
        CREATE TYPE statusenum AS ENUM ('PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'SKIPPED');
    END IF;
    IF to_regtype('pluginstatusenum') IS NULL THEN
        CREATE TYPE pluginstatusenum AS ENUM ('PENDING', 'STAGING', 'ACTIVE', 'REJECTED');
    END IF;
    IF to_regtype('phaseenum') IS NULL THEN
        CREATE TYPE phaseenum AS ENUM ('IDLE', 'PHASE_1_RECONNAISSANCE', 'PHASE_2_ENVIRONMENT',
            'PHASE_3_CONSTRUCTION', 'PHASE_4_WIRING', 'PHASE_5_VERIFICATION',
            'PHASE_6_TEST_GENERATION', 'COMPLETED', 'FAILED');
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS cf_routing_rule (
    id SERIAL NOT NULL,
    pattern VARCHAR(500) NOT NULL,
    tag VARCHAR(50) NOT NULL,
    priority INTEGER,
    PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS cf_plugin_config (
    plugin_name VARCHAR(100) NOT NULL,
    subscription_tags VARCHAR(1000),
    default_parameters TEXT,
    last_updated TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (plugin_name)
);

CREATE TABLE IF NOT EXISTS cf_source_root (
    id SERIAL NOT NULL,
    path VARCHAR(1000) NOT NULL,
    type VARCHAR(50),
    active INTEGER,
    PRIMARY KEY (id),
    UNIQUE (path)
);

CREATE TABLE IF NOT EXISTS cf_file_hash_registry (
    content_hash VARCHAR(64) NOT NULL,
    first_seen TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (content_hash)
);

CREATE TABLE IF NOT EXISTS cf_file_location (
    id SERIAL NOT NULL,
    source_root_id INTEGER NOT NULL,
    rel_path VARCHAR(850) NOT NULL,
    filename VARCHAR(255) NOT NULL,
    last_known_mtime FLOAT,
    last_known_size INTEGER,
    current_version_id INTEGER,
    discovered_time TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    last_seen_time TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (id),
    FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)
);

CREATE INDEX IF NOT EXISTS ix_file_location_lookup ON cf_file_location (source_root_id, rel_path);

CREATE TABLE IF NOT EXISTS cf_file_version (
    id SERIAL NOT NULL,
    location_id INTEGER NOT NULL,
    content_hash VARCHAR(64) NOT NULL,
    size_bytes INTEGER NOT NULL,
    modified_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    detected_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    applied_tags VARCHAR(1000),
    PRIMARY KEY (id),
    FOREIGN KEY(location_id) REFERENCES cf_file_location (id),
    FOREIGN KEY(content_hash) REFERENCES cf_file_hash_registry (content_hash)
);

CREATE INDEX IF NOT EXISTS ix_file_version_lookup ON cf_file_version (location_id, content_hash);

DO $$
BEGIN
    IF current_setting('casparian.fresh_file_location') = 'on' THEN
        ALTER TABLE cf_file_location ADD FOREIGN KEY(current_version_id) REFERENCES cf_file_version (id);
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS cf_worker_node (
    hostname VARCHAR(100) NOT NULL,
    pid INTEGER NOT NULL,
    ip_address VARCHAR(50),
    env_signature VARCHAR(100),
    started_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    last_heartbeat TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    status VARCHAR(50),
    current_job_id INTEGER,
    PRIMARY KEY (hostname, pid)
);

CREATE TABLE IF NOT EXISTS cf_publisher (
    id SERIAL NOT NULL,
    azure_oid VARCHAR(36),
    name VARCHAR(255) NOT NULL,
    email VARCHAR(255),
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    last_active TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (id),
    UNIQUE (azure_oid)
);

CREATE INDEX IF NOT EXISTS ix_publisher_azure_oid ON cf_publisher (azure_oid);

CREATE TABLE IF NOT EXISTS cf_plugin_environment (
    hash VARCHAR(64) NOT NULL,
    lockfile_content TEXT NOT NULL,
    size_mb FLOAT,
    last_used TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (hash)
);

CREATE TABLE IF NOT EXISTS cf_library_whitelist (
    id SERIAL NOT NULL,
    library_name VARCHAR(100) NOT NULL,
    version_constraint VARCHAR(50),
    description TEXT,
    added_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (id),
    UNIQUE (library_name)
);

CREATE TABLE IF NOT EXISTS cf_ignore_rule (
    id SERIAL NOT NULL,
    source_root_id INTEGER,
    pattern VARCHAR(500) NOT NULL,
    active BOOLEAN,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    PRIMARY KEY (id),
    FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)
);

CREATE TABLE IF NOT EXISTS cf_topic_config (
    id SERIAL NOT NULL,
    plugin_name VARCHAR(100) NOT NULL,
    topic_name VARCHAR(100) NOT NULL,
    uri VARCHAR(1000) NOT NULL,
    mode VARCHAR(50),
    schema_json TEXT,
    PRIMARY KEY (id),
    FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)
);

CREATE INDEX IF NOT EXISTS ix_topic_lookup ON cf_topic_config (plugin_name, topic_name);

CREATE TABLE IF NOT EXISTS cf_file_tag (
    file_id INTEGER NOT NULL,
    tag VARCHAR(50) NOT NULL,
    PRIMARY KEY (file_id, tag),
    FOREIGN KEY(file_id) REFERENCES cf_file_location (id)
);

CREATE INDEX IF NOT EXISTS ix_cf_file_tag_tag ON cf_file_tag (tag);

CREATE TABLE IF NOT EXISTS cf_processing_queue (
    id SERIAL NOT NULL,
    file_version_id INTEGER NOT NULL,
    plugin_name VARCHAR(100) NOT NULL,
    config_overrides TEXT,
    status statusenum,
    priority INTEGER,
    worker_host VARCHAR(100),
    worker_pid INTEGER,
    claim_time TIMESTAMP WITHOUT TIME ZONE,
    end_time TIMESTAMP WITHOUT TIME ZONE,
    result_summary TEXT,
    error_message TEXT,
    retry_count INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY(file_version_id) REFERENCES cf_file_version (id),
    FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)
);

CREATE INDEX IF NOT EXISTS ix_cf_processing_queue_priority ON cf_processing_queue (priority);
CREATE INDEX IF NOT EXISTS ix_queue_pop ON cf_processing_queue (status, priority, id);
CREATE INDEX IF NOT EXISTS ix_cf_processing_queue_status ON cf_processing_queue (status);

CREATE TABLE IF NOT EXISTS cf_plugin_subscription (
    id SERIAL NOT NULL,
    plugin_name VARCHAR(100) NOT NULL,
    topic_name VARCHAR(100) NOT NULL,
    is_active BOOLEAN,
    PRIMARY KEY (id),
    CONSTRAINT uq_plugin_topic_sub UNIQUE (plugin_name, topic_name),
    FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)
);

CREATE INDEX IF NOT EXISTS ix_cf_plugin_subscription_topic_name ON cf_plugin_subscription (topic_name);

CREATE TABLE IF NOT EXISTS cf_plugin_manifest (
    id SERIAL NOT NULL,
    plugin_name VARCHAR(100) NOT NULL,
    version VARCHAR(50) NOT NULL,
    source_code TEXT NOT NULL,
    source_hash VARCHAR(64) NOT NULL,
    status pluginstatusenum,
    signature VARCHAR(128),
    validation_error TEXT,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    deployed_at TIMESTAMP WITHOUT TIME ZONE,
    env_hash VARCHAR(64),
    artifact_hash VARCHAR(64),
    publisher_id INTEGER,
    system_requirements TEXT,
    PRIMARY KEY (id),
    UNIQUE (source_hash),
    FOREIGN KEY(env_hash) REFERENCES cf_plugin_environment (hash),
    FOREIGN KEY(publisher_id) REFERENCES cf_publisher (id)
);

CREATE INDEX IF NOT EXISTS ix_plugin_env_hash ON cf_plugin_manifest (env_hash);
CREATE INDEX IF NOT EXISTS ix_plugin_active_lookup ON cf_plugin_manifest (plugin_name, status);
CREATE INDEX IF NOT EXISTS ix_cf_plugin_manifest_plugin_name ON cf_plugin_manifest (plugin_name);
CREATE INDEX IF NOT EXISTS ix_cf_plugin_manifest_status ON cf_plugin_manifest (status);

CREATE TABLE IF NOT EXISTS cf_surveyor_session (
    id SERIAL NOT NULL,
    source_root_id INTEGER NOT NULL,
    current_phase phaseenum,
    started_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    completed_at TIMESTAMP WITHOUT TIME ZONE,
    error_message TEXT,
    phase_data TEXT,
    PRIMARY KEY (id),
    FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)
);

CREATE INDEX IF NOT EXISTS ix_surveyor_session_lookup ON cf_surveyor_session (source_root_id, current_phase);

CREATE TABLE IF NOT EXISTS cf_surveyor_decision (
    id SERIAL NOT NULL,
    session_id INTEGER NOT NULL,
    phase phaseenum NOT NULL,
    timestamp TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    decision_type VARCHAR(50) NOT NULL,
    decision_data TEXT NOT NULL,
    reasoning TEXT,
    PRIMARY KEY (id),
    FOREIGN KEY(session_id) REFERENCES cf_surveyor_session (id)
);

CREATE INDEX IF NOT EXISTS ix_surveyor_decision_lookup ON cf_surveyor_decision (session_id, phase);
