// Package db is the Sentinel's SQLite database: the cf_* schema shared with
// the Casparian tools, its migrations, and every SQL statement of the
// project. No other package imports database/sql or the driver.
//
// Its files go by subject:
//
//   - jobs.go: the queue as operators read and write it (list, get, enqueue,
//     cancel, retry, counts);
//   - claims.go: claims and conclusions, batched in one transaction, and the
//     RUNNING claims; dispatch.go assembles a claimed job's DISPATCH;
//   - files.go and sources.go: file versions and what a scan records; source
//     roots, ignore rules and routing rules;
//   - plugins.go and deploy.go: plugin configurations, manifests, topics and
//     subscriptions; verified deployments and their environments;
//   - migrate.go and original_schema.go: the schema and its numbered
//     migrations; bootstrap.go applies a bootstrap file;
//   - db.go, stmts.go, checkpoint.go, time.go, guard.go, lease.go: the
//     connections, prepared statements, WAL checkpoints, time columns, the
//     sink guard and the Sentinel's lease.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const (
	// driverName is the name modernc.org/sqlite registers with database/sql.
	driverName = "sqlite"

	// busyTimeout is how long a connection waits for another connection's
	// lock before SQLITE_BUSY. Other processes (scouts, publish tools, a
	// second Sentinel) write the same file, so waiting is the normal case.
	busyTimeout = 5 * time.Second

	// readerConns bounds the read-only pool. Readers never block the
	// writer in WAL mode; a handful is plenty for operator queries.
	readerConns = 4

	// beginRetryFor bounds how long writeTx keeps retrying a BEGIN that
	// timed out on the write lock (each try already waits busyTimeout).
	beginRetryFor = 30 * time.Second
)

// DB is the Sentinel's SQLite database. Its methods are safe for concurrent
// use.
//
// Writes go through one connection (SetMaxOpenConns(1)) whose transactions
// begin IMMEDIATE, so a write transaction takes the file's write lock up
// front and waits on busy_timeout instead of failing half way with a
// snapshot error. Read-only queries use a separate small pool.
type DB struct {
	path   string
	opened os.FileInfo // the file as Open found it (FileCheck)
	writer *sql.DB
	reader *sql.DB

	// versionMu guards versionConn, the one connection PRAGMA data_version
	// is read on. data_version is per connection, so the same connection
	// must be asked every time for the value to mean anything.
	versionMu   sync.Mutex
	versionPool *sql.DB
	versionConn *sql.Conn

	stmts  stmtCache     // hot statements prepared on writer
	rstmts stmtCache     // frequent read-only statements prepared on reader (readerStmt)
	paused pausedCache   // the paused plugins, for the claim's request shapes
	chain  ChainCache    // the subscribed topics, for the completions (chain.go)
	shadow ShadowFlag    // whether a shadow run is RUNNING, for the claim's statement (shadow.go)
	guard  sinkGuard     // the files no sink may name (guard.go)
	ckpt   *checkpointer // copies the WAL into the file (checkpoint.go)
	reuse  ReuseReporter // reused jobs, for the metrics (reuse.go)
	// lineage: record outputs with completions and reuse earlier results
	// (SetLineage).
	lineage atomic.Bool

	// The queue watch (queuewatch.go), started by the first QueueChanges.
	watchMu     sync.Mutex
	watch       *queueWatch
	watchErr    error
	watchClosed bool
}

// ParseDSN turns a database setting into a file path: "sqlite://rel.db" is
// the relative path "rel.db", "sqlite:///abs/x.db" is "/abs/x.db", and a
// string without a scheme is a path as it is.
func ParseDSN(dsn string) (string, error) {
	dsn = strings.TrimSpace(dsn)
	if dsn == "" {
		return "", errors.New("parse dsn: empty database setting")
	}
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		if strings.HasPrefix(strings.ToLower(dsn), "sqlite:") {
			return "", fmt.Errorf("parse dsn %q: want sqlite://path", dsn)
		}
		return dsn, nil
	}
	if !strings.EqualFold(scheme, "sqlite") {
		return "", fmt.Errorf("parse dsn %q: unsupported scheme %q (only sqlite:// is supported)", dsn, scheme)
	}
	if rest == "" {
		return "", fmt.Errorf("parse dsn %q: no database path", dsn)
	}
	return rest, nil
}

// Open opens (creating if needed) the database named by dsn and brings its
// schema up to date. Every connection gets WAL, synchronous=NORMAL,
// foreign_keys=ON and a busy timeout. Existing rows that violate foreign keys
// do not stop Open: SQLite only checks constraints on rows that change.
func Open(ctx context.Context, dsn string) (*DB, error) {
	return openTo(ctx, dsn, migrations[len(migrations)-1].version)
}

