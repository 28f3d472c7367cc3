package actors

import (
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// supervisorActor is the top of the tree. It spawns the queue, dispatcher,
// socket and (with --scan-interval) scanner actors and one worker actor per
// connected ZeroMQ identity, routes
// decoded messages to the worker they come from, and cleans up after workers
// that are gone. It restarts any child that panics (OneForOne, bounded).
type supervisorActor struct {
	deps    deps
	log     zerolog.Logger
	workers map[string]*actor.PID // by Peer.Key
	specs   map[string]*workerSpec
	byPID   map[string]string // PID.Id → key, to clean up on Terminated
	size    highWater         // of workers, specs and byPID
	// dropped holds the worker actors an operator disconnected, by PID.Id:
	// forgotten at once, so their Terminated only frees the PID.
	dropped map[string]bool
	peers   peers
	timer   timer
	stopped bool
}

// deps are what the tree needs from outside; they outlive every restart.
type deps struct {
	cfg    config.Config
	db     db.Store // only the queue actor calls it
	router *transport.Router
	stats  *Stats
	log    zerolog.Logger
	bg     *sync.WaitGroup     // goroutines started off a mailbox; Sentinel.Stop waits
	keys   []deploy.TrustedKey // publishers whose DEPLOYs are trusted (--trusted-keys)
	roots  []string            // absolute folders source roots must lie in (--allowed-roots)
	// batches tells health whether the queue actor's writes fail.
	batches *batchWrites
	// lease is this Sentinel's hold on the database; its Leading says
	// whether this Sentinel runs the scanner (the dbwatch renews it).
	lease db.Lease
	// drained are the workers an operator drained, by key: outside the
	// supervisor instance, so that a restart of the tree keeps them.
	drained *keySet
	// notified says the database tells of other processes' inserts
	// (db.QueueNotifier works): the queue actor's poll is only a safety
	// net then (--notified-poll-interval instead of --poll-interval).
	notified bool
}

// keySet is a set of worker keys that outlives actor restarts. Only the
// supervisor uses it; the lock orders its uses by one instance and the next,
// which protoactor may run on different goroutines.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func newKeySet() *keySet { return &keySet{keys: map[string]bool{}} }

func (s *keySet) set(key string, in bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in {
		s.keys[key] = true
	} else {
		delete(s.keys, key)
	}
}

func (s *keySet) has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[key]
}

func (s *keySet) all() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.keys))
	for k := range s.keys {
		out[k] = true
	}
	return out
}

// peers are the well-known children. Their PIDs are fixed by name, so a
// restarted child keeps its address and nobody needs to be told.
type peers struct {
	supervisor, queue, dispatcher, socket, scanner, deployer *actor.PID
}

// childStrategy restarts a panicking child at most 5 times within 30 s (a
// burst), then stops it; for a worker actor that means the worker is dropped
// and its jobs requeued, for a core actor the supervisor escalates.
func childStrategy(stats *Stats) actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(5, 30*time.Second, func(reason any) actor.Directive {
		stats.ActorRestarts.Add(1)
		return actor.RestartDirective
	})
}

func newSupervisorProps(d deps) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &supervisorActor{deps: d, log: d.log.With().Str("component", "supervisor").Logger()}
	}, actor.WithSupervisor(childStrategy(d.stats)))
}

