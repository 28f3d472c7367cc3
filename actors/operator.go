package actors

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/confine"
	"github.com/casparian/sentinel/job"
)

// The operator surface of a running Sentinel: what the HTTP API, the status
// page and the metrics need. Every method is a request to the actor that owns
// the answer (the queue actor for the database, the worker actors for their
// workers), bounded by the caller's context and an upper timeout. Call them
// from ordinary goroutines, never from inside an actor.

// Errors an operator request can end with besides job.ErrNotFound,
// job.ErrInvalid and job.ErrConflict; callers test them with errors.Is.
var (
	// ErrStopped: the Sentinel is shutting down or stopped.
	ErrStopped = errors.New("sentinel is shutting down")
	// ErrUnavailable: the actor that owns the answer is not running (it
	// is being restarted by supervision); asking again later may work.
	ErrUnavailable = errors.New("sentinel is not available")
)

// maxOperatorWait bounds an operator request when the caller's context has
// no earlier deadline. The queue actor bounds each database call by
// --db-timeout, so this only matters when its mailbox is long.
const maxOperatorWait = 30 * time.Second

// Ready reports whether the Sentinel is serving: the tree is started and no
// Stop has begun.
func (s *Sentinel) Ready() bool { return !s.stopping.Load() }

// Endpoint is the ZeroMQ endpoint the router is bound to.
func (s *Sentinel) Endpoint() string { return s.router.Endpoint() }

// Health returns nil when the Sentinel is serving, even degraded (see
// HealthCheck); ErrStopped as soon as a Stop has begun, or the reason it
// cannot serve.
func (s *Sentinel) Health(ctx context.Context) error {
	h := s.HealthCheck(ctx)
	if h.Status == HealthUnavailable {
		return h.Err
	}
	return nil
}

// Health statuses, as /healthz reports them.
const (
	HealthOK          = "ok"
	HealthDegraded    = "degraded"    // serving, but the database is slow or locked
	HealthUnavailable = "unavailable" // not serving: stopping, database lost, writes failing
)

// HealthState is the Sentinel's health: Status is one of the Health
// constants; Err says why it is not HealthOK.
type HealthState struct {
	Status string
	Err    error
}

// healthWait bounds how long HealthCheck waits for the queue actor, so that
// /healthz answers within a second even while the actor waits on a lock.
const healthWait = 700 * time.Millisecond

// HealthCheck says whether the Sentinel serves. Unavailable: a Stop has
// begun, the database file was deleted or replaced or the lease lost (then
// dispatching has stopped too), or writes fail. Degraded: a write has waited
// on another connection's lock for over a second, or the queue actor did not
// answer within healthWait. It never waits longer than healthWait.
func (s *Sentinel) HealthCheck(ctx context.Context) HealthState {
	if s.stopping.Load() {
		return HealthState{HealthUnavailable, ErrStopped}
	}
	problem, degraded := s.watch.problem()
	if problem != nil && !degraded {
		return HealthState{HealthUnavailable, problem}
	}
	ctx, cancel := context.WithTimeout(ctx, healthWait)
	defer cancel()
	if _, err := s.ask(ctx, &HealthQuery{}); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			return HealthState{HealthUnavailable, err}
		}
		if problem == nil {
			problem = fmt.Errorf("the queue actor did not answer within %s (busy with the database)", healthWait)
		}
		degraded = true
	}
	if degraded {
		return HealthState{HealthDegraded, problem}
	}
	return HealthState{Status: HealthOK}
}

// SentinelInfo is a Sentinel serving the database, as its lease row says.
type SentinelInfo struct {
	ID          string
	Host        string
	PID         int
	Endpoint    string
	StartedAt   time.Time
	HeartbeatAt time.Time
	// Self: this is the Sentinel answering. Leader is known only for it.
	Self, Leader bool
}

func sentinelInfo(o db.LeaseOwner) SentinelInfo {
	return SentinelInfo{ID: o.ID, Host: o.Host, PID: o.PID, Endpoint: o.Endpoint,
		StartedAt: o.StartedAt, HeartbeatAt: o.HeartbeatAt}
}

// Self is this Sentinel as its lease says, and whether it leads (runs the
// scanner and the sweeps). On SQLite it is the database's one Sentinel.
func (s *Sentinel) Self() SentinelInfo {
	me := sentinelInfo(s.lease.Owner())
	me.Self, me.Leader = true, s.lease.Leading()
	return me
}

