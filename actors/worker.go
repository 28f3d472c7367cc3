package actors

import (
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// workerSpec is what a worker said about itself. It lives outside the actor
// instance (the supervisor keeps it) so a restarted worker actor still knows
// its peer and capabilities.
type workerSpec struct {
	peer  Peer
	hello transport.Identify
}

// workerActor stands for one connected worker (one ZeroMQ identity). It
// sends DISPATCH, HEARTBEAT and ABORT, turns the worker's receipts into
// conclusions for the queue actor, reconciles the jobs it holds with what the
// worker reports, and stops itself when the worker goes silent; the supervisor
// then requeues whatever the worker still held.
type workerActor struct {
	deps  deps
	peers peers
	spec  *workerSpec
	log   zerolog.Logger

	running  map[int64]*heldJob
	lastSeen time.Time
	lastBeat time.Time // the worker's last HEARTBEAT; zero if none yet
	ready    bool      // running was rebuilt from the database
	deferred []any     // receipts that arrived before ready
	hb       timer
	// cancels are operator cancels of claims this actor does not hold yet:
	// the AbortJob overtook the AssignJobs carrying the claim.
	cancels map[int64]pendingCancel
	env     envState // see worker_env.go
	// sinksHash memoises the last completion's sinks hash (lineage).
	sinksHash sinksHashMemo
}

// pendingCancel is a cancel waiting for its claim (same job, same attempt).
type pendingCancel struct {
	attempt int64
	at      time.Time
}

// heldJob is a job this worker holds.
type heldJob struct {
	ref     job.Ref
	shadow  bool      // a shadow run's job: no lineage (JobClaim.Shadow)
	plugin  string    // "" for a job adopted after a restart
	retries int64     // retry_count at claim time, for backoff
	since   time.Time // claimed (or dispatched) at
	abortBy time.Time // set once ABORT was sent: requeue anyway after this
	missed  int       // consecutive heartbeats whose active_job_ids lacked it
	// cancelled: an operator cancelled it and ABORT was sent; the database
	// holds the cancel too, so any requeue ends it SKIPPED.
	cancelled bool
	// awaitingEnv: claimed but not dispatched yet, waiting for ENV_READY of
	// this env_hash (worker_env.go). The worker does not know the job yet.
	awaitingEnv string
	// timeout is the plugin's job timeout from the claim: 0 for
	// --job-timeout, negative for none. A job adopted after a restart has
	// 0: the global timeout holds until it ends.
	timeout time.Duration
	// artifactHash and sinks are the DISPATCH's manifest and resolved
	// sinks, for the lineage of a completion (empty for a job adopted
	// after a restart: the lineage then records the ACTIVE manifest).
	artifactHash string
	sinks        []transport.SinkConfig
}

// limit is the job's timeout given the global one; 0 means none.
func (j *heldJob) limit(global time.Duration) time.Duration {
	switch {
	case j.timeout < 0:
		return 0
	case j.timeout > 0:
		return j.timeout
	}
	return global
}

func newWorkerProps(d deps, p peers, spec *workerSpec) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &workerActor{deps: d, peers: p, spec: spec,
			log: d.log.With().Str("component", "worker").Str("worker_id", spec.peer.Key).Logger()}
	})
}

