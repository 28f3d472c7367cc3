// Command casparian-demo runs a Sentinel with a few sample workers on a fresh
// SQLite file and watches a demo queue drain: it writes sample CSV files,
// registers them as file versions, activates two built-in plugins (csv and
// checksum), queues one job per file and plugin, then prints the queue by
// status until every job has concluded.
//
// Everything is real: the Sentinel binds a ZeroMQ ROUTER on 127.0.0.1, the
// workers (the sample worker of cmd/casparian-worker, in-process) connect
// DEALER sockets over TCP, read the files they are sent and write their rows
// to Parquet files under the demo's output folder. The connections are
// secured as in production: the demo makes a fresh CURVE key pair for the
// Sentinel and one for the workers in its folder, and the Sentinel takes
// only the workers' key (--curve=false runs plaintext).
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
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/internal/logformat"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// version is set by release builds: -ldflags "-X main.version=..."; --version
// prints it with the build information.
var version string

// Log lines carry millisecond timestamps and durations with their unit.
func init() { logformat.Set() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "casparian-demo:", err)
		os.Exit(1)
	}
}

// demoPlugins are the built-in plugins the demo activates: csv turns each
// file into rows, checksum records its size and SHA-256.
var demoPlugins = []string{"csv", "checksum"}

// demoSinks are where the plugins' rows go, relative to the workers' output
// folder (<dir>/output): one Parquet file per input file for csv, one shared
// file for the checksums.
var demoSinks = map[string]string{
	"csv":      "parquet://csv/{file_stem}.parquet",
	"checksum": "parquet://checksums.parquet",
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("casparian-demo", flag.ContinueOnError)
	dir := fs.String("dir", "demo-data", "folder for the demo database and sample files (created; its database is replaced)")
	workers := fs.Int("workers", 3, "number of workers")
	slots := fs.Int("slots", 2, "concurrent jobs per worker")
	files := fs.Int("files", 40, "number of sample files")
	delay := fs.Duration("job-delay", 50*time.Millisecond, "extra time each job waits before its plugin runs, so the queue can be watched")
	logLevel := fs.String("log-level", "warn", "sentinel log level")
	curve := fs.Bool("curve", true, "secure the workers' connections with fresh CURVE keys in <dir>/keys; --curve=false runs plaintext")
	showVersion := fs.Bool("version", false, "print the version and build information, then exit")
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		buildinfo.Print(out, "casparian-demo", version)
		return nil
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
	// Deferred first, so it runs last: after the actors stopped and the
	// queue actor wrote its last batch. Every row is committed by then.
	defer func() { _ = store.Close() }()
	jobs, err := seed(ctx, store, root, *files)
	if err != nil {
		return fmt.Errorf("seed demo queue: %w", err)
	}
	fmt.Fprintf(out, "database %s: %d jobs QUEUED over %d files in %s\n", dbPath, jobs, *files, root)

	cfg := config.Default()
	cfg.Bind = "tcp://127.0.0.1:0"
	cfg.Database = dbPath
	cfg.AllowedRoots = filepath.Dir(root) // the demo folder: its inbox is the source root
	stats := actors.NewStats()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).Level(level).With().Timestamp().Logger()
	routerOpts := actors.RouterOptions(cfg, stats, log)
	var client *transport.CurveClient
	if *curve {
		keys := filepath.Join(*dir, "keys")
		server, c, err := demoKeys(keys)
		if err != nil {
			return fmt.Errorf("curve keys: %w", err)
		}
		routerOpts = actors.WithCurve(routerOpts, server, stats, log)
		client = c
		fmt.Fprintf(out, "CURVE on: fresh keys in %s (sentinel %s, workers %s)\n", keys,
			c.ServerKey.Fingerprint(), c.Public.Fingerprint())
	}
	router, err := transport.ListenRouter(cfg.Bind, routerOpts)
	if err != nil {
		return err
	}
	// s.Stop closes the router and reports its error; this Close is for a
	// failed start, which returns that failure instead.
	defer func() { _ = router.Close() }()
	s, err := actors.Start(actors.Options{Config: cfg, DB: store, Router: router, Logger: log, Stats: stats})
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Stop(context.Background()); err != nil {
			log.Error().Err(err).Msg("stop")
		}
	}()
	fmt.Fprintf(out, "sentinel listening on %s; starting %d workers with %d slots each\n", router.Endpoint(), *workers, *slots)

	// The workers read only the inbox and write only under <dir>/output,
	// which leaves the demo database out of reach of any sink.
	outDir := filepath.Join(filepath.Dir(root), "output")
	var builtins []plugin.Plugin
	for _, p := range plugin.Builtins() {
		for _, name := range demoPlugins {
			if p.Name() == name {
				builtins = append(builtins, p)
			}
		}
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWorkers(); wg.Wait() }()
	for i := 0; i < *workers; i++ {
		w, err := worker.New(worker.Options{
			Endpoint: router.Endpoint(), Curve: client, Identity: fmt.Sprintf("demo-worker-%d", i+1),
			Concurrency: *slots, Plugins: builtins, OutputDir: outDir, InputRoots: []string{root}, JobDelay: *delay,
			Logger: log.With().Str("worker_id", fmt.Sprintf("demo-worker-%d", i+1)).Logger(),
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil {
				log.Error().Err(err).Msg("demo worker stopped")
			}
		}()
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
			counts[job.StatusQueued], counts[job.StatusRunning], counts[job.StatusCompleted], counts[job.StatusFailed])
		if counts[job.StatusQueued]+counts[job.StatusRunning] == 0 {
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
	fmt.Fprintf(out, "rows written under %s\n", outDir)
	fmt.Fprintf(out, "inspect with: sqlite3 %s \"SELECT id, plugin_name, status, claimed_by, metrics_json FROM cf_processing_queue LIMIT 5\"\n", dbPath)
	return nil
}

// demoKeys writes a new key pair for the Sentinel and one for the workers
// in dir, as `casparian keygen --curve` would, replacing those of an
// earlier run, and returns both sides' settings: the Sentinel authorizes
// only the workers' key.
func demoKeys(dir string) (*transport.CurveServer, *transport.CurveClient, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	pair := func(name string) (transport.CurveKey, transport.CurveKey, error) {
		prefix := filepath.Join(dir, name)
		for _, p := range []string{prefix + ".key", prefix + ".pub"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return transport.CurveKey{}, transport.CurveKey{}, err
			}
		}
		pub, sec, err := transport.GenerateCurveKeyPair()
		if err != nil {
			return pub, sec, err
		}
		_, _, err = transport.WriteCurveKeyPair(prefix, pub, sec)
		return pub, sec, err
	}
	sentinelPub, sentinelSec, err := pair("sentinel")
	if err != nil {
		return nil, nil, err
	}
	workerPub, workerSec, err := pair("worker")
	if err != nil {
		return nil, nil, err
	}
	return transport.NewCurveServer(sentinelSec, transport.NewAuthorizedKeys(workerPub)),
		transport.NewCurveClient(sentinelPub, workerSec), nil
}