// Sentinels lists the Sentinels whose lease is live, this one marked Self,
// oldest first. On PostgreSQL several serve one database.
func (s *Sentinel) Sentinels(ctx context.Context) ([]SentinelInfo, error) {
	owners, err := askValue[[]db.LeaseOwner](ctx, s, &SentinelsQuery{})
	if err != nil {
		return nil, err
	}
	me := s.Self()
	out := make([]SentinelInfo, 0, len(owners))
	found := false
	for _, o := range owners {
		if o.ID == me.ID {
			out, found = append(out, me), true
			continue
		}
		out = append(out, sentinelInfo(o))
	}
	if !found { // its row is being renewed, or the database lost it: still here
		out = append(out, me)
	}
	return out, nil
}

// Jobs returns one page of jobs, newest first.
func (s *Sentinel) Jobs(ctx context.Context, f job.Filter) (job.Page, error) {
	return askValue[job.Page](ctx, s, &JobsQuery{Filter: f})
}

// Job returns one job with its receipt, or job.ErrNotFound.
func (s *Sentinel) Job(ctx context.Context, id int64) (job.Info, error) {
	return askValue[job.Info](ctx, s, &JobQuery{ID: id})
}

// Bulk retries or cancels every job f selects (its paging is ignored), or
// with dryRun only counts them; see job.BulkAction.
func (s *Sentinel) Bulk(ctx context.Context, action job.BulkAction, f job.Filter, dryRun bool) (job.BulkResult, error) {
	return askValue[job.BulkResult](ctx, s, &BulkJobs{Action: action, Filter: f, DryRun: dryRun})
}

// Prune deletes the finished jobs p selects (see job.Prune), PruneBatch
// at a time, each batch its own transaction and its own message to the queue
// actor so that claims are handled in between; with dryRun it only counts
// them. It returns what was deleted so far when ctx ends.
func (s *Sentinel) Prune(ctx context.Context, p job.Prune, dryRun bool) (job.PruneResult, error) {
	if dryRun {
		return askValue[job.PruneResult](ctx, s, &PruneJobs{Prune: p, DryRun: true})
	}
	var total job.PruneResult
	for {
		res, err := askValue[job.PruneResult](ctx, s, &PruneJobs{Prune: p, Limit: PruneBatch})
		total.Completed += res.Completed
		total.Failed += res.Failed
		if err != nil || res.Total() < PruneBatch {
			return total, err
		}
	}
}

// QueueAges returns when the oldest due QUEUED job of each plugin was
// enqueued (see db.Store's JobsOldestQueued).
func (s *Sentinel) QueueAges(ctx context.Context) ([]job.QueueAge, error) {
	return askValue[[]job.QueueAge](ctx, s, &QueueAgesQuery{})
}

// Enqueued is what Enqueue did: the new job's id, and a warning when no
// connected worker can run its plugin now (the job waits for one).
type Enqueued struct {
	ID      int64
	Warning string
}

// Enqueue inserts a QUEUED job. A plugin without an ACTIVE manifest is
// refused (job.ErrUnknownPlugin); one that no connected worker can run is
// accepted with a warning, counted in JobsEnqueuedUnrunnable.
func (s *Sentinel) Enqueue(ctx context.Context, sub job.Submission) (Enqueued, error) {
	id, err := askValue[int64](ctx, s, &EnqueueJob{Submission: sub})
	if err != nil {
		return Enqueued{}, err
	}
	out := Enqueued{ID: id}
	workers, err := s.WorkersInfo(ctx)
	if err != nil {
		return out, nil // the job is in; the warning is only advice
	}
	plugin := strings.TrimSpace(sub.Plugin)
	for _, w := range workers {
		if slices.ContainsFunc(w.Capabilities, func(c string) bool { return c == "*" || c == plugin }) {
			return out, nil
		}
	}
	s.stats.JobsEnqueuedUnrunnable.Add(1)
	out.Warning = fmt.Sprintf("no connected worker can run plugin %q: the job waits until one that can connects", plugin)
	return out, nil
}

// AddBuiltin registers a built-in plugin of the sample worker (one of
// job.BuiltinPlugins): an ACTIVE manifest unless it has one, and the
// subscription tags. It returns the rows it changed: 0 when all was there.
func (s *Sentinel) AddBuiltin(ctx context.Context, name string, subscribe []string) (int, error) {
	if !slices.Contains(job.BuiltinPlugins, name) {
		return 0, fmt.Errorf("%q is not a built-in plugin (they are %s): %w",
			name, strings.Join(job.BuiltinPlugins, ", "), job.ErrInvalid)
	}
	return askValue[int](ctx, s, &AddBuiltin{Name: name, Subscribe: subscribe})
}

