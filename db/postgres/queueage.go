package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/casparian/sentinel/job"
)

// JobsOldestQueued returns, per plugin, when the oldest job that is QUEUED
// and due at now was enqueued; see db.DB.JobsOldestQueued.
func (d *DB) JobsOldestQueued(ctx context.Context, now time.Time) ([]job.QueueAge, error) {
	rows, err := d.pool.Query(ctx, `SELECT COALESCE(plugin_name, ''), MIN(enqueued_at)
		FROM cf_processing_queue
		WHERE status = 'QUEUED' AND (next_run_at IS NULL OR next_run_at <= $1) AND enqueued_at IS NOT NULL
		GROUP BY plugin_name`, now)
	if err != nil {
		return nil, fmt.Errorf("oldest queued jobs: %w", err)
	}
	defer rows.Close()
	var out []job.QueueAge
	for rows.Next() {
		var a job.QueueAge
		if err := rows.Scan(&a.Plugin, &a.EnqueuedAt); err != nil {
			return nil, fmt.Errorf("oldest queued jobs: %w", err)
		}
		a.EnqueuedAt = a.EnqueuedAt.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("oldest queued jobs: %w", err)
	}
	return out, nil
}

// JobsEnqueuedAt returns when each of the jobs ids was enqueued; see
// db.DB.JobsEnqueuedAt.
func (d *DB) JobsEnqueuedAt(ctx context.Context, ids []int64) (map[int64]time.Time, error) {
	out := make(map[int64]time.Time, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := d.pool.Query(ctx, `SELECT id, enqueued_at FROM cf_processing_queue
		WHERE enqueued_at IS NOT NULL AND id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("enqueue times: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("enqueue times: %w", err)
		}
		out[id] = at.UTC()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("enqueue times: %w", err)
	}
	return out, nil
}