func (a *supervisorActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *IdentifyReceived:
		a.identify(ctx, m)
	case *HeartbeatReceived:
		a.route(ctx, m.From, m)
	case *ConcludeReceived:
		a.route(ctx, m.From, m)
	case *ErrReceived:
		a.route(ctx, m.From, m)
	case *OtherReceived:
		a.route(ctx, m.From, m)
	case *EnvReadyReceived:
		a.route(ctx, m.From, m)
	case *DeployReceived:
		// Publish tools never IDENTIFY: a DEPLOY needs no worker. A tool
		// connects once, so its liveness record would only fill the
		// router's bounded table.
		if _, ok := a.workers[m.From.Key]; !ok {
			a.deps.router.Forget(m.From.Identity)
		}
		ctx.Send(a.peers.deployer, m)
	case *BroadcastReload:
		for _, spec := range a.specs {
			ctx.Send(a.peers.socket, &SendMessage{To: spec.peer, Op: transport.OpReload})
		}
	case *DispatchFailed:
		if pid, ok := a.workers[m.To.Key]; ok {
			ctx.Send(pid, m)
		} // else the worker is gone and its jobs are requeued with it
	case *CapacityRequest:
		// A restarted dispatcher has forgotten the drains too. They go
		// first: a worker's answer (WorkerAvailable) comes after this
		// message reached it, so the dispatcher knows a worker is drained
		// before it can offer that worker's slots a claim.
		for key := range a.deps.drained.all() {
			ctx.Send(a.peers.dispatcher, &WorkerDraining{Worker: key, Draining: true})
		}
		for _, pid := range a.workers {
			ctx.Send(pid, m)
		}
	case *DrainWorker:
		a.drain(ctx, m)
	case *DisconnectWorker:
		a.disconnect(ctx, m)
	case *WorkersQuery:
		list := make([]string, 0, len(a.workers))
		for k := range a.workers {
			list = append(list, k)
		}
		ctx.Respond(&WorkersList{Workers: list})
	case *WorkerPIDsQuery:
		byKey := make(map[string]*actor.PID, len(a.workers))
		for k, pid := range a.workers {
			byKey[k] = pid
		}
		ctx.Respond(&WorkerPIDs{ByKey: byKey, Draining: a.deps.drained.all()})
	case *AbortJob:
		if pid, ok := a.workers[m.Ref.Worker]; ok {
			ctx.Send(pid, m)
		} // else the worker is gone: the sweep requeues the job, which the cancel turns into SKIPPED
	case *tick:
		a.sweepOrphans(ctx, m)
	case *actor.Terminated:
		a.childTerminated(ctx, m.Who)
	case *StopDispatching:
		a.stopped = true
		ctx.Send(a.peers.dispatcher, m)
		if ctx.Sender() != nil {
			ctx.Respond(m) // Sentinel.Stop waits for this before stopping the scanner
		}
	case *crash:
		a.crashChild(ctx, m)
	case *actor.Stopping:
		a.stopped = true
		a.timer.stop()
	case *actor.Restarting:
		// Children are stopped before the restart; their jobs stay RUNNING
		// and are adopted when the workers re-identify (or swept later).
		a.stopped = true
		a.timer.stop()
	}
}

func (a *supervisorActor) start(ctx actor.Context) {
	a.workers = map[string]*actor.PID{}
	a.specs = map[string]*workerSpec{}
	a.byPID = map[string]string{}
	a.dropped = map[string]bool{}
	sys := ctx.ActorSystem()
	self := ctx.Self()
	a.peers = peers{
		supervisor: self,
		queue:      sys.NewLocalPID(self.Id + "/queue"),
		dispatcher: sys.NewLocalPID(self.Id + "/dispatcher"),
		socket:     sys.NewLocalPID(self.Id + "/socket"),
		scanner:    sys.NewLocalPID(self.Id + "/scanner"),
		deployer:   sys.NewLocalPID(self.Id + "/deployer"),
	}
	a.spawn(ctx, newQueueProps(a.deps, a.peers), "queue")
	a.spawn(ctx, newDispatcherProps(a.deps, a.peers), "dispatcher")
	a.spawn(ctx, newSocketProps(a.deps.router, a.deps.cfg.MaxMessageSize, a.deps.stats, a.deps.log), "socket")
	a.spawn(ctx, newDeployerProps(a.deps, a.peers), "deployer")
	if a.deps.cfg.ScanInterval > 0 {
		a.spawn(ctx, newScannerProps(a.deps, a.peers), "scanner")
	}
	// The first sweep waits for the recovery grace, so that workers of the
	// previous run can re-identify and keep their RUNNING jobs.
	a.timer.arm(sys, self, a.deps.cfg.RecoveryGrace)
}

