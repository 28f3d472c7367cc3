// Package sentineltest runs a real Sentinel for the tests of the layers
// above the actor tree (the HTTP API, the status page, the CLI): a SQLite
// file in a temp dir, a ROUTER on 127.0.0.1 with a random port, the operator
// HTTP server on another, and test workers over real DEALER sockets.
package sentineltest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Env is one running Sentinel and what a test needs to drive it.
type Env struct {
	T        testing.TB
	Config   config.Config
	Store    *db.DB // for seeding and for checking; the Sentinel uses it too
	Sentinel *actors.Sentinel
	Endpoint string // ZeroMQ endpoint workers connect to
	URL      string // base URL of the HTTP server, http://127.0.0.1:port
	Dir      string // the test's folder: database, Root, and the allowed root (--allowed-roots)
	Root     string // an active source root (a temp folder)
	RootID   int64
	// API is the operator HTTP server, with the tokens of
	// Config.APITokens and /debug/pprof when Config.Pprof.
	API *httpapi.Server

	router *transport.Router
	served chan error
}

// FastConfig shrinks every interval so liveness paths run in test time. The
// scanner is off unless a test turns it on.
func FastConfig() config.Config {
	cfg := config.Default()
	cfg.Bind = "tcp://127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WorkerTimeout = time.Second
	cfg.RecoveryGrace = time.Second
	cfg.RetryBackoff = 20 * time.Millisecond
	cfg.RetryBackoffMax = 200 * time.Millisecond
	cfg.PollInterval = 50 * time.Millisecond
	cfg.DrainTimeout = 500 * time.Millisecond
	cfg.AbortGrace = 2 * time.Second
	cfg.ScanInterval = 0
	return cfg
}

// Start runs a Sentinel with FastConfig changed by tweak, and stops it when
// the test ends. Unless tweak sets AllowedRoots, source roots may be added
// anywhere under Dir. Setting CurveSecretKey and AuthorizedWorkers in tweak turns
// CURVE on, as the two flags do for cmd/casparian-sentinel; test workers
// then need Options.Curve.
func Start(t testing.TB, tweak func(*config.Config)) *Env {
	t.Helper()
	cfg := FastConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	dir := t.TempDir()
	if cfg.AllowedRoots == "" {
		cfg.AllowedRoots = dir
	}
	e := &Env{T: t, Config: cfg, Dir: dir, Root: filepath.Join(dir, "files")}
	if err := os.MkdirAll(e.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := db.Open(ctx, "sqlite://"+filepath.Join(dir, "casparian_flow.db"))
	if err != nil {
		t.Fatal(err)
	}
	e.Store = store
	t.Cleanup(func() { _ = store.Close() })
	root, err := store.SourceRootAdd(ctx, e.Root)
	if err != nil {
		t.Fatal(err)
	}
	e.RootID = root.ID

	stats := actors.NewStats()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	routerOpts := actors.RouterOptions(cfg, stats, log)
	if cfg.CurveSecretKey != "" {
		// As cmd/casparian-sentinel does with its two flags.
		secret, err := transport.ReadCurveKeyFile(cfg.CurveSecretKey)
		if err != nil {
			t.Fatal(err)
		}
		authorized, err := transport.ReadAuthorizedKeys(cfg.AuthorizedWorkers)
		if err != nil {
			t.Fatal(err)
		}
		routerOpts = actors.WithCurve(routerOpts, transport.NewCurveServer(secret, authorized), stats, log)
	}
	e.router, err = transport.ListenRouter(cfg.Bind, routerOpts)
	if err != nil {
		t.Fatal(err)
	}
	var tokens *httpapi.Tokens
	if cfg.APITokens != "" {
		if tokens, err = httpapi.LoadTokens(cfg.APITokens, log); err != nil {
			_ = e.router.Close()
			t.Fatal(err)
		}
	}
	e.Sentinel, err = actors.Start(actors.Options{Config: cfg, DB: store, Router: e.router, Logger: log, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	e.Endpoint = e.router.Endpoint()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.URL = "http://" + ln.Addr().String()
	e.API = httpapi.New(httpapi.Options{Sentinel: e.Sentinel, Logger: log, Tokens: tokens, Pprof: cfg.Pprof, AnyHost: cfg.Insecure})
	e.served = make(chan error, 1)
	go func() { e.served <- e.API.Serve(ln) }()
	t.Cleanup(e.Stop)
	return e
}

// Stop stops the Sentinel, then the HTTP server, as cmd/casparian-sentinel
// does. It is safe to call twice.
func (e *Env) Stop() {
	if e.Sentinel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Sentinel.Stop(ctx); err != nil {
		e.T.Errorf("stop sentinel: %v", err)
	}
	if err := e.API.Shutdown(ctx); err != nil {
		e.T.Errorf("stop http: %v", err)
	}
	if err := <-e.served; err != nil {
		e.T.Errorf("serve http: %v", err)
	}
	_ = e.router.Close()
	e.Sentinel = nil
}

// File writes a file under the source root and records a version of it
// (without the scanner), returning the version id.
func (e *Env) File(name, content string) int64 {
	e.T.Helper()
	path := filepath.Join(e.Root, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		e.T.Fatal(err)
	}
	id, err := e.Store.FileVersionAdd(context.Background(), e.RootID, filepath.ToSlash(name),
		fmt.Sprintf("hash-%s-%d", name, len(content)), int64(len(content)), time.Now(), nil)
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

// Plugin deploys an ACTIVE manifest for a plugin.
func (e *Env) Plugin(name string) {
	e.T.Helper()
	if _, err := e.Store.PluginManifestActivate(context.Background(), name, "1.0.0", "# source of "+name, "", "art-"+name); err != nil {
		e.T.Fatal(err)
	}
}

// Enqueue inserts a QUEUED job directly in the database.
func (e *Env) Enqueue(fileVersionID int64, plugin string, priority int64) int64 {
	e.T.Helper()
	id, err := e.Store.JobEnqueue(context.Background(), job.Submission{FileVersionID: fileVersionID, Plugin: plugin, Priority: priority})
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

// Job reads a job from the database.
func (e *Env) Job(id int64) job.Job {
	e.T.Helper()
	j, err := e.Store.JobGet(context.Background(), id)
	if err != nil {
		e.T.Fatal(err)
	}
	return j.Job
}

// Worker connects a test worker, closed when the test ends.
func (e *Env) Worker(opts testworker.Options) *testworker.Worker {
	e.T.Helper()
	opts.Endpoint = e.Endpoint
	w, err := testworker.Start(context.Background(), opts)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(w.Close)
	return w
}

// Eventually polls cond every 10 ms until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
