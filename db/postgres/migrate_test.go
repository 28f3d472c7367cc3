package postgres

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/casparian/sentinel/db/postgres/pgtest"
)

// ourColumns are the columns migration 0002 adds to the original's tables.
var ourColumns = map[string][]string{
	"cf_processing_queue": {"claimed_by", "attempt", "next_run_at", "metrics_json", "artifacts_json",
		"updated_at", "cancel_requested_at", "sentinel_id", "enqueued_at"},
	"cf_file_location": {"missing_since"},
}

// originalTables are the 18 cf_* tables of the original's schema.
var originalTables = []string{
	"cf_routing_rule", "cf_plugin_config", "cf_source_root", "cf_file_hash_registry",
	"cf_file_location", "cf_file_version", "cf_worker_node", "cf_publisher",
	"cf_plugin_environment", "cf_library_whitelist", "cf_ignore_rule", "cf_topic_config",
	"cf_file_tag", "cf_processing_queue", "cf_plugin_subscription", "cf_plugin_manifest",
	"cf_surveyor_session", "cf_surveyor_decision",
}

func TestMigrations_NumberedWithoutRepeats(t *testing.T) {
	t.Parallel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range ms {
		if i > 0 && m.version <= ms[i-1].version {
			t.Errorf("migration %s does not follow %s", m.file, ms[i-1].file)
		}
	}
}

// schema describes a database's schema as text lines, one per column,
// index, constraint, enum type, trigger and table, sorted, so that two
// databases can be compared line by line.
func schema(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	queries := []string{
		`SELECT format('column %s.%s %s(%s) nullable=%s default=%s', table_name, column_name,
			udt_name, coalesce(character_maximum_length::text, ''), is_nullable, coalesce(column_default, ''))
		 FROM information_schema.columns WHERE table_schema = 'public'`,
		`SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'`,
		`SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
		 FROM pg_constraint WHERE connamespace = 'public'::regnamespace`,
		`SELECT format('enum %s %s', t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder))
		 FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname`,
		`SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal`,
		`SELECT format('sequence %s', sequencename) FROM pg_sequences WHERE schemaname = 'public'`,
	}
	var lines []string
	for _, q := range queries {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, got...)
	}
	sort.Strings(lines)
	return lines
}

// versions lists the recorded migration versions.
func versions(t *testing.T, ctx context.Context, conn *pgx.Conn) []int {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT version FROM cf_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestMigrate_EmptyDatabase(t *testing.T) {
	t.Parallel()
	_, url := openMigrating(t)
	ctx := testContext(t)
	conn := connect(t, url)
	ms, _ := migrations()
	if got := versions(t, ctx, conn); len(got) != len(ms) {
		t.Fatalf("recorded versions %v, want 1..%d", got, len(ms))
	}
	lines := strings.Join(schema(t, ctx, conn), "\n")
	for _, table := range append(originalTables, "sentinel_lease", "cf_schema_migrations") {
		if !strings.Contains(lines, "column "+table+".") {
			t.Errorf("table %s missing", table)
		}
	}
	for table, cols := range ourColumns {
		for _, c := range cols {
			if !strings.Contains(lines, "column "+table+"."+c+" ") {
				t.Errorf("column %s.%s missing", table, c)
			}
		}
	}
	for _, want := range []string{
		"enum pluginstatusenum PENDING,STAGING,ACTIVE,REJECTED,SUPERSEDED",
		"enum statusenum PENDING,QUEUED,RUNNING,COMPLETED,FAILED,SKIPPED",
		"trigger CREATE TRIGGER sentinel_queue_notify AFTER INSERT ON public.cf_processing_queue",
		"constraint cf_file_location cf_file_location_current_version_id_fkey FOREIGN KEY (current_version_id) REFERENCES cf_file_version(id)",
		"column cf_processing_queue.id int4() nullable=NO default=nextval('cf_processing_queue_id_seq'::regclass)",
		"column cf_file_version.modified_time timestamp() nullable=NO default=",
		"column cf_plugin_config.last_updated timestamp() nullable=YES default=now()",
		"column cf_file_hash_registry.size_bytes int8() nullable=NO default=",
		"column cf_file_version.size_bytes int8() nullable=NO default=",
		"column cf_file_location.last_known_size int8() nullable=YES default=",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("schema lacks %q", want)
		}
	}
}