func (a *workerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.running = map[int64]*heldJob{}
		a.cancels = map[int64]pendingCancel{}
		a.env = newEnvState()
		a.lastSeen = time.Now()
		ctx.Request(a.peers.queue, &RunningJobsQuery{Worker: a.spec.peer.Key})
		a.hb.arm(ctx.ActorSystem(), ctx.Self(), untilBeat(time.Now(), a.deps.cfg.HeartbeatInterval))
	case *RunningJobs:
		a.rebuilt(ctx, m)
	case *tick:
		a.heartbeat(ctx, m)
	case *AssignJobs:
		a.assign(ctx, m)
	case *CapacityRequest:
		a.announce(ctx)
	case *IdentifyReceived:
		a.spec.hello = *m.Hello
		a.log.Info().Strs("capabilities", m.Hello.Capabilities).Int("slots", m.Hello.Slots()).Msg("worker re-identified")
		a.announce(ctx)
	case *HeartbeatReceived:
		a.lastBeat = time.Now()
		a.whenReady(m, func() { a.reconcile(ctx, m.Beat) })
	case *OtherReceived:
		// Nothing to do: the router has stamped it (see seen).
	case *EnvReadyReceived:
		a.envReady(ctx, m)
	case *Environment:
		a.prepare(ctx, m)
	case *ConcludeReceived:
		a.whenReady(m, func() { a.conclude(ctx, m) })
	case *ErrReceived:
		a.whenReady(m, func() { a.workerErr(ctx, m) })
	case *DispatchFailed:
		if j, ok := a.running[m.JobID]; ok {
			a.release(ctx, m.JobID)
			a.requeue(ctx, j, "dispatch could not be sent to worker "+a.spec.peer.Key)
		}
	case *AbortJob:
		a.cancel(ctx, m)
	case *WorkerInfoQuery:
		ctx.Respond(a.info())
	case *crash:
		panic("injected crash: worker " + a.spec.peer.Key)
	case *actor.Stopping:
		a.hb.stop()
	case *actor.Restarting:
		a.hb.stop()
	}
}

// whenReady runs f now, or after the running jobs are rebuilt: a receipt that
// overtook the rebuild must not be mistaken for a stale one.
func (a *workerActor) whenReady(m any, f func()) {
	if a.ready {
		f()
		return
	}
	a.deferred = append(a.deferred, m)
}

func (a *workerActor) rebuilt(ctx actor.Context, m *RunningJobs) {
	if m.Err != nil {
		// Without knowing what it holds the worker cannot be used safely;
		// a panic restarts this actor, which asks again.
		panic("rebuild running jobs: " + m.Err.Error())
	}
	for _, j := range m.Jobs {
		if _, ok := a.running[j.Ref.JobID]; !ok {
			a.running[j.Ref.JobID] = &heldJob{ref: j.Ref, retries: j.RetryCount, since: j.ClaimTime}
		}
	}
	a.ready = true
	if len(m.Jobs) > 0 {
		a.log.Info().Int("jobs", len(m.Jobs)).Msg("worker holds running jobs")
	}
	a.announce(ctx)
	deferred := a.deferred
	a.deferred = nil
	for _, d := range deferred {
		switch d := d.(type) {
		case *ConcludeReceived:
			a.conclude(ctx, d)
		case *ErrReceived:
			a.workerErr(ctx, d)
		case *HeartbeatReceived:
			a.reconcile(ctx, d.Beat)
		}
	}
}

func (a *workerActor) announce(ctx actor.Context) {
	if !a.ready {
		return // rebuilt() announces
	}
	ctx.Send(a.peers.dispatcher, &WorkerAvailable{
		Worker:  a.spec.peer.Key,
		PID:     ctx.Self(),
		Plugins: a.spec.hello.Capabilities,
		Slots:   a.spec.hello.Slots(),
		Running: len(a.running),
	})
	if len(a.env.ready) > 0 || len(a.env.avoid) > 0 {
		a.announceEnvs(ctx)
	}
}

// heartbeat runs every heartbeat interval: it drops a silent worker, enforces
// the job timeout, and probes the worker with a HEARTBEAT (and a PING when
// it does not answer HEARTBEATs).
func (a *workerActor) heartbeat(ctx actor.Context, t *tick) {
	if !a.hb.current(t) {
		return
	}
	now := time.Now()
	if silent := now.Sub(a.seen()); silent > a.deps.cfg.WorkerTimeout {
		a.log.Warn().Dur("silent", silent).Int("running", len(a.running)).Msg("worker timed out")
		ctx.Stop(ctx.Self()) // the supervisor requeues its jobs
		return
	}
	if a.ready {
		a.enforceJobTimeout(ctx, now)
	}
	a.checkEnvTimeouts(ctx, now)
	a.send(ctx, transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive})
	a.ping(now)
	a.hb.arm(ctx.ActorSystem(), ctx.Self(), untilBeat(now, a.deps.cfg.HeartbeatInterval))
}

