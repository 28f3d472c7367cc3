package worker_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// within bounds every wait on a condition.
const within = 15 * time.Second

// sentinel is a real Sentinel on 127.0.0.1 with a random port and a SQLite
// file in a temp dir, as actors/harness_test.go builds one.
type sentinel struct {
	t        *testing.T
	cfg      config.Config
	store    *db.DB
	router   *transport.Router
	s        *actors.Sentinel
	endpoint string
	root     string // source root: input files live here (the workers' --input-root)
	out      string // the workers' --output-dir
	rootID   int64
}

// fastConfig shrinks the Sentinel's intervals to test time.
func fastConfig() config.Config {
	cfg := config.Default()
	cfg.Bind = "tcp://127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	// Short, but not so short that a loaded machine running the race
	// detector drops a healthy worker.
	cfg.WorkerTimeout = 3 * time.Second
	cfg.RecoveryGrace = time.Second
	cfg.RetryBackoff = 20 * time.Millisecond
	cfg.RetryBackoffMax = 200 * time.Millisecond
	cfg.PollInterval = 50 * time.Millisecond
	cfg.DrainTimeout = 500 * time.Millisecond
	return cfg
}

func newSentinel(t *testing.T, tweak func(*config.Config)) *sentinel {
	t.Helper()
	cfg := fastConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	dir := t.TempDir()
	if cfg.AllowedRoots == "" {
		cfg.AllowedRoots = dir
	}
	h := &sentinel{t: t, cfg: cfg, root: filepath.Join(dir, "files"), out: filepath.Join(dir, "out")}
	if err := os.MkdirAll(h.root, 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := db.Open(context.Background(), "sqlite://"+filepath.Join(dir, "casparian_flow.db"))
	if err != nil {
		t.Fatal(err)
	}
	h.store = store
	t.Cleanup(func() { store.Close() })
	sr, err := store.SourceRootAdd(context.Background(), h.root)
	if err != nil {
		t.Fatal(err)
	}
	h.rootID = sr.ID
	h.start()
	t.Cleanup(h.stop)
	return h
}

// start runs the Sentinel. CurveSecretKey and AuthorizedWorkers in the
// config turn CURVE on, as the two flags do for cmd/casparian-sentinel.
func (h *sentinel) start() {
	h.t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.ErrorLevel)
	stats := actors.NewStats()
	var routerOpts transport.RouterOptions
	if h.cfg.CurveSecretKey != "" {
		secret, err := transport.ReadCurveKeyFile(h.cfg.CurveSecretKey)
		if err != nil {
			h.t.Fatal(err)
		}
		authorized, err := transport.ReadAuthorizedKeys(h.cfg.AuthorizedWorkers)
		if err != nil {
			h.t.Fatal(err)
		}
		routerOpts = actors.WithCurve(routerOpts, transport.NewCurveServer(secret, authorized), stats, log)
	}
	router, err := transport.ListenRouter(h.cfg.Bind, routerOpts)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := actors.Start(actors.Options{Config: h.cfg, DB: h.store, Router: router, Logger: log, Stats: stats})
	if err != nil {
		router.Close()
		h.t.Fatal(err)
	}
	h.router, h.s, h.endpoint = router, s, router.Endpoint()
}

func (h *sentinel) stop() {
	if h.s == nil {
		return
	}
	if err := h.s.Stop(context.Background()); err != nil {
		h.t.Errorf("stop sentinel: %v", err)
	}
	h.router.Close()
	h.s = nil
}

// restart stops the Sentinel without draining and starts a new one on the
// same endpoint and database, as a process restart would.
func (h *sentinel) restart(whileDown func()) {
	h.t.Helper()
	h.cfg.DrainTimeout = 0
	h.stop()
	if whileDown != nil {
		whileDown()
	}
	h.cfg.Bind = h.endpoint
	h.start()
}

