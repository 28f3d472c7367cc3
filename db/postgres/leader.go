package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Election makes one of the Sentinels sharing a database its leader, the
// one that runs the work only one should do (the scanner, the sweeps, crash
// recovery). The leader is whoever holds the session-level advisory lock
// leaderLockKey, taken with pg_try_advisory_lock on a connection of its own
// outside the pool. PostgreSQL releases the lock when that session ends, by
// Stop, by the process dying or by the connection breaking, and the next
// campaigner to try takes it: leadership is handed over without any row to
// clean up.
//
// Leader() may lag the truth by up to one check interval, plus the check's
// own timeout when the server does not answer: a leader whose session was
// cut learns it at its next check, while another Sentinel may have taken
// the lock already. Work done as leader must therefore be safe
// to overlap for that long (guarded by expected states, as every state
// change is).
type Election struct {
	db    *DB
	key   int64
	every time.Duration

	leader  atomic.Bool
	changed chan struct{}
	// onChange, when set before Start, is told every change of Leader.
	onChange func(leader bool)

	// conn is the session holding (or trying for) the lock; only the
	// campaign goroutine touches it.
	conn *pgx.Conn
	// pid is conn's backend process id, for tests that end the session.
	pid atomic.Uint32

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// minCheckTimeout bounds each check of an Election from below.
const minCheckTimeout = 2 * time.Second

// Election returns a campaign for leadership that, once started, checks
// every interval (1 s if zero or less).
func (db *DB) Election(every time.Duration) *Election {
	if every <= 0 {
		every = time.Second
	}
	return &Election{
		db:      db,
		key:     leaderLockKey,
		every:   every,
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Start begins campaigning in a goroutine of its own until Stop or until
// ctx ends. The first attempt is made at once.
func (e *Election) Start(ctx context.Context) {
	ctx, e.cancel = context.WithCancel(ctx)
	go e.campaign(ctx)
}

// Stop ends the campaign and closes its session, which hands leadership to
// the next campaigner if this one held it. It waits for the goroutine.
func (e *Election) Stop() {
	e.stopOnce.Do(func() {
		if e.cancel == nil { // never started
			close(e.done)
			return
		}
		e.cancel()
	})
	<-e.done
}

// Leader reports whether this Sentinel held the leadership at its last
// check.
func (e *Election) Leader() bool { return e.leader.Load() }

// Changed receives a value whenever Leader's answer changes (changes that
// come faster than they are read are folded into one).
func (e *Election) Changed() <-chan struct{} { return e.changed }

func (e *Election) campaign(ctx context.Context) {
	defer close(e.done)
	defer e.drop()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.check(ctx)
		t.Reset(e.every)
	}
}

// check takes the lock if it can, or confirms that the session holding it
// is still alive: a session-level advisory lock lasts as long as its
// session, so a query that succeeds on that same session proves the lock is
// still held. Any failure drops the session, and with it the lock.
func (e *Election) check(ctx context.Context) {
	// Not shorter than minCheckTimeout: on a loaded machine a leader must
	// not lose its lock to one slow answer.
	ctx, cancel := context.WithTimeout(ctx, max(e.every, minCheckTimeout))
	defer cancel()
	if e.conn == nil {
		conn, err := e.db.connect(ctx, "leader election")
		if err != nil {
			return
		}
		e.conn = conn
		e.pid.Store(conn.PgConn().PID())
	}
	if e.leader.Load() {
		if _, err := e.conn.Exec(ctx, `SELECT 1`); err != nil {
			e.drop()
		}
		return
	}
	var got bool
	if err := e.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, e.key).Scan(&got); err != nil {
		e.drop()
		return
	}
	e.set(got)
}

// drop gives up leadership and closes the session.
func (e *Election) drop() {
	e.set(false)
	if e.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = e.conn.Close(ctx)
		cancel()
		e.conn = nil
		e.pid.Store(0)
	}
}

func (e *Election) set(leader bool) {
	if e.leader.Swap(leader) != leader {
		if e.onChange != nil {
			e.onChange(leader)
		}
		select {
		case e.changed <- struct{}{}:
		default:
		}
	}
}
