package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/transport"
)

// queueActor owns all database access. Claims are answered at once;
// conclusions are batched: the first one of a burst queues a flush marker
// behind itself, and everything that arrived before the marker is written in
// one transaction. It also polls PRAGMA data_version so that jobs inserted by
// other processes are noticed without scanning the table.
type queueActor struct {
	deps  deps
	peers peers
	log   zerolog.Logger

	pending      []*ConcludeJob
	flushQueued  bool
	flushRetry   timer
	poll         timer
	lastVersion  int64
	nextDue      time.Time // earliest future next_run_at, zero if none
	nextDueKnown bool
}

func newQueueProps(d deps, p peers) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &queueActor{deps: d, peers: p, log: d.log.With().Str("component", "queue").Logger()}
	})
}

func (a *queueActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.lastVersion = -1
		a.poll.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.PollInterval)
	case *ClaimJobs:
		ctx.Respond(a.claim(m))
	case *ConcludeJob:
		a.pending = append(a.pending, m)
		if !a.flushQueued {
			a.flushQueued = true
			ctx.Send(ctx.Self(), &flushConclusions{})
		}
	case *flushConclusions:
		a.flushQueued = false
		a.flush(ctx)
	case *RunningJobsQuery:
		jobs, err := a.running(m.Worker)
		ctx.Respond(&RunningJobs{Jobs: jobs, Err: err})
	case *RunningCountQuery:
		a.flush(ctx)
		jobs, err := a.running("")
		ctx.Respond(&RunningCount{N: int64(len(jobs)), Err: err})
	case *RequeueWorkerJobs:
		a.requeueWhere(ctx, m.Reason, func(ref JobRef) bool { return ref.Worker == m.Worker })
	case *RequeueOrphans:
		a.requeueWhere(ctx, "orphaned: its worker is gone", func(ref JobRef) bool { return !m.Connected[ref.Worker] })
	case *tick:
		switch {
		case a.poll.current(m):
			a.checkQueue(ctx)
			a.poll.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.PollInterval)
		case a.flushRetry.current(m):
			a.flushRetry.fired()
			a.flush(ctx)
		}
	case *crash:
		panic("injected crash: queue")
	case *actor.Stopping:
		a.poll.stop()
		a.flushRetry.stop()
		a.flush(ctx) // a graceful stop writes what it has
	case *actor.Restarting:
		// The old instance still holds the batch: write it before it is lost.
		a.poll.stop()
		a.flushRetry.stop()
		a.flush(ctx)
	}
}

func (a *queueActor) dbctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.deps.cfg.DBTimeout)
}

func (a *queueActor) claim(m *ClaimJobs) *JobsClaimed {
	reqs := make([]db.ClaimRequest, len(m.Requests))
	requested := 0
	for i, r := range m.Requests {
		reqs[i] = db.ClaimRequest{Worker: r.Worker, Plugins: r.Plugins, Limit: r.Limit}
		requested += r.Limit
	}
	ctx, cancel := a.dbctx()
	defer cancel()
	claims, failures, err := a.deps.db.JobsClaim(ctx, time.Now(), reqs)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("claim failed")
		return &JobsClaimed{Requested: requested, Err: err}
	}
	for _, f := range failures {
		a.deps.stats.JobsFailed.Add(1)
		a.log.Warn().Int64("job_id", f.Ref.JobID).Str("reason", f.Reason).Msg("job failed: dispatch cannot be assembled")
	}
	out := &JobsClaimed{Requested: requested, Failed: len(failures), Claims: make([]JobClaim, len(claims))}
	for i, c := range claims {
		out.Claims[i] = JobClaim{
			Ref:        JobRef{JobID: c.Ref.JobID, Worker: c.Ref.Worker, Attempt: c.Ref.Attempt},
			RetryCount: c.RetryCount,
			Dispatch:   wireDispatch(c.Dispatch),
		}
	}
	return out
}

func wireDispatch(d db.Dispatch) *transport.Dispatch {
	sinks := make([]transport.SinkConfig, len(d.Sinks))
	for i, s := range d.Sinks {
		sinks[i] = transport.SinkConfig{Topic: s.Topic, URI: s.URI, Mode: s.Mode, SchemaDef: s.SchemaDef}
	}
	return &transport.Dispatch{
		PluginName:    d.PluginName,
		FilePath:      d.FilePath,
		Sinks:         sinks,
		FileVersionID: d.FileVersionID,
		EnvHash:       d.EnvHash,
		SourceCode:    d.SourceCode,
		ArtifactHash:  d.ArtifactHash,
	}
}

