package worker

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/transport"
)

// newIdle returns a Worker that never runs: what it sends stays in its
// outbox for the test to read.
func newIdle(t *testing.T) *Worker {
	t.Helper()
	w, err := New(Options{Identity: "test-worker", Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// hold puts a job in a slot as dispatch does, without running it.
func (w *Worker) hold(id int64) *job {
	j := &job{id: id, d: &transport.Dispatch{PluginName: "csv"}, cancel: func(error) {}, started: time.Now()}
	w.mu.Lock()
	w.slots.jobs[id] = j
	w.mu.Unlock()
	return j
}

// queued takes what the outbox holds.
func (w *Worker) queued() []outMsg {
	var out []outMsg
	for {
		select {
		case m := <-w.outbox:
			out = append(out, m)
		default:
			return out
		}
	}
}

func never(int64) bool { return false }

// The moment a job's slot frees, before conclude has queued its receipt, a
// reconnect may come. The receipt must already be pending: the re-IDENTIFY
// re-sends it, and every heartbeat until its write lists the job. (Freeing
// the slot and remembering the receipt in two critical sections lost it.)
func TestWorker_ReceiptIsPendingTheMomentItsSlotFrees(t *testing.T) {
	t.Parallel()
	w := newIdle(t)
	j := w.hold(7)
	r := &transport.Conclude{Status: transport.StatusSuccess}
	if !w.release(j, r) {
		t.Fatal("release: job 7 did not hold its slot")
	}
	if hb := w.heartbeat(); !slices.Equal(hb.ActiveJobIDs, []int64{7}) || hb.Status != transport.HeartbeatBusy {
		t.Fatalf("heartbeat between the slot freeing and the receipt's send: %+v, want job 7 listed", hb)
	}

	w.reidentify()
	got := w.queued()
	var ops []transport.Opcode
	for _, m := range got {
		ops = append(ops, m.op)
	}
	want := []transport.Opcode{transport.OpIdentify, transport.OpConclude, transport.OpHeartbeat}
	if !slices.Equal(ops, want) {
		t.Fatalf("re-identify queued %v, want %v", ops, want)
	}
	if got[1].jobID != 7 || got[1].payload != r {
		t.Fatalf("re-identify re-sent %+v, want job 7's receipt", got[1])
	}
	if w.release(j, r) {
		t.Fatal("release twice: a job has one receipt")
	}

	// Once a write was tried, the receipt, not the heartbeat, speaks for
	// the job; it stays pending until acknowledged.
	w.written(r, false)
	if hb := w.heartbeat(); len(hb.ActiveJobIDs) != 0 || hb.Status != transport.HeartbeatIdle {
		t.Fatalf("heartbeat after the receipt's write: %+v, want none", hb)
	}
	if replay := w.replayable(); len(replay) != 1 || replay[0].jobID != 7 {
		t.Fatalf("after a failed write: replayable %+v, want job 7", replay)
	}
}

// The same invariant under load: while jobs conclude, a job is at every
// moment running or its receipt pending, as a heartbeat or a re-identify
// sees them.
func TestWorker_ConcludingJobIsAlwaysRunningOrPending(t *testing.T) {
	t.Parallel()
	w := newIdle(t)
	const rounds, jobs = 10, 200
	for round := range rounds {
		held := make([]*job, jobs)
		for i := range held {
			held[i] = w.hold(int64(round*jobs + i + 1))
		}
		stop := make(chan struct{})
		var gap int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				w.mu.Lock()
				for _, j := range held {
					if !w.slots.running(j.id) && !slices.ContainsFunc(w.receipts.pending, func(p *pendingReceipt) bool { return p.jobID == j.id }) {
						gap = j.id
					}
				}
				w.mu.Unlock()
			}
		}()
		var wg sync.WaitGroup
		for _, j := range held {
			wg.Go(func() { w.conclude(j, transport.Conclude{Status: transport.StatusSuccess}) })
		}
		wg.Wait()
		close(stop)
		<-done
		if gap != 0 {
			t.Fatalf("job %d was neither running nor pending while it concluded", gap)
		}
		for _, m := range w.queued() {
			if r, ok := m.payload.(*transport.Conclude); ok {
				w.written(r, true)
			}
		}
		w.heard()
	}
}

// A write acknowledges nothing across a reconnect: what the Sentinel says on
// a new connection does not cover a receipt written on the old one.
func TestReceipts_WriteBeforeAReconnectIsNotAcknowledgedAfterIt(t *testing.T) {
	t.Parallel()
	var rs receipts
	r := &transport.Conclude{Status: transport.StatusSuccess}
	t0 := time.Now()
	rs.remember(1, r, t0)
	rs.written(r, true, t0)
	rs.newEpoch() // reconnected: the old connection may have lost it
	rs.heard()    // the Sentinel speaks on the new one
	if got := rs.replayable(t0.Add(time.Hour), never); len(got) != 1 {
		t.Fatalf("a receipt written before the reconnect was taken as acknowledged: %+v", got)
	}

	// Heard before the write: not acknowledged either.
	rs.heard()
	rs.written(r, true, t0.Add(time.Hour))
	if got := rs.replayable(t0.Add(3*time.Hour), never); len(got) != 1 {
		t.Fatalf("a receipt written after the Sentinel last spoke was taken as acknowledged: %+v", got)
	}

	// Written on this epoch, then heard: kept for replayWindow, then gone.
	written := t0.Add(4 * time.Hour)
	rs.written(r, true, written)
	rs.heard()
	if got := rs.replayable(written.Add(replayWindow), never); len(got) != 1 {
		t.Fatalf("acknowledged receipt dropped within replayWindow: %+v", got)
	}
	if got := rs.replayable(written.Add(replayWindow+time.Nanosecond), never); len(got) != 0 {
		t.Fatalf("acknowledged receipt kept past replayWindow: %+v", got)
	}
}

func TestReceipts_OneEntryPerReceiptAndAtMostMaxPending(t *testing.T) {
	t.Parallel()
	var rs receipts
	now := time.Now()
	first := &transport.Conclude{Status: transport.StatusFailed}
	rs.remember(1, first, now)
	rs.remember(1, first, now)
	if len(rs.pending) != 1 {
		t.Fatalf("%d entries for one receipt", len(rs.pending))
	}
	// remember prunes before it appends: maxPending, and the newest.
	for id := range int64(maxPending + 1) {
		rs.remember(id+2, &transport.Conclude{Status: transport.StatusSuccess}, now)
	}
	if len(rs.pending) != maxPending+1 || rs.pending[0].jobID != 2 {
		t.Fatalf("%d pending, oldest job %d: want %d, the first dropped", len(rs.pending), rs.pending[0].jobID, maxPending+1)
	}
	// A job dispatched again is not replayed: its new run concludes.
	got := rs.replayable(now, func(id int64) bool { return id == 3 })
	if len(got) != maxPending-1 || got[0].jobID != 4 {
		t.Fatalf("replayable: %d receipts from job %d, want %d from job 4", len(got), got[0].jobID, maxPending-1)
	}
}

func TestWorker_RejectedReceiptIsNotKept(t *testing.T) {
	t.Parallel()
	w := newIdle(t)
	w.send(transport.OpConclude, 3, &transport.Conclude{Status: transport.StatusRejected, ErrorMessage: "full"})
	w.send(transport.OpConclude, 4, &transport.Conclude{Status: transport.StatusFailed})
	if got := w.replayable(); len(got) != 1 || got[0].jobID != 4 {
		t.Fatalf("pending %+v, want job 4 only", got)
	}
}