func TestMigrate_Idempotent(t *testing.T) {
	t.Parallel()
	_, url := openMigrating(t)
	ctx := testContext(t)
	conn := connect(t, url)
	before := schema(t, ctx, conn)
	vBefore := versions(t, ctx, conn)
	for i := range 2 {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatalf("Open #%d: %v", i+2, err)
		}
		db.Close()
	}
	if after := schema(t, ctx, conn); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("a second Open changed the schema:\n%s", diff(before, after))
	}
	if vAfter := versions(t, ctx, conn); fmt.Sprint(vAfter) != fmt.Sprint(vBefore) {
		t.Errorf("versions %v became %v", vBefore, vAfter)
	}
}

// Several Sentinels starting at once on an empty database: the advisory
// lock lets one migrate while the others wait, then find nothing to do.
// Without the lock, concurrent CREATE TYPE/CREATE TABLE IF NOT EXISTS
// collide on PostgreSQL's catalogue and fail.
func TestMigrate_ConcurrentOpens(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := testContext(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := Open(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			db.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Open: %v", err)
	}
	ms, _ := migrations()
	if got := versions(t, ctx, connect(t, url)); len(got) != len(ms) {
		t.Errorf("versions %v, want each of 1..%d once", got, len(ms))
	}
}

// A migration that fails leaves its transaction undone and nothing
// recorded, and the next Open applies it.
func TestMigrate_StopsHalfWayAndResumes(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := testContext(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := migrateTo(ctx, pool, 2); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, url)
	if got := versions(t, ctx, conn); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("versions %v, want [1 2]", got)
	}
	db, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ms, _ := migrations()
	if got := versions(t, ctx, conn); len(got) != len(ms) {
		t.Errorf("versions %v after resuming", got)
	}
}

// rowsOf returns every row of the original's tables as JSON, our columns
// left out, sorted: the data a database the original made must keep.
func rowsOf(t *testing.T, ctx context.Context, conn *pgx.Conn) map[string][]string {
	t.Helper()
	out := make(map[string][]string)
	for _, table := range originalTables {
		ours := "{" + strings.Join(ourColumns[table], ",") + "}"
		rows, err := conn.Query(ctx, fmt.Sprintf(
			`SELECT (to_jsonb(t) - $1::text[])::text FROM %s t`, table), ours)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(got)
		out[table] = got
	}
	return out
}

