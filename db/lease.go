package db

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/casparian/sentinel/job"
)

// leaseName is the one lease a SQLite database has: the whole queue.
const leaseName = "sentinel"

var (
	// ErrLeaseHeld is what a *LeaseHeldError matches with errors.Is.
	ErrLeaseHeld = errors.New("database is owned by another sentinel")
	// ErrLeaseLost: the owner row no longer names this Sentinel, or the
	// lock file was removed, so nothing keeps a second Sentinel out.
	ErrLeaseLost = errors.New("lease lost")
	// ErrFileGone: the database path no longer names the file that was
	// opened (deleted or replaced). Everything written since goes to a file
	// nobody will open again.
	ErrFileGone = errors.New("database file is gone")
	// ErrBusy: a write waited for another connection's lock and gave up.
	ErrBusy   = errors.New("database is locked")
	errLocked = errors.New("locked")
)

// LeaseOwner is a Sentinel process as its lease row describes it.
type LeaseOwner struct {
	ID          string // random per start; fences renewals
	Host        string
	PID         int
	Endpoint    string // the ZeroMQ endpoint it bound
	StartedAt   time.Time
	HeartbeatAt time.Time
	ExpiresAt   time.Time
}

// String names the owner for error messages and logs.
func (o LeaseOwner) String() string {
	return fmt.Sprintf("host %s, pid %d, endpoint %s, since %s (last heartbeat %s)",
		o.Host, o.PID, o.Endpoint, o.StartedAt.Format(time.RFC3339), o.HeartbeatAt.Format(time.RFC3339))
}

// LeaseHeldError is returned by LeaseAcquire when another process holds the
// database's lock. Holder is the zero LeaseOwner when no row names it (a
// process that locked the file but wrote no row yet, or not a Sentinel).
type LeaseHeldError struct {
	Path   string
	Holder LeaseOwner
}

func (e *LeaseHeldError) Error() string {
	if e.Holder.PID == 0 {
		return fmt.Sprintf("database %s is locked by another process (flock on %s), which names no owner", e.Path, lockPath(e.Path))
	}
	return fmt.Sprintf("database %s is owned by another Sentinel: %s", e.Path, e.Holder)
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// fileLease is a Sentinel's ownership of a SQLite database: the flock on the
// sidecar file "<db>.lock", which is what keeps a second Sentinel on this
// host out, and the sentinel_lease row, which says who holds it and is
// renewed while the owner runs. Only Sentinels take it: tools that open the
// database to read or seed it do not, and are not kept out.
type fileLease struct {
	db       *DB
	lock     *os.File
	ttl      time.Duration
	owner    LeaseOwner
	previous *LeaseOwner
}

func lockPath(dbPath string) string { return dbPath + ".lock" }

// LeaseAcquire makes the caller the database's owner, or returns a
// *LeaseHeldError naming the process that is. A row left by an owner whose
// lock is gone (it crashed) is taken over; Previous reports it. The row says
// the lease expires ttl after each renewal.
func (db *DB) LeaseAcquire(ctx context.Context, who LeaseOwner, ttl time.Duration) (Lease, error) {
	f, err := db.lockFile()
	if errors.Is(err, errLocked) {
		return nil, db.leaseHeld(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	now := time.Now().UTC()
	who.ID = hex.EncodeToString(id)
	who.StartedAt, who.HeartbeatAt, who.ExpiresAt = now, now, now.Add(ttl)
	l := &fileLease{db: db, lock: f, ttl: ttl, owner: who}
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		prev, err := leaseRow(ctx, tx.QueryRowContext(ctx, leaseSelect, leaseName))
		switch {
		case errors.Is(err, job.ErrNotFound):
		case err != nil:
			return err
		default:
			l.previous = &prev
		}
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO sentinel_lease
			(name, owner_id, host, pid, endpoint, started_at, heartbeat_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			leaseName, who.ID, who.Host, who.PID, who.Endpoint,
			formatTime(now), formatTime(now), formatTime(who.ExpiresAt))
		return err
	})
	if err != nil {
		_ = unlock(f)
		_ = f.Close()
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	return l, nil
}

// lockFile opens and flocks "<db>.lock". A lock file someone removed
// between the open and the lock is no lock: then it starts over with the
// file now at the path.
func (db *DB) lockFile() (*os.File, error) {
	path := lockPath(db.path)
	for range 5 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := tryLock(f); err != nil {
			_ = f.Close()
			return nil, err
		}
		held, err1 := f.Stat()
		named, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			return f, nil
		}
		_ = unlock(f)
		_ = f.Close()
	}
	return nil, fmt.Errorf("lock %s: the file keeps being replaced", path)
}