// Cancel cancels a job: QUEUED or PENDING becomes SKIPPED; a RUNNING job's
// worker is sent ABORT and the job becomes SKIPPED when it concludes.
func (s *Sentinel) Cancel(ctx context.Context, id int64) (job.CancelResult, error) {
	return askValue[job.CancelResult](ctx, s, &CancelJob{ID: id})
}

// Retry puts a FAILED job back to QUEUED.
func (s *Sentinel) Retry(ctx context.Context, id int64) error {
	_, err := s.ask(ctx, &RetryJob{ID: id})
	return err
}

// Counts returns the number of jobs in each status.
func (s *Sentinel) Counts(ctx context.Context) (map[job.Status]int64, error) {
	return askValue[map[job.Status]int64](ctx, s, &CountsQuery{})
}

// Plugins lists the plugins with their active manifest and versions.
func (s *Sentinel) Plugins(ctx context.Context) ([]job.Plugin, error) {
	return askValue[[]job.Plugin](ctx, s, &PluginsQuery{})
}

// Subscribe adds file tags to a plugin's subscriptions and returns its tags.
func (s *Sentinel) Subscribe(ctx context.Context, plugin string, tags []string) ([]string, error) {
	return askValue[[]string](ctx, s, &SubscribePlugin{Plugin: plugin, Tags: tags})
}

// TopicSubscriptions lists a plugin's topic subscriptions (chaining). An
// unknown plugin is job.ErrNotFound.
func (s *Sentinel) TopicSubscriptions(ctx context.Context, plugin string) (job.TopicSubscriptions, error) {
	return askValue[job.TopicSubscriptions](ctx, s, &TopicSubscriptionsQuery{Plugin: plugin})
}

// SubscribeTopic subscribes a plugin to another plugin's topic, topic
// being "PRODUCER:TOPIC": each artifact of that topic gets a job of the
// plugin. A subscription that would make a cycle is job.ErrInvalid naming
// it, and nothing is written.
func (s *Sentinel) SubscribeTopic(ctx context.Context, plugin, topic string) (job.TopicSubscriptions, error) {
	return askValue[job.TopicSubscriptions](ctx, s, &SubscribeTopic{Plugin: plugin, Topic: topic})
}

// UnsubscribeTopic removes a plugin's subscription to topic.
func (s *Sentinel) UnsubscribeTopic(ctx context.Context, plugin, topic string) (job.TopicSubscriptions, error) {
	return askValue[job.TopicSubscriptions](ctx, s, &SubscribeTopic{Plugin: plugin, Topic: topic, Remove: true})
}

// PausePlugin pauses a plugin (pause true) or resumes it, and returns its
// settings. A paused plugin's QUEUED jobs are not claimed, by any Sentinel
// of the database; its RUNNING ones finish. Resuming makes its jobs
// claimable at once. An unknown plugin is job.ErrNotFound.
func (s *Sentinel) PausePlugin(ctx context.Context, plugin string, pause bool) (job.PluginSettings, error) {
	return askValue[job.PluginSettings](ctx, s, &PausePlugin{Plugin: plugin, Pause: pause})
}

// SetPluginSettings changes a plugin's job timeout and max retries, which
// override --job-timeout and --max-retries for its jobs (claimed from then
// on, for the timeout; requeued from then on, for the retries).
func (s *Sentinel) SetPluginSettings(ctx context.Context, plugin string, u job.PluginSettingsUpdate) (job.PluginSettings, error) {
	return askValue[job.PluginSettings](ctx, s, &SetPluginSettings{Plugin: plugin, Update: u})
}

// Backfill queues a job of the plugin for every current file version its
// subscriptions match that has no job of it yet, or with dryRun counts
// them. A second backfill queues nothing the first did.
func (s *Sentinel) Backfill(ctx context.Context, plugin string, dryRun bool) (job.BackfillResult, error) {
	return askValue[job.BackfillResult](ctx, s, &BackfillPlugin{Plugin: plugin, DryRun: dryRun})
}

// Rerun queues again, once per file, the plugin's jobs that COMPLETED
// before its ACTIVE manifest was deployed (the queue records no manifest
// per job, so that is what "ran under an earlier version" means), or with
// dryRun counts them.
func (s *Sentinel) Rerun(ctx context.Context, plugin string, dryRun bool) (job.BackfillResult, error) {
	return askValue[job.BackfillResult](ctx, s, &RerunPlugin{Plugin: plugin, DryRun: dryRun})
}

