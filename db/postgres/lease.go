package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
)

// Lease is one Sentinel's row in sentinel_lease, and its campaign for
// leadership. Several Sentinels hold leases on one database at once; each
// renews its own well within the TTL. A row whose expiry has passed tells
// the others that its Sentinel is gone.
type Lease struct {
	db       *DB
	ttl      time.Duration
	owner    db.LeaseOwner
	election *Election
}

var _ db.Lease = (*Lease)(nil)

// LeaseAcquire inserts a row for the calling Sentinel, under a fresh
// random ID (who.ID is ignored), that expires ttl from now by the server's
// clock unless renewed. From then on this DB claims jobs in the lease's
// name (SetSentinelID), and campaigns for leadership (Leading) until
// Release.
func (d *DB) LeaseAcquire(ctx context.Context, who db.LeaseOwner, ttl time.Duration) (db.Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("acquire lease: ttl %s is not positive", ttl)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	who.ID = hex.EncodeToString(id)
	err := d.pool.QueryRow(ctx, `INSERT INTO sentinel_lease
			(id, host, pid, endpoint, started_at, heartbeat_at, expires_at)
		VALUES ($1, $2, $3, $4, now(), now(), now() + $5::bigint * interval '1 microsecond')
		RETURNING started_at, heartbeat_at, expires_at`,
		who.ID, who.Host, who.PID, who.Endpoint, ttl.Microseconds(),
	).Scan(&who.StartedAt, &who.HeartbeatAt, &who.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	d.SetSentinelID(who.ID)
	d.orphanGrace = ttl
	l := &Lease{db: d, ttl: ttl, owner: who, election: d.Election(time.Second)}
	l.election.onChange = d.leading.Store
	l.election.Start(context.Background())
	return l, nil
}

// Owner is this Sentinel's row as it was last written.
func (l *Lease) Owner() db.LeaseOwner { return l.owner }

// Previous reports no predecessor: on PostgreSQL a lease is never taken
// over; the rows of Sentinels that died expire beside the live ones.
func (l *Lease) Previous() (db.LeaseOwner, bool) { return db.LeaseOwner{}, false }

// Check has nothing to look at without the server: the database is not a
// file here, and Renew finds a lost lease.
func (l *Lease) Check() error { return nil }

// Leading reports whether this Sentinel is the leader, the one that runs
// the scanner and the sweeps of jobs whose Sentinel died.
func (l *Lease) Leading() bool { return l.election.Leader() }

// Shared is true: several Sentinels serve a PostgreSQL database.
func (l *Lease) Shared() bool { return true }

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
		return fmt.Errorf("renew lease: %w: the row of sentinel %s is gone or expired", db.ErrLeaseLost, l.owner.ID)
	case err != nil:
		return fmt.Errorf("renew lease: %w", err)
	}
	if l.Leading() {
		// The leader forgets Sentinels long gone whose jobs are all
		// settled, so the table holds the live ones and the recent dead.
		if _, err := l.db.pool.Exec(ctx, `DELETE FROM sentinel_lease s
			WHERE expires_at < now() - $1::bigint * interval '1 microsecond'
			AND NOT EXISTS (SELECT 1 FROM cf_processing_queue q WHERE q.status = 'RUNNING' AND q.sentinel_id = s.id)`,
			forgetAfter.Microseconds()); err != nil {
			return fmt.Errorf("renew lease: forget old leases: %w", err)
		}
	}
	return nil
}

// forgetAfter is how long the row of a Sentinel that stopped or died stays
// after its expiry, for operators to see, once none of its jobs is RUNNING.
const forgetAfter = time.Hour

// Release ends the campaign (handing leadership over) and expires the row
// now. The row stays until the leader removes it: jobs still RUNNING under
// it are the leader's to requeue once their workers had the recovery grace
// to re-identify with another Sentinel.
func (l *Lease) Release(ctx context.Context) error {
	l.election.Stop()
	if _, err := l.db.pool.Exec(ctx, `UPDATE sentinel_lease SET expires_at = now() WHERE id = $1`, l.owner.ID); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

const leaseColumns = `id, host, pid, endpoint, started_at, heartbeat_at, expires_at`

// LeasesLive lists the Sentinels whose lease has not expired, by the
// server's clock, oldest first.
func (d *DB) LeasesLive(ctx context.Context) ([]db.LeaseOwner, error) {
	owners, err := d.leases(ctx, `SELECT `+leaseColumns+` FROM sentinel_lease
		WHERE expires_at > now() ORDER BY started_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list live sentinels: %w", err)
	}
	return owners, nil
}

// LeasesExpired lists the rows whose expiry has passed, by the server's
// clock: Sentinels that died or were cut off without releasing. Their
// RUNNING jobs are orphans once the row is listed here.
func (d *DB) LeasesExpired(ctx context.Context) ([]db.LeaseOwner, error) {
	owners, err := d.leases(ctx, `SELECT `+leaseColumns+` FROM sentinel_lease
		WHERE expires_at <= now() ORDER BY expires_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list expired sentinels: %w", err)
	}
	return owners, nil
}

// LeaseRemoveExpired deletes the row of Sentinel id if it has expired, and
// reports whether it did. A row its owner renewed in the meantime stays.
func (d *DB) LeaseRemoveExpired(ctx context.Context, id string) (bool, error) {
	tag, err := d.pool.Exec(ctx, `DELETE FROM sentinel_lease WHERE id = $1 AND expires_at <= now()`, id)
	if err != nil {
		return false, fmt.Errorf("remove expired lease: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

func (d *DB) leases(ctx context.Context, query string) ([]db.LeaseOwner, error) {
	rows, err := d.pool.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (db.LeaseOwner, error) {
		var o db.LeaseOwner
		err := row.Scan(&o.ID, &o.Host, &o.PID, &o.Endpoint, &o.StartedAt, &o.HeartbeatAt, &o.ExpiresAt)
		return o, err
	})
}