func (a *supervisorActor) spawn(ctx actor.Context, props *actor.Props, name string) {
	if _, err := ctx.SpawnNamed(props, name); err != nil {
		// Only a duplicate name fails, which means the tree is corrupt.
		panic("spawn " + name + ": " + err.Error())
	}
}

func (a *supervisorActor) identify(ctx actor.Context, m *IdentifyReceived) {
	if a.stopped {
		return
	}
	if pid, ok := a.workers[m.From.Key]; ok {
		ctx.Send(pid, m)
		return
	}
	spec := &workerSpec{peer: m.From, hello: *m.Hello}
	// The router's record alone decides the worker's silence (workerActor.seen);
	// it is kept until the worker actor terminates (Forget, in childTerminated).
	a.deps.router.Track(m.From.Identity)
	pid := ctx.SpawnPrefix(newWorkerProps(a.deps, a.peers, spec), "worker-")
	a.workers[m.From.Key] = pid
	a.specs[m.From.Key] = spec
	a.byPID[pid.Id] = m.From.Key
	a.size.grew(len(a.byPID))
	a.deps.stats.WorkersRegistered.Add(1)
	a.log.Info().Str("worker_id", m.From.Key).Strs("capabilities", m.Hello.Capabilities).
		Int("slots", m.Hello.Slots()).Str("name", m.Hello.WorkerID).Msg("worker registered")
}

// route hands a message to the worker actor of its sender; a sender that never
// identified (or was dropped, or predates a restart) is told to IDENTIFY.
func (a *supervisorActor) route(ctx actor.Context, from Peer, m any) {
	if pid, ok := a.workers[from.Key]; ok {
		ctx.Send(pid, m)
		return
	}
	a.deps.stats.UnknownWorkers.Add(1)
	ctx.Send(a.peers.socket, &SendMessage{To: from, Op: transport.OpErr,
		Payload: &transport.Err{Message: transport.UnknownWorkerMessage}})
	// A receipt from a worker that has not re-identified yet (typically just
	// after a Sentinel restart) still counts if the database says that
	// worker holds the job: the restart must not cost a finished job.
	var c *ConcludeJob
	switch m := m.(type) {
	case *ConcludeReceived:
		c = receiptConclusion(job.Ref{JobID: m.JobID, Worker: from.Key}, m.Receipt, 0, a.deps)
	case *ErrReceived:
		if m.JobID != 0 {
			c = errConclusion(job.Ref{JobID: m.JobID, Worker: from.Key}, m.Err)
		}
	}
	if c != nil {
		c.CurrentClaim = true
		ctx.Send(a.peers.queue, c)
	}
}

// drain marks a worker drained or not and tells the dispatcher.
func (a *supervisorActor) drain(ctx actor.Context, m *DrainWorker) {
	if _, ok := a.workers[m.Worker]; !ok && (m.Drain || !a.deps.drained.has(m.Worker)) {
		ctx.Respond(&OperatorReply{Err: fmt.Errorf("worker %s is not connected: %w", m.Worker, job.ErrNotFound)})
		return
	}
	a.deps.drained.set(m.Worker, m.Drain)
	ctx.Send(a.peers.dispatcher, &WorkerDraining{Worker: m.Worker, Draining: m.Drain})
	a.log.Info().Str("worker_id", m.Worker).Bool("draining", m.Drain).Msg("worker drain changed by operator")
	ctx.Respond(&OperatorReply{})
}

