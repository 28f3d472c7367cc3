package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	// The SQLite driver, registered as "sqlite". STYLE.md keeps
	// database/sql inside db/, which owns the Sentinel's catalogue; this
	// package writes users' output databases instead, which db/ knows
	// nothing about, and the worker must not depend on the Sentinel's
	// storage layer.
	_ "modernc.org/sqlite"
)

// sqliteBusyTimeout is how long a commit waits for another writer of the
// target database (another job, another worker, a reader holding a lock).
const sqliteBusyTimeout = 30 * time.Second

// sqliteSink stages rows in a scratch SQLite file beside the target
// database, so the job holds no lock on the target while it runs. Commit
// attaches the scratch file and moves its rows into the target table in one
// IMMEDIATE transaction, which also creates, checks or replaces the table
// and deletes the rows an earlier run of the same job left: other readers
// see all of the job's rows, once, or none.
type sqliteSink struct {
	spec   Spec
	schema Schema

	stage  string
	db     *sql.DB
	closed bool
}

func openSQLite(spec Spec, schema Schema) (*sqliteSink, error) {
	s := &sqliteSink{spec: spec, schema: schema}
	if err := spec.Target.confined(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(spec.Target.Path), 0o755); err != nil {
		return nil, err
	}
	if spec.Mode == ModeError {
		if full, err := s.targetHasRows(); err != nil {
			return nil, err
		} else if full {
			return nil, ErrTargetNotEmpty
		}
	}
	s.stage = stagingName(spec.Target.Path, spec.JobID)
	// The scratch file needs no durability: it is deleted after the commit,
	// and a crash makes the job run again anyway.
	db, err := sql.Open("sqlite", sqliteDSN(s.stage, "_pragma=journal_mode(OFF)", "_pragma=synchronous(OFF)"))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	s.db = db
	cols := make([]string, len(schema))
	for i, c := range schema {
		cols[i] = quoteIdent(c.Name) + " " + sqliteType(c.Type)
	}
	if _, err := db.Exec(`CREATE TABLE stage_rows (` + strings.Join(cols, ", ") + `)`); err != nil {
		s.Abort()
		return nil, fmt.Errorf("create staging table: %w", err)
	}
	return s, nil
}

func (s *sqliteSink) URI() string { return s.spec.Target.URI() }

// sqliteRowsPerInsert is how many rows one INSERT stages: one statement per
// row spends most of its time in the driver, not in SQLite.
const sqliteRowsPerInsert = 64

func (s *sqliteSink) Write(rows [][]any) error {
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("stage rows: %w", err)
	}
	// After Commit, Rollback only returns sql.ErrTxDone; before it, the
	// error being returned already says what failed.
	defer func() { _ = tx.Rollback() }()
	var (
		st   *sql.Stmt
		args = make([]any, 0, sqliteRowsPerInsert*len(s.schema))
	)
	for len(rows) > 0 {
		n := min(len(rows), sqliteRowsPerInsert)
		if n < sqliteRowsPerInsert || st == nil {
			// A statement's Close frees it; an error there changes no row,
			// and the transaction reports its own at Commit.
			if st != nil {
				_ = st.Close()
			}
			if st, err = tx.Prepare(s.insertRows(n)); err != nil {
				return fmt.Errorf("stage rows: %w", err)
			}
			defer func(st *sql.Stmt) { _ = st.Close() }(st)
		}
		args = args[:0]
		for _, row := range rows[:n] {
			args = append(args, row...)
		}
		if _, err := st.Exec(args...); err != nil {
			return fmt.Errorf("stage rows: %w", err)
		}
		rows = rows[n:]
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("stage rows: %w", err)
	}
	return nil
}

// insertRows is the staging INSERT for n rows.
func (s *sqliteSink) insertRows(n int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(s.schema)), ", ") + ")"
	return `INSERT INTO stage_rows VALUES ` + strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
}

func (s *sqliteSink) Finish() error {
	if s.closed {
		return errors.New("finish: sink already closed")
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close staging database: %w", err)
	}
	return nil
}

func (s *sqliteSink) Commit() error {
	if err := s.commit(); err != nil {
		return fmt.Errorf("commit %s: %w", s.URI(), err)
	}
	removeSQLiteFiles(s.stage)
	return nil
}

