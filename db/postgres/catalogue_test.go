package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// The rest of db.Store (sources, files, plugins, deploys) and the bootstrap,
// tested the same way on both backends as the job path is (store_test.go).

// storeSansLease is db.Store without DataVersion and LeaseAcquire, which
// differ between the backends until the lease is an interface: exactly the
// methods both implement.
type storeSansLease interface {
	db.JobStore

	SourceRoots(ctx context.Context, activeOnly bool) ([]job.SourceRoot, error)
	SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error)
	IgnoreRules(ctx context.Context) ([]db.IgnoreRule, error)
	RoutingRules(ctx context.Context) ([]job.RoutingRule, error)
	RoutingRuleAdd(ctx context.Context, pattern, tag string, priority int64) (int64, error)
	ScanLocations(ctx context.Context, rootID int64) (map[string]db.ScanLocation, error)
	ScanRecordFiles(ctx context.Context, now time.Time, files []db.ScannedFile) ([]db.ScanRecord, error)
	ScanFinish(ctx context.Context, now time.Time, rootID int64, seen, missing []int64) error

	PluginsList(ctx context.Context) ([]job.Plugin, error)
	PluginSubscribe(ctx context.Context, plugin string, tags []string) ([]string, error)
	PluginDeploy(ctx context.Context, now time.Time, d db.Deployment) (db.DeployResult, error)
	EnvironmentLockfile(ctx context.Context, hash string) (string, error)
	EnvironmentsList(ctx context.Context) ([]job.Environment, error)
}

// catalogueStore is storeSansLease plus the bootstrap and the seeding
// helpers the tests, the demo and the benchmark use.
type catalogueStore interface {
	storeSansLease

	BootstrapApply(ctx context.Context, b db.Bootstrap) (int, error)
	IgnoreRuleAdd(ctx context.Context, rootID int64, pattern string) (int64, error)
	PluginManifestActivate(ctx context.Context, plugin, version, sourceCode, envHash, artifactHash string) (int64, error)
	TopicConfigAdd(ctx context.Context, plugin, topic, uri, mode, schemaJSON string) (int64, error)
	FileVersionAdd(ctx context.Context, sourceRootID int64, relPath string, contentHash string,
		size int64, modTime time.Time, tags []string) (int64, error)
	PluginManifestRows(ctx context.Context, plugin string) ([]db.ManifestRow, error)
}

var (
	_ catalogueStore = (*db.DB)(nil)
	_ catalogueStore = (*DB)(nil)
)

// cat returns the fixture's store as a catalogueStore.
func (fx fixture) cat(t testing.TB) catalogueStore {
	t.Helper()
	s, ok := fx.s.(catalogueStore)
	if !ok {
		t.Fatalf("%T is no catalogueStore", fx.s)
	}
	return s
}

// wantErr fails unless err wraps target.
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

// result is a call's value and error, for must(call(…)).get(t).
type result[T any] struct {
	v   T
	err error
}

// must holds a call's results until get checks them.
func must[T any](v T, err error) result[T] { return result[T]{v, err} }

// get fails the test on the call's error and returns its value.
func (r result[T]) get(t testing.TB) T {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}
