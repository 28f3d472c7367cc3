package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// queueActor owns all database access. Conclusions and claims are batched:
// the first of a burst queues a writeBatch marker behind itself, and every
// conclusion and claim request that arrived before the marker is written in
// one transaction — the conclusions first, then the claim that refills the
// slots they freed — so a busy Sentinel commits once per burst. It also
// checks PRAGMA data_version when the database tells of a write
// (QueueNotified) and on a poll, so that jobs inserted by other processes are
// noticed without scanning the table; answers the operator's requests (the
// Sentinel's methods behind the HTTP API); and records what the scanner
// finds.
type queueActor struct {
	deps  deps
	peers peers
	log   zerolog.Logger

	pending      []*ConcludeJob
	claims       []pendingClaim // answered by the next batch
	batchQueued  bool
	hold         timer // a batch of conclusions waiting for the next claim
	flushRetry   timer
	poll         timer
	pollAt       time.Time // when poll fires, while it is armed
	lastVersion  int64
	nextDue      time.Time // earliest future next_run_at, zero if none
	nextDueKnown bool

	// The chain step (queue_chain.go): a goroutine is looking at
	// artifacts, another step is due after it, the retry after an error.
	chainBusy, chainAgain bool
	chainRetry            timer

	retention timer // the next batch of the retention sweep (retention.go)
}

// errQueueRestarting answers the claim requests a crashed queue actor held.
var errQueueRestarting = errors.New("queue actor restarting")

// pendingClaim is a ClaimJobs waiting for the next batch, with whom to
// answer.
type pendingClaim struct {
	req     *ClaimJobs
	replyTo *actor.PID
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
		// The first look comes soon either way: it learns the data version
		// and when the earliest backoff expires.
		a.armPollIn(ctx, min(a.deps.cfg.PollInterval, a.pollEvery()))
		if retaining(a.deps.cfg) {
			a.retention.arm(ctx.ActorSystem(), ctx.Self(), retentionFirst)
		}
		a.chainSoon(ctx) // artifacts marked before a crash or stop
	case *chainStep:
		a.chainStart(ctx)
	case *chainsLooked:
		a.chainRecord(ctx, m)
	case *ClaimJobs:
		if ctx.Sender() == nil {
			// Claimed jobs would be RUNNING with nobody told to send them.
			a.log.Error().Msg("claim request without a sender ignored")
			return
		}
		a.claims = append(a.claims, pendingClaim{req: m, replyTo: ctx.Sender()})
		a.queueBatch(ctx)
	case *ConcludeJob:
		a.pending = append(a.pending, m)
		a.queueBatch(ctx)
	case *writeBatch:
		a.batchQueued = false
		if a.holdConclusions() {
			if !a.hold.armed() {
				a.hold.arm(ctx.ActorSystem(), ctx.Self(), conclusionHold)
			}
			return
		}
		a.write(ctx, true)
	case *RunningJobsQuery:
		jobs, err := a.running(m.Worker)
		ctx.Respond(&RunningJobs{Jobs: jobs, Err: err})
	case *RunningCountQuery:
		a.flush(ctx)
		jobs, err := a.running("")
		ctx.Respond(&RunningCount{N: int64(len(jobs)), Err: err})
	case *RequeueWorkerJobs:
		a.requeueWhere(ctx, m.Reason, func(ref job.Ref) bool { return ref.Worker == m.Worker })
	case *RequeueOrphans:
		a.requeueWhere(ctx, "orphaned: its worker is gone", func(ref job.Ref) bool { return !m.Connected[ref.Worker] })
	case *JobsQuery, *JobQuery, *EnqueueJob, *AddBuiltin, *BulkJobs, *CancelJob, *RetryJob, *CountsQuery, *PluginsQuery, *EnvironmentsQuery,
		*SubscribePlugin, *SourcesQuery, *AddSource, *RoutesQuery, *AddRoute, *HealthQuery, *SentinelsQuery,
		*PruneJobs, *QueueAgesQuery, *PausePlugin, *SetPluginSettings, *BackfillPlugin, *RerunPlugin,
		*OutputsQuery, *RerunStale, *TopicSubscriptionsQuery, *SubscribeTopic,
		*ShadowRunsQuery, *CompareShadow, *EndShadow:
		ctx.Respond(a.operate(ctx, m))
	case *ScanStateQuery:
		ctx.Respond(a.scanState(m))
	case *RecordScan:
		ctx.Respond(a.recordScan(ctx, m))
	case *FinishScan:
		ctx.Respond(a.finishScan(m))
	case *StoreDeploy:
		ctx.Respond(a.storeDeploy(m))
	case *EnvironmentQuery:
		ctx.Respond(a.environment(m))
	case *QueueNotified:
		a.checkQueue(ctx)
	case *tick:
		switch {
		case a.poll.current(m):
			a.poll.fired()
			a.checkQueue(ctx)
		case a.flushRetry.current(m):
			a.flushRetry.fired()
			a.write(ctx, true)
		case a.hold.current(m):
			a.hold.fired()
			a.write(ctx, true)
		case a.retention.current(m):
			a.retention.fired()
			a.sweep(ctx)
		case a.chainRetry.current(m):
			a.chainRetry.fired()
			a.chainSoon(ctx)
		}
	case *crash:
		panic("injected crash: queue")
	case *actor.Stopping:
		a.poll.stop()
		a.hold.stop()
		a.flushRetry.stop()
		a.retention.stop()
		a.chainRetry.stop()
		a.flush(ctx) // a graceful stop writes what it has
	case *actor.Restarting:
		// The old instance still holds the conclusions: write them before
		// they are lost. Its claim requests are answered with an error, so
		// the dispatcher claims again after a short backoff.
		a.poll.stop()
		a.hold.stop()
		a.flushRetry.stop()
		a.retention.stop()
		a.chainRetry.stop()
		a.flush(ctx)
		for i := range a.claims {
			a.answerClaim(ctx, &a.claims[i], nil, errQueueRestarting)
		}
		a.claims = nil
	}
}