// disconnect forgets a worker now, the way a timeout does (childTerminated),
// but before its actor has stopped: a worker that answers the ERR with a new
// IDENTIFY gets a new worker actor, and the requeue reaches the queue actor
// before that actor asks which jobs its worker holds.
func (a *supervisorActor) disconnect(ctx actor.Context, m *DisconnectWorker) {
	pid, ok := a.workers[m.Worker]
	if !ok {
		ctx.Respond(&OperatorReply{Err: fmt.Errorf("worker %s is not connected: %w", m.Worker, job.ErrNotFound)})
		return
	}
	spec := a.specs[m.Worker]
	delete(a.workers, m.Worker)
	delete(a.specs, m.Worker)
	delete(a.byPID, pid.Id)
	a.dropped[pid.Id] = true
	a.deps.router.Forget(spec.peer.Identity)
	ctx.Stop(pid)
	a.deps.stats.WorkersRemoved.Add(1)
	ctx.Send(a.peers.dispatcher, &WorkerGone{Worker: m.Worker})
	ctx.Send(a.peers.queue, &RequeueWorkerJobs{Worker: m.Worker, Reason: "worker disconnected by an operator"})
	ctx.Send(a.peers.socket, &SendMessage{To: spec.peer, Op: transport.OpErr,
		Payload: &transport.Err{Message: transport.UnknownWorkerMessage}})
	a.log.Warn().Str("worker_id", m.Worker).Msg("worker disconnected by operator; its running jobs are requeued")
	ctx.Respond(&OperatorReply{})
}

func (a *supervisorActor) childTerminated(ctx actor.Context, who *actor.PID) {
	if a.dropped[who.Id] {
		delete(a.dropped, who.Id) // disconnect did the rest
		ctx.Send(who, &releasePID{})
		return
	}
	key, ok := a.byPID[who.Id]
	if !ok {
		if !a.stopped {
			// A core child over its restart limit: give up on the whole tree
			// so the process exits and compose/systemd restarts it.
			panic("core actor stopped: " + who.Id)
		}
		return
	}
	delete(a.byPID, who.Id)
	ctx.Send(who, &releasePID{})
	if a.workers[key] == who {
		if spec := a.specs[key]; spec != nil {
			a.deps.router.Forget(spec.peer.Identity)
		}
		delete(a.workers, key)
		delete(a.specs, key)
	}
	if a.size.shrunk(len(a.byPID)) {
		a.workers, a.specs, a.byPID = resized(a.workers), resized(a.specs), resized(a.byPID)
	}
	if a.stopped {
		return // shutdown: running jobs are reconciled at the next start
	}
	a.deps.stats.WorkersRemoved.Add(1)
	ctx.Send(a.peers.dispatcher, &WorkerGone{Worker: key})
	ctx.Send(a.peers.queue, &RequeueWorkerJobs{Worker: key, Reason: "worker lost"})
	// INFO: a worker that left is routine (thousands in a storm); the
	// queue actor warns when the removal requeues jobs.
	a.log.Info().Str("worker_id", key).Msg("worker removed; its running jobs are requeued")
}

// sweepOrphans requeues RUNNING jobs that no connected worker holds. It runs
// once after the recovery grace and then every worker timeout: a backstop
// for claims that raced with a worker's removal.
func (a *supervisorActor) sweepOrphans(ctx actor.Context, t *tick) {
	if !a.timer.current(t) || a.stopped {
		return
	}
	connected := make(map[string]bool, len(a.workers))
	for k := range a.workers {
		connected[k] = true
	}
	ctx.Send(a.peers.queue, &RequeueOrphans{Connected: connected})
	a.timer.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.WorkerTimeout)
}

func (a *supervisorActor) crashChild(ctx actor.Context, m *crash) {
	switch m.target {
	case "supervisor":
		panic("injected crash: supervisor")
	case "queue":
		ctx.Send(a.peers.queue, m)
	case "dispatcher":
		ctx.Send(a.peers.dispatcher, m)
	case "socket":
		ctx.Send(a.peers.socket, m)
	case "scanner":
		ctx.Send(a.peers.scanner, m)
	case "deployer":
		ctx.Send(a.peers.deployer, m)
	default:
		if pid, ok := a.workers[m.target]; ok {
			ctx.Send(pid, m)
		}
	}
}