// leaseHeld builds the error for a lock another process holds. Its row may
// not be written yet (it took the lock a moment ago): wait briefly for it.
func (db *DB) leaseHeld(ctx context.Context) error {
	e := &LeaseHeldError{Path: db.path}
	deadline := time.Now().Add(2 * time.Second)
	for {
		owner, err := leaseRow(ctx, db.reader.QueryRowContext(ctx, leaseSelect, leaseName))
		if err == nil {
			e.Holder = owner
			return e
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return e
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const leaseSelect = `SELECT owner_id, host, pid, endpoint, started_at, heartbeat_at, expires_at
	FROM sentinel_lease WHERE name = ?`

func leaseRow(ctx context.Context, row *sql.Row) (LeaseOwner, error) {
	var o LeaseOwner
	var started, beat, expires nullTime
	err := row.Scan(&o.ID, &o.Host, &o.PID, &o.Endpoint, &started, &beat, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return o, job.ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("read lease: %w", err)
	}
	o.StartedAt, o.HeartbeatAt, o.ExpiresAt = started.Time, beat.Time, expires.Time
	return o, nil
}

// LeaseHolder returns the row naming the database's owner, or job.ErrNotFound.
// The row of an owner that crashed stays until the next one takes over.
func (db *DB) LeaseHolder(ctx context.Context) (LeaseOwner, error) {
	return leaseRow(ctx, db.reader.QueryRowContext(ctx, leaseSelect, leaseName))
}

// Leading is always true: the holder of a SQLite database is its only
// Sentinel.
func (l *fileLease) Leading() bool { return true }

// Shared is false: a SQLite database has one Sentinel.
func (l *fileLease) Shared() bool { return false }

// Owner is this Sentinel's row as it wrote it when it took the lease.
func (l *fileLease) Owner() LeaseOwner { return l.owner }

// Previous is the owner whose row was taken over, if there was one: a
// Sentinel that ended without releasing (killed, crashed, lost power).
func (l *fileLease) Previous() (LeaseOwner, bool) {
	if l.previous == nil {
		return LeaseOwner{}, false
	}
	return *l.previous, true
}

// Renew moves the row's heartbeat and expiry forward. It is also the
// Sentinel's write probe: an error wrapping ErrBusy means another connection
// held the write lock throughout; ErrLeaseLost, that the row names someone
// else; anything else, that the database cannot be written.
func (l *fileLease) Renew(ctx context.Context) error {
	now := time.Now().UTC()
	var n int64
	err := l.db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sentinel_lease SET heartbeat_at = ?, expires_at = ?
			WHERE name = ? AND owner_id = ?`,
			formatTime(now), formatTime(now.Add(l.ttl)), leaseName, l.owner.ID)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	switch {
	case err != nil && (isBusy(err) || errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("renew lease: %w: %w", ErrBusy, err)
	case err != nil:
		return fmt.Errorf("renew lease: %w", err)
	case n == 0:
		return fmt.Errorf("renew lease: %w: the row no longer names this Sentinel", ErrLeaseLost)
	}
	return nil
}

// Check reports whether the paths still name the files this Sentinel holds:
// ErrFileGone when the database was deleted or replaced, ErrLeaseLost when
// the lock file was (a second Sentinel could then take a new one). It only
// stats, so it is cheap and never waits on SQLite's locks.
func (l *fileLease) Check() error {
	if err := l.db.FileCheck(); err != nil {
		return err
	}
	path := lockPath(l.db.path)
	held, err := l.lock.Stat()
	if err != nil {
		return fmt.Errorf("check lock file: %w", err)
	}
	named, err := os.Stat(path)
	if err != nil || !os.SameFile(held, named) {
		return fmt.Errorf("%w: lock file %s was removed or replaced", ErrLeaseLost, path)
	}
	return nil
}

// Release deletes the row and drops the lock. The lock file stays: removing
// it would let a Sentinel that opened it a moment ago lock a file nobody
// else sees.
func (l *fileLease) Release(ctx context.Context) error {
	_, err := l.db.writer.ExecContext(ctx, `DELETE FROM sentinel_lease WHERE name = ? AND owner_id = ?`,
		leaseName, l.owner.ID)
	if err != nil {
		err = fmt.Errorf("release lease: %w", err)
	}
	return errors.Join(err, unlock(l.lock), l.lock.Close())
}

// FileCheck reports ErrFileGone when the database's path no longer names
// the file Open opened: it was deleted, or another file was moved over it.
// SQLite keeps writing to the open file either way, so nothing else would
// notice.
func (db *DB) FileCheck() error {
	if db.opened == nil {
		return nil
	}
	now, err := os.Stat(db.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s was deleted", ErrFileGone, db.path)
	case err != nil:
		return fmt.Errorf("check database file: %w", err)
	case !os.SameFile(db.opened, now):
		return fmt.Errorf("%w: %s was replaced by another file", ErrFileGone, db.path)
	}
	return nil
}

// LeasesLive lists the Sentinel that holds the database, if one does: a
// SQLite database has at most one. A row left by a Sentinel that crashed is
// listed until its expiry passes.
func (db *DB) LeasesLive(ctx context.Context) ([]LeaseOwner, error) {
	o, err := db.LeaseHolder(ctx)
	switch {
	case errors.Is(err, job.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("list live sentinels: %w", err)
	case !o.ExpiresAt.IsZero() && time.Now().After(o.ExpiresAt):
		return nil, nil
	}
	return []LeaseOwner{o}, nil
}
