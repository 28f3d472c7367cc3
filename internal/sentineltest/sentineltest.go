// Package sentineltest is the one harness that runs a real Sentinel in a
// test's process: a SQLite file in a temp dir, a ROUTER on 127.0.0.1 with a
// random port, the operator HTTP server on another, and test workers over
// real DEALER sockets. The tests of actors, the HTTP API, the worker runtime
// and the binaries all start their Sentinel here, so their settings cannot
// drift apart. (The internal tests of package actors cannot import it, as it
// imports actors: they build no Sentinel.)
package sentineltest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/db/backend"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Within bounds the harness's own waits (WaitJob, WaitWorkers): long enough
// for a loaded machine running the race detector, and only ever spent when
// a test fails.
const Within = 15 * time.Second

// Env is one running Sentinel and what a test needs to drive it.
type Env struct {
	T      testing.TB
	Config config.Config // what Start ran with; Restart runs with it again, changes included
	// DB is the database, either backend, for seeding and for checking;
	// the Sentinel uses it too. Store is the same database when it is
	// SQLite (Start), nil on PostgreSQL (StartPostgres).
	DB       Store
	Store    *db.DB
	Sentinel *actors.Sentinel
	Endpoint string // ZeroMQ endpoint workers connect to
	URL      string // base URL of the HTTP server, http://127.0.0.1:port
	Dir      string // the test's folder: database, Root, and the allowed root (--allowed-roots)
	DBPath   string // the SQLite file, in Dir
	Root     string // an active source root (a temp folder)
	RootID   int64
	// API is the operator HTTP server, with the tokens of
	// Config.APITokens and /debug/pprof when Config.Pprof.
	API *httpapi.Server
	// Logs holds every warning and error the Sentinel logged (as JSON
	// lines), across restarts; they go to the test's log too.
	Logs *Logs

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
	e := &Env{T: t, Config: cfg, Dir: dir, DBPath: filepath.Join(dir, "casparian_flow.db"),
		Root: filepath.Join(dir, "files"), Logs: &Logs{}}
	if err := os.MkdirAll(e.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if b := migratedDatabase(); b != nil {
		if err := os.WriteFile(e.DBPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := db.Open(ctx, "sqlite://"+e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	e.Store = store
	e.open(backend.SQLite(store).(Store))
	return e
}

// Store is what the harness seeds and checks through: the Sentinel's
// database, of either backend, with the seeding calls both have.
type Store interface {
	backend.Database
	FileVersionAdd(ctx context.Context, sourceRootID int64, relPath string, contentHash string,
		sizeBytes int64, modified time.Time, tags []string) (int64, error)
	PluginManifestActivate(ctx context.Context, plugin, version, sourceCode, envHash, artifactHash string) (int64, error)
	TopicConfigAdd(ctx context.Context, plugin, topic, uri, mode, schemaJSON string) (int64, error)
}

// StartPostgres runs a Sentinel as Start does, on the PostgreSQL database
// at url (a fresh one, from db/postgres/pgtest). Env.Store is nil.
func StartPostgres(t testing.TB, url string, tweak func(*config.Config)) *Env {
	t.Helper()
	cfg := FastConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	dir := t.TempDir()
	if cfg.AllowedRoots == "" {
		cfg.AllowedRoots = dir
	}
	cfg.Database = url
	e := &Env{T: t, Config: cfg, Dir: dir, Root: filepath.Join(dir, "files"), Logs: &Logs{}}
	if err := os.MkdirAll(e.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := backend.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	e.open(d.(Store))
	return e
}

// open takes d as the Env's database, adds the source root and starts the
// Sentinel.
func (e *Env) open(d Store) {
	t := e.T
	t.Helper()
	e.DB = d
	t.Cleanup(func() { _ = d.Close() })
	root, err := d.SourceRootAdd(context.Background(), e.Root)
	if err != nil {
		t.Fatal(err)
	}
	e.RootID = root.ID
	e.start("127.0.0.1:0")
}

// migrated is a database file that db.Open created and migrated, made once
// per test binary: under the race detector, migrating a new file costs
// about 400 ms of CPU and opening a copy of this one about 12 ms, in each
// of the hundreds of Sentinels the tests start. (Migrations from an empty
// file keep their own tests, in db and in the binaries' tests.)
var migrated struct {
	once sync.Once
	file []byte // nil: make every database afresh
}

func migratedDatabase() []byte {
	migrated.once.Do(func() {
		dir, err := os.MkdirTemp("", "sentineltest-")
		if err != nil {
			return
		}
		// A temporary folder left behind costs disk space, not a result.
		defer func() { _ = os.RemoveAll(dir) }()
		path := filepath.Join(dir, "migrated.db")
		store, err := db.Open(context.Background(), "sqlite://"+path)
		if err != nil {
			return
		}
		if err := store.Close(); err != nil {
			return
		}
		// The last connection's close checkpoints the WAL into the file
		// and removes it; a WAL left behind would hold part of the schema.
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
			return
		}
		migrated.file, _ = os.ReadFile(path)
	})
	return migrated.file
}

// start runs the Sentinel on Config.Bind and its HTTP server on httpAddr.
func (e *Env) start(httpAddr string) {
	t := e.T
	t.Helper()
	cfg := e.Config
	stats := actors.NewStats()
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), e.Logs)).Level(zerolog.WarnLevel)
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
	router, err := transport.ListenRouter(cfg.Bind, routerOpts)
	if err != nil {
		t.Fatal(err)
	}
	var tokens *httpapi.Tokens
	if cfg.APITokens != "" {
		if tokens, err = httpapi.LoadTokens(cfg.APITokens, log); err != nil {
			_ = router.Close()
			t.Fatal(err)
		}
	}
	s, err := actors.Start(actors.Options{Config: cfg, DB: e.DB, Router: router, Logger: log, Stats: stats})
	if err != nil {
		_ = router.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Stop(stopCtx)
		_ = router.Close()
		t.Fatal(err)
	}
	e.router, e.Sentinel, e.Endpoint = router, s, router.Endpoint()
	e.URL = "http://" + ln.Addr().String()
	e.API = httpapi.New(httpapi.Options{Sentinel: s, Logger: log, Tokens: tokens, Pprof: cfg.Pprof, AnyHost: cfg.Insecure})
	e.served = make(chan error, 1)
	go func() { e.served <- e.API.Serve(ln) }()
	t.Cleanup(e.Stop)
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

// Restart stops the Sentinel without draining, runs whileDown (if not nil),
// and starts a new one with Config on the same database, ZeroMQ endpoint
// and HTTP address, as a process restart would.
func (e *Env) Restart(whileDown func()) {
	e.T.Helper()
	e.Config.DrainTimeout = 0
	e.Stop()
	if whileDown != nil {
		whileDown()
	}
	e.Config.Bind = e.Endpoint
	e.start(strings.TrimPrefix(e.URL, "http://"))
}

// File writes a file under the source root and records a version of it
// (without the scanner), returning the version id. The version's hash is
// the content's, so writing new content makes a new version.
func (e *Env) File(name, content string) int64 {
	e.T.Helper()
	path := filepath.Join(e.Root, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		e.T.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	id, err := e.DB.FileVersionAdd(context.Background(), e.RootID, filepath.ToSlash(name),
		fmt.Sprintf("hash-%s-%s", name, hex.EncodeToString(sum[:8])), int64(len(content)), time.Now(), nil)
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

// Plugin deploys an ACTIVE manifest for each plugin, with the source code
// "builtin:<name>", which the real worker runs as its built-in (or
// registered) plugin of that name; test workers ignore it.
func (e *Env) Plugin(names ...string) {
	e.T.Helper()
	for _, name := range names {
		if _, err := e.DB.PluginManifestActivate(context.Background(), name, "1.0.0", "builtin:"+name, "", "art-"+name); err != nil {
			e.T.Fatal(err)
		}
	}
}

// Topic routes a plugin's topic to a sink URI.
func (e *Env) Topic(plugin, topic, uri, mode string) {
	e.T.Helper()
	if _, err := e.DB.TopicConfigAdd(context.Background(), plugin, topic, uri, mode, ""); err != nil {
		e.T.Fatal(err)
	}
}

// Enqueue inserts a QUEUED job directly in the database.
func (e *Env) Enqueue(fileVersionID int64, plugin string, priority int64) int64 {
	e.T.Helper()
	return e.enqueue(fileVersionID, plugin, priority, "")
}

// EnqueueOverrides inserts a QUEUED job whose config_overrides are the JSON
// overrides ("" for none).
func (e *Env) EnqueueOverrides(fileVersionID int64, plugin, overrides string) int64 {
	e.T.Helper()
	return e.enqueue(fileVersionID, plugin, 0, overrides)
}

func (e *Env) enqueue(fileVersionID int64, plugin string, priority int64, overrides string) int64 {
	e.T.Helper()
	id, err := e.DB.JobEnqueue(context.Background(), job.Submission{FileVersionID: fileVersionID, Plugin: plugin, Priority: priority, ConfigOverrides: overrides})
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

// Job reads a job from the database.
func (e *Env) Job(id int64) job.Job {
	e.T.Helper()
	j, err := e.DB.JobGet(context.Background(), id)
	if err != nil {
		e.T.Fatal(err)
	}
	return j.Job
}

// Counts reads how many jobs there are in each status.
func (e *Env) Counts() map[job.Status]int64 {
	e.T.Helper()
	c, err := e.DB.JobsCountByStatus(context.Background())
	if err != nil {
		e.T.Fatal(err)
	}
	return c
}

// WaitJob waits until job id has one of the statuses, and returns it.
func (e *Env) WaitJob(id int64, statuses ...job.Status) job.Job {
	e.T.Helper()
	var j job.Job
	testwait.Eventually(e.T, Within, fmt.Sprintf("job %d reaches %v", id, statuses), func() (bool, string) {
		j = e.Job(id)
		for _, s := range statuses {
			if j.Status == s {
				return true, ""
			}
		}
		return false, string(j.Status)
	})
	return j
}

// WaitWorkers waits until the Sentinel has n workers registered.
func (e *Env) WaitWorkers(n int) {
	e.T.Helper()
	testwait.Eventually(e.T, Within, fmt.Sprintf("%d workers registered", n), func() (bool, string) {
		ws, err := e.Sentinel.Workers(time.Second)
		return err == nil && len(ws) == n, fmt.Sprintf("%d workers, err %v", len(ws), err)
	})
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

// Logs collects log output that other goroutines write while the test
// reads it.
type Logs struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Write appends p.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// With returns the lines that contain every one of parts.
func (l *Logs) With(parts ...string) []string {
	var out []string
next:
	for _, line := range strings.SplitAfter(l.String(), "\n") {
		if line == "" {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}
