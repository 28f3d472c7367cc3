package db

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// originalSchema lays out the cf_* tables the way the original Casparian
// tools created them: only the original columns, SQLAlchemy-style types
// (DATETIME, VARCHAR), and no defaults on priority, retry_count, status or
// mode, so rows can hold NULL there.
var originalSchema = []string{
	`CREATE TABLE cf_source_root (id INTEGER NOT NULL PRIMARY KEY, path VARCHAR NOT NULL UNIQUE, type VARCHAR, active BOOLEAN)`,
	`CREATE TABLE cf_file_hash_registry (content_hash VARCHAR(64) NOT NULL PRIMARY KEY, first_seen DATETIME, size_bytes INTEGER NOT NULL)`,
	`CREATE TABLE cf_file_location (id INTEGER NOT NULL PRIMARY KEY, source_root_id INTEGER NOT NULL REFERENCES cf_source_root(id),
		rel_path VARCHAR NOT NULL, filename VARCHAR NOT NULL, last_known_mtime FLOAT, last_known_size INTEGER,
		current_version_id INTEGER REFERENCES cf_file_version(id), discovered_time DATETIME, last_seen_time DATETIME)`,
	`CREATE TABLE cf_file_version (id INTEGER NOT NULL PRIMARY KEY, location_id INTEGER NOT NULL REFERENCES cf_file_location(id),
		content_hash VARCHAR(64) NOT NULL REFERENCES cf_file_hash_registry(content_hash), size_bytes INTEGER NOT NULL,
		modified_time DATETIME NOT NULL, detected_at DATETIME, applied_tags VARCHAR)`,
	`CREATE TABLE cf_processing_queue (id INTEGER NOT NULL PRIMARY KEY, file_version_id INTEGER NOT NULL REFERENCES cf_file_version(id),
		plugin_name VARCHAR NOT NULL, config_overrides TEXT, status VARCHAR(9), priority INTEGER, worker_host VARCHAR,
		worker_pid INTEGER, claim_time DATETIME, end_time DATETIME, result_summary TEXT, error_message TEXT, retry_count INTEGER)`,
	`CREATE INDEX ix_queue_pop ON cf_processing_queue (status, priority, id)`,
	`CREATE TABLE cf_plugin_config (plugin_name VARCHAR NOT NULL PRIMARY KEY, subscription_tags VARCHAR, default_parameters TEXT, last_updated DATETIME)`,
	`CREATE TABLE cf_topic_config (id INTEGER NOT NULL PRIMARY KEY, plugin_name VARCHAR NOT NULL REFERENCES cf_plugin_config(plugin_name),
		topic_name VARCHAR NOT NULL, uri VARCHAR NOT NULL, mode VARCHAR, schema_json TEXT)`,
	`CREATE TABLE cf_plugin_environment (hash VARCHAR(64) NOT NULL PRIMARY KEY, lockfile_content TEXT NOT NULL, size_mb FLOAT, last_used DATETIME, created_at DATETIME)`,
	`CREATE TABLE cf_publisher (id INTEGER NOT NULL PRIMARY KEY, azure_oid VARCHAR UNIQUE, name VARCHAR NOT NULL, email VARCHAR, created_at DATETIME, last_active DATETIME)`,
	`CREATE TABLE cf_plugin_manifest (id INTEGER NOT NULL PRIMARY KEY, plugin_name VARCHAR NOT NULL, version VARCHAR NOT NULL,
		source_code TEXT NOT NULL, source_hash VARCHAR(64) NOT NULL UNIQUE, status VARCHAR(10), signature TEXT, validation_error TEXT,
		created_at DATETIME, deployed_at DATETIME, env_hash VARCHAR(64) REFERENCES cf_plugin_environment(hash), artifact_hash VARCHAR(64),
		publisher_id INTEGER REFERENCES cf_publisher(id), system_requirements TEXT)`,
	`CREATE TABLE cf_routing_rule (id INTEGER NOT NULL PRIMARY KEY, pattern VARCHAR NOT NULL, tag VARCHAR NOT NULL, priority INTEGER)`,
	`CREATE TABLE cf_ignore_rule (id INTEGER NOT NULL PRIMARY KEY, source_root_id INTEGER REFERENCES cf_source_root(id), pattern VARCHAR NOT NULL, active BOOLEAN, created_at DATETIME)`,
	`CREATE TABLE cf_file_tag (file_id INTEGER NOT NULL, tag VARCHAR NOT NULL, PRIMARY KEY (file_id, tag))`,
	`CREATE TABLE cf_plugin_subscription (id INTEGER NOT NULL PRIMARY KEY, plugin_name VARCHAR NOT NULL, topic_name VARCHAR NOT NULL, is_active BOOLEAN, UNIQUE (plugin_name, topic_name))`,
	`CREATE TABLE cf_worker_node (hostname VARCHAR NOT NULL, pid INTEGER NOT NULL, ip_address VARCHAR, env_signature VARCHAR, started_at DATETIME,
		last_heartbeat DATETIME, status VARCHAR, current_job_id INTEGER, PRIMARY KEY (hostname, pid))`,
}

