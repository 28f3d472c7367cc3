// Command casparian-demo runs a Sentinel with a few workers on a fresh SQLite
// file and watches a demo queue drain: it writes sample files, registers them
// as file versions, deploys two plugins, queues one job per file and plugin,
// then prints the queue by status until every job has concluded.
//
// Everything is real: the Sentinel binds a ZeroMQ ROUTER on 127.0.0.1, the
// workers connect DEALER sockets over TCP and read the files they are sent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "casparian-demo:", err)
		os.Exit(1)
	}
}

// demoPlugins are the plugins the demo deploys; the workers run them by
// reading the file (line count, size, SHA-256).
var demoPlugins = []string{"line_count", "checksum"}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("casparian-demo", flag.ContinueOnError)
	dir := fs.String("dir", "demo-data", "folder for the demo database and sample files (created; its database is replaced)")
	workers := fs.Int("workers", 3, "number of workers")
	slots := fs.Int("slots", 2, "concurrent jobs per worker")
	files := fs.Int("files", 40, "number of sample files")
	delay := fs.Duration("job-delay", 50*time.Millisecond, "extra time each job takes, so the queue can be watched")
	logLevel := fs.String("log-level", "warn", "sentinel log level")
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		return err
	}
	level, err := zerolog.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if *workers < 1 || *slots < 1 || *files < 1 {
		return errors.New("--workers, --slots and --files must be at least 1")
	}

	root, err := filepath.Abs(filepath.Join(*dir, "inbox"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	dbPath := filepath.Join(*dir, "casparian_demo.db")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(dbPath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	store, err := db.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer store.Close()
	jobs, err := seed(ctx, store, root, *files)
	if err != nil {
		return fmt.Errorf("seed demo queue: %w", err)
	}
	fmt.Fprintf(out, "database %s: %d jobs QUEUED over %d files in %s\n", dbPath, jobs, *files, root)

	cfg := config.Default()
	cfg.Bind = "tcp://127.0.0.1:0"
	cfg.Database = dbPath
	stats := actors.NewStats()
	router, err := transport.ListenRouter(cfg.Bind, actors.RouterOptions(cfg, stats))
	if err != nil {
		return err
	}
	defer router.Close()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).Level(level).With().Timestamp().Logger()
	s, err := actors.Start(actors.Options{Config: cfg, DB: store, Router: router, Logger: log, Stats: stats})
	if err != nil {
		return err
	}
	defer s.Stop(context.Background())
	fmt.Fprintf(out, "sentinel listening on %s; starting %d workers with %d slots each\n", router.Endpoint(), *workers, *slots)

	work := func(ctx context.Context, j testworker.Job) transport.Conclude {
		select {
		case <-time.After(*delay):
		case <-ctx.Done():
		}
		return testworker.FileStats(ctx, j)
	}
	for i := 0; i < *workers; i++ {
		w, err := testworker.Start(ctx, testworker.Options{
			Endpoint: router.Endpoint(), Identity: fmt.Sprintf("demo-worker-%d", i+1),
			Capabilities: demoPlugins, Slots: *slots, Run: work,
		})
		if err != nil {
			return err
		}
		defer w.Close()
	}

	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		counts, err := store.JobsCountByStatus(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%6.2fs  QUEUED %3d  RUNNING %3d  COMPLETED %3d  FAILED %3d\n", time.Since(start).Seconds(),
			counts[db.StatusQueued], counts[db.StatusRunning], counts[db.StatusCompleted], counts[db.StatusFailed])
		if counts[db.StatusQueued]+counts[db.StatusRunning] == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	j, err := store.JobGet(ctx, 1)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "done: %d jobs in %.2fs. Job 1: %s on %s, metrics %v, artifacts %v\n",
		jobs, time.Since(start).Seconds(), j.Status, j.ClaimedBy, j.Metrics, j.Artifacts)
	fmt.Fprintf(out, "inspect with: sqlite3 %s \"SELECT id, plugin_name, status, claimed_by, metrics_json FROM cf_processing_queue LIMIT 5\"\n", dbPath)
	return nil
}

// seed writes sample files and queues one job per file and plugin, with
// priorities by file age as the original scout did (100/50/10).
func seed(ctx context.Context, store *db.DB, root string, n int) (int, error) {
	rootID, err := store.SourceRootAdd(ctx, root)
	if err != nil {
		return 0, err
	}
	for _, p := range demoPlugins {
		if _, err := store.PluginManifestActivate(ctx, p, "1.0.0", "builtin:"+p, "", ""); err != nil {
			return 0, err
		}
	}
	jobs := 0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("readings-%03d.csv", i)
		var b strings.Builder
		b.WriteString("sensor,celsius\n")
		for r := 0; r < 10+i*3; r++ {
			fmt.Fprintf(&b, "s%d,%d.%d\n", r%4, 15+r%10, r%10)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(b.String()), 0o644); err != nil {
			return 0, err
		}
		fv, err := store.FileVersionAdd(ctx, rootID, name, fmt.Sprintf("demo-%03d", i), int64(b.Len()), time.Now(), []string{"csv"})
		if err != nil {
			return 0, err
		}
		for _, p := range demoPlugins {
			if _, err := store.JobEnqueue(ctx, fv, p, []int64{100, 50, 10}[i%3], ""); err != nil {
				return 0, err
			}
			jobs++
		}
	}
	return jobs, nil
}
