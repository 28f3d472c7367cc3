-- Rows as the original Casparian's tools leave them in a database they
-- created on PostgreSQL (testdata/original_schema_postgres.sql): ids from
-- the tables' sequences, naive timestamps, the original's enum members, a
-- job another tool inserted with NULL status, priority and retry_count.
INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters)
VALUES ('csv_parser', 'csv,finance', '{}'), ('xml_parser', 'xml', '{"strict": true}');

INSERT INTO cf_source_root (path, type, active) VALUES ('/data/in', 'local', 1);

INSERT INTO cf_file_hash_registry (content_hash, size_bytes)
VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 120),
       ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 4096);

INSERT INTO cf_file_location (source_root_id, rel_path, filename, last_known_mtime, last_known_size)
VALUES (1, 'ledger/2025.csv', '2025.csv', 1766534400.25, 120),
       (1, 'feeds/a.xml', 'a.xml', 1766534401.5, 4096);

INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time, applied_tags)
VALUES (1, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 120, '2025-12-24 00:00:00', 'csv,finance'),
       (2, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 4096, '2025-12-24 00:00:01.5', 'xml');

UPDATE cf_file_location SET current_version_id = id;

INSERT INTO cf_file_tag (file_id, tag) VALUES (1, 'csv'), (1, 'finance'), (2, 'xml');

INSERT INTO cf_processing_queue
    (file_version_id, plugin_name, config_overrides, status, priority, worker_host, worker_pid,
     claim_time, end_time, result_summary, error_message, retry_count)
VALUES
    (1, 'csv_parser', NULL, 'QUEUED', 100, NULL, NULL, NULL, NULL, NULL, NULL, 0),
    (1, 'csv_parser', '{"output": {"topic": "output", "uri": "parquet:///out/a", "mode": "append"}}',
        'RUNNING', 50, 'host-a', 4242, '2025-12-24 10:00:00', NULL, NULL, NULL, 1),
    (2, 'xml_parser', NULL, 'COMPLETED', 10, 'host-a', 4242, '2025-12-24 09:00:00',
        '2025-12-24 09:00:05.123456', 'Success', NULL, 0),
    (2, 'xml_parser', NULL, 'FAILED', 10, 'host-b', 7, '2025-12-24 09:10:00',
        '2025-12-24 09:10:01', NULL, 'Traceback: boom', 5),
    (2, 'xml_parser', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode, schema_json)
VALUES ('csv_parser', 'output', 'sqlite:///out/csv.db', 'append', NULL);

INSERT INTO cf_plugin_subscription (plugin_name, topic_name, is_active)
VALUES ('csv_parser', 'ledger', true);

INSERT INTO cf_plugin_environment (hash, lockfile_content, size_mb)
VALUES ('cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', '# uv.lock', 12.5);

INSERT INTO cf_publisher (azure_oid, name, email)
VALUES ('00000000-0000-0000-0000-000000000001', 'Ada', 'ada@example.com');

INSERT INTO cf_plugin_manifest
    (plugin_name, version, source_code, source_hash, status, signature, deployed_at, env_hash,
     artifact_hash, publisher_id, system_requirements)
VALUES ('csv_parser', '1.0.0', 'print("hi")',
        'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd', 'ACTIVE', NULL,
        '2025-12-24 08:00:00', 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc',
        'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 1, '["glibc_2.31"]');

INSERT INTO cf_routing_rule (pattern, tag, priority) VALUES ('*.csv', 'csv', 0), ('feeds/**', 'xml', 5);

INSERT INTO cf_ignore_rule (source_root_id, pattern, active) VALUES (NULL, '*.tmp', true), (1, 'scratch/', false);

INSERT INTO cf_worker_node (hostname, pid, ip_address, env_signature, status, current_job_id)
VALUES ('host-a', 4242, '10.0.0.5', 'sig', 'ACTIVE', 2);

INSERT INTO cf_library_whitelist (library_name, version_constraint, description)
VALUES ('polars', '>=1.0', 'dataframes');

INSERT INTO cf_surveyor_session (source_root_id, current_phase, phase_data)
VALUES (1, 'PHASE_2_ENVIRONMENT', '{}');

INSERT INTO cf_surveyor_decision (session_id, phase, decision_type, decision_data, reasoning)
VALUES (1, 'PHASE_1_RECONNAISSANCE', 'choose_parser', '{"parser": "csv"}', 'it is a csv');
