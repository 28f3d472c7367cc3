package actors

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/job"
)

// dispatcherActor matches free worker slots to queued jobs. It keeps a view of
// every worker's capabilities and free slots, asks the queue actor to claim
// jobs for all workers with free slots at once, and hands each claim to the
// worker actor that sends it. One claim request is in flight at a time; the
// database does the matching (by plugin, priority, id), so a job no worker
// can run never blocks the others.
type dispatcherActor struct {
	deps  deps
	peers peers
	log   zerolog.Logger

	workers  map[string]*slotView
	size     highWater       // of workers
	drained  map[string]bool // workers an operator drained: no claims for them
	claiming bool            // a ClaimJobs is in flight
	dirty    bool            // jobs may be claimable that were not at the last claim
	stopped  bool
	retry    timer // after a failed claim
	lost     timer // a claim answer that never came

	// envOf maps a plugin to the env_hash its jobs need (dispatcher_env.go).
	envOf map[string]string

	// asked is the claim in flight, request by request.
	asked []job.ClaimRequest
	// empty holds the sets of plugins (with exclusions) whose last claim
	// came back short: the queue had nothing more for them. Their workers
	// are left out of claims until the queue changes, so a thousand idle
	// workers of another kind do not ride along with every claim.
	empty map[string]bool
}

// slotView is the dispatcher's picture of one worker.
type slotView struct {
	pid     *actor.PID
	plugins []string
	free    int
	env     envView
}

func newDispatcherProps(d deps, p peers) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &dispatcherActor{deps: d, peers: p, log: d.log.With().Str("component", "dispatcher").Logger()}
	})
}

func (a *dispatcherActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.workers = map[string]*slotView{}
		a.drained = map[string]bool{}
		a.envOf = map[string]string{}
		a.empty = map[string]bool{}
		a.dirty = true
		// A restarted dispatcher has lost its view: ask every worker again.
		ctx.Send(a.peers.supervisor, &CapacityRequest{})
	case *WorkerAvailable:
		a.workers[m.Worker] = &slotView{pid: m.PID, plugins: m.Plugins, free: m.Slots - m.Running}
		a.size.grew(len(a.workers))
		a.dirty = true
		a.claim(ctx)
	case *SlotsFreed:
		if w, ok := a.workers[m.Worker]; ok {
			w.free += m.N
			a.dirty = true
			a.claim(ctx)
		}
	case *WorkerDraining:
		// Kept by key, not in the slot view: a drained worker that
		// reconnects stays drained.
		if m.Draining {
			a.drained[m.Worker] = true
		} else if a.drained[m.Worker] {
			delete(a.drained, m.Worker)
			a.dirty = true
			a.claim(ctx)
		}
	case *WorkerGone:
		delete(a.workers, m.Worker)
		if a.size.shrunk(len(a.workers)) {
			a.workers = resized(a.workers)
		}
	case *WorkerEnvs:
		if a.workerEnvs(m) {
			a.dirty = true
			a.claim(ctx)
		}
	case *PluginDeployed:
		a.learnEnv(m.Plugin, m.EnvHash)
		clear(a.empty)
	case *QueueChanged:
		// The queue actor says so at the first check after any commit, its
		// own included (the database's notification, or at the latest the
		// poll): no set stays skipped longer than the poll interval.
		clear(a.empty)
		a.dirty = true
		a.claim(ctx)
	case *JobsClaimed:
		a.claimed(ctx, m)
	case *tick:
		switch {
		case a.retry.current(m):
			a.retry.fired()
			a.claim(ctx)
		case a.lost.current(m):
			a.lost.fired()
			a.log.Warn().Msg("claim answer lost; claiming again")
			a.claiming, a.dirty = false, true
			a.claim(ctx)
		}
	case *StopDispatching:
		a.stopped = true
	case *crash:
		panic("injected crash: dispatcher")
	case *actor.Stopping, *actor.Restarting:
		a.retry.stop()
		a.lost.stop()
	}
}