// seen is when the worker was last heard from. Only the router's record
// counts: it is stamped at the socket for everything read (ZMTP PONGs
// included), before any mailbox, so a backlog of job traffic in the actors
// never looks like silence, and the router keeps it after a connection
// closes (the supervisor tracks every worker's identity). lastSeen holds the
// newest stamp read; it starts when this actor starts, so a worker that was
// never heard from since still gets a whole timeout.
func (a *workerActor) seen() time.Time {
	if t := a.deps.router.LastSeen(a.spec.peer.Identity); t.After(a.lastSeen) {
		a.lastSeen = t
	}
	return a.lastSeen
}

// ping keeps a worker that never answers HEARTBEAT alive from below the
// protocol. The original Python and Rust workers log "Unhandled OpCode: 4"
// and the Python one runs plugins inside its receive loop; a ZMTP PING is
// answered by libzmq's own I/O thread even then, and the PONG moves the
// router's LastSeen like anything else the worker sends. A worker that
// answers neither still goes silent and times out, and a dead one has no
// connection to take the PING. A worker that sent a HEARTBEAT within the
// last two intervals needs no PING, so heartbeating workers (ours) cost
// nothing extra; the others get one small command frame per interval, on
// the shared beat. zmq4 workers, which do not answer PING, simply skip it.
func (a *workerActor) ping(now time.Time) {
	if now.Sub(a.lastBeat) <= 2*a.deps.cfg.HeartbeatInterval {
		return
	}
	if err := a.deps.router.Ping(a.spec.peer.Identity); err != nil {
		a.deps.stats.SendFailures.Add(1)
		return
	}
	a.deps.stats.PingsSent.Add(1)
}

// untilBeat returns how long from now to the next beat: the next whole
// multiple of interval since the Unix epoch. Every worker actor heartbeats
// on the same beat, so a thousand idle workers cost one burst per interval
// (the scheduler stays awake through it) instead of a thousand wake-ups
// spread over it: 1,000 idle workers went from 6.0-6.5 % to 1.8-1.9 % of
// a core (cmd/casparian-bench --idle-measure). A beat closer than a
// tenth of the interval is skipped, so ticks never come in quick succession.
func untilBeat(now time.Time, interval time.Duration) time.Duration {
	d := interval - time.Duration(now.UnixNano()%int64(interval))
	if d < interval/10 {
		d += interval
	}
	return d
}

// enforceJobTimeout sends ABORT for jobs past --job-timeout and requeues the
// ones whose ABORT went unanswered for --abort-grace.
//
// An operator's cancel sets abortBy too, so an ABORT the worker never
// confirms ends the job (SKIPPED, since the database holds the cancel) even
// with the job timeout off.
func (a *workerActor) enforceJobTimeout(ctx actor.Context, now time.Time) {
	for id, j := range a.running {
		limit := j.limit(a.deps.cfg.JobTimeout)
		switch {
		case j.awaitingEnv != "":
			// Not dispatched yet: --env-timeout bounds the wait.
		case limit > 0 && j.abortBy.IsZero() && now.Sub(j.since) > limit:
			j.abortBy = now.Add(a.deps.cfg.AbortGrace)
			a.log.Warn().Int64("job_id", id).Dur("timeout", limit).Msg("job timed out; sending ABORT")
			a.send(ctx, transport.OpAbort, id, nil)
		case !j.abortBy.IsZero() && now.After(j.abortBy):
			a.release(ctx, id)
			if j.cancelled {
				a.requeue(ctx, j, "abort not confirmed")
				continue
			}
			a.requeue(ctx, j, "job timeout after "+limit.String()+"; abort not confirmed")
		}
	}
	for id, c := range a.cancels {
		if now.Sub(c.at) > 2*a.deps.cfg.DBTimeout { // no claim of it is on its way any more
			delete(a.cancels, id)
		}
	}
}