func (a *queueActor) dbctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.deps.cfg.DBTimeout)
}

// queueBatch makes sure a writeBatch marker is queued behind the message
// being handled.
func (a *queueActor) queueBatch(ctx actor.Context) {
	if !a.batchQueued {
		a.batchQueued = true
		ctx.Send(ctx.Self(), &writeBatch{})
	}
}

// conclusionHold is how long conclusions wait for a claim request to share
// their commit. Under load the dispatcher's next claim follows a burst of
// receipts within microseconds: written together, the burst and the claim
// that refills its slots cost one commit instead of two.
const conclusionHold = 2 * time.Millisecond

// maxHeldConclusions bounds the conclusions held for a claim; more are
// written at once.
const maxHeldConclusions = 512

// holdConclusions reports whether a batch of only conclusions should wait
// for a claim request (see conclusionHold). A failed batch waiting for its
// retry is not held again.
func (a *queueActor) holdConclusions() bool {
	return len(a.claims) == 0 && len(a.pending) > 0 && len(a.pending) < maxHeldConclusions && !a.flushRetry.armed()
}

// flush writes the pending conclusions now, without claiming.
func (a *queueActor) flush(ctx actor.Context) { a.write(ctx, false) }

// write applies every pending conclusion and, when withClaims is set, the
// oldest pending claim request, in one transaction, then answers the claim
// and records the outcomes. On a database error the conclusions are kept and
// retried with jittered backoff (every update is guarded, so applying one
// twice is harmless) and the claim is answered with the error.
func (a *queueActor) write(ctx actor.Context, withClaims bool) {
	var claim *pendingClaim
	if withClaims && len(a.claims) > 0 {
		claim = &a.claims[0]
		a.claims = a.claims[1:]
		if len(a.claims) > 0 {
			a.queueBatch(ctx) // one claim per batch; the next goes in the next one
		}
	}
	if len(a.pending) == 0 && claim == nil {
		return
	}
	a.hold.stop() // the held conclusions go now
	batch, err := a.resolveCurrentClaims(a.pending)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("resolving claims failed; will retry")
		a.retryLater(ctx)
		a.answerClaim(ctx, claim, nil, err)
		return
	}
	a.pending = batch
	cs := make([]job.Conclusion, len(batch))
	for i, c := range batch {
		cs[i] = c.Conclusion
		cs[i].MaxRetries = a.deps.cfg.MaxRetries
		if cs[i].Kind < job.ConcludeComplete || cs[i].Kind > job.ConcludeAbort {
			// Every sender names a kind; should one not, the job is
			// requeued rather than the whole batch refused.
			cs[i].Kind = job.ConcludeRequeue
		}
	}
	var reqs []job.ClaimRequest
	if claim != nil {
		reqs = claim.req.Requests
	}

	dctx, cancel := a.dbctx()
	defer cancel()
	start := time.Now()
	res, err := a.deps.db.JobsBatch(dctx, start, cs, reqs)
	if claim != nil {
		a.deps.stats.ClaimTime.Since(start)
	} else {
		a.deps.stats.ConcludeTime.Since(start)
	}
	if a.deps.batches.record(err) {
		if err != nil {
			a.log.Error().Err(err).Msg("database writes fail; /healthz answers 503 until a write succeeds")
		} else {
			a.log.Info().Msg("job claims and conclusions are written again")
		}
	}
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Int("conclusions", len(cs)).Bool("claim", claim != nil).Msg("writing batch failed; will retry")
		if len(cs) > 0 {
			a.retryLater(ctx)
		}
		a.answerClaim(ctx, claim, nil, err)
		return
	}
	a.pending = nil
	if res.Chained {
		a.chainSoon(ctx) // queue_chain.go
	}
	a.recordOutcomes(batch, res.Outcomes)
	a.answerClaim(ctx, claim, &res, nil)
	if !a.nextDueKnown {
		// Requeued with a backoff: learn when it is due, so that the poll
		// is armed for then and not a whole poll interval later.
		dctx, cancel := a.dbctx()
		a.readNextDue(dctx, time.Now())
		cancel()
		a.armPoll(ctx)
	}
}

