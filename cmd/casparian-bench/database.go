package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/db/backend"
	"github.com/casparian/sentinel/db/postgres"
	"github.com/casparian/sentinel/job"
)

// store is what the bench does in the database: seed jobs and count them.
// Both backends have these methods.
type store interface {
	SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error)
	FileVersionAdd(ctx context.Context, sourceRootID int64, relPath string, contentHash string,
		size int64, modTime time.Time, tags []string) (int64, error)
	PluginManifestActivate(ctx context.Context, plugin, version, sourceCode, envHash, artifactHash string) (int64, error)
	JobsEnqueueBulk(ctx context.Context, fileVersionID int64, plugin string, priority int64, n int) error
	JobsCountWithStatus(ctx context.Context, status job.Status) (int64, error)
	JobsFinishedBulk(ctx context.Context, fileVersionID int64, plugin string, status job.Status, ended time.Time, n int) error
}

var (
	_ store = (*db.DB)(nil)
	_ store = (*postgres.DB)(nil)
)

// openStore opens the database a --database setting names, as the
// Sentinel does; done closes it.
func openStore(ctx context.Context, setting string) (s store, done func(), err error) {
	d, err := backend.Open(ctx, setting)
	if err != nil {
		return nil, nil, err
	}
	// Only seeding and counting: closing loses nothing.
	done = func() { _ = d.Close() }
	s, ok := d.(store)
	if !ok {
		done()
		return nil, nil, fmt.Errorf("a %s database cannot be seeded by the bench", d.Kind())
	}
	return s, done, nil
}

// benchDatabase names the database a run makes on the server; the pid
// keeps two benches on one server apart.
func benchDatabase() string { return fmt.Sprintf("casparian_bench_%d", os.Getpid()) }

// createDatabase makes the run's own empty database on the server the
// PostgreSQL URL reaches and returns its URL, so that every run starts
// clean whatever is in the database the URL names.
func createDatabase(ctx context.Context, serverURL string) (string, error) {
	u, err := postgres.DatabaseCreate(ctx, serverURL, benchDatabase())
	if err != nil {
		return "", fmt.Errorf("%w (the user of --database needs CREATEDB)", err)
	}
	return u, nil
}

// dropDatabase drops the run's database once the Sentinels have stopped.
// A database left behind (the drop failed) is named, for the operator.
func dropDatabase(serverURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := postgres.DatabaseDrop(ctx, serverURL, benchDatabase()); err != nil {
		fmt.Fprintf(os.Stderr, "casparian-bench: %v; drop it by hand\n", err)
	}
}
