package main

// Interop tests: the Go Sentinel against tests/interop/worker.py, a reference
// worker written on pyzmq, i.e. on real libzmq. They prove the wire format is
// byte compatible with an independent ZeroMQ implementation, including the
// ZMTP PINGs libzmq sends with ZMQ_HEARTBEAT_IVL.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// systemPython is the interpreter python3-zmq installs into; the python3
// first on PATH may be another one without zmq.
const systemPython = "/usr/bin/python3"

// requirePyZMQ skips the test when pyzmq is missing on a developer machine
// and fails it in CI (CI is set), where python3-zmq is installed on purpose.
func requirePyZMQ(t *testing.T) {
	t.Helper()
	out, err := exec.Command(systemPython, "-c", "import zmq").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import zmq (%v: %s); install it with: apt-get install -y python3-zmq",
		systemPython, err, bytes.TrimSpace(out))
	if os.Getenv("CI") == "" {
		t.Skip("interop test skipped: " + msg)
	}
	t.Fatal(msg)
}

// workerScript is the absolute path of the reference worker.
func workerScript(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "tests", "interop", "worker.py"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("reference worker: %v", err)
	}
	return p
}

// interopFile is one real input file of the fixture.
type interopFile struct {
	rel     string
	content string
	path    string // absolute: source root joined with rel
	version int64  // cf_file_version id
}

// lines counts lines the way the worker does: every "\n" ends one, and a
// last line without one still counts.
func (f interopFile) lines() int64 {
	n := int64(strings.Count(f.content, "\n"))
	if f.content != "" && !strings.HasSuffix(f.content, "\n") {
		n++
	}
	return n
}

// interopJob is one enqueued job and what the worker must report for it.
type interopJob struct {
	id     int64
	plugin string
	file   *interopFile
}

// interopFixture is a source root with real files and a database with
// QUEUED jobs over them.
type interopFixture struct {
	dbPath string
	root   string // the source root, the Sentinel's --allowed-roots
	store  *db.DB
	files  []*interopFile
	jobs   []interopJob
}

var interopPlugins = []string{"line_count", "byte_count"}

// newInteropFixture writes the files, prepares the database through the db
// package and enqueues nJobs jobs alternating over both plugins and all
// files. The store stays open for the test's assertions.
func newInteropFixture(t *testing.T, nJobs int) *interopFixture {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	fx := &interopFixture{dbPath: filepath.Join(t.TempDir(), "sentinel.db"), root: root}
	contents := []struct{ rel, content string }{
		{"alpha.txt", "one\ntwo\nthree\n"},
		{"data/readings.csv", "ts,value\n" + strings.Repeat("2026-01-01T00:00:00Z,42\n", 11)},
		{"data/sub dir/notes.md", "# notes\n\nno trailing newline"},
		{"single.log", "just one line\n"},
		{"empty.dat", ""},
	}
	for _, c := range contents {
		f := &interopFile{rel: c.rel, content: c.content, path: filepath.Join(root, c.rel)}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		fx.files = append(fx.files, f)
	}

	store, err := db.Open(ctx, "sqlite://"+fx.dbPath)
	if err != nil {
		t.Fatalf("db.Open: %v", err)
	}
	fx.store = store
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("close test store: %v", err)
		}
	})

	sr, err := store.SourceRootAdd(ctx, root)
	if err != nil {
		t.Fatalf("SourceRootAdd: %v", err)
	}
	for _, f := range fx.files {
		sum := sha256.Sum256([]byte(f.content))
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		f.version, err = store.FileVersionAdd(ctx, sr.ID, f.rel, hex.EncodeToString(sum[:]),
			int64(len(f.content)), st.ModTime(), []string{"interop"})
		if err != nil {
			t.Fatalf("FileVersionAdd %s: %v", f.rel, err)
		}
	}
	for _, p := range interopPlugins {
		src := fmt.Sprintf("# %s plugin\ndef run(path):\n    return open(path, 'rb').read()\n", p)
		if _, err := store.PluginManifestActivate(ctx, p, "1.0.0", src, "", ""); err != nil {
			t.Fatalf("PluginManifestActivate %s: %v", p, err)
		}
	}
	if _, err := store.TopicConfigAdd(ctx, "line_count", "output", "memory://line_count/output", "", ""); err != nil {
		t.Fatalf("TopicConfigAdd: %v", err)
	}
	for i := 0; i < nJobs; i++ {
		j := interopJob{plugin: interopPlugins[i%len(interopPlugins)], file: fx.files[i%len(fx.files)]}
		j.id, err = store.JobEnqueue(ctx, job.Submission{FileVersionID: j.file.version, Plugin: j.plugin, Priority: int64(i%3) * 10})
		if err != nil {
			t.Fatalf("JobEnqueue: %v", err)
		}
		fx.jobs = append(fx.jobs, j)
	}
	return fx
}

