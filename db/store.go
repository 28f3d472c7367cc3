package db

import (
	"context"
	"time"

	"github.com/casparian/sentinel/job"
)

// Store is the boundary between the Sentinel's actors and its database:
// exactly the calls the queue actor makes (it owns every other database
// call) and the one the database watch makes to take the lease. *DB, the
// SQLite database, implements it; a PostgreSQL backend will implement it
// next, and the actors will not notice which one they hold.
//
// Every method is bounded by ctx. Errors that blame the request wrap
// job.ErrNotFound, job.ErrInvalid or job.ErrConflict; anything else is the
// database's.
type Store interface {
	JobStore

	// Files and sources (files.go, sources.go).
	SourceRoots(ctx context.Context, activeOnly bool) ([]job.SourceRoot, error)
	SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error)
	IgnoreRules(ctx context.Context) ([]IgnoreRule, error)
	RoutingRules(ctx context.Context) ([]job.RoutingRule, error)
	RoutingRuleAdd(ctx context.Context, pattern, tag string, priority int64) (int64, error)
	ScanLocations(ctx context.Context, rootID int64) (map[string]ScanLocation, error)
	ScanRecordFiles(ctx context.Context, now time.Time, files []ScannedFile) ([]ScanRecord, error)
	ScanFinish(ctx context.Context, now time.Time, rootID int64, seen, missing []int64) error

	// Plugins and deploys (plugins.go, deploy.go).
	PluginsList(ctx context.Context) ([]job.Plugin, error)
	PluginSubscribe(ctx context.Context, plugin string, tags []string) ([]string, error)
	PluginDeploy(ctx context.Context, now time.Time, d Deployment) (DeployResult, error)
	BootstrapApply(ctx context.Context, b Bootstrap) (int, error)
	EnvironmentLockfile(ctx context.Context, hash string) (string, error)
	EnvironmentsList(ctx context.Context) ([]job.Environment, error)

	// Per-plugin settings, backfills and reruns (pluginsettings.go).
	PluginPause(ctx context.Context, now time.Time, plugin string, pause bool) (job.PluginSettings, error)
	PluginSettingsSet(ctx context.Context, now time.Time, plugin string, u job.PluginSettingsUpdate) (job.PluginSettings, error)
	PluginBackfillFiles(ctx context.Context, plugin string) ([]BackfillFile, error)
	PluginBackfill(ctx context.Context, now time.Time, plugin string, files []BackfillFile) (int64, error)
	PluginRerun(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.BackfillResult, error)

	// Lineage, stale outputs and reuse (outputs.go, reuse.go).
	OutputsOfVersion(ctx context.Context, versionID int64) ([]job.Output, error)
	OutputProvenance(ctx context.Context, uri string, limit int) ([]job.Output, error)
	OutputsStale(ctx context.Context, plugin string) ([]job.Output, error)
	OutputsRerunStale(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.RerunStaleResult, error)
	OnReuse(f func(plugin string))

	// Chaining by topic (chain.go): plugins subscribed to other plugins'
	// topics, and the chain step that queues their jobs on the artifacts
	// the completions marked.
	PluginTopicSubscriptions(ctx context.Context, plugin string) (job.TopicSubscriptions, error)
	PluginTopicSubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error)
	PluginTopicUnsubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error)
	ChainsPending(ctx context.Context, limit int) (job.ChainWork, error)
	ChainsRecord(ctx context.Context, now time.Time, in []job.ChainInput) (job.ChainResult, error)
	// Shadow runs of a new plugin version (shadow.go; PluginDeploy with
	// Deployment.Shadow begins one).
	ShadowRuns(ctx context.Context, plugin string) ([]job.ShadowRun, error)
	ShadowCompare(ctx context.Context, plugin, baseVersion, version string) (job.ShadowComparison, error)
	ShadowEnd(ctx context.Context, now time.Time, plugin, version string, promote bool) (job.ShadowEnd, error)
	// SetLineage turns on recording outputs with each completion and
	// reusing earlier results at enqueue (off until called; --lineage).
	SetLineage(on bool)

	// The database itself: whether another connection wrote (db.go), the
	// lease that makes this process a Sentinel of it, and the Sentinels
	// that hold one now (lease.go). SQLite has one Sentinel per database,
	// PostgreSQL several.
	DataVersion(ctx context.Context) (int64, error)
	LeaseAcquire(ctx context.Context, who LeaseOwner, ttl time.Duration) (Lease, error)
	LeasesLive(ctx context.Context) ([]LeaseOwner, error)
}

