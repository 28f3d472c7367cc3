package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema step. Its columns are added first, each
// only if the table lacks it (an existing database may already have some),
// then its SQL file runs. Both parts and the version record share one
// transaction.
type migration struct {
	version int
	name    string
	columns []column
	file    string // under migrations/; "" for none

	// rebuild, when set, runs after the file. It may drop and recreate
	// tables, so the migration runs with foreign key enforcement off (see
	// migrate) and rebuild must leave no new foreign key violations.
	rebuild func(ctx context.Context, tx *sql.Tx) error
}

// column is a nullable column a migration adds to an existing table.
type column struct {
	table, name, decl string
}

// claimStateColumns are migration 0002's columns.
var claimStateColumns = []column{
	{"cf_processing_queue", "claimed_by", "TEXT"},     // worker identity key holding the claim
	{"cf_processing_queue", "attempt", "INTEGER"},     // incremented on every claim; fencing token
	{"cf_processing_queue", "next_run_at", "INTEGER"}, // unix ms; NULL = claimable now
	{"cf_processing_queue", "metrics_json", "TEXT"},   // receipt metrics {name: int64}
	{"cf_processing_queue", "artifacts_json", "TEXT"}, // receipt artifacts [{k: v}]
	{"cf_processing_queue", "updated_at", "TEXT"},     // last state change, RFC 3339
}

// operatorStateColumns are migration 0003's columns.
var operatorStateColumns = []column{
	{"cf_processing_queue", "cancel_requested_at", "TEXT"}, // an operator cancelled the RUNNING job; it ends SKIPPED, never requeued
	{"cf_file_location", "missing_since", "TEXT"},          // the last scan did not find the file; NULL while it is there
}

// enqueuedAtColumns are migration 0008's columns. They are not among
// extraColumns: migration 0006's rebuild runs before 0008 adds them.
var enqueuedAtColumns = []column{
	{"cf_processing_queue", "enqueued_at", "INTEGER"}, // unix ms the job was inserted (or retried by an operator)
}

// outputKeyColumns are migration 0016's columns.
var outputKeyColumns = []column{
	{"cf_processing_queue", "output_key", "INTEGER"}, // sentinel_output_keys.id of a COMPLETED job's outputs
}

// extraColumns lists every column our migrations up to 0006 add to the cf_*
// tables; they are all nullable and the original has none of them.
var extraColumns = append(append([]column(nil), claimStateColumns...), operatorStateColumns...)

// migrations is the schema's history, in order. Never edit an applied entry:
// add a new one.
var migrations = []migration{
	{
		version: 1,
		name:    "cf_schema",
		file:    "0001_cf_schema.sql",
	},
	{
		// The Go Sentinel's own claim state, as new nullable columns so
		// the Casparian tools keep reading and writing the table as before.
		version: 2,
		name:    "queue_claim_state",
		columns: claimStateColumns,
		file:    "0002_queue_claim_state.sql",
	},
	{
		// Operator state: a cancel that must outlive the worker holding the
		// job, and files a scan no longer finds. New nullable columns again,
		// so the other tools never notice.
		version: 3,
		name:    "operator_state",
		columns: operatorStateColumns,
		file:    "0003_operator_state.sql",
	},
	{
		// An index for the earliest future next_run_at, which the
		// Sentinel asks for on every poll that sees the queue change.
		version: 4,
		name:    "queue_next_run_index",
		file:    "0004_queue_next_run_index.sql",
	},
	{
		// The claim indexes become partial (status = 'QUEUED'), so that
		// finishing a job no longer rewrites them.
		version: 5,
		name:    "queue_claim_partial_indexes",
		file:    "0005_queue_claim_partial_indexes.sql",
	},
	{
		// Every cf_* table rebuilt exactly as the original's models
		// create it (its DEFAULT CURRENT_TIMESTAMPs, NOT NULLs, types,
		// indexes and foreign keys), keeping our nullable extras; the
		// three tables 0001 had invented take the original's columns.
		version: 6,
		name:    "original_schema",
		file:    "0006_original_schema.sql",
		rebuild: rebuildOriginalSchema,
	},
	{
		// Who owns the database: the Sentinel holding the lock file, and
		// later the lease Sentinels sharing PostgreSQL take turns on.
		version: 7,
		name:    "sentinel_lease",
		file:    "0007_sentinel_lease.sql",
	},
	{
		// When each job was enqueued, for the queue's age and the
		// enqueue-to-start latency (metrics), with a trigger for the
		// rows other tools insert.
		version: 8,
		name:    "queue_enqueued_at",
		columns: enqueuedAtColumns,
		file:    "0008_queue_enqueued_at.sql",
	},
	{
		// Per-plugin settings (pause, job timeout, max retries) in a
		// table of our own. 9, not 8: a parallel branch adds 8 at the
		// same time; versions are applied by what is recorded, so a
		// later 8 still runs on a database that has 9.
		version: 9,
		name:    "plugin_settings",
		file:    "0009_plugin_settings.sql",
	},
	{
		// Two partial indexes that every claim and conclusion wrote and
		// almost nothing read: fewer B-tree changes per job.
		version: 10,
		name:    "queue_leaner_indexes",
		file:    "0010_queue_leaner_indexes.sql",
	},
	{
		// Lineage of file outputs (sentinel_outputs, issue #20) and the
		// per-plugin reuse setting.
		version: 11,
		name:    "sentinel_outputs",
		file:    "0011_sentinel_outputs.sql",
	},
	{
		// Attempts that ended without completing, for a job's history.
		version: 12,
		name:    "job_attempts",
		file:    "0012_job_attempts.sql",
	},
	{
		// Chaining by topic (issue #20 part 4): artifacts waiting for
		// the chain step, and the versions made from artifacts.
		version: 13,
		name:    "chains",
		file:    "0013_chains.sql",
	},
	{
		// Shadow runs of a new plugin version (issue #20 part 5). 14,
		// not 13: a parallel branch adds 13.
		version: 14,
		name:    "shadow_runs",
		file:    "0014_shadow_runs.sql",
	},
	{
		// A narrower lineage row: the input's content hash is read
		// through its version instead of copied onto every output.
		version: 15,
		name:    "outputs_narrower",
		file:    "0015_outputs_narrower.sql",
	},
	{
		// Lineage kept on the COMPLETED job row (a key into the pairs
		// of hashes) instead of a row per output per completion; the
		// table keeps reused jobs' outputs and the history.
		version: 16,
		name:    "outputs_on_the_job_row",
		columns: outputKeyColumns,
		file:    "0016_outputs_on_the_job_row.sql",
	},
}

