package db

import (
	"errors"
	"fmt"
	"time"
)

// The queue watch tells the Sentinel of commits other processes make to the
// database file, so that a job a scout inserts is claimed within
// milliseconds rather than at the next poll of PRAGMA data_version. It
// watches the file system (inotify, queuewatch_linux.go), not SQLite: any
// commit writes the WAL, whoever makes it.
//
// It cannot tell whose commit it saw, and this DB's own writer commits
// thousands of times a second under load. So a signal only means "look":
// the channel holds one signal and a send never waits, so a burst of
// writes is one signal, and the reader (the queue actor) asks DataVersion
// whether anything changed. The watch also paces itself (watchGap) so that a
// busy writer costs few signals.
const (
	// watchGap is the least time between two signals: watchGapMin after a
	// quiet spell, so that the first write of a burst is signalled at once,
	// doubling up to watchGapMax while the writes go on. Events that arrive
	// meanwhile wait in the kernel, which folds repeated ones into one.
	// While the database is that busy the dispatcher claims again after
	// every claim anyway, and a signal would only cost CPU: at 1 ms the
	// Sentinel's own commits made 500 checks a second under full load, and
	// 8–12 % more CPU per job.
	//
	// The gap stays at its maximum while writes come at least that often,
	// and a trickle of the Sentinel's own commits (a job finishing every
	// 15 ms) is enough. Another process's insert then waits up to a whole
	// gap: at 16 ms, the median pickup was 6–11 ms. At 4 ms it is 2–3 ms,
	// and full-load throughput did not change measurably (session 11).
	watchGapMin = time.Millisecond
	watchGapMax = 4 * time.Millisecond

	// watchSettle is when the watch signals once more after the last
	// event. A writer updates the WAL index (shared memory, which makes
	// no event) after the write that made the event, and the commit is
	// visible only then; a reader quick enough to look in between sees no
	// change. Usually the index follows within microseconds, but a writer
	// with synchronous=FULL (Python's default) fsyncs the WAL in between,
	// and on a busy disk that took seconds (CI: a commit seen 3.7 s late).
	// So the looks go on with doubling gaps, watchSettle, 2×, 4×, … up to
	// watchSettleMax, about 2×watchSettleMax after the last event in all:
	// a dozen cheap data_version reads per quiet spell, none while idle.
	watchSettle    = 2 * time.Millisecond
	watchSettleMax = 4 * time.Second
)

// errWatchClosed is QueueChanges' answer once the DB is closed.
var errWatchClosed = errors.New("database closed")

// QueueChanges starts watching the database's files on its first call and
// returns a channel that receives when another connection (another
// process, or this DB's own writer) may have committed: the caller should
// compare DataVersion with what it saw last. Bursts of commits are folded
// into few signals.
//
// Where the files cannot be watched (not Linux, or inotify refused: too many
// instances or watches) it returns an error saying why, every time, and
// the caller polls DataVersion instead.
func (db *DB) QueueChanges() (<-chan struct{}, error) {
	db.watchMu.Lock()
	defer db.watchMu.Unlock()
	if db.watchClosed {
		return nil, fmt.Errorf("watch database files: %w", errWatchClosed)
	}
	if db.watch == nil && db.watchErr == nil {
		db.watch, db.watchErr = startQueueWatch(db.path)
	}
	if db.watchErr != nil {
		return nil, fmt.Errorf("watch database files: %w", db.watchErr)
	}
	return db.watch.ready, nil
}

// closeWatch stops the queue watch, if it runs, and waits for its
// goroutine; QueueChanges refuses to start another.
func (db *DB) closeWatch() error {
	db.watchMu.Lock()
	defer db.watchMu.Unlock()
	db.watchClosed = true
	if db.watch == nil {
		return nil
	}
	err := db.watch.close()
	db.watch = nil
	return err
}
