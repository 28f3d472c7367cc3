package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// The queue actor's background work that is not on the claim path: the
// retention sweep (--retain-completed, --retain-failed) and the
// enqueue-to-start latency of claimed jobs. Both run off timers, one small
// database call per tick, so that claims and conclusions waiting in the
// mailbox are handled in between.

// PruneBatch is how many jobs one transaction of a prune deletes, the
// sweep's and the operator's: small enough that a claim waiting behind one
// waits about a millisecond. Measured with casparian-bench
// --completed-backlog 200000 on 2 shared cores, a 500-row batch took ~3 ms
// and moved dispatch p99 from ~9.8 ms to 11–14 ms; 100-row batches (~0.9
// ms) left it within the run-to-run noise, while still deleting some 3,000
// to 4,000 rows a second under full load.
const PruneBatch = 100

const (
	// retentionFirst is the delay of the first sweep after a start.
	retentionFirst = time.Second
	// prunePause is the shortest pause between two batches while there is
	// more to delete: the dispatcher's claims go first. pruneShare makes
	// it longer when batches are slow: a batch that took d is followed by
	// a pause of at least (pruneShare-1)×d, so pruning takes at most
	// 1/pruneShare of the queue actor's time (and of the writer's).
	prunePause = 20 * time.Millisecond
	pruneShare = 10
	// retentionIdleMax bounds the pause once nothing is left to delete.
	retentionIdleMax = time.Minute
)

// retaining reports whether any retention is set.
func retaining(cfg config.Config) bool { return cfg.RetainCompleted > 0 || cfg.RetainFailed > 0 }

// retentionIdle is the pause of a sweep that found nothing more: a fraction
// of the shortest retention, at most retentionIdleMax, so a job is deleted
// not long after its retention has passed.
func retentionIdle(cfg config.Config) time.Duration {
	d := retentionIdleMax
	for _, r := range []time.Duration{cfg.RetainCompleted, cfg.RetainFailed} {
		if r > 0 && r/2 < d {
			d = r / 2
		}
	}
	return max(d, 10*time.Millisecond)
}

// RetentionPrune is what a sweep at now deletes under cfg.
func RetentionPrune(cfg config.Config, now time.Time) job.Prune {
	var p job.Prune
	if cfg.RetainCompleted > 0 {
		p.CompletedBefore = now.Add(-cfg.RetainCompleted)
	}
	if cfg.RetainFailed > 0 {
		p.FailedBefore = now.Add(-cfg.RetainFailed)
	}
	return p
}

// sweep deletes one batch of the jobs past their retention and arms the
// next: soon while batches come back full, later once they do not. Only
// the leader of the Sentinels sharing a database sweeps.
func (a *queueActor) sweep(ctx actor.Context) {
	cfg := a.deps.cfg
	idle := retentionIdle(cfg)
	if a.deps.lease != nil && !a.deps.lease.Leading() {
		a.retention.arm(ctx.ActorSystem(), ctx.Self(), idle)
		return
	}
	dctx, cancel := a.dbctx()
	defer cancel()
	start := time.Now()
	res, err := a.deps.db.JobsPrune(dctx, RetentionPrune(cfg, start), PruneBatch, false)
	took := time.Since(start)
	a.deps.stats.PruneTime.Observe(took.Seconds())
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("retention: deleting old jobs failed; will try again")
		a.retention.arm(ctx.ActorSystem(), ctx.Self(), idle)
		return
	}
	a.pruned(res, "retention")
	next := idle
	if res.Total() >= PruneBatch {
		next = max(prunePause, (pruneShare-1)*took)
	}
	a.retention.arm(ctx.ActorSystem(), ctx.Self(), next)
}

// pruned counts and logs what a prune deleted.
func (a *queueActor) pruned(res job.PruneResult, by string) {
	if res.Total() == 0 {
		return
	}
	a.deps.stats.JobsPruned.Add(res.Total())
	a.log.Debug().Str("by", by).Int64("completed", res.Completed).Int64("failed", res.Failed).Msg("old jobs deleted")
}

// claimed observes the enqueue-to-start latency of the first runs among
// claims (retry_count 0: a new job or an operator's retry; a requeued job's
// wait includes its earlier run). The claim statement returns enqueued_at;
// a job without one (inserted by another tool before migration 0008) is
// left out.
func (a *queueActor) claimed(claims []db.Claim) {
	now := time.Now()
	for _, c := range claims {
		if c.RetryCount != 0 || c.EnqueuedAt.IsZero() {
			continue
		}
		a.deps.stats.ByPlugin.For(c.Dispatch.PluginName).EnqueueToStart.Observe(max(now.Sub(c.EnqueuedAt).Seconds(), 0))
	}
}
