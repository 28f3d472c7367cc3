package actors

import (
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Environments, the worker actor's side (docs/ARCHITECTURE.md, Environments;
// the messages in docs/PROTOCOL.md §5.4). A job whose manifest has
// an env_hash other than "system" is dispatched to a worker only after that
// worker reported the environment ready (ENV_READY) during this actor's life.
// Until then the claim is held here, counted against the worker's slots like
// a running job: the first such claim asks the queue actor for the lockfile
// and sends PREPARE_ENV; ENV_READY dispatches every claim waiting for it; an
// ERR naming the env_hash (or an ERR of job_id 0 naming none, as the
// original workers send: see envErr), or no answer within --env-timeout,
// requeues them
// (retry_count + 1, backoff, FAILED over --max-retries with the reason) and
// tells the dispatcher to avoid this worker for that environment for one
// more --env-timeout, so the retry goes to another worker.

// envState is what one worker actor knows about its worker's environments.
type envState struct {
	ready   map[string]bool
	pending map[string]*envPrep  // PREPARE_ENV asked (or about to be), by env_hash
	avoid   map[string]time.Time // failed here; not before then
}

// envPrep is one environment being prepared and the claims waiting for it.
type envPrep struct {
	deadline time.Time
	sent     time.Time // PREPARE_ENV went out; zero while the lockfile is looked up
	jobs     []JobClaim
}

func newEnvState() envState {
	return envState{ready: map[string]bool{}, pending: map[string]*envPrep{}, avoid: map[string]time.Time{}}
}

// needsEnv returns the environment a claim must wait for, or "" when it can
// be dispatched now. Built-in plugins ("system" or no env_hash) never wait.
func (a *workerActor) needsEnv(c JobClaim) string {
	env := c.Dispatch.EnvHash
	if env == "" || env == "system" || a.env.ready[env] {
		return ""
	}
	return env
}

// awaitEnv holds a claim until its environment is ready on the worker.
func (a *workerActor) awaitEnv(ctx actor.Context, env string, c JobClaim, j *heldJob) {
	j.awaitingEnv = env
	a.running[c.Ref.JobID] = j
	p, ok := a.env.pending[env]
	if !ok {
		p = &envPrep{deadline: time.Now().Add(a.deps.cfg.EnvTimeout)}
		a.env.pending[env] = p
		ctx.Request(a.peers.queue, &EnvironmentQuery{Hash: env})
	}
	p.jobs = append(p.jobs, c)
}

// prepare sends PREPARE_ENV once the lockfile is known.
func (a *workerActor) prepare(ctx actor.Context, m *Environment) {
	if _, ok := a.env.pending[m.Hash]; !ok {
		return // answered or given up meanwhile
	}
	if m.Err != nil {
		reason := "environment " + m.Hash + ": " + m.Err.Error()
		a.envFailed(ctx, m.Hash, reason, !errors.Is(m.Err, job.ErrNotFound))
		return
	}
	a.env.pending[m.Hash].sent = time.Now()
	a.deps.stats.EnvPrepares.Add(1)
	a.log.Info().Str("env_hash", m.Hash).Msg("sending PREPARE_ENV")
	a.send(ctx, transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: m.Hash, LockfileContent: m.Lockfile})
}

// envReady records ENV_READY and dispatches the claims that waited for it.
func (a *workerActor) envReady(ctx actor.Context, m *EnvReadyReceived) {
	env := m.Ready.EnvHash
	if env == "" {
		return
	}
	changed := !a.env.ready[env]
	a.env.ready[env] = true
	if _, ok := a.env.avoid[env]; ok {
		delete(a.env.avoid, env)
		changed = true
	}
	p := a.env.pending[env]
	delete(a.env.pending, env)
	a.log.Info().Str("env_hash", env).Bool("cached", m.Ready.Cached).Str("interpreter", m.Ready.InterpreterPath).
		Msg("environment ready")
	if p != nil {
		for _, c := range p.jobs {
			j, ok := a.running[c.Ref.JobID]
			if !ok || j.ref.Attempt != c.Ref.Attempt || j.awaitingEnv != env {
				continue // cancelled or requeued while waiting
			}
			a.dispatch(ctx, c, j)
		}
	}
	if changed {
		a.announceEnvs(ctx)
	}
}

