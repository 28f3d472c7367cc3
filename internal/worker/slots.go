package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/casparian/sentinel/transport"
)

// Slots: the worker's capacity, the jobs that hold it, and the drain.

// abortWait is how long jobs aborted at the drain deadline get to conclude
// before the worker concludes them ABORTED itself and exits.
const abortWait = 5 * time.Second

// slots are the jobs the worker accepted and has not concluded. Guarded by
// Worker.mu, together with receipts: a job leaves jobs and its receipt
// becomes pending in one critical section (release).
type slots struct {
	jobs       map[int64]*job // accepted, not yet concluded
	goroutines int            // job goroutines that have not returned
	draining   bool           // taking no new jobs
}

// job is one accepted DISPATCH.
type job struct {
	id      int64
	d       *transport.Dispatch
	cancel  context.CancelCauseFunc
	started time.Time
}

// running reports whether job id holds a slot.
func (s *slots) running(id int64) bool {
	_, ok := s.jobs[id]
	return ok
}

// list returns the jobs holding a slot, in no order.
func (s *slots) list() []*job {
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	return jobs
}

// refusal says why a new job cannot have a slot, or "" if it can.
func (s *slots) refusal(capacity int) string {
	switch {
	case s.draining:
		return "worker is shutting down"
	case len(s.jobs) >= capacity:
		return fmt.Sprintf("worker at capacity (%d of %d slots busy)", len(s.jobs), capacity)
	}
	return ""
}

func (w *Worker) dispatch(id int64, d *transport.Dispatch) {
	log := w.log.With().Int64("job_id", id).Str("plugin", d.PluginName).Logger()
	w.mu.Lock()
	if w.slots.running(id) {
		w.mu.Unlock()
		// Running it twice would write its output twice; the running
		// copy concludes for both.
		log.Warn().Msg("duplicate DISPATCH for a running job ignored")
		return
	}
	if reason := w.slots.refusal(w.opts.Concurrency); reason != "" {
		w.mu.Unlock()
		w.stats.rejected.Add(1)
		log.Info().Str("reason", reason).Msg("job rejected")
		w.send(transport.OpConclude, id, &transport.Conclude{Status: transport.StatusRejected, ErrorMessage: reason})
		return
	}
	ctx, cancel := context.WithCancelCause(w.jobsCtx)
	j := &job{id: id, d: d, cancel: cancel, started: time.Now()}
	w.slots.jobs[id] = j
	w.slots.goroutines++
	w.mu.Unlock()
	w.stats.started.Add(1)
	log.Info().Str("file", d.FilePath).Msg("job started")

	go func() {
		defer w.goroutineDone()
		defer cancel(nil)
		receipt := w.execute(ctx, id, d, log)
		w.conclude(j, receipt)
	}()
}

func (w *Worker) goroutineDone() {
	w.mu.Lock()
	w.slots.goroutines--
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// conclude sends j's one receipt. Whoever removes j from the running set
// sends it: the job's goroutine, or drain for a job that would not stop.
func (w *Worker) conclude(j *job, receipt transport.Conclude) {
	if !w.release(j, &receipt) {
		return
	}
	switch receipt.Status {
	case transport.StatusSuccess:
		w.stats.succeeded.Add(1)
	case transport.StatusAborted:
		w.stats.aborted.Add(1)
	default:
		w.stats.failed.Add(1)
	}
	w.send(transport.OpConclude, j.id, &receipt)
}

// release frees j's slot and makes r pending, in one critical section of
// mu. It returns false if j no longer holds its slot (someone else
// concluded it).
//
// The slot is free before the receipt leaves, so a DISPATCH the Sentinel
// sends in reply cannot find it still taken. The receipt is pending from
// the same moment: a re-identify in between would otherwise neither report
// the job as running nor re-send its receipt, and a heartbeat in between
// would leave the job out before its receipt was written.
func (w *Worker) release(j *job, r *transport.Conclude) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.slots.jobs[j.id] != j {
		return false
	}
	delete(w.slots.jobs, j.id)
	w.receipts.remember(j.id, r, time.Now())
	return true
}

func (w *Worker) abort(id int64) {
	w.mu.Lock()
	j := w.slots.jobs[id]
	w.mu.Unlock()
	if j == nil {
		// Already concluded (the receipt crossed the ABORT), or never ours.
		w.log.Debug().Int64("job_id", id).Msg("ABORT for a job not running here ignored")
		return
	}
	w.log.Info().Int64("job_id", id).Msg("ABORT received; cancelling the job")
	j.cancel(errAbortedBySentinel)
}

// drain stops taking jobs, waits for the running ones, and aborts what is
// left at the deadline.
func (w *Worker) drain() {
	w.mu.Lock()
	w.slots.draining = true
	n := len(w.slots.jobs)
	w.mu.Unlock()
	w.log.Info().Int("running", n).Dur("drain_timeout", w.opts.DrainTimeout).Msg("draining: taking no new jobs")
	// Re-identifying with no capabilities makes the Sentinel stop
	// dispatching here; a DISPATCH already on its way is REJECTED and
	// requeued by the Sentinel.
	w.identify()
	w.sendHeartbeat()

	deadline := time.NewTimer(w.opts.DrainTimeout)
	defer deadline.Stop()
	if w.waitIdle(deadline.C, w.abortNow) {
		return
	}
	n = w.abortAll(errDrainDeadline)
	w.log.Warn().Int("jobs", n).Msg("drain deadline reached: aborting running jobs")
	grace := time.NewTimer(abortWait)
	defer grace.Stop()
	if w.waitIdle(grace.C, nil) {
		return
	}
	// A plugin that ignores cancellation must not keep the process alive
	// or leave its job without a receipt.
	w.mu.Lock()
	stuck := w.slots.list()
	w.mu.Unlock()
	for _, j := range stuck {
		w.log.Error().Int64("job_id", j.id).Str("plugin", j.d.PluginName).Msg("job did not stop after abort; concluding it ABORTED")
		w.conclude(j, transport.Conclude{Status: transport.StatusAborted,
			ErrorMessage: fmt.Sprintf("%v; the plugin did not stop within %s", errDrainDeadline, abortWait)})
	}
}

// waitIdle waits until no job goroutine is left, or until timeout or abort
// fires (false).
func (w *Worker) waitIdle(timeout <-chan time.Time, abort <-chan struct{}) bool {
	for {
		w.mu.Lock()
		idle := w.slots.goroutines == 0
		w.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-w.changed:
		case <-timeout:
			return false
		case <-abort:
			return false
		}
	}
}

// abortAll cancels every running job. Cancelling under mu is safe: it only
// closes the jobs' Done channels (nothing registers context.AfterFunc).
func (w *Worker) abortAll(cause error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range w.slots.jobs {
		j.cancel(cause)
	}
	return len(w.slots.jobs)
}
