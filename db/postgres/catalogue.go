package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/casparian/sentinel/job"
)

// catalogueLockKey is the transaction-level advisory lock ("caspcata", read
// as migrate.go's keys are) that the catalogue's writers hold: routing rules,
// subscriptions, manifests and deploys, the bootstrap and the scanner's
// find-or-create of locations. Each of them reads, then writes what it did
// not find; on SQLite the one writer connection makes that atomic, here
// several Sentinels may run it at once, and the original schema has no
// UNIQUE constraint (cf_routing_rule, cf_file_location) to fall back on.
// These writes are rare and short; the job path never takes the lock.
const catalogueLockKey int64 = 0x63617370_63617461

// lockCatalogue takes catalogueLockKey until tx ends.
func lockCatalogue(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, catalogueLockKey); err != nil {
		return fmt.Errorf("lock catalogue: %w", err)
	}
	return nil
}

// blameInput makes PostgreSQL's refusal of a value too long for its column
// (the original's VARCHAR(n), which SQLite does not enforce) or out of its
// numeric range a job.ErrInvalid, as it blames the request.
func blameInput(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "22001" || pgErr.Code == "22003") {
		return fmt.Errorf("%w: %w", err, job.ErrInvalid)
	}
	return err
}
