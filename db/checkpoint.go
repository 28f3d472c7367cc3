package db

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// Checkpoints. With SQLite's default, whichever commit takes the WAL past
// 1,000 pages also copies the WAL into the database file, on the writer: a
// stall of milliseconds landing on one claim in a hundred, and since hot
// pages (the queue's index pages) are in nearly every commit, the same pages
// are copied again and again. Instead the writer runs with
// wal_autocheckpoint=0 and a connection of its own copies the WAL every
// checkpointInterval, beside the writer rather than in its way.
//
// A PASSIVE checkpoint never waits, so under a steady stream of commits it
// never quite catches up, and the WAL only starts over from its beginning
// when a write transaction begins right after a checkpoint copied all of it:
// left at that, the WAL grows without end (it reached 489 MB in a benchmark
// run). The checkpointer therefore repeats a round that ended behind (each
// repeat copies only what was committed during the previous one) and then
// leaves the rest to the writer: before its next transaction the writer
// makes one PASSIVE checkpoint itself, which copies the few frames since
// with no commit racing it, so its next commit restarts the WAL. That step
// syncs the WAL and the database file (2-4 ms here), so the writer only
// takes it once the WAL holds finishFrames: about once a second at full
// load, instead of on every round (which put 2-4 ms on one transaction in
// ten at half load).
const (
	checkpointInterval = 100 * time.Millisecond
	checkpointRounds   = 4
	finishFrames       = 4096 // 16 MiB of WAL at 4 KiB pages
)

// checkpointer copies the WAL into the database file from its own
// connection.
type checkpointer struct {
	pool    *sql.DB
	commits atomic.Uint64 // writer commits, counted by writeTx
	finish  atomic.Bool   // the writer should checkpoint before its next transaction
	stop    chan struct{}
	done    chan struct{}
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
	var seen uint64
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		n := c.commits.Load()
		if n == seen {
			continue // nothing new in the WAL
		}
		seen = n
		var log int64
		for range checkpointRounds {
			var copied int64
			var err error
			if log, copied, err = c.checkpoint(c.pool); err != nil {
				break // tried again at the next tick; the WAL keeps every commit meanwhile
			}
			if copied >= log {
				break
			}
		}
		// Even a round that copied everything only restarts the WAL if the
		// writer's next transaction begins before anything else is
		// committed, and under load the writer is usually inside one
		// already: the writer's own checkpoint, between two transactions,
		// settles it.
		if log >= finishFrames {
			c.finish.Store(true)
		}
	}
}

// checkpoint makes one PASSIVE checkpoint on pool and returns the frames in
// the WAL and how many of them are now in the database file.
func (c *checkpointer) checkpoint(pool *sql.DB) (log, copied int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), busyTimeout)
	defer cancel()
	var busy int64
	err = pool.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &copied)
	return log, copied, err
}

// finishOn makes the checkpoint that lets the WAL restart, on the writer,
// between two of its transactions, when the checkpointer has asked for it.
// It copies only what was committed since the checkpointer's last round.
func (c *checkpointer) finishOn(writer *sql.DB) {
	if c.finish.CompareAndSwap(true, false) {
		// A failure is left to the next tick, as in run.
		_, _, _ = c.checkpoint(writer)
	}
}

func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.pool.Close()
}