// reconcileSettle is the least time a held job must have been dispatched
// before a report that lacks it counts (otherwise two heartbeat intervals).
// A worker may send its heartbeats from another goroutine than the one that
// takes in DISPATCHes; with short intervals (tests use 100 ms) a worker
// starved for a few hundred milliseconds on a loaded machine sent two
// reports before it had read a DISPATCH, and lost its job (seen with the
// race detector at load 15+).
const reconcileSettle = time.Second

// reconcile compares the jobs the worker reports with the jobs it holds. A
// held job missing from two reports in a row, dispatched long enough ago that
// the DISPATCH cannot still be on its way, was lost: it is requeued. A
// reported job the worker does not hold (requeued or re-claimed since) is
// aborted so it does not run twice. Workers that do not send active_job_ids
// are not reconciled.
func (a *workerActor) reconcile(ctx actor.Context, beat *transport.Heartbeat) {
	if beat.ActiveJobIDs == nil {
		return
	}
	reported := make(map[int64]bool, len(beat.ActiveJobIDs))
	for _, id := range beat.ActiveJobIDs {
		reported[id] = true
		if _, ok := a.running[id]; !ok {
			a.deps.stats.StaleMessages.Add(1)
			a.log.Warn().Int64("job_id", id).Msg("worker runs a job it does not hold; sending ABORT")
			a.send(ctx, transport.OpAbort, id, nil)
		}
	}
	settled := time.Now().Add(-max(2*a.deps.cfg.HeartbeatInterval, reconcileSettle))
	for id, j := range a.running {
		if reported[id] {
			j.missed = 0
			continue
		}
		if j.since.After(settled) || j.awaitingEnv != "" {
			continue
		}
		if j.missed++; j.missed >= 2 {
			a.release(ctx, id)
			a.requeue(ctx, j, "worker "+a.spec.peer.Key+" no longer reports the job")
		}
	}
}

func (a *workerActor) assign(ctx actor.Context, m *AssignJobs) {
	now := time.Now()
	for _, c := range m.Claims {
		j := &heldJob{ref: c.Ref, retries: c.RetryCount, since: now, timeout: c.JobTimeout, shadow: c.Shadow}
		if c.Dispatch != nil {
			j.plugin = c.Dispatch.PluginName
			j.artifactHash, j.sinks = c.Dispatch.ArtifactHash, c.Dispatch.Sinks
		}
		if pc, ok := a.cancels[c.Ref.JobID]; ok && pc.attempt == c.Ref.Attempt {
			// Cancelled while the claim was on its way: never dispatch it.
			// The requeue ends it SKIPPED (the database holds the cancel).
			delete(a.cancels, c.Ref.JobID)
			ctx.Send(a.peers.dispatcher, &SlotsFreed{Worker: a.spec.peer.Key, N: 1})
			a.requeue(ctx, j, "cancelled before dispatch")
			continue
		}
		if env := a.needsEnv(c); env != "" {
			a.awaitEnv(ctx, env, c, j)
			continue
		}
		a.dispatch(ctx, c, j)
	}
}

// dispatch sends the DISPATCH of a claim the worker holds.
func (a *workerActor) dispatch(ctx actor.Context, c JobClaim, j *heldJob) {
	j.awaitingEnv = ""
	j.since = time.Now()
	a.running[c.Ref.JobID] = j
	a.send(ctx, transport.OpDispatch, c.Ref.JobID, c.Dispatch)
	a.deps.stats.JobsDispatched.Add(1)
	if !c.RequestedAt.IsZero() {
		a.deps.stats.DispatchLatency.Since(c.RequestedAt)
	}
	a.log.Debug().Int64("job_id", c.Ref.JobID).Str("plugin", c.Dispatch.PluginName).Msg("job dispatched")
}