// A database the original created on PostgreSQL opens as it is: every
// table, row, type, index and sequence of the original stays, and ours are
// added beside them.
func TestMigrate_OriginalDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := testContext(t)
	execFile(t, url, "original_schema_postgres.sql")
	execFile(t, url, "original_rows.sql")
	conn := connect(t, url)
	origSchema := schema(t, ctx, conn)
	origRows := rowsOf(t, ctx, conn)
	if n := len(origRows["cf_processing_queue"]); n != 5 {
		t.Fatalf("fixture has %d jobs, want 5", n)
	}

	db, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("Open on the original's database: %v", err)
	}
	defer db.Close()

	t.Run("RowsIntact", func(t *testing.T) {
		after := rowsOf(t, ctx, conn)
		for _, table := range originalTables {
			if strings.Join(after[table], "\n") != strings.Join(origRows[table], "\n") {
				t.Errorf("%s changed:\n%s", table, diff(origRows[table], after[table]))
			}
		}
	})
	t.Run("OriginalSchemaKept", func(t *testing.T) {
		after := schema(t, ctx, conn)
		have := make(map[string]bool, len(after))
		for _, l := range after {
			have[l] = true
		}
		for _, l := range origSchema {
			// The changes: SUPERSEDED appended to pluginstatusenum (0003),
			// the file sizes widened to BIGINT (0006).
			if strings.HasPrefix(l, "enum pluginstatusenum ") || widenedToBigint(l) {
				continue
			}
			if !have[l] {
				t.Errorf("lost: %s", l)
			}
		}
	})
	t.Run("SameSchemaAsAnEmptyDatabase", func(t *testing.T) {
		_, freshURL := openTest(t)
		fresh := schema(t, ctx, connect(t, freshURL))
		after := schema(t, ctx, conn)
		if strings.Join(fresh, "\n") != strings.Join(after, "\n") {
			t.Errorf("upgraded original vs new database:\n%s", diff(after, fresh))
		}
	})
	t.Run("OurColumnsNullOnOriginalRows", func(t *testing.T) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM cf_processing_queue
			WHERE claimed_by IS NULL AND attempt IS NULL AND next_run_at IS NULL
			  AND sentinel_id IS NULL AND updated_at IS NULL`).Scan(&n)
		if err != nil || n != 5 {
			t.Errorf("jobs with our columns NULL: %d, %v; want 5", n, err)
		}
	})
	t.Run("SequencesContinue", func(t *testing.T) {
		var id int
		err := conn.QueryRow(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count)
			VALUES (1, 'csv_parser', 'QUEUED', 0, 0) RETURNING id`).Scan(&id)
		if err != nil || id != 6 {
			t.Errorf("new job id %d, %v; want 6", id, err)
		}
	})
	t.Run("SupersededAccepted", func(t *testing.T) {
		if _, err := conn.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED' WHERE id = 1`); err != nil {
			t.Errorf("status SUPERSEDED: %v", err)
		}
	})
	t.Run("Idempotent", func(t *testing.T) {
		before := schema(t, ctx, conn)
		db2, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		db2.Close()
		if after := schema(t, ctx, conn); strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Errorf("reopening changed the schema:\n%s", diff(before, after))
		}
	})
}

// widenedColumns are the original's INTEGER columns migration 0006 makes
// BIGINT.
var widenedColumns = []string{"cf_file_hash_registry.size_bytes", "cf_file_version.size_bytes", "cf_file_location.last_known_size"}

// widenedToBigint reports whether a schema line is the original's INTEGER
// type of one of widenedColumns.
func widenedToBigint(line string) bool {
	for _, c := range widenedColumns {
		if strings.HasPrefix(line, "column "+c+" int4(") {
			return true
		}
	}
	return false
}

// The original's status columns are PostgreSQL enums, which pgx does not
// know: the Store must still read and write them as plain strings, as
// parameters and as results.
func TestEnumColumns_AreStringsToPgx(t *testing.T) {
	t.Parallel()
	_, url := openTest(t)
	ctx := testContext(t)
	conn := connect(t, url)
	seedFile(t, ctx, conn)
	for _, status := range []string{"QUEUED", "RUNNING", "COMPLETED", "SKIPPED"} {
		t.Run(status, func(t *testing.T) {
			var id int64
			err := conn.QueryRow(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status)
				VALUES (1, 'csv_parser', $1) RETURNING id`, status).Scan(&id)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			if err := conn.QueryRow(ctx, `SELECT status FROM cf_processing_queue WHERE id = $1 AND status = $2`,
				id, status).Scan(&got); err != nil || got != status {
				t.Errorf("read back %q, %v; want %q", got, err, status)
			}
		})
	}
	if _, err := conn.Exec(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status)
		VALUES (1, 'csv_parser', $1)`, "BOGUS"); err == nil {
		t.Error("status BOGUS accepted")
	}
}

// diff lists the lines only in a (-) and only in b (+).
func diff(a, b []string) string {
	in := func(xs []string) map[string]int {
		m := make(map[string]int)
		for _, x := range xs {
			m[x]++
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for _, x := range a {
		if mb[x] == 0 {
			out = append(out, "- "+x)
		}
	}
	for _, x := range b {
		if ma[x] == 0 {
			out = append(out, "+ "+x)
		}
	}
	return strings.Join(out, "\n")
}