// seed writes sample files and queues one job per file and plugin, with
// priorities by file age as the original scout did (100/50/10).
func seed(ctx context.Context, store *db.DB, root string, n int) (int, error) {
	sr, err := store.SourceRootAdd(ctx, root)
	if err != nil {
		return 0, err
	}
	for _, p := range demoPlugins {
		if _, err := store.PluginManifestActivate(ctx, p, "1.0.0", "builtin:"+p, "", ""); err != nil {
			return 0, err
		}
		mode := db.SinkModeAppend // checksums of every file gather in one file
		if strings.Contains(demoSinks[p], "{file_stem}") {
			mode = db.SinkModeReplace // one file per input: a rerun replaces it
		}
		if _, err := store.TopicConfigAdd(ctx, p, "output", demoSinks[p], mode, ""); err != nil {
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
		fv, err := store.FileVersionAdd(ctx, sr.ID, name, fmt.Sprintf("demo-%03d", i), int64(b.Len()), time.Now(), []string{"csv"})
		if err != nil {
			return 0, err
		}
		for _, p := range demoPlugins {
			if _, err := store.JobEnqueue(ctx, job.Submission{FileVersionID: fv, Plugin: p, Priority: []int64{100, 50, 10}[i%3]}); err != nil {
				return 0, err
			}
			jobs++
		}
	}
	return jobs, nil
}
