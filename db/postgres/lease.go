package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrLeaseLost is returned by Renew when the Sentinel's row is gone or has
// expired. Another Sentinel's leader may then be requeueing the jobs
// claimed through it, so it must stop dispatching and take a new lease.
var ErrLeaseLost = errors.New("lease lost")

// LeaseOwner is a Sentinel process as its lease row describes it. The times
// are the database server's.
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
	return fmt.Sprintf("sentinel %s (host %s, pid %d, endpoint %s, since %s, last heartbeat %s)",
		o.ID, o.Host, o.PID, o.Endpoint, o.StartedAt.Format(time.RFC3339), o.HeartbeatAt.Format(time.RFC3339))
}

// Lease is one Sentinel's row in sentinel_lease. Several Sentinels hold
// leases on one database at once; each renews its own well within the TTL.
// A row whose expiry has passed tells the others that its Sentinel is gone.
type Lease struct {
	db    *DB
	ttl   time.Duration
	owner LeaseOwner
}

// LeaseAcquire inserts a row for the calling Sentinel, under a fresh
// random ID (who.ID is ignored), that expires ttl from now by the server's
// clock unless renewed.
func (db *DB) LeaseAcquire(ctx context.Context, who LeaseOwner, ttl time.Duration) (*Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("acquire lease: ttl %s is not positive", ttl)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	who.ID = hex.EncodeToString(id)
	err := db.pool.QueryRow(ctx, `INSERT INTO sentinel_lease
			(id, host, pid, endpoint, started_at, heartbeat_at, expires_at)
		VALUES ($1, $2, $3, $4, now(), now(), now() + $5::bigint * interval '1 microsecond')
		RETURNING started_at, heartbeat_at, expires_at`,
		who.ID, who.Host, who.PID, who.Endpoint, ttl.Microseconds(),
	).Scan(&who.StartedAt, &who.HeartbeatAt, &who.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	return &Lease{db: db, ttl: ttl, owner: who}, nil
}

// Owner is this Sentinel's row as it was last written.
func (l *Lease) Owner() LeaseOwner { return l.owner }

// Renew moves the row's heartbeat and expiry forward. It fails with
// ErrLeaseLost when the row is gone or has already expired: an expired row
// is never revived, since by then the other Sentinels may have begun to
// treat its jobs as orphans.
func (l *Lease) Renew(ctx context.Context) error {
	err := l.db.pool.QueryRow(ctx, `UPDATE sentinel_lease
		SET heartbeat_at = now(), expires_at = now() + $2::bigint * interval '1 microsecond'
		WHERE id = $1 AND expires_at > now()
		RETURNING heartbeat_at, expires_at`,
		l.owner.ID, l.ttl.Microseconds(),
	).Scan(&l.owner.HeartbeatAt, &l.owner.ExpiresAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("renew lease: %w: the row of sentinel %s is gone or expired", ErrLeaseLost, l.owner.ID)
	case err != nil:
		return fmt.Errorf("renew lease: %w", err)
	}
	return nil
}

// Release deletes the row: the Sentinel stopped cleanly and holds no jobs.
func (l *Lease) Release(ctx context.Context) error {
	if _, err := l.db.pool.Exec(ctx, `DELETE FROM sentinel_lease WHERE id = $1`, l.owner.ID); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

const leaseColumns = `id, host, pid, endpoint, started_at, heartbeat_at, expires_at`

// LeasesLive lists the Sentinels whose lease has not expired, by the
// server's clock, oldest first.
func (db *DB) LeasesLive(ctx context.Context) ([]LeaseOwner, error) {
	owners, err := db.leases(ctx, `SELECT `+leaseColumns+` FROM sentinel_lease
		WHERE expires_at > now() ORDER BY started_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list live sentinels: %w", err)
	}
	return owners, nil
}

// LeasesExpired lists the rows whose expiry has passed, by the server's
// clock: Sentinels that died or were cut off without releasing. Their
// RUNNING jobs are orphans once the row is listed here.
func (db *DB) LeasesExpired(ctx context.Context) ([]LeaseOwner, error) {
	owners, err := db.leases(ctx, `SELECT `+leaseColumns+` FROM sentinel_lease
		WHERE expires_at <= now() ORDER BY expires_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list expired sentinels: %w", err)
	}
	return owners, nil
}

// LeaseRemoveExpired deletes the row of Sentinel id if it has expired, and
// reports whether it did. A row its owner renewed in the meantime stays.
func (db *DB) LeaseRemoveExpired(ctx context.Context, id string) (bool, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM sentinel_lease WHERE id = $1 AND expires_at <= now()`, id)
	if err != nil {
		return false, fmt.Errorf("remove expired lease: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

func (db *DB) leases(ctx context.Context, query string) ([]LeaseOwner, error) {
	rows, err := db.pool.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (LeaseOwner, error) {
		var o LeaseOwner
		err := row.Scan(&o.ID, &o.Host, &o.PID, &o.Endpoint, &o.StartedAt, &o.HeartbeatAt, &o.ExpiresAt)
		return o, err
	})
}
