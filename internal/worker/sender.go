package worker

import (
	"slices"
	"time"

	"github.com/casparian/sentinel/transport"
)

// The sender: one goroutine writes every message to the DEALER, because
// transport.Dealer wants Send on one goroutine, and sends the periodic
// heartbeats, so they go out on time however busy the jobs are.

// outboxSize bounds messages waiting for the sender goroutine.
const outboxSize = 1024

// outMsg is a message for the sender goroutine.
type outMsg struct {
	op      transport.Opcode
	jobID   int64
	payload any
}

// send queues a message for the sender goroutine. It blocks only while the
// outbox is full, and drops the message once the worker has stopped.
func (w *Worker) send(op transport.Opcode, jobID int64, payload any) {
	if r, ok := payload.(*transport.Conclude); ok && r.Status != transport.StatusRejected {
		// REJECTED is not kept: if it is lost the job stays RUNNING under
		// us, and the Sentinel's heartbeat reconciliation requeues it.
		w.mu.Lock()
		w.receipts.remember(jobID, r, time.Now())
		w.mu.Unlock()
	}
	select {
	case <-w.senderDone:
		w.log.Warn().Stringer("op", op).Int64("job_id", jobID).Msg("worker stopped: message dropped")
		return
	default:
	}
	select {
	case w.outbox <- outMsg{op: op, jobID: jobID, payload: payload}:
	case <-w.senderDone:
		w.log.Warn().Stringer("op", op).Int64("job_id", jobID).Msg("worker stopped: message dropped")
	}
}

// sendHeartbeat queues a heartbeat behind what is already queued; its job
// list is taken when it is written.
func (w *Worker) sendHeartbeat() { w.send(transport.OpHeartbeat, 0, nil) }

// kickHeartbeat has the sender write a heartbeat next, ahead of the queue:
// the answer to the Sentinel's probe.
func (w *Worker) kickHeartbeat() {
	select {
	case w.beatNow <- struct{}{}:
	default:
	}
}

// sendLoop is the sender goroutine. It owns Dealer.Send and reannounce.
func (w *Worker) sendLoop() {
	defer close(w.senderDone)
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case m := <-w.outbox:
			w.write(m)
		case <-w.beatNow:
			w.flushOutbox()
			w.write(outMsg{op: transport.OpHeartbeat, payload: w.heartbeat()})
		case <-t.C:
			w.flushOutbox()
			if w.reannounce {
				w.reannounce = false
				// The IDENTIFY that failed had the pending receipts
				// behind it; they follow this one too.
				w.stats.identifies.Add(1)
				w.write(outMsg{op: transport.OpIdentify, payload: w.hello()})
				for _, r := range w.replayable() {
					w.stats.replayed.Add(1)
					w.write(outMsg{op: transport.OpConclude, jobID: r.jobID, payload: r.receipt})
				}
			}
			w.write(outMsg{op: transport.OpHeartbeat, payload: w.heartbeat()})
		case <-w.stopSender:
			for {
				select {
				case m := <-w.outbox:
					w.write(m)
				default:
					return
				}
			}
		}
	}
}

// flushOutbox writes what is queued now, so that a heartbeat, whose job
// list is taken when it is written, never overtakes a receipt queued before
// it: a heartbeat that leaves out a job whose receipt has not gone yet
// tells the Sentinel the job is gone.
func (w *Worker) flushOutbox() {
	for range len(w.outbox) {
		select {
		case m := <-w.outbox:
			w.write(m)
		default:
			return
		}
	}
}

// write sends one message on the current DEALER. Only the sender goroutine
// calls it.
func (w *Worker) write(m outMsg) {
	if m.op == transport.OpHeartbeat && m.payload == nil {
		m.payload = w.heartbeat()
	}
	d := w.conn.current()
	w.log.Trace().Stringer("op", m.op).Int64("job_id", m.jobID).Msg("send")
	err := d.Send(m.op, uint64(m.jobID), m.payload)
	if r, ok := m.payload.(*transport.Conclude); ok {
		w.written(r, err == nil)
	}
	if err != nil {
		// Most likely the connection is down; receipts stay pending (see
		// receipts) and are re-sent after the reconnect. Heartbeats fail
		// quietly, or an outage would flood the log.
		ev := w.log.Warn()
		if m.op == transport.OpHeartbeat {
			ev = w.log.Debug()
		}
		ev.Err(err).Stringer("op", m.op).Int64("job_id", m.jobID).Msg("send failed")
		if m.op == transport.OpIdentify {
			w.reannounce = true
		}
	}
}

// heartbeat reports the running jobs, oldest first, and then the jobs whose
// receipts are queued but not written yet: the Sentinel requeues a job that
// two heartbeats leave out, and one that concluded is not gone until the
// Sentinel has its receipt. Both lists are read in one critical section of
// mu, so a job that concludes meanwhile is in one or the other.
func (w *Worker) heartbeat() *transport.Heartbeat {
	w.mu.Lock()
	jobs := w.slots.list()
	concluding := w.receipts.unwritten(w.slots.running)
	w.mu.Unlock()
	slices.SortFunc(jobs, func(a, b *job) int { return a.started.Compare(b.started) })
	hb := &transport.Heartbeat{Status: transport.HeartbeatIdle, ActiveJobIDs: make([]int64, 0, len(jobs)+len(concluding))}
	for _, j := range jobs {
		hb.ActiveJobIDs = append(hb.ActiveJobIDs, j.id)
	}
	hb.ActiveJobIDs = append(hb.ActiveJobIDs, concluding...)
	hb.ActiveJobCount = len(hb.ActiveJobIDs)
	if len(hb.ActiveJobIDs) > 0 {
		hb.Status = transport.HeartbeatBusy
		hb.CurrentJobID = &hb.ActiveJobIDs[0]
	}
	return hb
}