// FileLineage returns what was made from a file version, by which job,
// attempt and manifest (issue #20).
func (s *Sentinel) FileLineage(ctx context.Context, versionID int64) ([]job.Output, error) {
	return askValue[[]job.Output](ctx, s, &OutputsQuery{FileVersionID: versionID})
}

// OutputProvenance returns where the outputs written to uri came from,
// newest first.
func (s *Sentinel) OutputProvenance(ctx context.Context, uri string) ([]job.Output, error) {
	return askValue[[]job.Output](ctx, s, &OutputsQuery{URI: uri})
}

// StaleOutputs returns the outputs a newer file version or a newer ACTIVE
// manifest made stale, of plugin ("" for all).
func (s *Sentinel) StaleOutputs(ctx context.Context, plugin string) ([]job.Output, error) {
	return askValue[[]job.Output](ctx, s, &OutputsQuery{Stale: true, Plugin: plugin})
}

// ShadowRuns lists the shadow runs of plugin ("" for all), newest first.
func (s *Sentinel) ShadowRuns(ctx context.Context, plugin string) ([]job.ShadowRun, error) {
	return askValue[[]job.ShadowRun](ctx, s, &ShadowRunsQuery{Plugin: plugin})
}

// ShadowCompare compares plugin's shadow run of version over baseVersion
// with what baseVersion wrote, per file version.
func (s *Sentinel) ShadowCompare(ctx context.Context, plugin, baseVersion, version string) (job.ShadowComparison, error) {
	return askValue[job.ShadowComparison](ctx, s, &CompareShadow{Plugin: plugin, BaseVersion: baseVersion, Version: version})
}

// ShadowEnd promotes (promote) or discards plugin's RUNNING shadow run of
// version.
func (s *Sentinel) ShadowEnd(ctx context.Context, plugin, version string, promote bool) (job.ShadowEnd, error) {
	return askValue[job.ShadowEnd](ctx, s, &EndShadow{Plugin: plugin, Version: version, Promote: promote})
}

// RerunStale queues a job per stale current file version × plugin, or with
// dryRun counts them.
func (s *Sentinel) RerunStale(ctx context.Context, plugin string, dryRun bool) (job.RerunStaleResult, error) {
	return askValue[job.RerunStaleResult](ctx, s, &RerunStale{Plugin: plugin, DryRun: dryRun})
}

// Rescan asks the scanner to run a pass now (or right after the one in
// progress). Only the leader scans: on another Sentinel of a shared
// database, or with the scanner off, it is job.ErrConflict, naming why.
func (s *Sentinel) Rescan(ctx context.Context) error {
	if _, err := s.wait(ctx); err != nil {
		return err
	}
	if !s.scanning {
		return fmt.Errorf("the scanner is off (--scan-interval 0): %w", job.ErrConflict)
	}
	if !s.lease.Leading() {
		return fmt.Errorf("this Sentinel does not lead the database: the leader scans; ask it: %w", job.ErrConflict)
	}
	s.system.Root.Send(s.system.NewLocalPID(s.top.Id+"/scanner"), &RescanSources{})
	return nil
}

// Sources lists the source roots.
func (s *Sentinel) Sources(ctx context.Context) ([]job.SourceRoot, error) {
	return askValue[[]job.SourceRoot](ctx, s, &SourcesQuery{})
}

// AddSource adds or reactivates a source root; the next scan walks it. A
// folder that is not at or under one of --allowed-roots, once ".." and
// symbolic links are resolved, is refused (job.ErrInvalid) with a message naming
// it and the allowed roots. The check runs here, in the caller's goroutine,
// because it reads the file system, which the queue actor's mailbox must not
// wait on; the scanner checks every root again at each pass.
func (s *Sentinel) AddSource(ctx context.Context, path string) (job.SourceRoot, error) {
	// A relative path is left to the database, which refuses it as such.
	if filepath.IsAbs(path) {
		if _, err := CheckSourceRoot(path, s.roots); err != nil {
			return job.SourceRoot{}, fmt.Errorf("%w: %w", err, job.ErrInvalid)
		}
	}
	return askValue[job.SourceRoot](ctx, s, &AddSource{Path: path})
}

// CheckSourceRoot returns where path resolves to, or an error naming path
// and the allowed roots when that is not at or under one of them
// (--allowed-roots, after ".." and symbolic links are resolved; a
// *confine.OutsideError). The API, the bootstrap file and the scanner all
// judge source roots with it.
func CheckSourceRoot(path string, allowed []string) (string, error) {
	resolved, err := confine.Check(path, allowed, "--allowed-roots")
	if err != nil {
		return "", fmt.Errorf("source root %w", err)
	}
	return resolved, nil
}