// originalRows is a small working Casparian database: one root, two files,
// plugin "csv" with an old and a current manifest and two topics (one with
// NULL mode), plugin "env" with its own environment, and queue rows with the
// NULLs other tools leave.
var originalRows = []string{
	`INSERT INTO cf_source_root VALUES (1, '/srv/data', 'local', 1)`,
	`INSERT INTO cf_file_hash_registry VALUES ('h1', '2024-01-02 03:04:05', 100), ('h2', '2024-01-02 03:04:05.123456', 200)`,
	`INSERT INTO cf_file_location VALUES (1, 1, 'sales/jan.csv', 'jan.csv', 1704164645.5, 100, 1, '2024-01-02 03:04:05', '2024-01-02 03:04:05'),
		(2, 1, 'sales/feb.csv', 'feb.csv', 1704164645.5, 200, 2, '2024-01-02 03:04:05', '2024-01-02 03:04:05')`,
	`INSERT INTO cf_file_version VALUES (1, 1, 'h1', 100, '2024-01-02 03:04:05', '2024-01-02 03:04:05', 'csv,sales'),
		(2, 2, 'h2', 200, '2024-01-02 03:04:05', '2024-01-02 03:04:05', 'csv')`,
	`INSERT INTO cf_plugin_config VALUES ('csv', 'csv', '{}', '2024-01-01 00:00:00'), ('env', 'sales', '{}', NULL)`,
	`INSERT INTO cf_topic_config VALUES (1, 'csv', 'clean', 'sqlite://out.db/clean', NULL, '{"cols":["a"]}'),
		(2, 'csv', 'rejects', 'parquet://rejects.parquet', 'replace', NULL)`,
	`INSERT INTO cf_plugin_environment VALUES ('envhash1', 'pandas==2.1', 12.5, NULL, '2024-01-01 00:00:00')`,
	`INSERT INTO cf_plugin_manifest (id, plugin_name, version, source_code, source_hash, status, created_at, deployed_at, env_hash, artifact_hash) VALUES
		(1, 'csv', '1.0', 'old source', 's1', 'SUPERSEDED', '2024-01-01 00:00:00', '2024-01-01 00:00:00', NULL, 'a1'),
		(2, 'csv', '1.1', 'csv source', 's2', 'ACTIVE', '2024-01-02 00:00:00', '2024-01-02 00:00:00', NULL, 'a2'),
		(3, 'env', '0.1', 'env source', 's3', 'ACTIVE', '2024-01-02 00:00:00', '2024-01-02 00:00:00.5', 'envhash1', 'a3')`,
	`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, config_overrides, status, priority, claim_time, end_time, result_summary, retry_count) VALUES
		(1, 1, 'csv', NULL, 'COMPLETED', 100, '2024-01-02 03:05:00', '2024-01-02 03:06:00.250000', 'Success', 0),
		(2, 1, 'csv', NULL, 'QUEUED', NULL, NULL, NULL, NULL, NULL),
		(3, 2, 'csv', '{"rejects": [{"topic": "rejects", "uri": "s3://bucket/rejects", "mode": "error"}, {"uri": "file:///tmp/r.jsonl"}], "extra": {"uri": "kafka://t"}}', 'QUEUED', 50, NULL, NULL, NULL, 1),
		(4, 2, 'env', NULL, NULL, 10, NULL, NULL, NULL, NULL),
		(5, 2, 'env', NULL, 'RUNNING', 10, '2024-01-02 03:05:00', NULL, NULL, 0),
		(6, 999, 'csv', NULL, 'QUEUED', 1, NULL, NULL, NULL, 0)`,
}