func (s *sqliteSink) commit() error {
	unlock, err := lockTarget(s.spec.Target.Path, false)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.spec.Target.confined(); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := sql.Open("sqlite", sqliteDSN(s.spec.Target.Path,
		fmt.Sprintf("_pragma=busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()), "_txlock=immediate"))
	if err != nil {
		return err
	}
	// The closes, the DETACH and the Rollback below run after the
	// transaction committed or failed: the rows are in the file or not by
	// then, and a failure to let go of the connection changes neither.
	defer func() { _ = db.Close() }()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	// ATTACH cannot run inside a transaction, so it happens on the
	// connection the transaction then uses.
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS stage`, s.stage); err != nil {
		return fmt.Errorf("attach staging database: %w", err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, `DETACH DATABASE stage`) }()

	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // sql.ErrTxDone after Commit
	table := quoteIdent(s.spec.Target.Table)
	existing, err := tableColumns(ctx, tx, s.spec.Target.Table)
	if err != nil {
		return err
	}
	create := existing == nil
	if existing != nil {
		// A job that ran before (its receipt lost, the Sentinel killed
		// before it recorded it) replaces its own rows, and they do not
		// make the table "not empty" for error mode.
		if s.spec.Mode != ModeReplace && s.schema.index(JobColumn) >= 0 && hasColumn(existing, JobColumn) {
			if _, err := tx.ExecContext(ctx, `DELETE FROM main.`+table+` WHERE `+quoteIdent(JobColumn)+` = ?`, s.spec.JobID); err != nil {
				return fmt.Errorf("delete earlier rows of job %d: %w", s.spec.JobID, err)
			}
		}
		var full bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM main.`+table+`)`).Scan(&full); err != nil {
			return err
		}
		missing := missingColumns(existing, s.schema)
		switch {
		case full && s.spec.Mode == ModeError:
			return ErrTargetNotEmpty
		case s.spec.Mode == ModeAppend && full && len(missing) > 0:
			return fmt.Errorf("cannot append: table %s has no column %s (use mode replace to change the columns)",
				s.spec.Target.Table, strings.Join(missing, ", "))
		case len(missing) > 0:
			// Empty, or being replaced, with other columns: recreate it.
			if _, err := tx.ExecContext(ctx, `DROP TABLE main.`+table); err != nil {
				return err
			}
			create = true
		case s.spec.Mode == ModeReplace && full:
			// Same columns: keep the table (and any index on it) and
			// replace its rows.
			if _, err := tx.ExecContext(ctx, `DELETE FROM main.`+table); err != nil {
				return err
			}
		}
	}
	if create {
		defs := make([]string, len(s.schema))
		for i, c := range s.schema {
			defs[i] = quoteIdent(c.Name) + " " + sqliteType(c.Type)
			if c.Required {
				defs[i] += " NOT NULL"
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE main.`+table+` (`+strings.Join(defs, ", ")+`)`); err != nil {
			return fmt.Errorf("create table %s: %w", s.spec.Target.Table, err)
		}
	}
	if s.spec.Mode != ModeReplace && s.schema.index(JobColumn) >= 0 {
		// The delete above looks up one job's rows at every promotion:
		// without an index each job would scan every row earlier jobs
		// appended. Tables made before the index existed get it here once.
		index := quoteIdent(s.spec.Target.Table + "_" + JobColumn)
		if _, err := tx.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS main.`+index+` ON `+table+` (`+quoteIdent(JobColumn)+`)`); err != nil {
			return fmt.Errorf("index %s by job: %w", s.spec.Target.Table, err)
		}
	}
	cols := make([]string, len(s.schema))
	for i, c := range s.schema {
		cols[i] = quoteIdent(c.Name)
	}
	list := strings.Join(cols, ", ")
	if _, err := tx.ExecContext(ctx, `INSERT INTO main.`+table+` (`+list+`) SELECT `+list+` FROM stage.stage_rows`); err != nil {
		return fmt.Errorf("insert into %s: %w", s.spec.Target.Table, err)
	}
	return tx.Commit()
}

func (s *sqliteSink) Abort() {
	if !s.closed {
		s.closed = true
		_ = s.db.Close()
	}
	removeSQLiteFiles(s.stage)
}

// targetHasRows reports whether the target table exists and holds a row of
// another job (rows of this one are replaced at Commit), without creating
// the database file when it does not exist.
func (s *sqliteSink) targetHasRows() (bool, error) {
	if _, err := os.Stat(s.spec.Target.Path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	db, err := sql.Open("sqlite", sqliteDSN(s.spec.Target.Path, "mode=ro",
		fmt.Sprintf("_pragma=busy_timeout(%d)", sqliteBusyTimeout.Milliseconds())))
	if err != nil {
		return false, err
	}
	// Read-only (mode=ro, a read-only transaction): closing and rolling
	// back lose nothing.
	defer func() { _ = db.Close() }()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return false, fmt.Errorf("read %s: %w", s.spec.Target.Path, err)
	}
	defer func() { _ = tx.Rollback() }()
	cols, err := tableColumns(ctx, tx, s.spec.Target.Table)
	if err != nil || cols == nil {
		return false, err
	}
	q, args := `SELECT EXISTS (SELECT 1 FROM main.`+quoteIdent(s.spec.Target.Table)+`)`, []any(nil)
	if s.schema.index(JobColumn) >= 0 && hasColumn(cols, JobColumn) {
		q = `SELECT EXISTS (SELECT 1 FROM main.` + quoteIdent(s.spec.Target.Table) + ` WHERE ` + quoteIdent(JobColumn) + ` IS NOT ?)`
		args = append(args, s.spec.JobID)
	}
	var full bool
	err = tx.QueryRowContext(ctx, q, args...).Scan(&full)
	return full, err
}

// hasColumn reports whether have names column, case-insensitively as SQLite
// compares identifiers.
func hasColumn(have []string, column string) bool {
	return slices.ContainsFunc(have, func(c string) bool { return strings.EqualFold(c, column) })
}

// tableColumns returns the columns of a table in the main database, or nil
// if it does not exist.
func tableColumns(ctx context.Context, tx *sql.Tx, table string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?, 'main')`, table)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", table, err)
	}
	defer func() { _ = rows.Close() }() // rows.Err below reports what went wrong reading
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("columns of %s: %w", table, err)
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// missingColumns lists the schema's columns the table lacks. SQLite compares
// identifiers case-insensitively, and so does this.
func missingColumns(have []string, want Schema) []string {
	set := make(map[string]bool, len(have))
	for _, c := range have {
		set[strings.ToLower(c)] = true
	}
	var missing []string
	for _, c := range want {
		if !set[strings.ToLower(c.Name)] {
			missing = append(missing, c.Name)
		}
	}
	return missing
}

func sqliteType(t Type) string {
	switch t {
	case Int64:
		return "INTEGER"
	case Float64:
		return "REAL"
	case Bool:
		return "BOOLEAN"
	default:
		return "TEXT"
	}
}

func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// sqliteDSN builds a file: URI, so that SQLite itself decodes the path and
// the query parameters can never be mistaken for part of the file name.
func sqliteDSN(path string, params ...string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: strings.Join(params, "&")}
	return u.String()
}

func removeSQLiteFiles(path string) {
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
}