// take removes a job the worker has finished with; ok is false when the
// worker does not hold it (late, duplicate or spoofed), which is counted.
func (a *workerActor) take(ctx actor.Context, jobID int64, op transport.Opcode) (*heldJob, bool) {
	j, ok := a.running[jobID]
	if !ok {
		a.deps.stats.StaleMessages.Add(1)
		a.log.Warn().Int64("job_id", jobID).Stringer("op", op).Msg("ignored: worker does not hold this job")
		return nil, false
	}
	a.release(ctx, jobID)
	return j, true
}

func (a *workerActor) release(ctx actor.Context, jobID int64) {
	delete(a.running, jobID)
	ctx.Send(a.peers.dispatcher, &SlotsFreed{Worker: a.spec.peer.Key, N: 1})
}

func (a *workerActor) requeue(ctx actor.Context, j *heldJob, reason string) {
	ctx.Send(a.peers.queue, &ConcludeJob{Conclusion: job.Conclusion{Ref: j.ref, Kind: job.ConcludeRequeue, Message: reason,
		NextRunAt: time.Now().Add(Backoff(a.deps.cfg.RetryBackoff, a.deps.cfg.RetryBackoffMax, j.retries)), Plugin: j.plugin}})
}

func (a *workerActor) conclude(ctx actor.Context, m *ConcludeReceived) {
	j, ok := a.take(ctx, m.JobID, transport.OpConclude)
	if !ok {
		return
	}
	a.observeDuration(j)
	if m.Receipt.Status == transport.StatusAborted && !j.cancelled {
		// An abort is never the plugin's verdict. Either we aborted it for
		// running too long, or the worker stopped it on its own (it is
		// shutting down, or it acted on an ABORT meant for an earlier
		// claim of the same job: ABORT names only the job). Both are
		// infrastructure faults: retry, within --max-retries.
		reason := "job timeout after " + j.limit(a.deps.cfg.JobTimeout).String()
		if j.abortBy.IsZero() {
			reason = "aborted by the worker: " + orDefault(m.Receipt.ErrorMessage, "no message")
		}
		a.requeue(ctx, j, reason)
		return
	}
	if m.Receipt.Status == transport.StatusRejected {
		a.deps.stats.JobsRejected.Add(1)
	}
	c := receiptConclusion(j.ref, m.Receipt, j.retries, a.deps)
	c.Plugin, c.Shadow = j.plugin, j.shadow
	if c.Kind == job.ConcludeComplete && a.deps.cfg.Lineage {
		c.ArtifactHash, c.SinksHash = lineageOf(j, &a.sinksHash)
	}
	ctx.Send(a.peers.queue, c)
}

func (a *workerActor) workerErr(ctx actor.Context, m *ErrReceived) {
	if m.JobID == 0 {
		if !a.envErr(ctx, m) {
			a.log.Warn().Str("error", m.Err.Message).Msg("worker reported an error")
		}
		return
	}
	j, ok := a.take(ctx, m.JobID, transport.OpErr)
	if !ok {
		return
	}
	a.observeDuration(j)
	c := errConclusion(j.ref, m.Err)
	c.Plugin = j.plugin
	ctx.Send(a.peers.queue, c)
}

// observeDuration records how long j ran, in all and for its plugin.
func (a *workerActor) observeDuration(j *heldJob) {
	d := time.Since(j.since).Seconds()
	a.deps.stats.JobDuration.Observe(d)
	a.deps.stats.ByPlugin.For(j.plugin).Duration.Observe(d)
}

