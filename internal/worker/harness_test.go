package worker_test

import (
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

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/transport"
)

// within bounds every wait on a condition.
const within = sentineltest.Within

// sentinel is the one test Sentinel (internal/sentineltest), with the
// folder the workers write their outputs to.
type sentinel struct {
	*sentineltest.Env
	out string // the workers' --output-dir
}

// newSentinel starts a Sentinel whose workers may stay silent a little
// longer than sentineltest's default: these workers are real ones, running
// plugins under the race detector on a machine that may be loaded.
func newSentinel(t *testing.T, tweak func(*config.Config)) *sentinel {
	t.Helper()
	env := sentineltest.Start(t, func(c *config.Config) {
		c.WorkerTimeout = 3 * time.Second
		if tweak != nil {
			tweak(c)
		}
	})
	return &sentinel{Env: env, out: filepath.Join(env.Dir, "out")}
}

// sample registers a file of samples/.
func (h *sentinel) sample(name string) int64 {
	h.T.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "samples", name))
	if err != nil {
		h.T.Fatal(err)
	}
	return h.File(name, string(b))
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
	logs      *sentineltest.Logs // its warnings and errors, also in the test log
	outputDir string
	cancel    context.CancelFunc // starts the drain
	finished  chan struct{}      // closed when Run returned
	err       error              // what Run returned
}

// startWorker runs a worker against h until the test ends. opts.Endpoint,
// OutputDir (h.out), InputRoots (h.Root) and the short timings are filled in
// when empty.
func startWorker(t *testing.T, h *sentinel, opts worker.Options) *runningWorker {
	t.Helper()
	if opts.Endpoint == "" {
		opts.Endpoint = h.Endpoint
	}
	if opts.OutputDir == "" {
		opts.OutputDir = h.out
	}
	if opts.OutputDir == "" {
		opts.OutputDir = t.TempDir()
	}
	if opts.InputRoots == nil && h.Root != "" {
		opts.InputRoots = []string{h.Root}
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 2
	}
	logs := &sentineltest.Logs{}
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

// enqueueUnchecked inserts a QUEUED job as another tool would, without the
// checks JobEnqueue makes, so that the Sentinel's refusal at dispatch can be
// tested with sinks JobEnqueue refuses (one naming the database).
func (h *sentinel) enqueueUnchecked(fv int64, plugin, overrides string) int64 {
	h.T.Helper()
	got := querySQLite(h.T, h.DBPath, `INSERT INTO cf_processing_queue
		(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at)
		VALUES (?, ?, ?, 'QUEUED', 0, 0, ?) RETURNING id`,
		fv, plugin, overrides, time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z"))
	if len(got) != 1 {
		h.T.Fatalf("insert job: %q", got)
	}
	id, err := strconv.ParseInt(got[0], 10, 64)
	if err != nil {
		h.T.Fatal(err)
	}
	return id
}

// querySQLite runs a query on an output database and returns the rows as
// strings joined by "|".
func querySQLite(t testing.TB, path, q string, args ...any) []string {
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

// placed keeps each artifact's topic and uri: what these tests compare
// exactly (rows, schema and content_hash are checked where they matter).
func placed(arts []map[string]string) []map[string]string {
	out := make([]map[string]string, len(arts))
	for i, a := range arts {
		out[i] = map[string]string{"topic": a["topic"], "uri": a["uri"]}
	}
	return out
}