// file copies a sample (or writes content) under the source root and
// records its version.
func (h *sentinel) file(name, content string) int64 {
	h.t.Helper()
	path := filepath.Join(h.root, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	id, err := h.store.FileVersionAdd(context.Background(), h.rootID, name,
		fmt.Sprintf("hash-%s-%d-%d", name, len(content), time.Now().UnixNano()), int64(len(content)), time.Now(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// sample registers a file of samples/.
func (h *sentinel) sample(name string) int64 {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "samples", name))
	if err != nil {
		h.t.Fatal(err)
	}
	return h.file(name, string(b))
}

func (h *sentinel) plugin(names ...string) {
	h.t.Helper()
	for _, name := range names {
		if _, err := h.store.PluginManifestActivate(context.Background(), name, "1.0.0", "builtin:"+name, "", "art-"+name); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *sentinel) topic(plugin, topic, uri, mode string) {
	h.t.Helper()
	if _, err := h.store.TopicConfigAdd(context.Background(), plugin, topic, uri, mode, ""); err != nil {
		h.t.Fatal(err)
	}
}

// enqueue queues a job; overrides is config_overrides JSON or "".
func (h *sentinel) enqueue(fv int64, plugin, overrides string) int64 {
	h.t.Helper()
	id, err := h.store.JobEnqueue(context.Background(), job.Submission{FileVersionID: fv, Plugin: plugin, ConfigOverrides: overrides})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *sentinel) job(id int64) job.Job {
	h.t.Helper()
	j, err := h.store.JobGet(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return j.Job
}

// waitJob waits until job id has one of the statuses and returns it.
func (h *sentinel) waitJob(id int64, statuses ...job.Status) job.Job {
	h.t.Helper()
	var j job.Job
	eventually(h.t, within, fmt.Sprintf("job %d reaches %v", id, statuses), func() bool {
		j = h.job(id)
		for _, s := range statuses {
			if j.Status == s {
				return true
			}
		}
		return false
	})
	return j
}

// waitWorkers waits until the Sentinel has n workers registered.
func (h *sentinel) waitWorkers(n int) {
	h.t.Helper()
	eventually(h.t, within, fmt.Sprintf("%d workers registered", n), func() bool {
		ws, err := h.s.Workers(time.Second)
		return err == nil && len(ws) == n
	})
}

// curveKeyPair writes a CURVE key pair to prefix.key and prefix.pub, as
// casparian keygen --curve does, and returns it.
func curveKeyPair(t *testing.T, prefix string) (public, secret transport.CurveKey) {
	t.Helper()
	public, secret, err := transport.GenerateCurveKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := transport.WriteCurveKeyPair(prefix, public, secret); err != nil {
		t.Fatal(err)
	}
	return public, secret
}

// runningWorker is a worker.Worker running in this process.
type runningWorker struct {
	*worker.Worker
	logs      *syncBuffer // its warnings and errors, also in the test log
	outputDir string
	cancel    context.CancelFunc // starts the drain
	finished  chan struct{}      // closed when Run returned
	err       error              // what Run returned
}

// startWorker runs a worker against h until the test ends. opts.Endpoint,
// OutputDir (h.out), InputRoots (h.root) and the short timings are filled in
// when empty.
func startWorker(t *testing.T, h *sentinel, opts worker.Options) *runningWorker {
	t.Helper()
	if opts.Endpoint == "" {
		opts.Endpoint = h.endpoint
	}
	if opts.OutputDir == "" {
		opts.OutputDir = h.out
	}
	if opts.OutputDir == "" {
		opts.OutputDir = t.TempDir()
	}
	if opts.InputRoots == nil && h.root != "" {
		opts.InputRoots = []string{h.root}
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 2
	}
	logs := &syncBuffer{}
	opts.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.WarnLevel)
	w, err := worker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, logs: logs, outputDir: opts.OutputDir, cancel: cancel, finished: make(chan struct{})}
	go func() {
		rw.err = w.Run(ctx)
		close(rw.finished)
	}()
	t.Cleanup(func() { _ = rw.stop(t) }) // tests that care call stop themselves and check it
	return rw
}

// stop cancels the worker (a drain) and waits for Run to return.
func (rw *runningWorker) stop(t *testing.T) error {
	t.Helper()
	rw.cancel()
	select {
	case <-rw.finished:
		return rw.err
	case <-time.After(within):
		t.Fatal("worker did not stop")
		return nil
	}
}

// eventually polls cond every 10 ms until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer that a worker's goroutines may write while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// enqueueUnchecked inserts a QUEUED job as another tool would, without the
// checks JobEnqueue makes, so that the Sentinel's refusal at dispatch can be
// tested with sinks JobEnqueue refuses (one naming the database).
func (h *sentinel) enqueueUnchecked(fv int64, plugin, overrides string) int64 {
	h.t.Helper()
	got := querySQLite(h.t, h.store.Path(), `INSERT INTO cf_processing_queue
		(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at)
		VALUES (?, ?, ?, 'QUEUED', 0, 0, ?) RETURNING id`,
		fv, plugin, overrides, time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z"))
	if len(got) != 1 {
		h.t.Fatalf("insert job: %q", got)
	}
	id, err := strconv.ParseInt(got[0], 10, 64)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// querySQLite runs a query on an output database and returns the rows as
// strings joined by "|".
func querySQLite(t *testing.T, path, q string, args ...any) []string {
	t.Helper()
	// A job may be committing to the same database: wait for its lock.
	conn, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stagingLeft lists staging files (…tmp-…) under dir.
func stagingLeft(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// gate is a test plugin that emits rows and then waits: for a release, or
// for its context. It records how many runs overlap.
type gate struct {
	name string
	rows int

	mu         sync.Mutex
	running    int
	maxRunning int
	runs       int
	released   chan struct{}
	started    chan int64 // job ids, as runs reach the wait
	// blockRuns is how many runs wait for the release; later runs return
	// at once (0 = every run waits).
	blockRuns int
}

func newGate(name string, rows int) *gate {
	return &gate{name: name, rows: rows, released: make(chan struct{}), started: make(chan int64, 100)}
}

func (g *gate) Name() string { return g.name }

func (g *gate) Run(ctx context.Context, in plugin.Input, emit plugin.Emitter) error {
	g.mu.Lock()
	g.running++
	g.runs++
	run := g.runs
	g.maxRunning = max(g.maxRunning, g.running)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
	}()
	row := plugin.Row{Columns: []string{"n", "label"}, Values: make([]any, 2)}
	for i := range g.rows {
		row.Values[0], row.Values[1] = i, fmt.Sprintf("row-%d", i)
		if err := emit.Emit(plugin.OutputTopic, row); err != nil {
			return err
		}
	}
	g.started <- in.JobID
	if g.blockRuns > 0 && run > g.blockRuns {
		return nil
	}
	select {
	case <-g.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) release() { close(g.released) }

func (g *gate) max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxRunning
}

// waitStarted waits for n runs to reach the wait and returns their job ids.
func (g *gate) waitStarted(t *testing.T, n int) []int64 {
	t.Helper()
	var ids []int64
	deadline := time.After(within)
	for len(ids) < n {
		select {
		case id := <-g.started:
			ids = append(ids, id)
		case <-deadline:
			t.Fatalf("%d of %d %s runs started", len(ids), n, g.name)
		}
	}
	return ids
}