// Routes lists the routing rules.
func (s *Sentinel) Routes(ctx context.Context) ([]job.RoutingRule, error) {
	return askValue[[]job.RoutingRule](ctx, s, &RoutesQuery{})
}

// AddRoute adds a routing rule and returns its id.
func (s *Sentinel) AddRoute(ctx context.Context, pattern, tag string, priority int64) (int64, error) {
	return askValue[int64](ctx, s, &AddRoute{Pattern: pattern, Tag: tag, Priority: priority})
}

// WorkersInfo describes every connected worker, by id. The supervisor names
// the worker actors; each is then asked in parallel, and one that stops
// meanwhile is left out.
func (s *Sentinel) WorkersInfo(ctx context.Context) ([]WorkerInfo, error) {
	wait, err := s.wait(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.system.Root.RequestFuture(s.top, &WorkerPIDsQuery{}, wait).Result()
	if err != nil {
		return nil, s.requestErr(err)
	}
	pids, draining := res.(*WorkerPIDs).ByKey, res.(*WorkerPIDs).Draining
	out := make([]WorkerInfo, 0, len(pids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.system.Root.RequestFuture(pid, &WorkerInfoQuery{}, wait).Result()
			if info, ok := res.(*WorkerInfo); err == nil && ok {
				info.Draining = draining[info.ID]
				mu.Lock()
				out = append(out, *info)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Environments lists the plugin environments, the most recently used
// first, with the manifests that name them.
func (s *Sentinel) Environments(ctx context.Context) ([]job.Environment, error) {
	return askValue[[]job.Environment](ctx, s, &EnvironmentsQuery{})
}

// DrainWorker drains a connected worker (drain) or undrains it: a drained
// worker gets no new jobs and its running ones finish. The drain holds by
// the worker's key while this Sentinel runs, across reconnects, until
// undrained. An unknown worker is job.ErrNotFound.
func (s *Sentinel) DrainWorker(ctx context.Context, worker string, drain bool) error {
	_, err := s.askSupervisor(ctx, &DrainWorker{Worker: worker, Drain: drain})
	return err
}

// DisconnectWorker forgets a connected worker now: its RUNNING jobs are
// requeued, as after a timeout, and it is told to IDENTIFY again. An
// unknown worker is job.ErrNotFound.
func (s *Sentinel) DisconnectWorker(ctx context.Context, worker string) error {
	_, err := s.askSupervisor(ctx, &DisconnectWorker{Worker: worker})
	return err
}

// askSupervisor sends an operator request to the supervisor and waits for
// its reply.
func (s *Sentinel) askSupervisor(ctx context.Context, msg any) (any, error) {
	return s.askActor(ctx, s.top, msg)
}

// ask sends an operator request to the queue actor and waits for its reply.
func (s *Sentinel) ask(ctx context.Context, msg any) (any, error) {
	return s.askActor(ctx, s.queue, msg)
}

func (s *Sentinel) askActor(ctx context.Context, pid *actor.PID, msg any) (any, error) {
	wait, err := s.wait(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.system.Root.RequestFuture(pid, msg, wait).Result()
	if err != nil {
		return nil, s.requestErr(err)
	}
	reply, ok := res.(*OperatorReply)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T", res)
	}
	return reply.Value, reply.Err
}

func askValue[T any](ctx context.Context, s *Sentinel, msg any) (T, error) {
	var zero T
	v, err := s.ask(ctx, msg)
	if err != nil {
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("unexpected reply value %T", v)
	}
	return t, nil
}

// wait is how long a request may take: the caller's deadline, at most
// maxOperatorWait; ErrStopped once the actors are being stopped (during the
// drain requests are still answered, so operators can watch it).
func (s *Sentinel) wait(ctx context.Context) (time.Duration, error) {
	if s.stopped.Load() {
		return 0, ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	wait := maxOperatorWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d))
	}
	if wait <= 0 {
		return 0, context.DeadlineExceeded
	}
	return wait, nil
}

// requestErr names a request that got no answer; a Stop that began
// meanwhile is reported as such.
func (s *Sentinel) requestErr(err error) error {
	if s.stopped.Load() {
		return ErrStopped
	}
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return fmt.Errorf("no answer from the actor tree in time: %w", context.DeadlineExceeded)
	case errors.Is(err, actor.ErrDeadLetter):
		return fmt.Errorf("%w: the actor that answers is restarting", ErrUnavailable)
	}
	return err
}
