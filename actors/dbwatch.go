package actors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/db"
)

// The database watch: a goroutine of the Sentinel's lifecycle, not an actor,
// that keeps the lease and watches the file. It is the one place outside the
// queue actor that calls the database, on purpose: the lease must keep
// beating and the file must keep being checked while the queue actor waits on
// a lock, and /healthz must be able to tell that apart from a lost file
// without waiting in the queue actor's mailbox.

const (
	// leaseTTL is how long a lease row says its owner is alive after a
	// renewal. With SQLite the flock decides; the expiry is for readers of
	// the row (and for the PostgreSQL lease to come).
	leaseTTL = 30 * time.Second
	// watchEvery is how often the file is checked (a stat: cheap).
	watchEvery = time.Second
	// renewEvery is how often the lease row is renewed; the renewal is also
	// the probe that notices writes failing.
	renewEvery = 5 * time.Second
	// renewTimeout bounds one renewal; one that waited this long on
	// another connection's lock counts as busy, not failed.
	renewTimeout = 10 * time.Second
	// slowWrite is how long a renewal may wait before health says degraded.
	slowWrite = time.Second
	// lostRepeat is how often the ERROR for a lost database is repeated.
	lostRepeat = 30 * time.Second
)

// AcquireLease makes this process the owner of store, naming endpoint as
// where it serves workers. A second Sentinel gets an error naming the first
// (a *db.LeaseHeldError). Taking over from a Sentinel that ended without
// releasing is logged.
func AcquireLease(ctx context.Context, store db.Store, endpoint string, log zerolog.Logger) (db.Lease, error) {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	lease, err := store.LeaseAcquire(ctx, db.LeaseOwner{Host: host, PID: os.Getpid(), Endpoint: endpoint}, leaseTTL)
	if err != nil {
		return nil, err
	}
	if prev, ok := lease.Previous(); ok {
		log.Warn().Str("previous_host", prev.Host).Int("previous_pid", prev.PID).
			Str("previous_endpoint", prev.Endpoint).Time("previous_started_at", prev.StartedAt).
			Time("previous_heartbeat_at", prev.HeartbeatAt).
			Msg("took over the database lease from a Sentinel that did not release it (it was killed or crashed); its lock was gone")
	}
	return lease, nil
}

// batchWrites is what the queue actor's own writes found: the error of the
// last claim-and-conclude transaction that failed, until one succeeds. The
// lease renewal probes writes only every renewEvery; a failing batch tells
// health at once. A batch that waited on a lock only degrades the service,
// as a renewal that did; the renewal's probe says so.
type batchWrites struct{ failed atomic.Pointer[error] }

// record notes the outcome of one batch and reports whether health changed.
func (b *batchWrites) record(err error) (changed bool) {
	if err == nil {
		return b.failed.Swap(nil) != nil
	}
	if errors.Is(err, db.ErrBusy) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	return b.failed.Swap(&err) == nil
}

// dbWatch renews the lease and checks the database file. What it finds is
// read by Health.
type dbWatch struct {
	lease   db.Lease
	log     zerolog.Logger
	onLost  func(error)  // stops dispatching; called once, with why
	batches *batchWrites // the queue actor's writes

	lostOnce sync.Once
	lost     atomic.Pointer[error] // the file or the lease is gone: for good
	writeErr atomic.Pointer[error] // the last renewal failed (not busy)
	busyErr  atomic.Pointer[error] // the last renewal gave up on a lock
	// renewSince is when the renewal in flight began (unix ns), 0 when none.
	renewSince atomic.Int64

	stop chan struct{}
	done chan struct{}
}

func startDBWatch(lease db.Lease, batches *batchWrites, log zerolog.Logger, onLost func(error)) *dbWatch {
	w := &dbWatch{lease: lease, log: log.With().Str("component", "dbwatch").Logger(), onLost: onLost,
		batches: batches, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *dbWatch) run() {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	renewed := make(chan error, 1)
	inFlight := false
	nextRenew := time.Now().Add(renewEvery)
	var lastLoud time.Time
	for {
		select {
		case <-w.stop:
			if inFlight {
				cancel()
				if err := <-renewed; err != nil {
					w.log.Debug().Err(err).Msg("lease renewal cancelled by the stop")
				}
			}
			return
		case err := <-renewed:
			inFlight = false
			w.renewSince.Store(0)
			w.renewDone(err)
		case now := <-tick.C:
			w.check()
			if p := w.lost.Load(); p != nil {
				if lastLoud.IsZero() {
					lastLoud = now // lose has just said it
				} else if now.Sub(lastLoud) >= lostRepeat {
					lastLoud = now
					w.log.Error().Err(*p).Msg("the database is lost: dispatching is stopped and /healthz answers 503; restore the file and restart the Sentinel")
				}
				continue
			}
			if !inFlight && !now.Before(nextRenew) {
				inFlight = true
				nextRenew = now.Add(renewEvery)
				w.renewSince.Store(now.UnixNano())
				go func() {
					rctx, rcancel := context.WithTimeout(ctx, renewTimeout)
					defer rcancel()
					renewed <- w.lease.Renew(rctx)
				}()
			}
		}
	}
}

// check stats the files; a deleted or replaced one loses the database.
func (w *dbWatch) check() {
	if err := w.lease.Check(); err != nil && (errors.Is(err, db.ErrFileGone) || errors.Is(err, db.ErrLeaseLost)) {
		w.lose(err)
	}
}

func (w *dbWatch) renewDone(err error) {
	switch {
	case err == nil:
		if w.writeErr.Swap(nil) != nil || w.busyErr.Swap(nil) != nil {
			w.log.Info().Msg("database writes work again")
		}
	case errors.Is(err, db.ErrLeaseLost):
		w.lose(err)
	case errors.Is(err, db.ErrBusy):
		w.busyErr.Store(&err)
		w.log.Warn().Err(err).Msg("lease renewal waited on another connection's lock; health is degraded")
	default:
		if w.writeErr.Swap(&err) == nil {
			w.log.Error().Err(err).Msg("database writes fail; /healthz answers 503 until a write succeeds")
		}
	}
}

// lose records that the database is gone for this Sentinel and stops
// dispatching: jobs claimed now would be written to a file nobody reads, or
// run twice beside a second Sentinel.
func (w *dbWatch) lose(err error) {
	w.lostOnce.Do(func() {
		w.lost.Store(&err)
		w.log.Error().Err(err).Msg("the database is lost: dispatching stops and /healthz answers 503; restore the file and restart the Sentinel")
		w.onLost(err)
	})
}

// problem returns what is wrong, and whether it only degrades the service.
func (w *dbWatch) problem() (err error, degraded bool) {
	w.check()
	if p := w.lost.Load(); p != nil {
		return *p, false
	}
	if p := w.writeErr.Load(); p != nil {
		return fmt.Errorf("database writes fail: %w", *p), false
	}
	if p := w.batches.failed.Load(); p != nil {
		return fmt.Errorf("database writes fail (job claims and conclusions): %w", *p), false
	}
	if since := w.renewSince.Load(); since != 0 {
		if waited := time.Since(time.Unix(0, since)); waited > slowWrite {
			return fmt.Errorf("%w: a write has waited %s", db.ErrBusy, waited.Round(100*time.Millisecond)), true
		}
	}
	if p := w.busyErr.Load(); p != nil {
		return *p, true
	}
	return nil, false
}

func (w *dbWatch) close() {
	close(w.stop)
	<-w.done
}
