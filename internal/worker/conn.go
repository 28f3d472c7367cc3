package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casparian/sentinel/transport"
)

// The connection: dialling the DEALER, the receiver goroutine, the watchdog
// that replaces a silent connection, and identifying again after any of it.

const (
	// dialBackoffMin and dialBackoffMax bound the wait between failed dials
	// (a Sentinel that accepts TCP but fails the ZMTP handshake); zmq4
	// itself retries an unreachable one every 250 ms.
	dialBackoffMin = 250 * time.Millisecond
	dialBackoffMax = 10 * time.Second
	// curveDialReport is how long a CURVE dial may go on before the worker
	// logs why it is not connected. A refused handshake is a failed dial
	// that zmq4 retries every 250 ms, forever: without this a worker whose
	// key is not authorized would wait in silence.
	curveDialReport = 5 * time.Second
)

// connection is the DEALER to the Sentinel and what the goroutines that
// share it must agree on. Run sets dealer before it starts any of them;
// after that only the receiver replaces it (redial), and only after the
// watchdog closed it on purpose (replacing). The sender and the watchdog
// read it under mu and use their copy without the lock: a copy the
// receiver replaced meanwhile is a closed Dealer, whose Send fails as if
// the connection were down.
//
// mu is a leaf lock (see Worker): nothing else is taken while it is held,
// and no Dealer method is called under it.
type connection struct {
	mu        sync.Mutex
	dealer    *transport.Dealer // guarded by mu
	replacing bool              // guarded by mu: the watchdog closed dealer on purpose; the receiver dials anew
	closing   bool              // guarded by mu: Run is closing dealer for good; nobody dials again

	// lastInbound is when the Sentinel last spoke (unix nanoseconds):
	// written by the receiver (and Run, before it), read by the watchdog.
	lastInbound atomic.Int64
	// at is 1 + the index in Worker.endpoints of the endpoint dealer was
	// dialled to; 0 before the first connection. Written by Run (the first
	// dial) and the receiver (redial), read by Stats.
	at atomic.Int64
	// dialCtx is cancelled when Run ends: it stops a redial. Set by Run
	// before the receiver starts.
	dialCtx  context.Context
	stopDial context.CancelFunc
}

// current returns the DEALER to use now.
func (c *connection) current() *transport.Dealer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dealer
}

// index is the index in Worker.endpoints of the endpoint of the current
// connection (0 before the first).
func (c *connection) index() int { return int(max(c.at.Load()-1, 0)) }

// endpoint is the address of the current connection's endpoint, "" before
// the first.
func (c *connection) endpoint(eps []endpoint) string {
	if at := c.at.Load(); at > 0 {
		return eps[at-1].addr
	}
	return ""
}

// isClosing reports whether Run is closing the connection for good.
func (c *connection) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// isReplacing reports whether the watchdog closed the DEALER on purpose.
func (c *connection) isReplacing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replacing
}

// startReplacing marks the DEALER as closed on purpose and returns it for
// the caller to close, unless a replacement or the final close is already
// under way (nil).
func (c *connection) startReplacing() *transport.Dealer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.replacing || c.closing {
		return nil
	}
	c.replacing = true
	return c.dealer
}

// replace installs a newly dialled DEALER in place of the one the watchdog
// closed. It returns false, and installs nothing, once Run is closing.
func (c *connection) replace(d *transport.Dealer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.dealer, c.replacing = d, false
	return true
}

// close marks the connection closing for good and returns the DEALER for
// the caller to close.
func (c *connection) close() *transport.Dealer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	return c.dealer
}

// heard stamps the time the Sentinel last spoke.
func (c *connection) heard() { c.lastInbound.Store(time.Now().UnixNano()) }

// silence is how long the Sentinel has been silent.
func (c *connection) silence() time.Duration { return time.Since(time.Unix(0, c.lastInbound.Load())) }

// dial connects a DEALER to one of the endpoints, trying them in order
// from endpoints[from], round-robin, and returns it with the index of the
// endpoint it reached. It waits while a Sentinel is unreachable (zmq4
// retries every 250 ms): with one endpoint, as long as it takes; with
// several, failoverDialWindow, then it tries the next. It backs off when a
// dial fails outright (the ZMTP handshake failed). Over CURVE it logs every
// curveDialReport why it is not connected yet (the last refusal's reason).
// It returns an error only when ctx ends.
func (w *Worker) dial(ctx context.Context, from int) (*transport.Dealer, int, error) {
	backoff := dialBackoffMin
	n := len(w.endpoints)
	for i := from % n; ; i = (i + 1) % n {
		ep := w.endpoints[i]
		attempt, cancel := ctx, context.CancelFunc(func() {})
		switch {
		case n > 1:
			attempt, cancel = context.WithTimeout(ctx, w.failoverDialWindow())
		case ep.curve != nil:
			// Safe to give up on: every CURVE handshake has a deadline, so
			// the dialing goroutine DialDealer leaves behind ends soon.
			attempt, cancel = context.WithTimeout(ctx, curveDialReport)
		}
		d, err := transport.DialDealer(attempt, ep.addr, transport.DealerOptions{
			Identity: []byte(w.opts.Identity),
			Timeout:  w.opts.SendTimeout,
			Curve:    ep.curve,
		})
		cancel()
		if err == nil {
			return d, i, nil
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if attempt.Err() != nil {
			// zmq4 was retrying all along: no backoff on top.
			ev := w.log.Warn().Err(err).Str("endpoint", ep.addr)
			if n > 1 {
				ev.Str("next", w.endpoints[(i+1)%n].addr).Msg("Sentinel not reachable; trying the next endpoint")
			} else {
				ev.Msg("not connected to the Sentinel yet; still trying")
			}
			continue
		}
		w.log.Warn().Err(err).Str("endpoint", ep.addr).Dur("retry_in", backoff).Msg("connect failed")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, dialBackoffMax)
	}
}

