package db

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// JobsOldestQueued returns, per plugin, when the oldest job that is QUEUED
// and due at now (no next_run_at, or one that has passed) was enqueued:
// what the queue-age gauge shows. A job waiting out a retry's backoff is not
// late, so it does not count; jobs without enqueued_at (finished before
// migration 0008) are left out. One GROUP BY over the QUEUED rows, read
// through the partial claim index in plugin order.
func (db *DB) JobsOldestQueued(ctx context.Context, now time.Time) ([]job.QueueAge, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT plugin_name, MIN(enqueued_at)
		FROM cf_processing_queue
		WHERE status = 'QUEUED' AND (next_run_at IS NULL OR next_run_at <= ?) AND enqueued_at IS NOT NULL
		GROUP BY plugin_name`, unixMillis(now))
	if err != nil {
		return nil, fmt.Errorf("oldest queued jobs: %w", err)
	}
	defer rows.Close()
	var out []job.QueueAge
	for rows.Next() {
		var plugin sql.NullString
		var ms int64
		if err := rows.Scan(&plugin, &ms); err != nil {
			return nil, fmt.Errorf("oldest queued jobs: %w", err)
		}
		out = append(out, job.QueueAge{Plugin: plugin.String, EnqueuedAt: time.UnixMilli(ms).UTC()})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("oldest queued jobs: %w", err)
	}
	return out, nil
}

// enqueuedAtChunk bounds the ids of one JobsEnqueuedAt statement, below
// SQLite's limit on bound parameters.
const enqueuedAtChunk = 500

// JobsEnqueuedAt returns when each of the jobs ids was enqueued; jobs that
// are gone or have no enqueued_at are left out. The Sentinel reads it for
// the jobs it claimed, after the claim, for the enqueue-to-start latency:
// the claim statement itself stays as it is.
func (db *DB) JobsEnqueuedAt(ctx context.Context, ids []int64) (map[int64]time.Time, error) {
	out := make(map[int64]time.Time, len(ids))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), enqueuedAtChunk)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := db.reader.QueryContext(ctx, `SELECT id, enqueued_at FROM cf_processing_queue
			WHERE enqueued_at IS NOT NULL AND id IN (?`+strings.Repeat(", ?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("enqueue times: %w", err)
		}
		for rows.Next() {
			var id, ms int64
			if err := rows.Scan(&id, &ms); err != nil {
				rows.Close()
				return nil, fmt.Errorf("enqueue times: %w", err)
			}
			out[id] = time.UnixMilli(ms).UTC()
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("enqueue times: %w", err)
		}
	}
	return out, nil
}