// openTo is Open with the schema brought only up to migration version last;
// tests use it to build files at each earlier schema level.
func openTo(ctx context.Context, dsn string, last int) (*DB, error) {
	path, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if strings.Contains(path, "\x00") {
		return nil, errors.New("open database: path contains a NUL byte")
	}

	// The writer never checkpoints on its own; the checkpointer does.
	writer, err := sql.Open(driverName, connString(path, "_txlock=immediate", "_pragma=wal_autocheckpoint(0)", "_pragma=temp_store(MEMORY)"))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	db := &DB{path: path, writer: writer}
	err = retryBusy(ctx, func() error {
		if err := writer.PingContext(ctx); err != nil {
			return err
		}
		return db.migrateTo(ctx, last)
	})
	if err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}

	// The writer has the file open now: remember which file that is.
	if db.opened, err = os.Stat(path); err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}

	// Readers are opened after migrating so that they never see the file
	// before it is in WAL mode with the current schema.
	reader, err := sql.Open(driverName, connString(path, "_pragma=query_only(1)"))
	if err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	reader.SetMaxOpenConns(readerConns)
	reader.SetMaxIdleConns(readerConns)
	db.reader = reader

	versionPool, err := sql.Open(driverName, connString(path, "_pragma=query_only(1)"))
	if err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	versionPool.SetMaxOpenConns(1)
	versionPool.SetMaxIdleConns(1)
	db.versionPool = versionPool
	err = retryBusy(ctx, func() (err error) {
		db.versionConn, err = versionPool.Conn(ctx)
		return err
	})
	if err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if db.ckpt, err = startCheckpointer(path); err != nil {
		_ = db.Close() // the open error is the one to report
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.guard = newSinkGuard(path)
	return db, nil
}

// connString builds the driver's DSN for path. The "file:" form lets SQLite
// parse the name as a URI, so the few characters a URI gives meaning to are
// escaped; the _pragma values are run on every new connection.
func connString(path string, extra ...string) string {
	// Cleaning turns "//x" into "/x", which a URI would otherwise read as
	// an authority.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.Clean(path))
	params := []string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		"_pragma=foreign_keys(1)",
	}
	params = append(params, extra...)
	return "file:" + esc + "?" + strings.Join(params, "&")
}

// Close closes every connection of the DB.
func (db *DB) Close() error {
	errs := []error{db.closeWatch()}
	if db.ckpt != nil {
		errs = append(errs, db.ckpt.close())
		db.ckpt = nil
	}
	db.versionMu.Lock()
	if db.versionConn != nil {
		errs = append(errs, db.versionConn.Close())
		db.versionConn = nil
	}
	db.versionMu.Unlock()
	errs = append(errs, db.closeStmts())
	for _, p := range []*sql.DB{db.versionPool, db.reader, db.writer} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// Path returns the database file's path as given to Open.
func (db *DB) Path() string { return db.path }

// DataVersion returns SQLite's data_version as seen by one connection kept
// for the DB's life. The value changes whenever any other connection — another
// process or this DB's own writer — commits, so a caller that remembers it can
// tell cheaply whether anything may have changed (for example jobs inserted by
// a scout) without polling tables. Only equality is meaningful. QueueChanges
// says when to ask.
func (db *DB) DataVersion(ctx context.Context) (int64, error) {
	db.versionMu.Lock()
	defer db.versionMu.Unlock()
	if db.versionConn == nil {
		return 0, fmt.Errorf("data version: %w", sql.ErrConnDone)
	}
	var v int64
	err := db.versionConn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v)
	if errors.Is(err, sql.ErrConnDone) {
		// The connection broke; a fresh one has its own counter, which
		// callers see as "changed" — the safe direction.
		_ = db.versionConn.Close() // broken already
		if db.versionConn, err = db.versionPool.Conn(ctx); err != nil {
			db.versionConn = nil
			return 0, fmt.Errorf("data version: %w", err)
		}
		err = db.versionConn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v)
	}
	if err != nil {
		return 0, fmt.Errorf("data version: %w", err)
	}
	return v, nil
}

// writeTx runs fn in one IMMEDIATE transaction on the writer connection and
// commits it when fn returns nil. fn must only use tx: the writer has one
// connection, so touching db.writer inside fn would wait for itself.
//
// BEGIN IMMEDIATE waits busy_timeout for the write lock. SQLite's busy
// handler polls rather than queues, so under heavy contention from other
// processes one connection can lose every round for longer than that; since
// nothing has happened yet when BEGIN fails, it is retried (bounded by
// beginRetryFor and ctx) instead of failing the whole claim or batch.
func (db *DB) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if db.ckpt != nil {
		db.ckpt.finishOn(db.writer)
	}
	var tx *sql.Tx
	deadline := time.Now().Add(beginRetryFor)
	for {
		var err error
		tx, err = db.writer.BeginTx(ctx, nil)
		if err == nil {
			break
		}
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("begin: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if db.ckpt != nil {
		db.ckpt.commits.Add(1)
	}
	return nil
}

// retryBusy runs fn until it succeeds, fails with something other than
// SQLITE_BUSY/SQLITE_LOCKED, or busyTimeout has passed. It covers the steps of
// Open that SQLite's busy handler does not: switching a new file to WAL while
// another process opens it too can fail with SQLITE_BUSY at once.
func retryBusy(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(busyTimeout)
	delay := 5 * time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED (or
// one of their extended codes).
func isBusy(err error) bool {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return false
	}
	const sqliteBusy, sqliteLocked = 5, 6
	switch coded.Code() & 0xff {
	case sqliteBusy, sqliteLocked:
		return true
	}
	return false
}