// sentinelArgs are flags for a fast in-process Sentinel on a free port.
func (fx *interopFixture) sentinelArgs() []string {
	return []string{
		"--bind", "tcp://127.0.0.1:0",
		"--database", "sqlite://" + fx.dbPath,
		"--heartbeat-interval", "200ms",
		"--worker-timeout", "3s",
		"--recovery-grace", "1s",
		"--retry-backoff", "50ms",
		"--poll-interval", "50ms",
		"--shutdown-timeout", "5s",
		"--log-format", "json",
		"--log-level", "debug",
		"--allowed-roots", fx.root,
	}
}

// workerRun is the outcome of one worker.py process.
type workerRun struct {
	err            error
	stdout, stderr string
	took           time.Duration
}

// runWorker runs worker.py to completion under a hard deadline.
func runWorker(t *testing.T, endpoint, identity string, jobs int, extra ...string) workerRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{workerScript(t),
		"--endpoint", endpoint,
		"--capabilities", strings.Join(interopPlugins, ","),
		"--jobs", strconv.Itoa(jobs),
		"--identity", identity,
		"--timeout", "40",
	}, extra...)
	cmd := exec.CommandContext(ctx, systemPython, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := workerRun{err: err, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	t.Logf("worker.py %s exited after %s: %v", strings.Join(extra, " "), r.took.Round(time.Millisecond), err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker stdout:\n%s\nworker stderr:\n%s", r.stdout, r.stderr)
		}
	})
	return r
}

// doneLine is one "done <job_id> <plugin> <file_path> rows=<n>" line.
type doneLine struct {
	plugin, path string
	rows         int64
}

// parseDone reads the worker's job lines by job id; a file path may contain
// spaces, so it is everything between the plugin and the last field.
func parseDone(t *testing.T, stdout string) map[int64][]doneLine {
	t.Helper()
	done := map[int64][]doneLine{}
	for _, line := range strings.Split(stdout, "\n") {
		rest, ok := strings.CutPrefix(line, "done ")
		if !ok {
			continue
		}
		idText, rest, ok1 := strings.Cut(rest, " ")
		plugin, rest, ok2 := strings.Cut(rest, " ")
		i := strings.LastIndex(rest, " rows=")
		if !ok1 || !ok2 || i < 0 {
			t.Errorf("malformed worker line %q", line)
			continue
		}
		id, err1 := strconv.ParseInt(idText, 10, 64)
		rows, err2 := strconv.ParseInt(rest[i+len(" rows="):], 10, 64)
		if err1 != nil || err2 != nil {
			t.Errorf("malformed worker line %q", line)
			continue
		}
		done[id] = append(done[id], doneLine{plugin: plugin, path: rest[:i], rows: rows})
	}
	return done
}

// checkAllCompleted waits until every job is COMPLETED (the last CONCLUDE may
// still be on its way when the worker exits), then checks each job's row and
// the worker's line for it.
func (fx *interopFixture) checkAllCompleted(t *testing.T, identity string, w workerRun) {
	t.Helper()
	ctx := context.Background()
	want := int64(len(fx.jobs))
	testwait.Eventually(t, 10*time.Second, fmt.Sprintf("%d COMPLETED jobs", want), func() (bool, string) {
		counts, err := fx.store.JobsCountByStatus(ctx)
		if err != nil {
			return false, err.Error()
		}
		return counts[job.StatusCompleted] == want, fmt.Sprint(counts)
	})
	counts, err := fx.store.JobsCountByStatus(ctx)
	if err != nil {
		t.Fatalf("JobsCountByStatus: %v", err)
	}
	if len(counts) != 1 || counts[job.StatusCompleted] != want {
		t.Errorf("job counts = %v, want exactly %d COMPLETED", counts, want)
	}

	done := parseDone(t, w.stdout)
	if len(done) != len(fx.jobs) {
		t.Errorf("worker reported %d distinct jobs, want %d", len(done), len(fx.jobs))
	}
	for _, j := range fx.jobs {
		got, err := fx.store.JobGet(ctx, j.id)
		if err != nil {
			t.Fatalf("JobGet %d: %v", j.id, err)
		}
		if got.Status != job.StatusCompleted || got.PluginName != j.plugin || got.FileVersionID != j.file.version {
			t.Errorf("job %d: status %s plugin %q version %d, want COMPLETED %q %d",
				j.id, got.Status, got.PluginName, got.FileVersionID, j.plugin, j.file.version)
		}
		if got.ClaimedBy != identity {
			t.Errorf("job %d claimed by %q, want the worker's identity %q", j.id, got.ClaimedBy, identity)
		}
		if got.RetryCount != 0 || got.ErrorMessage != "" {
			t.Errorf("job %d: retry_count %d error %q, want a clean first run", j.id, got.RetryCount, got.ErrorMessage)
		}
		if got.Metrics["rows"] != j.file.lines() || got.Metrics["size_bytes"] != int64(len(j.file.content)) {
			t.Errorf("job %d (%s): metrics %v, want rows=%d size_bytes=%d",
				j.id, j.file.rel, got.Metrics, j.file.lines(), len(j.file.content))
		}
		if len(got.Artifacts) != 1 || got.Artifacts[0]["topic"] != "output" || got.Artifacts[0]["uri"] == "" {
			t.Errorf("job %d: artifacts %v, want one output artifact", j.id, got.Artifacts)
		}
		if got.EndTime.IsZero() {
			t.Errorf("job %d: no end time", j.id)
		}

		lines := done[j.id]
		if len(lines) != 1 {
			t.Errorf("worker reported job %d %d times, want once: %v", j.id, len(lines), lines)
			continue
		}
		if l := lines[0]; l.plugin != j.plugin || l.path != j.file.path || l.rows != j.file.lines() {
			t.Errorf("worker line for job %d = %+v, want plugin %q path %q rows %d",
				j.id, l, j.plugin, j.file.path, j.file.lines())
		}
	}

	// The plugin's configured output sink reached the worker, which builds
	// its artifact URI from it.
	for _, j := range fx.jobs {
		if j.plugin != "line_count" {
			continue
		}
		got, err := fx.store.JobGet(ctx, j.id)
		if err == nil && len(got.Artifacts) == 1 && !strings.HasPrefix(got.Artifacts[0]["uri"], "memory://line_count/output") {
			t.Errorf("job %d artifact uri %q does not come from the configured output sink", j.id, got.Artifacts[0]["uri"])
		}
		break
	}
}