// retryLater arms the retry of a failed batch unless it is armed already.
func (a *queueActor) retryLater(ctx actor.Context) {
	if !a.flushRetry.armed() {
		a.flushRetry.arm(ctx.ActorSystem(), ctx.Self(), Jitter(400*time.Millisecond))
	}
}

// answerClaim sends the dispatcher what the batch claimed, or the error.
func (a *queueActor) answerClaim(ctx actor.Context, claim *pendingClaim, res *db.BatchResult, err error) {
	if claim == nil {
		return
	}
	requested := 0
	for _, r := range claim.req.Requests {
		requested += r.Limit
	}
	if err != nil {
		ctx.Send(claim.replyTo, &JobsClaimed{Requested: requested, Err: err})
		return
	}
	for _, f := range res.Failures {
		a.deps.stats.JobsFailed.Add(1)
		a.deps.stats.ByPlugin.For("").Failed.Add(1)
		a.deps.stats.Throughput.Add(time.Now(), 0, 1)
		a.log.Warn().Int64("job_id", f.Ref.JobID).Str("reason", f.Reason).Msg("job failed: dispatch cannot be assembled")
	}
	out := &JobsClaimed{Requested: requested, Failed: len(res.Failures), Claims: make([]JobClaim, len(res.Claims))}
	for i, c := range res.Claims {
		out.Claims[i] = JobClaim{
			Ref:         c.Ref,
			RetryCount:  c.RetryCount,
			Dispatch:    wireDispatch(c.Dispatch),
			RequestedAt: claim.req.At,
			JobTimeout:  c.JobTimeout,
			Shadow:      c.Shadow,
		}
	}
	ctx.Send(claim.replyTo, out)
	a.claimed(res.Claims)
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

// recordOutcomes counts and logs what the conclusions of a batch did.
func (a *queueActor) recordOutcomes(batch []*ConcludeJob, outcomes []job.Outcome) {
	requeued := false
	for i, o := range outcomes {
		c := batch[i]
		switch o {
		case job.OutcomeCompleted:
			a.deps.stats.JobsCompleted.Add(1)
			a.deps.stats.ByPlugin.For(c.Plugin).Completed.Add(1)
			a.deps.stats.Throughput.Add(time.Now(), 1, 0)
		case job.OutcomeFailed:
			a.deps.stats.JobsFailed.Add(1)
			a.deps.stats.ByPlugin.For(c.Plugin).Failed.Add(1)
			a.deps.stats.Throughput.Add(time.Now(), 0, 1)
			a.log.Info().Int64("job_id", c.Ref.JobID).Str("worker_id", c.Ref.Worker).Str("reason", c.Message).Msg("job failed")
		case job.OutcomeRequeued:
			a.deps.stats.JobsRequeued.Add(1)
			a.deps.stats.ByPlugin.For(c.Plugin).Requeued.Add(1)
			requeued = true
		case job.OutcomeSkipped:
			a.deps.stats.JobsCancelled.Add(1)
			a.log.Info().Int64("job_id", c.Ref.JobID).Str("worker_id", c.Ref.Worker).Msg("cancelled job ended SKIPPED")
		case job.OutcomeStale:
			a.deps.stats.StaleMessages.Add(1)
			a.log.Warn().Int64("job_id", c.Ref.JobID).Str("worker_id", c.Ref.Worker).Int64("attempt", c.Ref.Attempt).Msg("ignored: job no longer held by this claim")
		}
	}
	if requeued {
		a.nextDueKnown = false // write reads it again
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

func (a *queueActor) running(worker string) ([]job.Running, error) {
	ctx, cancel := a.dbctx()
	defer cancel()
	jobs, err := a.deps.db.JobsRunning(ctx, worker)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		return nil, err
	}
	return jobs, nil
}

// requeueWhere requeues the RUNNING jobs that match. Pending conclusions are
// written first, so a receipt that arrived before the worker was lost wins.
func (a *queueActor) requeueWhere(ctx actor.Context, reason string, match func(job.Ref) bool) {
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
		a.pending = append(a.pending, &ConcludeJob{Conclusion: job.Conclusion{Ref: j.Ref, Kind: job.ConcludeRequeue, Message: reason,
			NextRunAt: time.Now().Add(Backoff(a.deps.cfg.RetryBackoff, a.deps.cfg.RetryBackoffMax, j.RetryCount))}})
	}
	if n > 0 {
		a.log.Warn().Int("jobs", n).Str("reason", reason).Msg("requeueing running jobs")
		a.flush(ctx)
	}
}

// checkQueue tells the dispatcher when claimable jobs may have appeared:
// another connection committed (data_version moved), or a job's backoff
// expired. The poll runs it, and so does every QueueNotified: the database's
// notifications are only hints, and data_version decides.
func (a *queueActor) checkQueue(ctx actor.Context) {
	defer a.armPoll(ctx)
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
		a.readNextDue(dctx, now)
	}
	if changed {
		ctx.Send(a.peers.dispatcher, &QueueChanged{})
	}
}