// flush writes every pending conclusion in one transaction. On a database
// error the batch is kept and retried with jittered backoff: every update is
// guarded, so applying one twice is harmless.
func (a *queueActor) flush(ctx actor.Context) {
	if len(a.pending) == 0 {
		return
	}
	batch, err := a.resolveCurrentClaims(a.pending)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("resolving claims failed; will retry")
		if !a.flushRetry.armed() {
			a.flushRetry.arm(ctx.ActorSystem(), ctx.Self(), Backoff(200*time.Millisecond, 5*time.Second, 1))
		}
		return
	}
	a.pending = batch
	cs := make([]db.Conclusion, len(batch))
	for i, c := range batch {
		cs[i] = db.Conclusion{
			Ref:        db.ClaimRef{JobID: c.Ref.JobID, Worker: c.Ref.Worker, Attempt: c.Ref.Attempt},
			Kind:       dbKind(c.Kind),
			Message:    c.Message,
			Metrics:    c.Metrics,
			Artifacts:  c.Artifacts,
			MaxRetries: a.deps.cfg.MaxRetries,
			NextRunAt:  c.NextRunAt,
		}
	}
	dctx, cancel := a.dbctx()
	defer cancel()
	outcomes, err := a.deps.db.JobsConclude(dctx, time.Now(), cs)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Int("batch", len(cs)).Msg("writing conclusions failed; will retry")
		if !a.flushRetry.armed() {
			a.flushRetry.arm(ctx.ActorSystem(), ctx.Self(), Backoff(200*time.Millisecond, 5*time.Second, 1))
		}
		return
	}
	a.pending = nil
	requeued := false
	for i, o := range outcomes {
		c := batch[i]
		switch o {
		case db.OutcomeCompleted:
			a.deps.stats.JobsCompleted.Add(1)
		case db.OutcomeFailed:
			a.deps.stats.JobsFailed.Add(1)
			a.log.Info().Int64("job_id", c.Ref.JobID).Str("worker_id", c.Ref.Worker).Str("reason", c.Message).Msg("job failed")
		case db.OutcomeRequeued:
			a.deps.stats.JobsRequeued.Add(1)
			requeued = true
		case db.OutcomeStale:
			a.deps.stats.StaleMessages.Add(1)
			a.log.Warn().Int64("job_id", c.Ref.JobID).Str("worker_id", c.Ref.Worker).Int64("attempt", c.Ref.Attempt).Msg("ignored: job no longer held by this claim")
		}
	}
	if requeued {
		a.nextDueKnown = false // recompute at the next poll
	}
}

// resolveCurrentClaims fills in the attempt of conclusions sent by workers
// that were not registered, from the claim their worker holds now; one whose
// worker holds no such job is kept with attempt -1, so the guard rejects it
// and it is counted as stale.
func (a *queueActor) resolveCurrentClaims(batch []*ConcludeJob) ([]*ConcludeJob, error) {
	held := map[string]map[int64]int64{} // worker → job → attempt
	for _, c := range batch {
		if !c.CurrentClaim {
			continue
		}
		if _, ok := held[c.Ref.Worker]; !ok {
			jobs, err := a.running(c.Ref.Worker)
			if err != nil {
				return nil, err
			}
			held[c.Ref.Worker] = map[int64]int64{}
			for _, j := range jobs {
				held[c.Ref.Worker][j.Ref.JobID] = j.Ref.Attempt
			}
		}
		attempt, ok := held[c.Ref.Worker][c.Ref.JobID]
		if !ok {
			attempt = -1
		}
		c.Ref.Attempt, c.CurrentClaim = attempt, false
	}
	return batch, nil
}

func dbKind(k ConclusionKind) db.ConclusionKind {
	switch k {
	case ConcludeComplete:
		return db.ConcludeComplete
	case ConcludeFail:
		return db.ConcludeFail
	default:
		return db.ConcludeRequeue
	}
}

func (a *queueActor) running(worker string) ([]RunningJob, error) {
	ctx, cancel := a.dbctx()
	defer cancel()
	rows, err := a.deps.db.JobsRunning(ctx, worker)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		return nil, err
	}
	out := make([]RunningJob, len(rows))
	for i, r := range rows {
		out[i] = RunningJob{
			Ref:        JobRef{JobID: r.Ref.JobID, Worker: r.Ref.Worker, Attempt: r.Ref.Attempt},
			RetryCount: r.RetryCount,
			ClaimTime:  r.ClaimTime,
		}
	}
	return out, nil
}

// requeueWhere requeues the RUNNING jobs that match. Pending conclusions are
// written first, so a receipt that arrived before the worker was lost wins.
func (a *queueActor) requeueWhere(ctx actor.Context, reason string, match func(JobRef) bool) {
	a.flush(ctx)
	jobs, err := a.running("")
	if err != nil {
		a.log.Error().Err(err).Msg("listing running jobs failed")
		return
	}
	n := 0
	for _, j := range jobs {
		if !match(j.Ref) {
			continue
		}
		n++
		a.pending = append(a.pending, &ConcludeJob{Ref: j.Ref, Kind: ConcludeRequeue, Message: reason,
			NextRunAt: time.Now().Add(Backoff(a.deps.cfg.RetryBackoff, a.deps.cfg.RetryBackoffMax, j.RetryCount))})
	}
	if n > 0 {
		a.log.Warn().Int("jobs", n).Str("reason", reason).Msg("requeueing running jobs")
		a.flush(ctx)
	}
}

// checkQueue tells the dispatcher when claimable jobs may have appeared:
// another connection committed (data_version moved), or a job's backoff
// expired.
func (a *queueActor) checkQueue(ctx actor.Context) {
	dctx, cancel := a.dbctx()
	defer cancel()
	changed := false
	v, err := a.deps.db.DataVersion(dctx)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("data_version failed")
		return
	}
	if v != a.lastVersion {
		a.lastVersion = v
		changed = true
		a.nextDueKnown = false
	}
	now := time.Now()
	if !a.nextDue.IsZero() && !now.Before(a.nextDue) {
		changed = true
		a.nextDueKnown = false
	}
	if !a.nextDueKnown {
		t, ok, err := a.deps.db.JobsNextRunAt(dctx, now)
		if err == nil {
			a.nextDueKnown = true
			a.nextDue = time.Time{}
			if ok {
				a.nextDue = t
			}
		}
	}
	if changed {
		ctx.Send(a.peers.dispatcher, &QueueChanged{})
	}
}