func TestInterop_PythonWorkerCompletesJobs(t *testing.T) {
	t.Parallel()
	requirePyZMQ(t)
	const nJobs = 20
	fx := newInteropFixture(t, nJobs)
	s := startSentinel(t, fx.sentinelArgs(), nil)

	identity := fmt.Sprintf("w-%d", time.Now().UnixNano())
	// libzmq PINGs every 50 ms, and the worker stays 600 ms after its last
	// job, so PINGs and Sentinel HEARTBEATs certainly cross the connection.
	w := runWorker(t, s.endpoint, identity, nJobs, "--zmq-heartbeat-ms", "50", "--stay", "0.6")
	if w.err != nil {
		t.Fatalf("worker.py failed: %v", w.err)
	}
	fx.checkAllCompleted(t, identity, w)

	if n := summaryValue(t, w.stdout, "heartbeats_answered"); n < 1 {
		t.Errorf("worker answered %d Sentinel HEARTBEATs, want at least 1 (interval 200ms, stayed 600ms)", n)
	}
	// ZMTP PINGs are not protocol messages: nothing may be logged as
	// malformed, and nothing else may go wrong on the happy path.
	var bad []map[string]any
	for _, e := range logEntries(t, s.logs.String()) {
		if lvl := e["level"]; lvl == "warn" || lvl == "error" || lvl == "fatal" || lvl == "panic" {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		t.Errorf("sentinel logged %d warnings or errors on the happy path; first: %v", len(bad), bad[0])
	}

	// A job picked by hand: its rows are the file's line count.
	pick := fx.jobs[1] // byte_count over data/readings.csv
	got, err := fx.store.JobGet(context.Background(), pick.id)
	if err != nil {
		t.Fatalf("JobGet: %v", err)
	}
	if pick.file.rel != "data/readings.csv" || got.Metrics["rows"] != 12 || got.Metrics["size_bytes"] != int64(len(pick.file.content)) {
		t.Errorf("job %d over %s: metrics %v, want rows=12 size_bytes=%d", pick.id, pick.file.rel, got.Metrics, len(pick.file.content))
	}

	if strings.Contains(w.stdout, "reidentify") {
		t.Errorf("worker was told it is unknown although it identified first:\n%s", w.stdout)
	}
	s.stopClean(t)
}

// summaryValue reads one number of the worker's "summary k=v ..." line.
func summaryValue(t *testing.T, stdout, key string) int {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		rest, ok := strings.CutPrefix(line, "summary ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, _ := strings.Cut(kv, "="); k == key {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("summary %s=%q: %v", key, v, err)
				}
				return n
			}
		}
	}
	t.Fatalf("worker printed no summary with %s:\n%s", key, stdout)
	return 0
}

func TestInterop_PythonWorkerReidentifiesAfterUnknownWorkerErr(t *testing.T) {
	t.Parallel()
	requirePyZMQ(t)
	const nJobs = 4
	fx := newInteropFixture(t, nJobs)
	s := startSentinel(t, fx.sentinelArgs(), nil)

	identity := fmt.Sprintf("w-%d", time.Now().UnixNano())
	// The worker sends a HEARTBEAT before it ever identifies and only sends
	// IDENTIFY when the Sentinel answers ERR "unknown worker, send IDENTIFY";
	// completing jobs therefore proves the ERR arrived and was understood.
	w := runWorker(t, s.endpoint, identity, nJobs, "--heartbeat-first")
	if w.err != nil {
		t.Fatalf("worker.py --heartbeat-first failed: %v", w.err)
	}
	if !strings.Contains(w.stdout, "reidentify: unknown worker, send IDENTIFY") {
		t.Errorf("worker did not report the unknown-worker ERR:\n%s", w.stdout)
	}
	if n := summaryValue(t, w.stdout, "identifies"); n != 1 {
		t.Errorf("worker identified %d times, want exactly once (after the ERR)", n)
	}
	fx.checkAllCompleted(t, identity, w)
	s.stopClean(t)
}
