package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Advisory lock keys. PostgreSQL's advisory locks take one bigint and are
// scoped to the database, so each purpose needs a key no other program on
// the same database is likely to pick: these are ASCII words read as
// big-endian integers ("caspmigr", "casplead").
const (
	migrateLockKey int64 = 0x63617370_6d696772
	leaderLockKey  int64 = 0x63617370_6c656164
)

// migration is one numbered schema step: a file migrations/NNNN_name.sql,
// run in one transaction together with its record in cf_schema_migrations.
type migration struct {
	version int
	name    string
	file    string
}

// migrations lists the embedded files in version order. The numbers must
// increase without repeats; a test checks it. A gap is allowed (0009 came
// before 0008, which a parallel branch adds): migrate applies every
// version not recorded, whatever the highest recorded one, so a later
// 0008 still runs on a database that has 0009. Never edit an applied
// file: add a new one.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".sql")
		num, name, ok2 := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || !ok2 || err != nil || len(num) != 4 {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		ms = append(ms, migration{version: v, name: name, file: e.Name()})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version < 1 || (i > 0 && m.version <= ms[i-1].version) {
			return nil, fmt.Errorf("migration file %s: version %04d repeats or is not positive", m.file, m.version)
		}
	}
	return ms, nil
}

// migrate applies the pending migrations. It is Open's, and safe to run
// from several processes at once: everything happens on one connection that
// holds the session-level advisory lock migrateLockKey, so a second Sentinel
// starting at the same moment waits, then finds the versions recorded and
// applies nothing. Each migration is one transaction with its version
// record, so a crash leaves every migration either applied and recorded or
// neither. The lock goes with the session if the process dies.
func (db *DB) migrate(ctx context.Context) error {
	return migrateTo(ctx, db.pool, -1)
}

// migrateTo applies the pending migrations up to and including version
// last (every one when last < 0); tests use it to stop half way.
func migrateTo(ctx context.Context, pool *pgxpool.Pool, last int) (err error) {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// The connection leaves with its session settings changed and, if
	// something failed half way, maybe still holding the lock: closing it
	// undoes both, and the pool drops a closed connection on Release.
	defer func() {
		if err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()

	// A migration may build an index over a large queue, which may take
	// longer than the pool's statement_timeout; ctx bounds it instead.
	if _, err := conn.Exec(ctx, `SET statement_timeout = 0`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("migrate: take migration lock: %w", err)
	}
	defer func() {
		bg := context.WithoutCancel(ctx)
		if _, unlockErr := conn.Exec(bg, `SELECT pg_advisory_unlock($1)`, migrateLockKey); unlockErr != nil {
			err = errors.Join(err, fmt.Errorf("migrate: release migration lock: %w", unlockErr))
			return
		}
		if _, resetErr := conn.Exec(bg, `RESET statement_timeout`); resetErr != nil {
			err = errors.Join(err, fmt.Errorf("migrate: %w", resetErr))
		}
	}()

	const create = `CREATE TABLE IF NOT EXISTS cf_schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
	)`
	if _, err := conn.Exec(ctx, create); err != nil {
		return fmt.Errorf("migrate: create version table: %w", err)
	}
	applied := make(map[int]bool)
	rows, err := conn.Query(ctx, `SELECT version FROM cf_schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate: read versions: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("migrate: read versions: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: read versions: %w", err)
	}

	for _, m := range ms {
		if applied[m.version] || (last >= 0 && m.version > last) {
			continue
		}
		if err := m.apply(ctx, conn); err != nil {
			return fmt.Errorf("migrate %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}

// apply runs m and records it in one transaction.
func (m migration) apply(ctx context.Context, conn *pgxpool.Conn) error {
	body, err := migrationFiles.ReadFile("migrations/" + m.file)
	if err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	// After Commit, Rollback does nothing; after a failure, the error
	// that caused it is the one to report.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Without arguments pgx sends the file as one simple-protocol query,
	// which may hold several statements.
	if _, err := tx.Exec(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO cf_schema_migrations (version, name) VALUES ($1, $2)`,
		m.version, m.name); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
