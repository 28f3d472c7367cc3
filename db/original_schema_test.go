package db

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

// ourExtraColumns are the only columns our tables may have beyond the
// original's; each must be nullable and without a default.
var ourExtraColumns = map[string][]string{
	"cf_processing_queue": {"claimed_by", "attempt", "next_run_at", "metrics_json", "artifacts_json", "updated_at", "cancel_requested_at", "enqueued_at", "output_key"},
	"cf_file_location":    {"missing_since"},
}

// ourExtraIndexes are the only indexes our tables may have beyond the
// original's (the claim path's, see jobs.go).
var ourExtraIndexes = map[string][]string{
	"cf_processing_queue": {"ix_cf_queue_nulls", "ix_cf_queue_plugin",
		"ix_cf_queue_next_run", "ix_cf_queue_claimable", "ix_cf_queue_claimable_any", "ix_cf_queue_output_version"},
	"cf_file_version": {"ix_cf_file_version_content"},
}

// tableShape is what PRAGMA table_info, index_list, index_info and
// foreign_key_list say about one table.
type tableShape struct {
	columns []shapeColumn
	indexes map[string]shapeIndex
	fks     []string
}

type shapeColumn struct {
	name, typ string
	notNull   bool
	dflt      sql.NullString
	pk        int
}

type shapeIndex struct {
	unique  bool
	origin  string
	partial bool
	columns string
}

