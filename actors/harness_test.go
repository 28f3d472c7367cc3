package actors_test

import (
	"context"
	"fmt"
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
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// harness is a real Sentinel on 127.0.0.1 with a random port and a SQLite
// file in a temp dir, plus helpers to seed files, plugins and jobs.
type harness struct {
	t        testing.TB
	cfg      config.Config
	dbPath   string
	store    *db.DB
	router   *transport.Router
	s        *actors.Sentinel
	endpoint string
	root     string
	rootID   int64
	logs     logLines // every warning and error the Sentinel logged
}

// logLines collects log lines; the Sentinel's goroutines write, the test
// reads.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

// with returns the lines that contain every one of parts.
func (l *logLines) with(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// fastConfig shrinks every interval so that liveness paths run in test time.
func fastConfig() config.Config {
	cfg := config.Default()
	cfg.Bind = "tcp://127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WorkerTimeout = time.Second
	cfg.RecoveryGrace = time.Second
	cfg.RetryBackoff = 20 * time.Millisecond
	cfg.RetryBackoffMax = 200 * time.Millisecond
	cfg.PollInterval = 50 * time.Millisecond
	cfg.DrainTimeout = 500 * time.Millisecond
	cfg.ScanInterval = 0 // the scanner's tests turn it on
	return cfg
}

func newHarness(t testing.TB, tweak func(*config.Config)) *harness {
	t.Helper()
	cfg := fastConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	dir := t.TempDir()
	if cfg.AllowedRoots == "" {
		cfg.AllowedRoots = dir // the source root, and folders beside it for tests that add more
	}
	h := &harness{t: t, cfg: cfg, dbPath: filepath.Join(dir, "casparian_flow.db"), root: filepath.Join(dir, "files")}
	if err := os.MkdirAll(h.root, 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := db.Open(context.Background(), "sqlite://"+h.dbPath)
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
	return h
}

func (h *harness) start() {
	h.t.Helper()
	stats := actors.NewStats()
	router, err := transport.ListenRouter(h.cfg.Bind, actors.RouterOptions(h.cfg, stats, zerolog.Nop()))
	if err != nil {
		h.t.Fatal(err)
	}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(h.t), &h.logs)).Level(zerolog.WarnLevel)
	s, err := actors.Start(actors.Options{Config: h.cfg, DB: h.store, Router: router, Logger: log, Stats: stats})
	if err != nil {
		h.t.Fatal(err)
	}
	h.router, h.s, h.endpoint = router, s, router.Endpoint()
	h.t.Cleanup(h.stop)
}

// restart stops the Sentinel (without draining) and starts a new one on the
// same port and database, as a process restart would.
func (h *harness) restart() {
	h.t.Helper()
	h.cfg.DrainTimeout = 0
	h.stop()
	h.cfg.Bind = h.endpoint
	h.start()
}

func (h *harness) stop() {
	if h.s == nil {
		return
	}
	if err := h.s.Stop(context.Background()); err != nil {
		h.t.Errorf("stop: %v", err)
	}
	h.router.Close()
	h.s = nil
}

// file writes a real file under the source root and records its version.
func (h *harness) file(name, content string) int64 {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.root, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	id, err := h.store.FileVersionAdd(context.Background(), h.rootID, name, fmt.Sprintf("hash-%s-%d", name, len(content)),
		int64(len(content)), time.Now(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) plugin(name string) {
	h.t.Helper()
	if _, err := h.store.PluginManifestActivate(context.Background(), name, "1.0.0", "# source of "+name, "", "art-"+name); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) enqueue(fileVersionID int64, plugin string, priority int64) int64 {
	h.t.Helper()
	id, err := h.store.JobEnqueue(context.Background(), job.Submission{FileVersionID: fileVersionID, Plugin: plugin, Priority: priority})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) job(id int64) job.Job {
	h.t.Helper()
	j, err := h.store.JobGet(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return j.Job
}

func (h *harness) counts() map[job.Status]int64 {
	h.t.Helper()
	c, err := h.store.JobsCountByStatus(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) worker(opts testworker.Options) *testworker.Worker {
	h.t.Helper()
	opts.Endpoint = h.endpoint
	w, err := testworker.Start(context.Background(), opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(w.Close)
	return w
}

// eventually polls cond every 10 ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
