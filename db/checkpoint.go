package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// checkpointInterval is how often the checkpointer copies the WAL into the
// database file.
const checkpointInterval = 250 * time.Millisecond

// checkpointer moves WAL checkpoints off the writer. With SQLite's default,
// whichever commit takes the WAL past 1,000 pages also copies it into the
// database file and fsyncs that: a few milliseconds landing on one claim in
// a hundred. The writer runs with wal_autocheckpoint=0 instead, and this
// connection of its own makes PASSIVE checkpoints, which never wait for the
// writer or for readers.
type checkpointer struct {
	pool *sql.DB
	stop chan struct{}
	done chan struct{}
}

func startCheckpointer(path string) (*checkpointer, error) {
	pool, err := sql.Open(driverName, connString(path))
	if err != nil {
		return nil, fmt.Errorf("open checkpointer: %w", err)
	}
	pool.SetMaxOpenConns(1)
	pool.SetMaxIdleConns(1)
	c := &checkpointer{pool: pool, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), busyTimeout)
			// A failed or partial checkpoint is simply tried again at the
			// next tick; the WAL keeps every commit meanwhile.
			_, _ = c.pool.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
			cancel()
		}
	}
}

func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.pool.Close()
}