// claim asks the queue actor for jobs for every worker with free slots,
// unless a request is already in flight or nothing changed since the last
// one came back short.
func (a *dispatcherActor) claim(ctx actor.Context) {
	if a.claiming || !a.dirty || a.stopped || a.retry.armed() {
		return
	}
	var reqs []job.ClaimRequest
	total := 0
	now := time.Now()
	for key, w := range a.workers {
		if w.free > 0 && !a.drained[key] {
			r := a.request(key, w, now)
			if a.empty[claimSetKey(r)] {
				continue
			}
			reqs = append(reqs, r)
			total += w.free
		}
	}
	if len(reqs) == 0 {
		return
	}
	// Most free slots first: the claim statements run in this order, so the
	// highest-priority jobs go to the emptiest workers.
	sort.Slice(reqs, func(i, j int) bool {
		if reqs[i].Limit != reqs[j].Limit {
			return reqs[i].Limit > reqs[j].Limit
		}
		return reqs[i].Worker < reqs[j].Worker
	})
	a.claiming = true
	a.dirty = false
	a.asked = reqs
	ctx.Request(a.peers.queue, &ClaimJobs{Requests: reqs, At: time.Now()})
	// If the answer never comes (the queue actor crashed on the way), try
	// again; the jobs of a lost answer are RUNNING under connected workers
	// that never got them, and heartbeat reconciliation requeues them.
	a.lost.arm(ctx.ActorSystem(), ctx.Self(), 2*a.deps.cfg.DBTimeout)
}

func (a *dispatcherActor) claimed(ctx actor.Context, m *JobsClaimed) {
	a.claiming = false
	a.lost.stop()
	asked := a.asked
	a.asked = nil
	if m.Err != nil {
		a.dirty = true
		a.retry.arm(ctx.ActorSystem(), ctx.Self(), Jitter(200*time.Millisecond))
		return
	}
	byWorker := map[string][]JobClaim{}
	for _, c := range m.Claims {
		byWorker[c.Ref.Worker] = append(byWorker[c.Ref.Worker], c)
		a.learnEnv(c.Dispatch.PluginName, c.Dispatch.EnvHash)
	}
	// A request that came back short found its set of plugins empty. Jobs
	// that failed assembly are not attributed to a worker: then nothing is
	// concluded.
	if m.Failed == 0 {
		for _, r := range asked {
			if len(byWorker[r.Worker]) < r.Limit {
				a.empty[claimSetKey(r)] = true
			}
		}
	}
	for key, claims := range byWorker {
		w, ok := a.workers[key]
		if !ok || a.drained[key] {
			// The worker left, or an operator drained it, while the claim
			// was in flight (a restarted dispatcher also gets the answer
			// to its former self's request): the jobs go back.
			reason := "worker left before dispatch"
			if ok {
				reason = "worker drained before dispatch"
			}
			for _, c := range claims {
				cj := &ConcludeJob{Conclusion: job.Conclusion{Ref: c.Ref, Kind: job.ConcludeRequeue,
					Message: reason}}
				if c.Dispatch != nil {
					cj.Plugin = c.Dispatch.PluginName
				}
				ctx.Send(a.peers.queue, cj)
			}
			continue
		}
		w.free -= len(claims)
		ctx.Send(w.pid, &AssignJobs{Claims: claims})
	}
	// A full claim means more jobs may be waiting; a short one means the
	// queue had nothing more for these workers until something changes.
	if len(m.Claims)+m.Failed >= m.Requested {
		a.dirty = true
	}
	a.claim(ctx)
}

// claimSetKey names what a request can claim: its plugins ("*" for any) and
// its exclusions, each sorted. Preferences only order a claim within that.
func claimSetKey(r job.ClaimRequest) string {
	set := func(names []string) string {
		for _, n := range names {
			if n == "*" {
				return "*"
			}
		}
		sorted := slices.Clone(names)
		slices.Sort(sorted)
		return strings.Join(slices.Compact(sorted), "\x00")
	}
	return set(r.Plugins) + "\x01" + set(r.Exclude)
}
