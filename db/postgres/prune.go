package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// JobsPrune deletes the finished jobs p selects, at most limit of them in
// all (limit <= 0: every one) in one transaction, or with dryRun counts every
// one; see db.DB.JobsPrune. end_time is TIMESTAMP WITHOUT TIME ZONE in UTC.
// Rows another transaction has locked (a retry about to requeue a FAILED
// job) are skipped, and the status is checked again on the row the DELETE
// takes, so a job that stopped being finished meanwhile is never deleted.
func (d *DB) JobsPrune(ctx context.Context, p job.Prune, limit int, dryRun bool) (job.PruneResult, error) {
	var out job.PruneResult
	if dryRun {
		for _, k := range db.PruneKinds {
			before := k.Before(p)
			if before.IsZero() {
				continue
			}
			err := d.pool.QueryRow(ctx, `SELECT COUNT(*) FROM cf_processing_queue
				WHERE `+k.Status+` AND end_time < $1`, before.UTC()).Scan(k.Count(&out))
			if err != nil {
				return job.PruneResult{}, fmt.Errorf("count prunable jobs: %w", err)
			}
		}
		return out, nil
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		out = job.PruneResult{}
		left := limit
		for _, k := range db.PruneKinds {
			before := k.Before(p)
			if before.IsZero() || (limit > 0 && left <= 0) {
				continue
			}
			var n any // LIMIT NULL: no limit
			if limit > 0 {
				n = int64(left)
			}
			// A CTE, evaluated once: as an IN (subquery) the planner may
			// run the locking subquery again for every row, each time
			// past the rows it locked, and the LIMIT would bound nothing.
			tag, err := tx.Exec(ctx, `WITH doomed AS (
					SELECT id FROM cf_processing_queue
					WHERE `+k.Status+` AND end_time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
				DELETE FROM cf_processing_queue q USING doomed
				WHERE q.id = doomed.id AND q.`+k.Status+` AND q.end_time < $1`,
				before.UTC(), n)
			if err != nil {
				return err
			}
			*k.Count(&out) = tag.RowsAffected()
			left -= int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return job.PruneResult{}, fmt.Errorf("prune jobs: %w", err)
	}
	return out, nil
}