func TestOpen_OriginalCasparianSchema(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	raw := rawOpen(t, path)
	rawExec(t, raw, originalSchema...)
	rawExec(t, raw, originalRows...) // job 6 violates its foreign key
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	db := openAt(t, path)
	ctx := context.Background()

	cols := queueColumns(t, db)
	for _, c := range queueSentinelColumns {
		if !cols[c] {
			t.Errorf("cf_processing_queue.%s not added", c)
		}
	}
	objs := schemaObjects(t, db)
	for _, name := range cfTables {
		if _, ok := objs["table "+name]; !ok {
			t.Errorf("table %s missing after migration", name)
		}
	}

	// Existing rows are intact and read with their NULLs as defaults.
	done := getJob(t, db, 1)
	if done.Status != job.StatusCompleted || done.ResultSummary != "Success" || done.Priority != 100 ||
		!done.EndTime.Equal(time.Date(2024, 1, 2, 3, 6, 0, 250_000_000, time.UTC)) ||
		!done.ClaimTime.Equal(time.Date(2024, 1, 2, 3, 5, 0, 0, time.UTC)) {
		t.Errorf("completed legacy job = %+v", done)
	}
	counts, err := db.JobsCountByStatus(ctx)
	want := map[job.Status]int64{job.StatusCompleted: 1, job.StatusQueued: 4, job.StatusRunning: 1}
	if err != nil || !reflect.DeepEqual(counts, want) {
		t.Errorf("counts = %v, %v; want %v", counts, err, want)
	}
	if refs, err := runningRefs(db.JobsRunning(ctx, "")); err != nil || !reflect.DeepEqual(refs, []job.Ref{{JobID: 5}}) {
		t.Errorf("legacy RUNNING = %v, %v", refs, err)
	}

	claims, failures, err := db.JobsClaim(ctx, testNow, []job.ClaimRequest{{Worker: "w-1", Plugins: []string{"csv", "env"}, Limit: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if len(failures) != 1 || failures[0].Ref.JobID != 6 || failures[0].Reason != "dispatch: file version 999 not found" {
		t.Errorf("failures = %+v", failures)
	}
	if got := claimIDs(claims); !reflect.DeepEqual(got, []int64{3, 4, 2}) {
		t.Fatalf("claimed %v, want [3 4 2] (priority 50, 10, NULL=0)", got)
	}
	csvSinks := []Sink{
		{Topic: "clean", URI: "sqlite://out.db/clean", Mode: "append", SchemaDef: `{"cols":["a"]}`},
		{Topic: "rejects", URI: "parquet://rejects.parquet", Mode: "replace"},
		{Topic: "output", URI: "parquet://output/csv.parquet", Mode: "append"},
	}
	wantDispatch := map[int64]Dispatch{
		2: {PluginName: "csv", FilePath: "/srv/data/sales/jan.csv", FileVersionID: 1, EnvHash: "system",
			SourceCode: "csv source", ArtifactHash: "a2", Sinks: csvSinks},
		3: {PluginName: "csv", FilePath: "/srv/data/sales/feb.csv", FileVersionID: 2, EnvHash: "system",
			SourceCode: "csv source", ArtifactHash: "a2", Sinks: []Sink{
				csvSinks[0],
				{Topic: "rejects", URI: "s3://bucket/rejects", Mode: "error"},
				{Topic: "rejects", URI: "file:///tmp/r.jsonl", Mode: "append"},
				{Topic: "extra", URI: "kafka://t", Mode: "append"},
				csvSinks[2],
			}},
		4: {PluginName: "env", FilePath: "/srv/data/sales/feb.csv", FileVersionID: 2, EnvHash: "envhash1",
			SourceCode: "env source", ArtifactHash: "a3", Sinks: []Sink{{Topic: "output", URI: "parquet://output/env.parquet", Mode: "append"}}},
	}
	for _, c := range claims {
		if !reflect.DeepEqual(c.Dispatch, wantDispatch[c.Ref.JobID]) {
			t.Errorf("dispatch of job %d:\n got %+v\nwant %+v", c.Ref.JobID, c.Dispatch, wantDispatch[c.Ref.JobID])
		}
		if c.Ref.Attempt != 1 || c.Ref.Worker != "w-1" {
			t.Errorf("ref = %+v", c.Ref)
		}
	}
	if claims[0].RetryCount != 1 || claims[2].RetryCount != 0 || claims[2].Priority != 0 {
		t.Errorf("claims = %+v", claims)
	}

	// Our writes land in DATETIME columns and read back.
	out := conclude(t, db, job.Conclusion{Ref: claims[0].Ref, Kind: job.ConcludeComplete, Metrics: map[string]int64{"rows": 3}})
	if out[0] != job.OutcomeCompleted {
		t.Fatalf("conclude = %v", out[0])
	}
	j := getJob(t, db, 3)
	if j.Status != job.StatusCompleted || !j.ClaimTime.Equal(testNow) || !j.EndTime.Equal(testNow) || j.Metrics["rows"] != 3 {
		t.Errorf("job 3 = %+v", j)
	}
	// The catalogue helpers work against the original tables too.
	if _, err := db.FileVersionAdd(ctx, 1, "sales/jan.csv", "h3", 300, testNow, []string{"sales", "csv"}); err != nil {
		t.Errorf("FileVersionAdd on original schema: %v", err)
	}
	if _, err := db.PluginManifestActivate(ctx, "csv", "1.2", "newer source", "", ""); err != nil {
		t.Errorf("PluginManifestActivate on original schema: %v", err)
	}
}