// cancel sends ABORT for a job an operator cancelled. The job then ends when
// the worker concludes (ABORTED → SKIPPED) or, unconfirmed, after the abort
// grace. A job not held yet is remembered until its claim arrives.
func (a *workerActor) cancel(ctx actor.Context, m *AbortJob) {
	j, ok := a.running[m.Ref.JobID]
	if !ok {
		a.cancels[m.Ref.JobID] = pendingCancel{attempt: m.Ref.Attempt, at: time.Now()}
		return
	}
	if j.ref.Attempt != m.Ref.Attempt {
		return // a different claim of the job; the cancel was for an old one
	}
	if j.awaitingEnv != "" {
		// Never dispatched: nothing to abort. The requeue ends it SKIPPED.
		a.release(ctx, m.Ref.JobID)
		a.requeue(ctx, j, "cancelled before dispatch")
		return
	}
	j.cancelled = true
	if j.abortBy.IsZero() {
		j.abortBy = time.Now().Add(a.deps.cfg.AbortGrace)
	}
	a.log.Info().Int64("job_id", m.Ref.JobID).Msg("job cancelled by operator; sending ABORT")
	a.send(ctx, transport.OpAbort, m.Ref.JobID, nil)
}

// info describes the worker for the operator API.
func (a *workerActor) info() *WorkerInfo {
	running := make([]int64, 0, len(a.running))
	for id := range a.running {
		running = append(running, id)
	}
	sort.Slice(running, func(i, j int) bool { return running[i] < running[j] })
	h := a.spec.hello
	fingerprint := ""
	if key, ok := a.deps.router.PeerKey(a.spec.peer.Identity); ok {
		fingerprint = key.Fingerprint()
	}
	return &WorkerInfo{
		KeyFingerprint: fingerprint,
		ID:             a.spec.peer.Key,
		Name:           h.WorkerID,
		Version:        h.Version,
		Capabilities:   append([]string(nil), h.Capabilities...),
		Slots:          h.Slots(),
		Running:        running,
		LastSeen:       a.seen(),
		Ready:          a.ready,
	}
}

func (a *workerActor) send(ctx actor.Context, op transport.Opcode, jobID int64, payload any) {
	ctx.Send(a.peers.socket, &SendMessage{To: a.spec.peer, Op: op, JobID: jobID, Payload: payload})
}

// receiptConclusion maps a CONCLUDE to what it does to the job: SUCCESS →
// COMPLETED with the receipt, FAILED → FAILED with the message, ABORTED →
// SKIPPED when an operator cancelled the job (conclude requeues the other
// aborts first), REJECTED → requeued with backoff (FAILED over the retry
// limit).
func receiptConclusion(ref job.Ref, r *transport.Conclude, retries int64, d deps) *ConcludeJob {
	c := &ConcludeJob{Conclusion: job.Conclusion{Ref: ref}}
	switch r.Status {
	case transport.StatusSuccess:
		c.Kind, c.Message, c.Metrics, c.Artifacts = job.ConcludeComplete, "Success", r.Metrics, r.Artifacts
	case transport.StatusFailed:
		c.Kind, c.Message = job.ConcludeFail, orDefault(r.ErrorMessage, "plugin failed (no message)")
	case transport.StatusAborted:
		// FAILED, or SKIPPED when an operator cancelled the job.
		c.Kind, c.Message = job.ConcludeAbort, "aborted: "+orDefault(r.ErrorMessage, "no message")
	default: // transport.StatusRejected; the codec admits no other status
		c.Kind, c.Message = job.ConcludeRequeue, "rejected by worker "+ref.Worker
		c.NextRunAt = time.Now().Add(Backoff(d.cfg.RetryBackoff, d.cfg.RetryBackoffMax, retries))
	}
	return c
}

// errConclusion maps an ERR about a job to FAILED with its message.
func errConclusion(ref job.Ref, e *transport.Err) *ConcludeJob {
	return &ConcludeJob{Conclusion: job.Conclusion{Ref: ref, Kind: job.ConcludeFail, Message: "worker error: " + orDefault(e.Message, "no message")}}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
