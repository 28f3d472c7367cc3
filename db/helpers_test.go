package db

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casparian/sentinel/job"
)

func TestMain(m *testing.M) {
	// Every pool and the data_version connection must be gone after Close.
	goleak.VerifyTestMain(m)
}

// testNow is a fixed clock for claims and conclusions.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// testPath returns a fresh database path in a temp dir.
func testPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "sentinel.db")
}

// openAt opens the database at path and closes it at the end of the test.
func openAt(t testing.TB, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), "sqlite://"+path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// openTest opens a new empty database: a copy of one that Open created and
// migrated once per test binary (migratedTemplate), so that the tests pay
// for the migrations once, not each. The tests of migrating an empty file
// open a fresh path with openAt(t, testPath(t)) instead.
func openTest(t testing.TB) *DB {
	t.Helper()
	path := testPath(t)
	if b := migratedTemplate(t); b != nil {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return openAt(t, path)
}

// migrated is the file migratedTemplate makes, as internal/sentineltest
// does for its Sentinels: under the race detector migrating a new file
// costs about 400 ms of CPU, opening a migrated copy a few ms.
var migrated struct {
	once sync.Once
	file []byte // nil: every openTest migrates afresh
	err  error
}

// migratedTemplate is a database file that Open created and migrated, with
// no rows but those the migrations write; nil if it could not be made whole
// (a WAL left behind would hold part of the schema), and then openTest
// migrates each file.
func migratedTemplate(t testing.TB) []byte {
	t.Helper()
	migrated.once.Do(func() {
		dir, err := os.MkdirTemp("", "db-test-")
		if err != nil {
			migrated.err = err
			return
		}
		defer func() { _ = os.RemoveAll(dir) }() // a leftover folder costs disk, not a result
		path := filepath.Join(dir, "migrated.db")
		db, err := Open(context.Background(), "sqlite://"+path)
		if err != nil {
			migrated.err = err
			return
		}
		if migrated.err = db.Close(); migrated.err != nil {
			return
		}
		// The last connection's close checkpoints the WAL into the file
		// and removes it.
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
			return
		}
		migrated.file, migrated.err = os.ReadFile(path)
	})
	if migrated.err != nil {
		t.Fatalf("migrated template: %v", migrated.err)
	}
	return migrated.file
}

// rawOpen opens path with the bare driver: no pragmas, so foreign keys are
// off, like a tool that writes whatever it wants.
func rawOpen(t testing.TB, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open(driverName, path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("raw open: %v", err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	return raw
}

// rawExec runs statements on a raw connection.
func rawExec(t testing.TB, raw *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
}

// seed is a file chain plus deployed plugins in a test database.
type seed struct {
	root int64 // source root "/data"
	fv   int64 // version of /data/in/a.csv
}

// seedBasics creates the source root /data, one file version and an ACTIVE
// manifest for each plugin.
func seedBasics(t testing.TB, db *DB, plugins ...string) seed {
	t.Helper()
	ctx := context.Background()
	root, err := db.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	fv, err := db.FileVersionAdd(ctx, root.ID, "in/a.csv", "hash-a", 10, testNow.Add(-time.Hour), []string{"csv"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plugins {
		if _, err := db.PluginManifestActivate(ctx, p, "1.0", "print('"+p+"')", "", "art-"+p); err != nil {
			t.Fatal(err)
		}
	}
	return seed{root: root.ID, fv: fv}
}

// enqueue inserts a QUEUED job or fails the test.
func enqueue(t testing.TB, db *DB, fv int64, plugin string, priority int64) int64 {
	t.Helper()
	id, err := db.JobEnqueue(context.Background(), job.Submission{FileVersionID: fv, Plugin: plugin, Priority: priority})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// insertJob inserts a QUEUED job as another tool would, without the checks
// JobEnqueue makes, so that tests can hand the claim rows JobEnqueue refuses
// (config_overrides a dispatch cannot use, sinks naming the database).
func insertJob(t testing.TB, db *DB, fv int64, plugin, overrides string) int64 {
	t.Helper()
	var id int64
	ctx := context.Background()
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		now := formatTime(time.Now())
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at)
			VALUES (?, ?, ?, 'QUEUED', 0, 0, ?) RETURNING id`, fv, plugin, overrides, now).Scan(&id)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// claim runs one JobsClaim request or fails the test.
func claim(t testing.TB, db *DB, worker string, limit int, plugins ...string) []Claim {
	t.Helper()
	claims, failures, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{{Worker: worker, Plugins: plugins, Limit: limit}})
	if err != nil {
		t.Fatal(err)
	}
	if len(failures) > 0 {
		t.Fatalf("unexpected claim failures: %+v", failures)
	}
	return claims
}

// claimIDs returns the job ids of claims, in order.
func claimIDs(cs []Claim) []int64 {
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.Ref.JobID
	}
	return ids
}

// getJob reads a job or fails the test.
func getJob(t testing.TB, db *DB, id int64) job.Job {
	t.Helper()
	j, err := db.JobGet(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.Job
}

// conclude applies conclusions or fails the test.
func conclude(t testing.TB, db *DB, cs ...job.Conclusion) []job.Outcome {
	t.Helper()
	out, err := db.JobsConclude(context.Background(), testNow, cs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// queryPlan returns the details of EXPLAIN QUERY PLAN for q, one per line.
func queryPlan(t *testing.T, db *DB, name, q string, args ...any) []string {
	t.Helper()
	rows, err := db.writer.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return plan
}