// loadOriginalSchema creates a file with the original's DDL
// (testdata/original-schema.sql, a copy of shared/original-schema.sql).
func loadOriginalSchema(t *testing.T, path string) *sql.DB {
	t.Helper()
	ddl, err := os.ReadFile(filepath.Join("testdata", "original-schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	raw := rawOpen(t, path)
	rawExec(t, raw, string(ddl))
	return raw
}

func shapeOf(t *testing.T, q interface {
	Query(string, ...any) (*sql.Rows, error)
}) map[string]tableShape {
	t.Helper()
	all := func(query string, args []any, dest func() []any) {
		t.Helper()
		rows, err := q.Query(query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := rows.Scan(dest()...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	var tables []string
	all(`SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'cf\_%' ESCAPE '\' AND name <> 'cf_schema_migrations'`,
		nil, func() []any {
			tables = append(tables, "")
			return []any{&tables[len(tables)-1]}
		})
	shapes := make(map[string]tableShape)
	for _, table := range tables {
		s := tableShape{indexes: make(map[string]shapeIndex)}
		var c shapeColumn
		var cid int
		all(`PRAGMA table_info(`+table+`)`, nil, func() []any {
			if c.name != "" {
				s.columns = append(s.columns, c)
			}
			c = shapeColumn{}
			return []any{&cid, &c.name, &c.typ, &c.notNull, &c.dflt, &c.pk}
		})
		if c.name != "" {
			s.columns = append(s.columns, c)
		}
		type idx struct {
			name   string
			unique bool
			origin string
			part   bool
		}
		var idxs []idx
		var seq int
		all(`PRAGMA index_list(`+table+`)`, nil, func() []any {
			idxs = append(idxs, idx{})
			i := &idxs[len(idxs)-1]
			return []any{&seq, &i.name, &i.unique, &i.origin, &i.part}
		})
		for _, i := range idxs {
			var cols []string
			var seqno, cid int
			var name sql.NullString
			all(`PRAGMA index_info(`+quoteIdent(i.name)+`)`, nil, func() []any {
				if name.Valid {
					cols = append(cols, name.String)
				}
				name = sql.NullString{}
				return []any{&seqno, &cid, &name}
			})
			if name.Valid {
				cols = append(cols, name.String)
			}
			s.indexes[i.name] = shapeIndex{unique: i.unique, origin: i.origin, partial: i.part, columns: strings.Join(cols, ",")}
		}
		var id, fseq int
		var parent, from, onUpdate, onDelete, match string
		var to sql.NullString
		all(`PRAGMA foreign_key_list(`+table+`)`, nil, func() []any {
			if parent != "" {
				s.fks = append(s.fks, fmt.Sprintf("%s->%s(%s)", from, parent, to.String))
			}
			parent = ""
			return []any{&id, &fseq, &parent, &from, &to, &onUpdate, &onDelete, &match}
		})
		if parent != "" {
			s.fks = append(s.fks, fmt.Sprintf("%s->%s(%s)", from, parent, to.String))
		}
		shapes[table] = s
	}
	return shapes
}

// assertOriginalShape fails unless db's cf_* tables are the original's,
// allowing only ourExtraColumns and ourExtraIndexes.
func assertOriginalShape(t *testing.T, db *DB) {
	t.Helper()
	ref := shapeOf(t, loadOriginalSchema(t, filepath.Join(t.TempDir(), "original.db")))
	got := shapeOf(t, db.writer)
	if len(ref) != len(cfTables) {
		t.Fatalf("original schema has %d cf_* tables, want %d", len(ref), len(cfTables))
	}
	for table := range got {
		if _, ok := ref[table]; !ok {
			t.Errorf("table %s is not the original's", table)
		}
	}
	for table, want := range ref {
		have, ok := got[table]
		if !ok {
			t.Errorf("table %s missing", table)
			continue
		}
		extra := make(map[string]bool)
		for _, c := range ourExtraColumns[table] {
			extra[c] = true
		}
		var cols []shapeColumn
		for _, c := range have.columns {
			if !extra[c.name] {
				cols = append(cols, c)
				continue
			}
			delete(extra, c.name)
			if c.notNull || c.dflt.Valid || c.pk != 0 {
				t.Errorf("%s.%s: extra column must be nullable without default: %+v", table, c.name, c)
			}
		}
		if len(extra) != 0 {
			t.Errorf("%s: extra columns missing: %v", table, extra)
		}
		if !reflect.DeepEqual(cols, want.columns) {
			t.Errorf("%s columns:\n got %+v\nwant %+v", table, cols, want.columns)
		}
		for _, name := range ourExtraIndexes[table] {
			if _, ok := have.indexes[name]; !ok {
				t.Errorf("%s: our index %s missing", table, name)
			}
			delete(have.indexes, name)
		}
		if !reflect.DeepEqual(have.indexes, want.indexes) {
			t.Errorf("%s indexes:\n got %+v\nwant %+v", table, have.indexes, want.indexes)
		}
		if !reflect.DeepEqual(have.fks, want.fks) {
			t.Errorf("%s foreign keys:\n got %v\nwant %v", table, have.fks, want.fks)
		}
	}
}

// assertSound fails unless foreign_key_check is empty and integrity_check
// says ok.
func assertSound(t *testing.T, db *DB) {
	t.Helper()
	rows, err := db.writer.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fkid int
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			t.Fatal(err)
		}
		t.Errorf("foreign key violation: %s row %d -> %s", table, rowid.Int64, parent)
	}
	rows.Close()
	var ok string
	if err := db.writer.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check = %q, %v", ok, err)
	}
	var fk int
	if err := db.writer.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v; want enforcement back on", fk, err)
	}
}

func countRows(t *testing.T, db *DB, table string) int {
	t.Helper()
	var n int
	if err := db.writer.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestMigrate_OriginalSchemaFromEmptyFile(t *testing.T) {
	t.Parallel()
	db := openAt(t, testPath(t)) // migrated here, not copied
	assertOriginalShape(t, db)
	assertSound(t, db)

	// Rows that leave out their timestamps get the original's defaults.
	s := seedBasics(t, db, "p")
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, `INSERT INTO cf_plugin_manifest (plugin_name, version, source_code, source_hash, status)
		VALUES ('p', '2', 'x', 'hx', 'ACTIVE')`,
		fmt.Sprintf(`INSERT INTO cf_file_location (source_root_id, rel_path, filename) VALUES (%d, 'b.csv', 'b.csv')`, s.root))
	var created, discovered, seen sql.NullString
	if err := db.writer.QueryRow(`SELECT created_at FROM cf_plugin_manifest WHERE source_hash = 'hx'`).Scan(&created); err != nil || !created.Valid {
		t.Errorf("created_at = %v, %v; want CURRENT_TIMESTAMP", created, err)
	}
	if err := db.writer.QueryRow(`SELECT discovered_time, last_seen_time FROM cf_file_location WHERE rel_path = 'b.csv'`).
		Scan(&discovered, &seen); err != nil || !discovered.Valid || !seen.Valid {
		t.Errorf("location times = %v, %v, %v", discovered, seen, err)
	}
}

// seedLevel writes rows into a file at schema level (before 0006): every
// cf_* table gets some, in our earlier layout. It returns the row counts
// expected after migrating.
func seedLevel(t *testing.T, path string, level int) map[string]int {
	t.Helper()
	raw := rawOpen(t, path)
	rawExec(t, raw,
		`INSERT INTO cf_source_root (id, path) VALUES (1, '/data'), (2, '/more')`,
		`INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h1', 10), ('h2', 20)`,
		`INSERT INTO cf_file_location (id, source_root_id, rel_path, filename) VALUES (1, 1, 'in/a.csv', 'a.csv'), (2, 1, 'in/sub/b.csv', NULL)`,
		`INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time, applied_tags)
			VALUES (1, 1, 'h1', 10, '2024-01-01 00:00:00', 'csv'), (2, 2, 'h2', NULL, NULL, 'csv')`,
		`UPDATE cf_file_location SET current_version_id = id`,
		`INSERT INTO cf_plugin_config (plugin_name, subscription_tags) VALUES ('p', 'csv')`,
		`INSERT INTO cf_topic_config (plugin_name, topic_name, uri) VALUES ('p', 'output', 'parquet://o.parquet')`,
		`INSERT INTO cf_plugin_environment (hash, lockfile_content) VALUES ('e1', 'x==1')`,
		`INSERT INTO cf_publisher (name, azure_oid) VALUES ('ann', 'oid-1')`,
		`INSERT INTO cf_plugin_manifest (plugin_name, version, source_code, source_hash, status, env_hash, publisher_id, deployed_at)
			VALUES ('p', '1', 'src', 's1', 'ACTIVE', 'e1', 1, '2024-01-01T00:00:00.000000000Z')`,
		`INSERT INTO cf_routing_rule (pattern, tag) VALUES ('*.csv', 'csv')`,
		`INSERT INTO cf_ignore_rule (source_root_id, pattern) VALUES (NULL, '*.tmp'), (1, 'tmp/')`,
		`INSERT INTO cf_file_tag (file_id, tag) VALUES (1, 'csv')`,
		// 'q' has no cf_plugin_config row: 0006 adds one for the new key.
		`INSERT INTO cf_plugin_subscription (plugin_name, topic_name) VALUES ('p', 'output'), ('q', 'output')`,
		`INSERT INTO cf_worker_node (hostname, pid, status) VALUES ('h', 1, 'IDLE')`,
		`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count)
			VALUES (1, 1, 'p', 'QUEUED', 5, 0), (2, 2, 'p', 'COMPLETED', 0, 0), (3, NULL, 'p', 'QUEUED', 0, 0)`,
		`INSERT INTO cf_library_whitelist (library, version, description) VALUES ('pandas', '>=2', 'frames')`,
		`INSERT INTO cf_surveyor_session (id, source_root_id, status, summary) VALUES (1, 1, 'done', 'ok'), (2, NULL, 'lost', NULL)`,
		`INSERT INTO cf_surveyor_decision (session_id, file_path, decision, reason) VALUES (1, '/data/in/a.csv', 'include', 'csv')`,
	)
	if level >= 2 {
		rawExec(t, raw, `UPDATE cf_processing_queue SET claimed_by = 'w-old', attempt = 3 WHERE id = 1`)
	}
	if level >= 3 {
		rawExec(t, raw, `UPDATE cf_file_location SET missing_since = '2024-02-01T00:00:00.000000000Z' WHERE id = 2`)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	return map[string]int{
		"cf_source_root": 2, "cf_file_hash_registry": 2, "cf_file_location": 2, "cf_file_version": 2,
		"cf_plugin_config": 2, "cf_topic_config": 1, "cf_plugin_environment": 1, "cf_publisher": 1,
		"cf_plugin_manifest": 1, "cf_routing_rule": 1, "cf_ignore_rule": 2, "cf_file_tag": 1,
		"cf_plugin_subscription": 2, "cf_worker_node": 1,
		"cf_processing_queue": 2, "backup_0006_cf_processing_queue": 1, // job 3 had no file version
		"cf_library_whitelist": 1, "backup_0006_cf_library_whitelist": 1,
		"cf_surveyor_session": 1, "backup_0006_cf_surveyor_session": 2,
		"cf_surveyor_decision": 0, "backup_0006_cf_surveyor_decision": 1,
	}
}

func TestMigrate_OriginalSchemaFromEachEarlierLevel(t *testing.T) {
	t.Parallel()
	// Every level before 0006 (the rebuild) is migrated to the newest.
	last := -1
	for i, m := range migrations {
		if m.name == "original_schema" {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("no original_schema migration; update this test")
	}
	for level := 1; level <= last; level++ {
		t.Run(fmt.Sprintf("Level%d", level), func(t *testing.T) {
			path := testPath(t)
			old, err := openTo(context.Background(), "sqlite://"+path, level)
			if err != nil {
				t.Fatal(err)
			}
			if got := appliedVersions(t, old); len(got) != level {
				t.Fatalf("level %d: applied %v", level, got)
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			want := seedLevel(t, path, level)

			db := openAt(t, path)
			assertOriginalShape(t, db)
			assertSound(t, db)
			for table, n := range want {
				if got := countRows(t, db, table); got != n {
					t.Errorf("%s has %d rows, want %d", table, got, n)
				}
			}

			// What maps is carried over.
			var lib, constraint, desc string
			if err := db.writer.QueryRow(`SELECT library_name, version_constraint, description FROM cf_library_whitelist`).
				Scan(&lib, &constraint, &desc); err != nil || lib != "pandas" || constraint != ">=2" || desc != "frames" {
				t.Errorf("whitelist = %q %q %q, %v", lib, constraint, desc, err)
			}
			var filename string
			var size int64
			var mtime bool
			if err := db.writer.QueryRow(`SELECT l.filename, v.size_bytes, v.modified_time = '1970-01-01 00:00:00' FROM cf_file_location l
				JOIN cf_file_version v ON v.id = l.current_version_id WHERE l.id = 2`).Scan(&filename, &size, &mtime); err != nil ||
				filename != "b.csv" || size != 20 || !mtime {
				t.Errorf("filled NOT NULLs = %q %d %v, %v", filename, size, mtime, err)
			}
			j := getJob(t, db, 1)
			if j.Status != job.StatusQueued || j.Priority != 5 {
				t.Errorf("job 1 = %+v", j)
			}
			if level >= 2 && (j.ClaimedBy != "w-old" || j.Attempt != 3) {
				t.Errorf("job 1 lost its claim state: %+v", j)
			}

			// The migrated file works: the job is claimed and dispatched.
			c := claim(t, db, "w", 10, "p")
			if len(c) != 1 || c[0].Ref.JobID != 1 || c[0].Dispatch.SourceCode != "src" || c[0].Dispatch.EnvHash != "e1" ||
				c[0].Dispatch.FilePath != "/data/in/a.csv" {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}

// originalRowsWithoutTimestamps is what the original tools insert: no
// timestamp columns (their defaults apply), two ACTIVE manifests for "p"
// written in one statement, so their created_at are equal.
var originalRowsWithoutTimestamps = []string{
	`INSERT INTO cf_source_root (id, path, type, active) VALUES (1, '/srv', 'local', 1)`,
	`INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h1', 10)`,
	`INSERT INTO cf_file_location (id, source_root_id, rel_path, filename, current_version_id) VALUES (1, 1, 'a.csv', 'a.csv', 1)`,
	`INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time, applied_tags)
		VALUES (1, 1, 'h1', 10, '2024-01-01 00:00:00', 'csv')`,
	`INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters) VALUES ('p', 'csv', '{}'), ('n', 'csv', '{}')`,
	`INSERT INTO cf_plugin_manifest (id, plugin_name, version, source_code, source_hash, status)
		VALUES (1, 'p', '1', 'first', 's1', 'ACTIVE'), (2, 'p', '2', 'second', 's2', 'ACTIVE')`,
	`INSERT INTO cf_plugin_manifest (id, plugin_name, version, source_code, source_hash, status, created_at)
		VALUES (3, 'n', '1', 'first', 's3', 'ACTIVE', NULL), (4, 'n', '2', 'second', 's4', 'ACTIVE', NULL)`,
	`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count)
		VALUES (1, 1, 'p', 'QUEUED', 10, 0), (2, 1, 'n', 'QUEUED', 5, 0)`,
}

func TestOpen_OriginalSchemaWithDefaultedTimestamps(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	raw := loadOriginalSchema(t, path)
	rawExec(t, raw, originalRowsWithoutTimestamps...)
	var created sql.NullString
	if err := raw.QueryRow(`SELECT created_at FROM cf_plugin_manifest WHERE id = 1`).Scan(&created); err != nil || !created.Valid {
		t.Fatalf("original DDL did not default created_at: %v, %v", created, err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	db := openAt(t, path)
	assertOriginalShape(t, db)
	assertSound(t, db)
	if got := countRows(t, db, "cf_plugin_manifest"); got != 4 {
		t.Errorf("%d manifests, want 4", got)
	}

	c := claim(t, db, "w", 10, "p", "n")
	if len(c) != 2 {
		t.Fatalf("claims = %+v", c)
	}
	for _, cl := range c {
		// Equal ("p") and NULL ("n") created_at: the higher id wins.
		if cl.Dispatch.SourceCode != "second" || cl.Dispatch.FilePath != "/srv/a.csv" {
			t.Errorf("job %d dispatch = %+v", cl.Ref.JobID, cl.Dispatch)
		}
	}
}

func TestMigrate_RebuildKeepsOtherToolsObjects(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	old, err := openTo(context.Background(), "sqlite://"+path, 5)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	raw := rawOpen(t, path)
	rawExec(t, raw,
		`ALTER TABLE cf_routing_rule ADD COLUMN note VARCHAR(20)`,
		`CREATE INDEX ix_other_note ON cf_routing_rule (note)`,
		`INSERT INTO cf_routing_rule (pattern, tag, note) VALUES ('*.csv', 'csv', 'kept')`,
		`CREATE VIEW v_rules AS SELECT pattern, tag FROM cf_routing_rule`,
		`CREATE TRIGGER tr_rules AFTER INSERT ON cf_routing_rule BEGIN UPDATE cf_routing_rule SET note = 'new' WHERE id = NEW.id; END`)
	raw.Close()

	db := openAt(t, path)
	objs := schemaObjects(t, db)
	for _, name := range []string{"index ix_other_note", "view v_rules", "trigger tr_rules"} {
		if _, ok := objs[name]; !ok {
			t.Errorf("%s lost in the rebuild", name)
		}
	}
	var note string
	if err := db.writer.QueryRow(`SELECT note FROM cf_routing_rule`).Scan(&note); err != nil || note != "kept" {
		t.Errorf("note = %q, %v", note, err)
	}
	assertSound(t, db)
}
