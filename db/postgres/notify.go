package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// QueueChannel is the channel migration 0005's trigger notifies on for
// every job inserted into cf_processing_queue, with the job's plugin_name
// as the payload. A Sentinel that LISTENs on it learns of jobs other
// processes insert within milliseconds, without polling.
const QueueChannel = "casparian_queue"

// Listener LISTENs on QueueChannel on a connection of its own (LISTEN
// belongs to one session, which a pool would not keep) and tells its owner
// which plugins got new jobs.
//
// It never blocks on its owner: notifications are folded into a set of
// plugin names, and Ready signals that the set is not empty; the owner then
// takes it with Drain. When the connection breaks, notifications sent
// meanwhile are lost, so after every (re)connection Drain reports resync:
// look at the whole queue once.
type Listener struct {
	db *DB

	mu      sync.Mutex
	plugins map[string]bool
	resync  bool
	ready   chan struct{}

	// err is the last connection failure, nil while listening.
	err atomic.Pointer[error]
	// pid is the listening session's backend process id, for tests.
	pid atomic.Uint32

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// Listener returns a listener on the queue's inserts; Start starts it.
func (db *DB) Listener() *Listener {
	return &Listener{
		db:      db,
		plugins: make(map[string]bool),
		ready:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Listener's reconnection backoff: from the first to the last, doubling,
// each with up to half again of random jitter so that several Sentinels do
// not reconnect in step after a server restart.
const (
	listenBackoffFirst = 100 * time.Millisecond
	listenBackoffLast  = 5 * time.Second
)

// Start connects and listens in a goroutine of its own until Stop or until
// ctx ends, reconnecting with backoff whenever the connection fails.
func (l *Listener) Start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	go l.run(ctx)
}

// Stop ends the listener and closes its connection. It waits for the
// goroutine.
func (l *Listener) Stop() {
	l.stopOnce.Do(func() {
		if l.cancel == nil { // never started
			close(l.done)
			return
		}
		l.cancel()
	})
	<-l.done
}

// Ready receives a value when Drain has something to return.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

// Drain returns the plugins that got jobs since the last Drain, and whether
// notifications may have been missed since then (the listener
// (re)connected), and empties both.
func (l *Listener) Drain() (plugins []string, resync bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.plugins {
		plugins = append(plugins, p)
	}
	clear(l.plugins)
	resync, l.resync = l.resync, false
	return plugins, resync
}

// Err returns why the listener is not listening (it is reconnecting), or
// nil while it listens or before its first attempt has failed.
func (l *Listener) Err() error {
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *Listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := listenBackoffFirst
	for {
		listened, err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("listener connection ended")
		}
		l.err.Store(&err)
		if listened {
			backoff = listenBackoffFirst
		}
		wait := backoff + rand.N(backoff/2+1)
		backoff = min(2*backoff, listenBackoffLast)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// listen connects, LISTENs and delivers notifications until the connection
// fails or ctx ends. listened reports whether it got as far as LISTEN.
func (l *Listener) listen(ctx context.Context) (listened bool, err error) {
	conn, err := l.db.connect(ctx, "queue listener")
	if err != nil {
		return false, err
	}
	defer func() {
		l.pid.Store(0)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{QueueChannel}.Sanitize()); err != nil {
		return false, err
	}
	l.pid.Store(conn.PgConn().PID())
	l.err.Store(nil)
	// Whatever was inserted while nobody listened was not heard.
	l.deliver("", true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		if n.Channel == QueueChannel {
			l.deliver(n.Payload, false)
		}
	}
}

// deliver folds one notification into the pending set and signals Ready.
func (l *Listener) deliver(plugin string, resync bool) {
	l.mu.Lock()
	if resync {
		l.resync = true
	} else {
		l.plugins[plugin] = true
	}
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// QueueChanges starts the DB's queue listener on its first call and returns
// a channel that receives when jobs were inserted by anyone, or when the
// listener (re)connected and may have missed some: the queue may have
// changed. Each such change also moves DataVersion. It never fails: the
// listener connects, and reconnects, in the background.
func (db *DB) QueueChanges() (<-chan struct{}, error) {
	db.listenOnce.Do(func() {
		l := db.Listener()
		l.Start(context.Background())
		db.listener.Store(l)
	})
	return db.listener.Load().Ready(), nil
}

// DataVersion tells whether the queue may have changed since the last call,
// as SQLite's does: only equality is meaningful. On PostgreSQL it counts
// what the queue listener heard (QueueChanges); before the listener runs it
// changes on every call, so a caller that polls it looks every time.
func (db *DB) DataVersion(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("data version: %w", err)
	}
	l := db.listener.Load()
	if l == nil {
		return db.version.Add(1), nil
	}
	if plugins, resync := l.Drain(); len(plugins) > 0 || resync {
		return db.version.Add(1), nil
	}
	return db.version.Load(), nil
}