// connected records that the connection is now to endpoints[i], and logs
// it; first is true for Run's first connection.
func (w *Worker) connected(i int, first bool) {
	prev := w.conn.at.Swap(int64(i) + 1)
	addr := w.endpoints[i].addr
	switch {
	case first:
		w.log.Info().Str("endpoint", addr).Msg("connected to the Sentinel")
	case prev != int64(i)+1:
		w.stats.failovers.Add(1)
		w.log.Warn().Str("endpoint", addr).Str("previous", w.endpoints[prev-1].addr).
			Msg("failed over to another Sentinel; identifying there")
	default:
		w.log.Info().Str("endpoint", addr).Msg("connection replaced")
	}
}

// watchdog closes the connection when the Sentinel has been silent for
// SentinelTimeout; recvLoop then dials a new one.
func (w *Worker) watchdog(stop <-chan struct{}) {
	limit := w.opts.SentinelTimeout
	if limit < 0 {
		return
	}
	t := time.NewTicker(max(limit/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		silent := w.conn.silence()
		if silent < limit {
			continue
		}
		d := w.conn.startReplacing()
		if d == nil {
			continue
		}
		w.log.Warn().Dur("silent", silent).Msg("nothing from the Sentinel; replacing the connection")
		_ = d.Close() // recvLoop's Recv returns and it dials again
	}
}

// recvLoop is the receiver goroutine: it owns Dealer.Recv, handles every
// message in order, and reconnects.
func (w *Worker) recvLoop() {
	for {
		d := w.conn.current()
		msg, err := d.Recv()
		if w.conn.isClosing() {
			return
		}
		if err == nil {
			w.conn.heard()
			w.heard()
			w.handle(msg)
			continue
		}
		if transport.ErrorKind(err) != "other" {
			w.log.Warn().Err(err).Msg("malformed message from the Sentinel ignored")
			continue
		}
		if w.conn.isReplacing() {
			if !w.redial() {
				return
			}
			w.reconnected()
			continue
		}
		// zmq4 redials before it reports the broken connection: io.EOF
		// (ErrReconnected) or the socket error itself ("connection reset
		// by peer"). Either way the Sentinel may have restarted, and what
		// was sent meanwhile is lost.
		if !errors.Is(err, transport.ErrReconnected) {
			w.log.Warn().Err(err).Msg("connection to the Sentinel broke")
		}

		w.log.Warn().Msg("reconnected to the Sentinel; identifying again")
		w.reconnected()
	}
}

// redial replaces the connection the watchdog closed: with several
// endpoints, by one to the next endpoint (or the one after, round-robin,
// if that one does not answer). It returns false when the worker is
// stopping.
func (w *Worker) redial() bool {
	from := w.conn.index()
	if len(w.endpoints) > 1 {
		// The Sentinel there went silent: the next one first.
		from++
	}
	nd, i, err := w.dial(w.conn.dialCtx, from)
	if err != nil {
		return false
	}
	if !w.conn.replace(nd) {
		_ = nd.Close()
		return false
	}
	w.conn.heard()
	w.connected(i, false)
	return true
}

// reconnected counts a reconnect and identifies again.
func (w *Worker) reconnected() {
	w.stats.reconnects.Add(1)
	w.reidentify()
}

// reidentify announces the worker again, re-sends the pending receipts (any
// of them may have been lost with the old connection, or with a new one
// that broke again straight away), and reports its jobs.
//
// The order of what it queues is what makes a receipt survive a reconnect
// (see receipts): the epoch moves first, so that nothing heard from now on
// acknowledges a write made before; then the IDENTIFY; then every receipt
// still pending, including one whose job concluded a moment ago (conclude
// makes it pending as it frees the slot); the heartbeat last.
func (w *Worker) reidentify() {
	w.mu.Lock()
	w.receipts.newEpoch()
	w.mu.Unlock()
	w.identify()
	replay := w.replayable()
	for _, r := range replay {
		w.stats.replayed.Add(1)
		w.send(transport.OpConclude, r.jobID, r.receipt)
	}
	if len(replay) > 0 {
		w.log.Info().Int("receipts", len(replay)).Msg("re-sent pending receipts")
	}
	// Queued behind the receipts: the Sentinel requeues a job it holds for
	// us that two heartbeats in a row leave out, so the receipts must get
	// there first.
	w.sendHeartbeat()
}

// identify queues an IDENTIFY: the plugins and slots, or no capabilities
// while draining so the Sentinel sends nothing more.
func (w *Worker) identify() {
	w.stats.identifies.Add(1)
	w.send(transport.OpIdentify, 0, w.hello())
}

// hello is the IDENTIFY payload as of now.
func (w *Worker) hello() *transport.Identify {
	w.mu.Lock()
	caps := w.caps
	if w.slots.draining {
		caps = []string{}
	}
	w.mu.Unlock()
	return &transport.Identify{
		Capabilities:      caps,
		WorkerID:          w.opts.Identity,
		MaxConcurrentJobs: w.opts.Concurrency,
		Version:           "casparian-worker/" + w.opts.Version,
	}
}
