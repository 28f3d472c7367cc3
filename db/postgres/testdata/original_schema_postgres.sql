-- The cf_* schema as the original Casparian (commit 2eaff54) creates it on
-- PostgreSQL: its SQLAlchemy models' create_all through the PostgreSQL
-- dialect, written out by hand from ../../../../shared/original-schema.sql
-- (the same models on SQLite) for the tests that open such a database. The
-- rules of the translation are in migrations/0001_cf_schema.sql.
--
-- Checked once against the real thing (December 2026): the original's
-- models run through create_all by SQLAlchemy 1.4.46 (Debian's
-- python3-sqlalchemy) on PostgreSQL 15 gave the same columns in the same
-- order, types, defaults, constraints, indexes, enum types and sequences as
-- this file.
--
-- SQLAlchemy creates the enum types first, then the tables in dependency
-- order, and adds the two foreign keys that form a cycle
-- (cf_file_location.current_version_id, cf_file_version.location_id) with
-- ALTER TABLE at the end.

CREATE TYPE statusenum AS ENUM ('PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'SKIPPED');
CREATE TYPE pluginstatusenum AS ENUM ('PENDING', 'STAGING', 'ACTIVE', 'REJECTED');
CREATE TYPE phaseenum AS ENUM ('IDLE', 'PHASE_1_RECONNAISSANCE', 'PHASE_2_ENVIRONMENT', 'PHASE_3_CONSTRUCTION', 'PHASE_4_WIRING', 'PHASE_5_VERIFICATION', 'PHASE_6_TEST_GENERATION', 'COMPLETED', 'FAILED');

CREATE TABLE cf_routing_rule (
	id SERIAL NOT NULL,
	pattern VARCHAR(500) NOT NULL,
	tag VARCHAR(50) NOT NULL,
	priority INTEGER,
	PRIMARY KEY (id)
);

CREATE TABLE cf_plugin_config (
	plugin_name VARCHAR(100) NOT NULL,
	subscription_tags VARCHAR(1000),
	default_parameters TEXT,
	last_updated TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	PRIMARY KEY (plugin_name)
);

CREATE TABLE cf_source_root (
	id SERIAL NOT NULL,
	path VARCHAR(1000) NOT NULL,
	type VARCHAR(50),
	active INTEGER,
	PRIMARY KEY (id),
	UNIQUE (path)
);

CREATE TABLE cf_file_hash_registry (
	content_hash VARCHAR(64) NOT NULL,
	first_seen TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	size_bytes INTEGER NOT NULL,
	PRIMARY KEY (content_hash)
);

CREATE TABLE cf_file_location (
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

CREATE INDEX ix_file_location_lookup ON cf_file_location (source_root_id, rel_path);

CREATE TABLE cf_file_version (
	id SERIAL NOT NULL,
	location_id INTEGER NOT NULL,
	content_hash VARCHAR(64) NOT NULL,
	size_bytes INTEGER NOT NULL,
	modified_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	detected_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	applied_tags VARCHAR(1000),
	PRIMARY KEY (id),
	FOREIGN KEY(content_hash) REFERENCES cf_file_hash_registry (content_hash)
);

CREATE INDEX ix_file_version_lookup ON cf_file_version (location_id, content_hash);

CREATE TABLE cf_worker_node (
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

CREATE TABLE cf_publisher (
	id SERIAL NOT NULL,
	azure_oid VARCHAR(36),
	name VARCHAR(255) NOT NULL,
	email VARCHAR(255),
	created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	last_active TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	PRIMARY KEY (id),
	UNIQUE (azure_oid)
);

CREATE INDEX ix_publisher_azure_oid ON cf_publisher (azure_oid);

CREATE TABLE cf_plugin_environment (
	hash VARCHAR(64) NOT NULL,
	lockfile_content TEXT NOT NULL,
	size_mb FLOAT,
	last_used TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	PRIMARY KEY (hash)
);

CREATE TABLE cf_library_whitelist (
	id SERIAL NOT NULL,
	library_name VARCHAR(100) NOT NULL,
	version_constraint VARCHAR(50),
	description TEXT,
	added_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	PRIMARY KEY (id),
	UNIQUE (library_name)
);

CREATE TABLE cf_ignore_rule (
	id SERIAL NOT NULL,
	source_root_id INTEGER,
	pattern VARCHAR(500) NOT NULL,
	active BOOLEAN,
	created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
	PRIMARY KEY (id),
	FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)
);

CREATE TABLE cf_topic_config (
	id SERIAL NOT NULL,
	plugin_name VARCHAR(100) NOT NULL,
	topic_name VARCHAR(100) NOT NULL,
	uri VARCHAR(1000) NOT NULL,
	mode VARCHAR(50),
	schema_json TEXT,
	PRIMARY KEY (id),
	FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)
);

CREATE INDEX ix_topic_lookup ON cf_topic_config (plugin_name, topic_name);

CREATE TABLE cf_file_tag (
	file_id INTEGER NOT NULL,
	tag VARCHAR(50) NOT NULL,
	PRIMARY KEY (file_id, tag),
	FOREIGN KEY(file_id) REFERENCES cf_file_location (id)
);

CREATE INDEX ix_cf_file_tag_tag ON cf_file_tag (tag);

CREATE TABLE cf_processing_queue (
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

CREATE INDEX ix_cf_processing_queue_priority ON cf_processing_queue (priority);

CREATE INDEX ix_queue_pop ON cf_processing_queue (status, priority, id);

CREATE INDEX ix_cf_processing_queue_status ON cf_processing_queue (status);

CREATE TABLE cf_plugin_subscription (
	id SERIAL NOT NULL,
	plugin_name VARCHAR(100) NOT NULL,
	topic_name VARCHAR(100) NOT NULL,
	is_active BOOLEAN,
	PRIMARY KEY (id),
	CONSTRAINT uq_plugin_topic_sub UNIQUE (plugin_name, topic_name),
	FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)
);

CREATE INDEX ix_cf_plugin_subscription_topic_name ON cf_plugin_subscription (topic_name);

CREATE TABLE cf_plugin_manifest (
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

CREATE INDEX ix_plugin_env_hash ON cf_plugin_manifest (env_hash);

CREATE INDEX ix_plugin_active_lookup ON cf_plugin_manifest (plugin_name, status);

CREATE INDEX ix_cf_plugin_manifest_plugin_name ON cf_plugin_manifest (plugin_name);

CREATE INDEX ix_cf_plugin_manifest_status ON cf_plugin_manifest (status);

CREATE TABLE cf_surveyor_session (
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

CREATE INDEX ix_surveyor_session_lookup ON cf_surveyor_session (source_root_id, current_phase);

CREATE TABLE cf_surveyor_decision (
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

CREATE INDEX ix_surveyor_decision_lookup ON cf_surveyor_decision (session_id, phase);

ALTER TABLE cf_file_location ADD FOREIGN KEY(current_version_id) REFERENCES cf_file_version (id);

ALTER TABLE cf_file_version ADD FOREIGN KEY(location_id) REFERENCES cf_file_location (id);
