package worker

import (
	"slices"
	"time"

	"github.com/casparian/sentinel/transport"
)

// Receipts: the conclusions the Sentinel may not have yet, re-sent after
// every IDENTIFY until it has acknowledged them.

// maxPending bounds the receipts kept for re-sending. Against a Sentinel
// that never speaks (the originals send no HEARTBEAT) no receipt is ever
// acknowledged; the oldest then go first.
const maxPending = 4096

// replayWindow is how long a receipt is still re-sent after a reconnect
// once the Sentinel has acknowledged it (see pendingReceipt). The
// acknowledgement is only a sign (the protocol has none for CONCLUDE), and
// the Sentinel ignores a receipt for a job that is no longer RUNNING under
// this worker (docs/PROTOCOL.md §4.4), so re-sending one too many is harmless. A
// variable so that tests can shorten it.
var replayWindow = 30 * time.Second

// receipts are the worker's pending receipts. Guarded by Worker.mu,
// together with slots: a job's receipt becomes pending in the critical
// section that frees its slot (release), and what reads both (heartbeat,
// replayable) reads them in one critical section, so a job is always
// running, or pending, or acknowledged.
//
// A receipt's life: remember (queued: pending, not tried; heartbeats list
// its job), written (the sender tried it: tried, and if the write went out,
// the epoch it went out on), heard (the Sentinel spoke on that same epoch
// after the write), and pruned replayWindow after that. newEpoch, at every
// re-identify, makes any write before it unacknowledgeable.
type receipts struct {
	pending []*pendingReceipt
	unheard []*pendingReceipt // written since the Sentinel last spoke
	// epoch counts the connections the Sentinel may have forgotten us
	// over: it moves on every re-identify, and a receipt written on an
	// older epoch is acknowledged by nothing that arrives later.
	epoch int64
}

// pendingReceipt is a receipt that may still have to be sent again. zmq4
// drops what is sent while the connection is down without an error, and
// the Sentinel may restart between reading a receipt and committing it, so
// a receipt stays pending, and is re-sent after every IDENTIFY, until the
// Sentinel has acknowledged it: something arrived from the Sentinel over
// the connection the receipt was last written on, after the write (the
// Sentinel heartbeats every worker), and replayWindow has passed since.
type pendingReceipt struct {
	jobID   int64
	receipt *transport.Conclude
	tried   bool      // a write was attempted: until then heartbeats list the job
	written time.Time // last written to a connection; zero: not yet
	epoch   int64     // receipts.epoch when last written
	heard   bool      // the Sentinel spoke on that epoch after the write
}

// remember makes a receipt pending from the moment it is queued: a
// reconnect may come while it still waits in the outbox or in a send to the
// connection that is breaking. Remembering the same receipt (pointer) twice
// keeps one entry.
func (rs *receipts) remember(jobID int64, r *transport.Conclude, now time.Time) {
	rs.prune(now)
	if !slices.ContainsFunc(rs.pending, func(p *pendingReceipt) bool { return p.receipt == r }) {
		rs.pending = append(rs.pending, &pendingReceipt{jobID: jobID, receipt: r})
	}
}

// prune forgets the receipts the Sentinel acknowledged more than
// replayWindow ago, and the oldest beyond maxPending.
func (rs *receipts) prune(now time.Time) {
	rs.pending = slices.DeleteFunc(rs.pending, func(p *pendingReceipt) bool {
		return p.heard && now.Sub(p.written) > replayWindow
	})
	if n := len(rs.pending) - maxPending; n > 0 {
		rs.pending = slices.Delete(rs.pending, 0, n)
	}
}

// newEpoch starts a new epoch: the Sentinel may have lost every write
// made before.
func (rs *receipts) newEpoch() { rs.epoch++ }

// replayable returns the pending receipts to send again after an IDENTIFY,
// leaving out jobs dispatched to us again since (running): that run will
// conclude.
func (rs *receipts) replayable(now time.Time, running func(int64) bool) []pendingReceipt {
	rs.prune(now)
	var replay []pendingReceipt
	for _, r := range rs.pending {
		if running(r.jobID) {
			continue
		}
		replay = append(replay, *r)
	}
	return replay
}

// unwritten returns the jobs whose receipts no write has been tried for,
// leaving out jobs dispatched to us again since (running).
func (rs *receipts) unwritten(running func(int64) bool) []int64 {
	var concluding []int64
	for _, p := range rs.pending {
		if !p.tried && !running(p.jobID) {
			concluding = append(concluding, p.jobID)
		}
	}
	return concluding
}

// written records a write of r, and whether it went out (on the current
// epoch).
func (rs *receipts) written(r *transport.Conclude, ok bool, now time.Time) {
	for _, p := range rs.pending {
		if p.receipt != r {
			continue
		}
		p.tried = true
		if ok {
			p.written, p.epoch, p.heard = now, rs.epoch, false
			rs.unheard = append(rs.unheard, p)
		}
	}
}

// heard records that the Sentinel spoke: receipts written on this epoch
// before now have reached it.
func (rs *receipts) heard() {
	for _, r := range rs.unheard {
		// One written on an older epoch went out over a connection the
		// Sentinel may have lost; only a write on this one can be heard.
		r.heard = r.epoch == rs.epoch
	}
	clear(rs.unheard)
	rs.unheard = rs.unheard[:0]
}

// replayable returns the pending receipts to send again after an IDENTIFY.
func (w *Worker) replayable() []pendingReceipt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.receipts.replayable(time.Now(), w.slots.running)
}

// heard records that the Sentinel spoke (the receiver, for every message).
func (w *Worker) heard() {
	w.mu.Lock()
	w.receipts.heard()
	w.mu.Unlock()
}

// written records a write of a receipt (the sender, for every CONCLUDE).
func (w *Worker) written(r *transport.Conclude, ok bool) {
	w.mu.Lock()
	w.receipts.written(r, ok, time.Now())
	w.mu.Unlock()
}
