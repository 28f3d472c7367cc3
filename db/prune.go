package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/casparian/sentinel/job"
)

// PruneKind is one kind of finished job a prune deletes: the statuses (a
// SQL condition over the unaliased queue) and its cutoff in a job.Prune.
// Both backends prune the same kinds in the same order.
type PruneKind struct {
	Status string
	Before func(job.Prune) time.Time
	Count  func(*job.PruneResult) *int64
}

// PruneKinds are COMPLETED jobs, then FAILED and SKIPPED ones.
var PruneKinds = []PruneKind{
	{`status = 'COMPLETED'`, func(p job.Prune) time.Time { return p.CompletedBefore },
		func(r *job.PruneResult) *int64 { return &r.Completed }},
	{`status IN ('FAILED', 'SKIPPED')`, func(p job.Prune) time.Time { return p.FailedBefore },
		func(r *job.PruneResult) *int64 { return &r.Failed }},
}

// JobsPrune deletes the finished jobs p selects, at most limit of them in
// all (limit <= 0: every one) in one transaction, or with dryRun counts every
// one. The retention sweep calls it with a small limit again and again, so
// that no transaction holds the writer for long; the operator's prune too.
//
// end_time is compared through julianday(), which reads this package's
// timestamps and the "YYYY-MM-DD HH:MM:SS" ones other tools write alike (a
// text comparison would order those wrongly within a day). There is no
// index on end_time, on purpose: every conclusion would pay to maintain it.
// The status index finds the candidates, and the sweep deletes them a batch
// at a time.
func (db *DB) JobsPrune(ctx context.Context, p job.Prune, limit int, dryRun bool) (job.PruneResult, error) {
	var out job.PruneResult
	if dryRun {
		for _, k := range PruneKinds {
			before := k.Before(p)
			if before.IsZero() {
				continue
			}
			err := db.reader.QueryRowContext(ctx, `SELECT COUNT(*) FROM cf_processing_queue
				WHERE `+k.Status+` AND julianday(end_time) < julianday(?)`, formatTime(before)).Scan(k.Count(&out))
			if err != nil {
				return job.PruneResult{}, fmt.Errorf("count prunable jobs: %w", err)
			}
		}
		return out, nil
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		out = job.PruneResult{}
		left := limit
		for _, k := range PruneKinds {
			before := k.Before(p)
			if before.IsZero() || (limit > 0 && left <= 0) {
				continue
			}
			n := -1 // SQLite's LIMIT -1: no limit
			if limit > 0 {
				n = left
			}
			// The status is checked again outside the subquery, so the
			// DELETE itself can never remove a job of another status.
			res, err := tx.ExecContext(ctx, `DELETE FROM cf_processing_queue
				WHERE `+k.Status+` AND julianday(end_time) < julianday(?1) AND id IN (
					SELECT id FROM cf_processing_queue
					WHERE `+k.Status+` AND julianday(end_time) < julianday(?1) LIMIT ?2)`,
				formatTime(before), n)
			if err != nil {
				return err
			}
			deleted, err := res.RowsAffected()
			if err != nil {
				return err
			}
			*k.Count(&out) = deleted
			left -= int(deleted)
		}
		return nil
	})
	if err != nil {
		return job.PruneResult{}, fmt.Errorf("prune jobs: %w", err)
	}
	return out, nil
}
