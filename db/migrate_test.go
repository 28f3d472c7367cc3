package db

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// cfTables is every cf_* table of the original schema (db/original_schema.go).
var cfTables = []string{
	"cf_source_root", "cf_file_hash_registry", "cf_file_location", "cf_file_version",
	"cf_processing_queue", "cf_plugin_config", "cf_topic_config", "cf_plugin_manifest",
	"cf_plugin_environment", "cf_publisher", "cf_routing_rule", "cf_ignore_rule",
	"cf_file_tag", "cf_plugin_subscription", "cf_worker_node", "cf_library_whitelist",
	"cf_surveyor_session", "cf_surveyor_decision",
}

// queueSentinelColumns are the columns migration 0002 adds.
var queueSentinelColumns = []string{"claimed_by", "attempt", "next_run_at", "metrics_json", "artifacts_json", "updated_at"}

func schemaObjects(t *testing.T, db *DB) map[string]string {
	t.Helper()
	rows, err := db.writer.Query(`SELECT type || ' ' || name, COALESCE(sql, '') FROM sqlite_master`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	objs := make(map[string]string)
	for rows.Next() {
		var name, sql string
		if err := rows.Scan(&name, &sql); err != nil {
			t.Fatal(err)
		}
		objs[name] = sql
	}
	return objs
}

func appliedVersions(t *testing.T, db *DB) map[int]string {
	t.Helper()
	rows, err := db.writer.Query(`SELECT version, applied_at FROM cf_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := make(map[int]string)
	for rows.Next() {
		var v int
		var at string
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		got[v] = at
	}
	return got
}

func queueColumns(t *testing.T, db *DB) map[string]bool {
	t.Helper()
	tx, err := db.writer.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	cols, err := tableColumns(context.Background(), tx, "cf_processing_queue")
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

func TestMigrate_CreatesEveryTableOnEmptyFile(t *testing.T) {
	t.Parallel()
	db := openAt(t, testPath(t)) // migrated here, not copied
	objs := schemaObjects(t, db)
	for _, name := range append(cfTables, "cf_schema_migrations") {
		if _, ok := objs["table "+name]; !ok {
			t.Errorf("table %s missing", name)
		}
	}
	for _, idx := range []string{"ix_cf_processing_queue_status", "ix_cf_queue_claimable", "ix_cf_queue_claimable_any", "ix_cf_queue_next_run", "ix_cf_queue_nulls"} {
		if _, ok := objs["index "+idx]; !ok {
			t.Errorf("index %s missing", idx)
		}
	}
	cols := queueColumns(t, db)
	for _, c := range queueSentinelColumns {
		if !cols[c] {
			t.Errorf("cf_processing_queue.%s missing", c)
		}
	}
	got := appliedVersions(t, db)
	if len(got) != len(migrations) {
		t.Errorf("applied versions = %v, want the %d listed", got, len(migrations))
	}
	for _, m := range migrations {
		if got[m.version] == "" {
			t.Errorf("migration %d not recorded: %v", m.version, got)
		}
	}
}

func TestMigrate_ReopenIsNoOp(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	first := openAt(t, path)
	schema := schemaObjects(t, first)
	versions := appliedVersions(t, first)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := openAt(t, path)
	if got := appliedVersions(t, again); len(got) != len(versions) || got[1] != versions[1] || got[2] != versions[2] {
		t.Errorf("versions changed on re-open: %v -> %v", versions, got)
	}
	after := schemaObjects(t, again)
	if len(after) != len(schema) {
		t.Errorf("schema has %d objects after re-open, %d before", len(after), len(schema))
	}
	for k, v := range schema {
		if after[k] != v {
			t.Errorf("%s changed on re-open", k)
		}
	}
}

func TestMigrate_EveryFileIsListedInOrder(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	// Versions only have to increase: numbers are handed out to branches
	// in flight, which may be merged in either order.
	var listed []string
	for i, m := range migrations {
		if i > 0 && m.version <= migrations[i-1].version {
			t.Errorf("migration %d has version %d after %d; versions must increase", i, m.version, migrations[i-1].version)
		}
		if m.file != "" {
			if prefix := fmt.Sprintf("%04d_", m.version); !strings.HasPrefix(m.file, prefix) {
				t.Errorf("migration %d file %q does not start with %s", m.version, m.file, prefix)
			}
			listed = append(listed, "migrations/"+m.file)
		}
	}
	sort.Strings(files)
	sort.Strings(listed)
	if strings.Join(files, ",") != strings.Join(listed, ",") {
		t.Errorf("embedded files %v, listed %v", files, listed)
	}
}

func TestMigrate_AddsOnlyMissingColumns(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	raw := rawOpen(t, path)
	// A queue table that already has two of the new columns, as if an
	// earlier tool had added them.
	rawExec(t, raw, `CREATE TABLE cf_processing_queue (
		id INTEGER PRIMARY KEY, file_version_id INTEGER, plugin_name TEXT, config_overrides TEXT,
		status TEXT, priority INTEGER, worker_host TEXT, worker_pid INTEGER, claim_time TEXT,
		end_time TEXT, result_summary TEXT, error_message TEXT, retry_count INTEGER,
		claimed_by TEXT, updated_at TEXT)`,
		// file_version_id: the original's NOT NULL, which 0006 restores.
		`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, claimed_by) VALUES (7, 1, 'p', 'QUEUED', 'old')`)
	raw.Close()

	db := openAt(t, path)
	cols := queueColumns(t, db)
	for _, c := range queueSentinelColumns {
		if !cols[c] {
			t.Errorf("cf_processing_queue.%s missing", c)
		}
	}
	if j := getJob(t, db, 7); j.ClaimedBy != "old" || j.Status != job.StatusQueued {
		t.Errorf("existing row changed: %+v", j)
	}
}

func TestMigrate_ConcurrentOpensApplyOnce(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	const n = 6
	dbs := make([]*DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dbs[i], errs[i] = Open(context.Background(), path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		defer dbs[i].Close()
	}
	if t.Failed() {
		return
	}
	if got := appliedVersions(t, dbs[0]); len(got) != len(migrations) {
		t.Errorf("applied versions = %v", got)
	}
}

func TestMigrate_EnqueuedAtStampsOtherToolsInserts(t *testing.T) {
	d := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, d, "p")
	before := time.Now().Add(-time.Second)
	if _, err := d.writer.ExecContext(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count)
		VALUES (?, 'p', 'QUEUED', 0, 0)`, s.fv); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := d.reader.QueryRowContext(ctx, `SELECT MAX(id) FROM cf_processing_queue`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	at, err := d.JobsEnqueuedAt(ctx, []int64{id})
	if err != nil {
		t.Fatal(err)
	}
	if got := at[id]; got.Before(before) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("a row inserted without enqueued_at reads enqueued at %v, want about now", got)
	}
}
