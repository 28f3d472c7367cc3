package transport

import (
	"errors"
	"time"
)

// Defaults of a connection's inbound budget. A worker at full speed sends a
// receipt per job and a heartbeat every few seconds: the benchmark's 10k
// jobs/s over 8 workers is about 1.3k messages/s each, a quarter of the
// sustained rate; the burst covers a worker that reconnects and reports a
// backlog at once.
const (
	DefaultPeerRate       = 5000
	DefaultPeerBurst      = 10000
	DefaultPeerOverBudget = 2 * time.Second
)

// Reasons passed to RouterOptions.OnDrop. Stable, for metric labels.
const (
	// DropRate: the message came over its connection's inbound budget.
	DropRate = "rate"
)

// RejectOverBudget is the OnReject reason for a connection closed because it
// stayed over its inbound budget for longer than PeerOverBudget.
const RejectOverBudget = "over_budget"

var errOverBudget = errors.New("peer stayed over its inbound message budget")

// overBudgetPause is at most how long the guard stops reading a connection whose
// message was just dropped. Dropping alone still costs zmq4's parsing of
// every message a flooder sends (hundreds of thousands a second); pausing
// lets TCP push back on the flooder instead, while the drops that remain
// still show that it keeps exceeding its budget.
const overBudgetPause = 100 * time.Millisecond

// budgetLimits is a Router's per-connection budget; rate 0 means none.
type budgetLimits struct {
	rate  float64       // messages per second, sustained
	burst float64       // messages at once
	grace time.Duration // time over budget before the connection is closed
	pause time.Duration // reads held back after a drop
}

func newBudgetLimits(opts RouterOptions) budgetLimits {
	if opts.PeerRate < 0 {
		return budgetLimits{}
	}
	l := budgetLimits{rate: opts.PeerRate, burst: float64(opts.PeerBurst), grace: opts.PeerOverBudget}
	if l.rate == 0 {
		l.rate = DefaultPeerRate
	}
	if l.burst <= 0 {
		l.burst = max(DefaultPeerBurst*l.rate/DefaultPeerRate, 1)
	}
	if l.grace <= 0 {
		l.grace = DefaultPeerOverBudget
	}
	// A pause must not refill the bucket to half, or a flooder would look
	// like a peer whose burst is over and never be cut.
	l.pause = min(overBudgetPause, time.Duration(l.burst/4/l.rate*float64(time.Second)))
	return l
}

// tokenBucket is one connection's inbound budget. Only the Router's reader
// goroutine uses it, so it has no lock.
type tokenBucket struct {
	started   bool
	tokens    float64
	last      int64 // unix nanoseconds of the last refill
	overSince int64 // first drop since the bucket was last half full; 0 if none
	dropped   int64 // messages dropped over the connection's life
	cut       bool  // the connection was closed for abuse
}

// take spends one token at now. It reports whether the message fits, and
// whether the connection has been over budget for longer than the grace
// without the bucket refilling to half: a flood rather than a burst.
func (b *tokenBucket) take(now int64, l budgetLimits) (ok, abusive bool) {
	if !b.started {
		b.started, b.tokens, b.last = true, l.burst, now
	}
	if now > b.last {
		b.tokens = min(l.burst, b.tokens+float64(now-b.last)*l.rate/1e9)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		if b.tokens >= l.burst/2 {
			b.overSince = 0
		}
		return true, false
	}
	b.dropped++
	if b.overSince == 0 {
		b.overSince = now
	}
	return false, time.Duration(now-b.overSince) >= l.grace
}

// admit applies c's budget to one message from it and reports whether to
// deliver it. A connection over budget for too long is closed, once.
func (r *Router) admit(c *guardConn, now int64) bool {
	if r.limits.rate == 0 {
		return true
	}
	ok, abusive := c.budget.take(now, r.limits)
	if ok {
		return true
	}
	if r.onDrop != nil {
		r.onDrop(DropRate)
	}
	c.pausedUntil.Store(now + int64(r.limits.pause))
	if abusive && !c.budget.cut {
		c.budget.cut = true
		c.shut(guardErr(errOverBudget), RejectOverBudget)
		if r.onOverBudget != nil {
			r.onOverBudget([]byte(c.identity), c.RemoteAddr(), c.budget.dropped)
		}
	}
	return false
}