var _ Store = (*DB)(nil)

// QueueNotifier is a Store that hears of jobs other processes insert:
// QueueChanges receives when the queue may have changed, and DataVersion
// then tells whether it did. SQLite watches its files (inotify, on Linux),
// PostgreSQL LISTENs. When the store cannot hear (SQLite elsewhere, or
// inotify refused), QueueChanges returns an error saying why, and the
// caller polls DataVersion, as it does a Store without it.
type QueueNotifier interface {
	QueueChanges() (<-chan struct{}, error)
}

var _ QueueNotifier = (*DB)(nil)

// Lease is one Sentinel's hold on the database, taken by
// Store.LeaseAcquire, renewed while the Sentinel runs and released when it
// stops. The database watch is its only user.
type Lease interface {
	// Owner is the lease's row as this Sentinel last wrote it.
	Owner() LeaseOwner
	// Previous is the owner this lease took over from, if it took over: a
	// Sentinel that ended without releasing.
	Previous() (LeaseOwner, bool)
	// Renew moves the expiry forward. ErrLeaseLost means the lease is gone
	// for good; ErrBusy, that the write waited on a lock and gave up.
	Renew(ctx context.Context) error
	// Check reports, cheaply and without waiting on the database, whether
	// what the lease stands on is still there (ErrFileGone, ErrLeaseLost).
	Check() error
	// Release gives the lease up.
	Release(ctx context.Context) error
	// Leading reports whether this Sentinel leads the ones sharing the
	// database: the leader runs the scanner and the sweeps. A SQLite
	// database has one Sentinel, which always leads.
	Leading() bool
	// Shared reports whether other Sentinels may serve the database
	// (PostgreSQL). Then a lost lease means they take this one's jobs,
	// and a restarted Sentinel joins them again with a new lease.
	Shared() bool
}

// JobStore is the job path of Store: jobs as operators read and write them,
// claims and conclusions. It is the part every backend implements first
// (db/postgres has it), and the part the backends' shared tests run on.
type JobStore interface {
	// Jobs, as operators read and write them (jobs.go).
	JobsList(ctx context.Context, f job.Filter) (job.Page, error)
	JobGet(ctx context.Context, id int64) (job.Info, error)
	JobEnqueue(ctx context.Context, s job.Submission) (int64, error)
	JobCancel(ctx context.Context, now time.Time, id int64) (job.CancelResult, error)
	JobRetry(ctx context.Context, now time.Time, id int64) error
	JobsBulk(ctx context.Context, now time.Time, action job.BulkAction, f job.Filter, dryRun bool) (job.BulkResult, error)
	JobsCountByStatus(ctx context.Context) (map[job.Status]int64, error)
	JobsNextRunAt(ctx context.Context, now time.Time) (time.Time, bool, error)

	// Retention and the queue's metrics (prune.go, queueage.go).
	JobsPrune(ctx context.Context, p job.Prune, limit int, dryRun bool) (job.PruneResult, error)
	JobsOldestQueued(ctx context.Context, now time.Time) ([]job.QueueAge, error)
	JobsEnqueuedAt(ctx context.Context, ids []int64) (map[int64]time.Time, error)

	// Claims and conclusions (claims.go).
	JobsBatch(ctx context.Context, now time.Time, cs []job.Conclusion, reqs []job.ClaimRequest) (BatchResult, error)
	JobsRunning(ctx context.Context, worker job.WorkerKey) ([]job.Running, error)
}