// migrateTo applies the pending migrations up to and including version last.
// Each runs in its own IMMEDIATE transaction that re-checks the version
// record first, so several processes opening the same new file at once apply
// each step exactly once.
//
// All of it runs on one pinned connection of the writer pool: a rebuild
// migration turns foreign key enforcement off around its transaction (PRAGMA
// foreign_keys is a no-op inside one), and the setting belongs to the
// connection, so the PRAGMAs and the transaction must share it.
func (db *DB) migrateTo(ctx context.Context, last int) error {
	conn, err := db.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()

	const create = `CREATE TABLE IF NOT EXISTS cf_schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT,
		applied_at TEXT
	)`
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("migrate: create version table: %w", err)
	}
	applied, err := migrationsApplied(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.version] || m.version > last {
			continue
		}
		if err := m.run(ctx, conn); err != nil {
			return fmt.Errorf("migrate %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}

// run applies m in one transaction on conn. For a rebuild it follows
// SQLite's procedure for other kinds of table schema changes
// (https://www.sqlite.org/lang_altertable.html#otheralter): foreign keys
// off outside the transaction, the rebuild and a foreign key check inside
// it, foreign keys back on after it, whether it committed or not.
func (m migration) run(ctx context.Context, conn *sql.Conn) (err error) {
	if m.rebuild != nil {
		if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
			return fmt.Errorf("foreign keys off: %w", err)
		}
		defer func() {
			// A connection left without enforcement must not go back
			// to the pool: failing here fails Open, which closes it.
			if _, onErr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); onErr != nil {
				err = errors.Join(err, fmt.Errorf("foreign keys on: %w", onErr))
			}
		}()
	}
	var tx *sql.Tx
	deadline := time.Now().Add(beginRetryFor)
	for {
		tx, err = conn.BeginTx(ctx, nil)
		if err == nil {
			break
		}
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("begin: %w", err)
		}
	}
	if err := m.apply(ctx, tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// migrationsApplied returns the recorded versions.
func migrationsApplied(ctx context.Context, conn *sql.Conn) (map[int]bool, error) {
	rows, err := conn.QueryContext(ctx, `SELECT version FROM cf_schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	defer rows.Close()
	applied := make(map[int]bool)
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrate: read versions: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	return applied, nil
}

// apply runs m inside tx unless another connection recorded it meanwhile.
func (m migration) apply(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM cf_schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	for _, c := range m.columns {
		if err := addColumnIfMissing(ctx, tx, c); err != nil {
			return err
		}
	}
	if m.file != "" {
		body, err := migrationFiles.ReadFile("migrations/" + m.file)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return err
		}
	}
	if m.rebuild != nil {
		if err := m.rebuild(ctx, tx); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx,
		`INSERT INTO cf_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, formatTime(time.Now()))
	return err
}

// addColumnIfMissing adds c unless PRAGMA table_info already lists it.
func addColumnIfMissing(ctx context.Context, tx *sql.Tx, c column) error {
	cols, err := tableColumns(ctx, tx, c.table)
	if err != nil {
		return err
	}
	if len(cols) == 0 {
		return fmt.Errorf("add column %s.%s: no such table", c.table, c.name)
	}
	if cols[strings.ToLower(c.name)] {
		return nil
	}
	// Identifiers come from the migrations table above, never from input.
	stmt := fmt.Sprintf(`ALTER TABLE %s ADD COLUMN %s %s`, c.table, c.name, c.decl)
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("add column %s.%s: %w", c.table, c.name, err)
	}
	return nil
}

// tableColumns returns the lower-cased column names of table.
func tableColumns(ctx context.Context, tx *sql.Tx, table string) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, fmt.Errorf("table info %s: %w", table, err)
	}
	defer rows.Close()
	cols := make(map[string]bool)
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("table info %s: %w", table, err)
		}
		cols[strings.ToLower(name)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("table info %s: %w", table, err)
	}
	return cols, nil
}
