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
	EnvironmentLockfile(ctx context.Context, hash string) (string, error)

	// The database itself: whether another connection wrote (db.go), and
	// the lease that makes this process its one Sentinel (lease.go). The
	// Lease is SQLite's (a flock and a row); a second backend makes it an
	// interface of the calls the database watch makes on it.
	DataVersion(ctx context.Context) (int64, error)
	LeaseAcquire(ctx context.Context, who LeaseOwner, ttl time.Duration) (*Lease, error)
}

var _ Store = (*DB)(nil)

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
	JobsCountByStatus(ctx context.Context) (map[job.Status]int64, error)
	JobsNextRunAt(ctx context.Context, now time.Time) (time.Time, bool, error)

	// Claims and conclusions (claims.go).
	JobsBatch(ctx context.Context, now time.Time, cs []job.Conclusion, reqs []job.ClaimRequest) (BatchResult, error)
	JobsRunning(ctx context.Context, worker job.WorkerKey) ([]job.Running, error)
}