// readNextDue learns when the earliest backoff expires; on an error it
// stays unknown and the next check asks again.
func (a *queueActor) readNextDue(ctx context.Context, now time.Time) {
	t, ok, err := a.deps.db.JobsNextRunAt(ctx, now)
	if err != nil {
		return
	}
	a.nextDueKnown = true
	a.nextDue = time.Time{}
	if ok {
		a.nextDue = t
	}
}

// pollEvery is how often the queue is checked without being told to: a
// safety net when the database tells of other processes' inserts, the only
// way to notice them otherwise.
func (a *queueActor) pollEvery() time.Duration {
	if a.deps.notified {
		return a.deps.cfg.NotifiedPollInterval
	}
	return a.deps.cfg.PollInterval
}

// armPoll arms the next check for a poll interval from now, or for when the
// earliest backoff expires if that is sooner (so a due retry waits for no
// poll, however long), unless the check armed already comes sooner.
func (a *queueActor) armPoll(ctx actor.Context) {
	d := a.pollEvery()
	if a.nextDueKnown && !a.nextDue.IsZero() {
		// One millisecond late: next_run_at is compared in whole ones.
		d = min(d, time.Until(a.nextDue)+time.Millisecond)
	}
	a.armPollIn(ctx, d)
}

func (a *queueActor) armPollIn(ctx actor.Context, d time.Duration) {
	d = max(d, 0)
	at := time.Now().Add(d)
	if a.poll.armed() && !at.Before(a.pollAt) {
		return
	}
	a.pollAt = at
	a.poll.arm(ctx.ActorSystem(), ctx.Self(), d)
}

