package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// JobsEnqueueBulk inserts n QUEUED jobs for one file version and plugin in a
// single transaction. Benchmarks and load tests use it to build deep queues
// quickly; one commit per job would dominate the set-up time.
func (db *DB) JobsEnqueueBulk(ctx context.Context, fileVersionID int64, plugin string, priority int64, n int) error {
	return db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(time.Now())
		if err := pluginConfigEnsure(ctx, tx, plugin, ts); err != nil {
			return fmt.Errorf("bulk enqueue: %w", err)
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at)
			VALUES (?, ?, 'QUEUED', ?, 0, ?)`)
		if err != nil {
			return fmt.Errorf("bulk enqueue: %w", err)
		}
		defer st.Close()
		for i := 0; i < n; i++ {
			if _, err := st.ExecContext(ctx, fileVersionID, plugin, priority, ts); err != nil {
				return fmt.Errorf("bulk enqueue: %w", err)
			}
		}
		return nil
	})
}