// envErr handles an ERR with job_id 0: if it names an environment being
// prepared here, that preparation failed. The original workers name none
// ("PREPARE_ENV failed: Failed to create venv: …" from the Python one, a
// plain "uv venv failed …" from the Rust one): an ERR about no job while a
// PREPARE_ENV is outstanding is taken as its answer. With several
// outstanding it is taken for the oldest, since a worker answers its
// messages in order (the Python worker prepares inside its receive loop);
// the others keep waiting for their own answer or --env-timeout. A wrong
// guess costs a retry of the oldest environment's jobs, which the old
// behaviour (ignoring the ERR) cost too, after the full --env-timeout.
func (a *workerActor) envErr(ctx actor.Context, m *ErrReceived) bool {
	for env := range a.env.pending {
		if strings.Contains(m.Err.Message, env) {
			a.envFailed(ctx, env, "worker "+a.spec.peer.Key+" could not prepare environment "+env+": "+m.Err.Message, true)
			return true
		}
	}
	oldest := ""
	for env, p := range a.env.pending {
		if p.sent.IsZero() {
			continue // not asked yet: the ERR cannot be its answer
		}
		if o := a.env.pending[oldest]; oldest == "" || p.sent.Before(o.sent) || p.sent.Equal(o.sent) && env < oldest {
			oldest = env
		}
	}
	if oldest == "" {
		return false
	}
	a.envFailed(ctx, oldest, "worker "+a.spec.peer.Key+" could not prepare environment "+oldest+": "+
		orDefault(m.Err.Message, "no message"), true)
	return true
}

// checkEnvTimeouts gives up on preparations past --env-timeout; it runs on
// the heartbeat tick.
func (a *workerActor) checkEnvTimeouts(ctx actor.Context, now time.Time) {
	for env, p := range a.env.pending {
		if now.After(p.deadline) {
			a.envFailed(ctx, env, "worker "+a.spec.peer.Key+" did not prepare environment "+env+
				" within "+a.deps.cfg.EnvTimeout.String(), true)
		}
	}
	expired := false
	for env, until := range a.env.avoid {
		if now.After(until) {
			delete(a.env.avoid, env)
			expired = true
		}
	}
	if expired {
		a.announceEnvs(ctx) // the dispatcher may offer those jobs here again
	}
}

// envFailed requeues every claim waiting for env. With avoid, the
// dispatcher stops offering this worker jobs of env for one --env-timeout;
// without it (the environment is not stored at all) another worker would not
// do better, and the retries run out.
func (a *workerActor) envFailed(ctx actor.Context, env, reason string, avoid bool) {
	p := a.env.pending[env]
	delete(a.env.pending, env)
	a.deps.stats.EnvFailures.Add(1)
	a.log.Warn().Str("env_hash", env).Str("reason", reason).Msg("environment not ready; requeueing its jobs")
	if avoid {
		a.env.avoid[env] = time.Now().Add(a.deps.cfg.EnvTimeout)
		a.announceEnvs(ctx)
	}
	if p == nil {
		return
	}
	for _, c := range p.jobs {
		j, ok := a.running[c.Ref.JobID]
		if !ok || j.ref.Attempt != c.Ref.Attempt || j.awaitingEnv != env {
			continue
		}
		a.release(ctx, c.Ref.JobID)
		a.requeue(ctx, j, reason)
	}
}

// announceEnvs sends the dispatcher this worker's environments.
func (a *workerActor) announceEnvs(ctx actor.Context) {
	ready := make([]string, 0, len(a.env.ready))
	for env := range a.env.ready {
		ready = append(ready, env)
	}
	sort.Strings(ready)
	avoid := make(map[string]time.Time, len(a.env.avoid))
	for env, t := range a.env.avoid {
		avoid[env] = t
	}
	ctx.Send(a.peers.dispatcher, &WorkerEnvs{Worker: a.spec.peer.Key, Ready: ready, Avoid: avoid})
}