// operate answers one operator request (see OperatorReply). Writes that can
// make jobs claimable tell the dispatcher at once instead of waiting for the
// next poll.
func (a *queueActor) operate(ctx actor.Context, msg any) *OperatorReply {
	dctx, cancel := a.dbctx()
	defer cancel()
	var v any
	var err error
	switch m := msg.(type) {
	case *JobsQuery:
		v, err = a.deps.db.JobsList(dctx, m.Filter)
	case *JobQuery:
		v, err = a.deps.db.JobGet(dctx, m.ID)
	case *EnqueueJob:
		var id int64
		if err = a.knownPlugin(dctx, m.Submission.Plugin); err != nil {
			break
		}
		if id, err = a.deps.db.JobEnqueue(dctx, m.Submission); err == nil {
			a.deps.stats.JobsEnqueued.Add(1)
			a.log.Info().Int64("job_id", id).Str("plugin", m.Submission.Plugin).Msg("job enqueued by operator")
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
		v = id
	case *CancelJob:
		a.flush(ctx) // a receipt already here decides before the cancel does
		var res job.CancelResult
		if res, err = a.deps.db.JobCancel(dctx, time.Now(), m.ID); err == nil {
			a.cancelled(ctx, m.ID, res)
		}
		v = res
	case *RetryJob:
		if err = a.deps.db.JobRetry(dctx, time.Now(), m.ID); err == nil {
			a.log.Info().Int64("job_id", m.ID).Msg("failed job requeued by operator")
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
	case *CountsQuery:
		v, err = a.deps.db.JobsCountByStatus(dctx)
	case *PluginsQuery:
		v, err = a.deps.db.PluginsList(dctx)
	case *EnvironmentsQuery:
		v, err = a.deps.db.EnvironmentsList(dctx)
	case *SubscribePlugin:
		v, err = a.deps.db.PluginSubscribe(dctx, m.Plugin, m.Tags)
	case *TopicSubscriptionsQuery:
		v, err = a.deps.db.PluginTopicSubscriptions(dctx, m.Plugin)
	case *SubscribeTopic:
		var res job.TopicSubscriptions
		if m.Remove {
			res, err = a.deps.db.PluginTopicUnsubscribe(dctx, m.Plugin, m.Topic)
		} else {
			res, err = a.deps.db.PluginTopicSubscribe(dctx, m.Plugin, m.Topic)
		}
		switch {
		case err == nil && res.Changed:
			a.log.Info().Str("plugin", m.Plugin).Str("topic", m.Topic).Bool("removed", m.Remove).Msg("topic subscription changed by operator")
		case errors.Is(err, job.ErrInvalid), errors.Is(err, job.ErrNotFound):
			a.log.Warn().Err(err).Str("plugin", m.Plugin).Str("topic", m.Topic).Msg("topic subscription refused")
		}
		v = res
	case *SourcesQuery:
		v, err = a.deps.db.SourceRoots(dctx, false)
	case *AddSource:
		v, err = a.deps.db.SourceRootAdd(dctx, m.Path)
	case *RoutesQuery:
		v, err = a.deps.db.RoutingRules(dctx)
	case *AddRoute:
		v, err = a.deps.db.RoutingRuleAdd(dctx, m.Pattern, m.Tag, m.Priority)
	case *HealthQuery:
		_, err = a.deps.db.DataVersion(dctx)
	case *SentinelsQuery:
		v, err = a.deps.db.LeasesLive(dctx)
	case *QueueAgesQuery:
		v, err = a.deps.db.JobsOldestQueued(dctx, time.Now())
	case *PruneJobs:
		var res job.PruneResult
		if res, err = a.deps.db.JobsPrune(dctx, m.Prune, m.Limit, m.DryRun); err == nil && !m.DryRun {
			a.pruned(res, "operator")
		}
		v = res
	case *BulkJobs:
		if !m.DryRun {
			a.flush(ctx) // receipts already here decide before the bulk action does
		}
		var res job.BulkResult
		if res, err = a.deps.db.JobsBulk(dctx, time.Now(), m.Action, m.Filter, m.DryRun); err == nil && !m.DryRun {
			a.bulkDone(ctx, res)
		}
		v = res
	case *PausePlugin:
		var s job.PluginSettings
		if s, err = a.deps.db.PluginPause(dctx, time.Now(), m.Plugin, m.Pause); err == nil {
			a.log.Info().Str("plugin", m.Plugin).Bool("paused", m.Pause).Msg("plugin paused or resumed by operator")
			if !m.Pause {
				ctx.Send(a.peers.dispatcher, &QueueChanged{})
			}
		}
		v = s
	case *SetPluginSettings:
		v, err = a.deps.db.PluginSettingsSet(dctx, time.Now(), m.Plugin, m.Update)
	case *BackfillPlugin:
		v, err = a.backfill(ctx, dctx, m)
	case *RerunPlugin:
		var res job.BackfillResult
		if res, err = a.deps.db.PluginRerun(dctx, time.Now(), m.Plugin, m.DryRun); err == nil && res.Queued > 0 {
			a.log.Info().Str("plugin", m.Plugin).Int64("queued", res.Queued).Msg("plugin's earlier jobs queued again by operator")
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
		v = res
	case *OutputsQuery:
		v, err = a.outputs(dctx, m)
	case *ShadowRunsQuery, *CompareShadow, *EndShadow:
		v, err = a.shadow(ctx, dctx, m)
	case *RerunStale:
		var res job.RerunStaleResult
		if res, err = a.deps.db.OutputsRerunStale(dctx, time.Now(), m.Plugin, m.DryRun); err == nil && res.Queued > res.Reused {
			a.log.Info().Str("plugin", m.Plugin).Int64("queued", res.Queued).Int64("reused", res.Reused).
				Msg("stale outputs queued again by operator")
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
		v = res
	case *AddBuiltin:
		var n int
		if n, err = a.deps.db.BootstrapApply(dctx, db.Bootstrap{Plugins: []db.BootstrapPlugin{{Name: m.Name,
			ManifestVersion: job.BuiltinVersion, ManifestSource: job.BuiltinSource(m.Name), Subscribe: m.Subscribe}}}); err == nil {
			a.log.Info().Str("plugin", m.Name).Strs("subscribe", m.Subscribe).Int("changes", n).Msg("built-in plugin registered by operator")
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
		v = n
	}
	if err != nil && !requestFault(err) {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msgf("operator request %T failed", msg)
	}
	return &OperatorReply{Value: v, Err: err}
}

// knownPlugin refuses a submission for a plugin without an ACTIVE manifest:
// no worker would be dispatched its jobs, which would wait or fail later.
func (a *queueActor) knownPlugin(ctx context.Context, name string) error {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil // JobEnqueue says what is wrong
	}
	plugins, err := a.deps.db.PluginsList(ctx)
	if err != nil {
		return err
	}
	for _, p := range plugins {
		if p.Name == name && p.Active != nil {
			return nil
		}
	}
	hint := "deploy it (casparian publish)"
	if slices.Contains(job.BuiltinPlugins, name) {
		hint = "register the built-in (casparian plugins add-builtin " + name + ")"
	}
	return fmt.Errorf("plugin %q has no ACTIVE manifest: %s: %w", name, hint, job.ErrUnknownPlugin)
}

// cancelled follows up a cancel: a RUNNING job's worker actor must send
// ABORT (through the supervisor, which knows it by claimed_by).
func (a *queueActor) cancelled(ctx actor.Context, id int64, res job.CancelResult) {
	switch {
	case res.Status == job.StatusRunning:
		a.log.Info().Int64("job_id", id).Str("worker_id", res.Claim.Worker).Msg("running job cancelled by operator; aborting it")
		if res.Claim.Worker != "" {
			ctx.Send(a.peers.supervisor, &AbortJob{Ref: res.Claim})
		}
	case res.Previous != job.StatusSkipped:
		a.deps.stats.JobsCancelled.Add(1)
		a.log.Info().Int64("job_id", id).Str("was", string(res.Previous)).Msg("job cancelled by operator")
	}
}

// bulkDone follows up a bulk action: the workers of cancelled RUNNING jobs
// are told to abort; retried jobs are claimable at once.
func (a *queueActor) bulkDone(ctx actor.Context, res job.BulkResult) {
	a.log.Info().Str("action", string(res.Action)).Int64("changed", res.Changed).Int("running", len(res.Running)).
		Msg("bulk action by operator")
	switch res.Action {
	case job.BulkCancel:
		a.deps.stats.JobsCancelled.Add(res.Changed - int64(len(res.Running)))
		for _, r := range res.Running {
			if r.Claim.Worker != "" {
				ctx.Send(a.peers.supervisor, &AbortJob{Ref: r.Claim})
			}
		}
	case job.BulkRetry:
		if res.Changed > 0 {
			ctx.Send(a.peers.dispatcher, &QueueChanged{})
		}
	}
}

// requestFault reports whether err blames the request rather than the
// database.
func requestFault(err error) bool {
	return errors.Is(err, job.ErrNotFound) || errors.Is(err, job.ErrInvalid) || errors.Is(err, job.ErrConflict)
}

// scanState reads what a scan pass needs.
func (a *queueActor) scanState(m *ScanStateQuery) *ScanState {
	dctx, cancel := a.dbctx()
	defer cancel()
	out := &ScanState{Pass: m.Pass}
	fail := func(err error) *ScanState {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("reading scan state failed")
		return &ScanState{Pass: m.Pass, Err: err}
	}
	roots, err := a.deps.db.SourceRoots(dctx, true)
	if err != nil {
		return fail(err)
	}
	for _, r := range roots {
		known, err := a.deps.db.ScanLocations(dctx, r.ID)
		if err != nil {
			return fail(err)
		}
		out.Roots = append(out.Roots, ScanRoot{Root: r, Known: known})
	}
	if out.Ignore, err = a.deps.db.IgnoreRules(dctx); err != nil {
		return fail(err)
	}
	if out.Routes, err = a.deps.db.RoutingRules(dctx); err != nil {
		return fail(err)
	}
	return out
}

// recordScan writes a batch of scanned files in one transaction.
func (a *queueActor) recordScan(ctx actor.Context, m *RecordScan) *ScanRecorded {
	dctx, cancel := a.dbctx()
	defer cancel()
	start := time.Now()
	recs, err := a.deps.db.ScanRecordFiles(dctx, start, m.Files)
	a.deps.stats.ScanWriteTime.Since(start)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Int("files", len(m.Files)).Msg("recording scanned files failed")
		return &ScanRecorded{Pass: m.Pass, Err: err}
	}
	jobs := 0
	for i, r := range recs {
		if r.VersionID != 0 {
			a.deps.stats.FileVersions.Add(1)
			a.log.Debug().Str("file", m.Files[i].RelPath).Int64("file_version_id", r.VersionID).
				Int("jobs", len(r.Jobs)).Msg("file version recorded")
		}
		jobs += len(r.Jobs)
	}
	if jobs > 0 {
		a.deps.stats.JobsEnqueued.Add(int64(jobs))
		ctx.Send(a.peers.dispatcher, &QueueChanged{})
	}
	return &ScanRecorded{Pass: m.Pass, Records: recs}
}

// finishScan marks a root's seen and missing files.
func (a *queueActor) finishScan(m *FinishScan) *ScanFinished {
	dctx, cancel := a.dbctx()
	defer cancel()
	err := a.deps.db.ScanFinish(dctx, time.Now(), m.RootID, m.Seen, m.Missing)
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Int64("source_root_id", m.RootID).Msg("finishing scan failed")
	}
	return &ScanFinished{Pass: m.Pass, Err: err}
}
