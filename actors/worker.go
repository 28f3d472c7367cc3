package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

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
// sends DISPATCH and HEARTBEAT, turns the worker's receipts into conclusions
// for the queue actor, and stops itself when the worker goes silent; the
// supervisor then requeues whatever the worker still held.
type workerActor struct {
	deps  deps
	peers peers
	spec  *workerSpec
	log   zerolog.Logger

	running  map[int64]JobRef
	retries  map[int64]int64 // retry_count at claim time, for backoff
	lastSeen time.Time
	ready    bool  // running was rebuilt from the database
	deferred []any // messages that arrived before ready
	hb       timer
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
		a.running = map[int64]JobRef{}
		a.retries = map[int64]int64{}
		a.lastSeen = time.Now()
		ctx.Request(a.peers.queue, &RunningJobsQuery{Worker: a.spec.peer.Key})
		a.hb.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.HeartbeatInterval)
	case *RunningJobs:
		a.rebuilt(ctx, m)
	case *tick:
		a.heartbeat(ctx, m)
	case *AssignJobs:
		a.assign(ctx, m)
	case *CapacityRequest:
		a.announce(ctx)
	case *IdentifyReceived:
		a.lastSeen = time.Now()
		a.spec.hello = *m.Hello
		a.log.Info().Strs("capabilities", m.Hello.Capabilities).Int("slots", m.Hello.Slots()).Msg("worker re-identified")
		a.announce(ctx)
	case *HeartbeatReceived:
		a.lastSeen = time.Now()
	case *OtherReceived:
		a.lastSeen = time.Now()
	case *ConcludeReceived:
		a.lastSeen = time.Now()
		a.whenReady(m, func() { a.conclude(ctx, m) })
	case *ErrReceived:
		a.lastSeen = time.Now()
		a.whenReady(m, func() { a.workerErr(ctx, m) })
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
	for _, ref := range m.Refs {
		if _, ok := a.running[ref.JobID]; !ok {
			a.running[ref.JobID] = ref
		}
	}
	a.ready = true
	if len(m.Refs) > 0 {
		a.log.Info().Int("jobs", len(m.Refs)).Msg("worker holds running jobs")
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
}

func (a *workerActor) heartbeat(ctx actor.Context, t *tick) {
	if !a.hb.current(t) {
		return
	}
	if silent := time.Since(a.lastSeen); silent > a.deps.cfg.WorkerTimeout {
		a.log.Warn().Dur("silent", silent).Int("running", len(a.running)).Msg("worker timed out")
		ctx.Stop(ctx.Self()) // the supervisor requeues its jobs
		return
	}
	ctx.Send(a.peers.socket, &SendMessage{To: a.spec.peer, Op: transport.OpHeartbeat,
		Payload: &transport.Heartbeat{Status: transport.HeartbeatAlive}})
	a.hb.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.HeartbeatInterval)
}

func (a *workerActor) assign(ctx actor.Context, m *AssignJobs) {
	for _, c := range m.Claims {
		a.running[c.Ref.JobID] = c.Ref
		a.retries[c.Ref.JobID] = c.RetryCount
		ctx.Send(a.peers.socket, &SendMessage{To: a.spec.peer, Op: transport.OpDispatch,
			JobID: c.Ref.JobID, Payload: c.Dispatch})
		a.deps.stats.JobsDispatched.Add(1)
		a.log.Debug().Int64("job_id", c.Ref.JobID).Str("plugin", c.Dispatch.PluginName).Msg("job dispatched")
	}
}

// take removes a job the worker has finished with; ok is false when the
// worker does not hold it (late, duplicate or spoofed), which is counted.
func (a *workerActor) take(ctx actor.Context, jobID int64, what transport.Opcode) (JobRef, int64, bool) {
	ref, ok := a.running[jobID]
	if !ok {
		a.deps.stats.StaleMessages.Add(1)
		a.log.Warn().Int64("job_id", jobID).Stringer("op", what).Msg("ignored: worker does not hold this job")
		return JobRef{}, 0, false
	}
	retries := a.retries[jobID]
	delete(a.running, jobID)
	delete(a.retries, jobID)
	ctx.Send(a.peers.dispatcher, &SlotsFreed{Worker: a.spec.peer.Key, N: 1})
	return ref, retries, true
}

func (a *workerActor) conclude(ctx actor.Context, m *ConcludeReceived) {
	ref, retries, ok := a.take(ctx, m.JobID, transport.OpConclude)
	if !ok {
		return
	}
	r := m.Receipt
	c := &ConcludeJob{Ref: ref}
	switch r.Status {
	case transport.StatusSuccess:
		c.Kind, c.Message, c.Metrics, c.Artifacts = ConcludeComplete, "Success", r.Metrics, r.Artifacts
	case transport.StatusFailed:
		c.Kind, c.Message = ConcludeFail, orDefault(r.ErrorMessage, "plugin failed (no message)")
	case transport.StatusAborted:
		c.Kind, c.Message = ConcludeFail, "aborted: "+orDefault(r.ErrorMessage, "no message")
	case transport.StatusRejected:
		a.deps.stats.JobsRejected.Add(1)
		c.Kind, c.Message = ConcludeRequeue, "rejected by worker "+a.spec.peer.Key
		c.NextRunAt = time.Now().Add(Backoff(a.deps.cfg.RetryBackoff, a.deps.cfg.RetryBackoffMax, retries))
	}
	ctx.Send(a.peers.queue, c)
}

func (a *workerActor) workerErr(ctx actor.Context, m *ErrReceived) {
	if m.JobID == 0 {
		a.log.Warn().Str("error", m.Err.Message).Msg("worker reported an error")
		return
	}
	ref, _, ok := a.take(ctx, m.JobID, transport.OpErr)
	if !ok {
		return
	}
	ctx.Send(a.peers.queue, &ConcludeJob{Ref: ref, Kind: ConcludeFail,
		Message: "worker error: " + orDefault(m.Err.Message, "no message")})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
