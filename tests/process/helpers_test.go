package process_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/db/postgres/pgtest"
	"github.com/casparian/sentinel/internal/testbin"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// Timings every test shares; tests that need something else say so.
const (
	heartbeatInterval = 200 * time.Millisecond
	workerTimeout     = 1500 * time.Millisecond
	recoveryGrace     = 2 * time.Second
	retryBackoff      = 50 * time.Millisecond
	retryBackoffMax   = 500 * time.Millisecond
	pollInterval      = 100 * time.Millisecond

	// workerHeartbeat is the testworker's unsolicited heartbeat interval.
	workerHeartbeat = 500 * time.Millisecond

	// readyTimeout bounds the wait for a process to say it is up.
	readyTimeout = 15 * time.Second

	// plugin is the plugin every ordinary job runs.
	plugin = "file_stats"
)

// Paths of the binaries and the WebAssembly plugin TestMain builds.
var (
	sentinelBin     string
	workerBin       string
	sampleWorkerBin string // cmd/casparian-worker, which runs deployed plugins
	cliBin          string // cmd/casparian: keygen, publish
	wordcountWasm   string // plugins/wordcount for wasip1
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "casparian-process-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "process tests: temp dir:", err)
		return 1
	}
	// A temporary folder left behind costs disk space, not a result.
	defer func() { _ = os.RemoveAll(dir) }()
	// The five builds run side by side: linking is most of each when the
	// build cache is warm, and it uses one core. internal/testbin builds
	// them without -race (only the test process runs under the race
	// detector, which keeps the processes fast) and keeps each linked
	// binary in the build cache, which the other packages' tests share.
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, b := range []struct {
		bin      *string
		name     string
		pkg      string
		crossEnv []string
	}{
		{&sentinelBin, "casparian-sentinel", "github.com/casparian/sentinel/cmd/casparian-sentinel", nil},
		{&workerBin, "casparian-testworker", "github.com/casparian/sentinel/cmd/casparian-testworker", nil},
		{&sampleWorkerBin, "casparian-worker", "github.com/casparian/sentinel/cmd/casparian-worker", nil},
		{&cliBin, "casparian", "github.com/casparian/sentinel/cmd/casparian", nil},
		{&wordcountWasm, "wordcount.wasm", "github.com/casparian/sentinel/plugins/wordcount", []string{"GOOS=wasip1", "GOARCH=wasm"}},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, err := testbin.Build(dir, b.name, b.pkg, b.crossEnv...)
			if err != nil {
				fmt.Fprintf(os.Stderr, "process tests: %v\n", err)
				failed.Store(true)
				return
			}
			*b.bin = path
		}()
	}
	wg.Wait()
	if failed.Load() {
		return 1
	}
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "process tests: leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// syncBuffer collects a process's output; the test reads it while the
// process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the complete lines written so far.
func (b *syncBuffer) lines() []string {
	s := b.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// tail returns the last n lines (and any unfinished one).
func (b *syncBuffer) tail(n int) string {
	all := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(all) > n {
		all = append([]string{fmt.Sprintf("… %d earlier lines …", len(all)-n)}, all[len(all)-n:]...)
	}
	return strings.Join(all, "\n")
}

// proc is one child process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	stdout  *syncBuffer
	stderr  *syncBuffer
	started time.Time

	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // set before done is closed
}

// startProc starts bin; it returns an error rather than failing the test so
// that keeper goroutines can use it.
func startProc(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = os.Environ()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status, -1 when killed by a signal or still running.
func (p *proc) exitCode() int {
	if !p.exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) status() string {
	if !p.exited() {
		return fmt.Sprintf("running (pid %d)", p.cmd.Process.Pid)
	}
	return fmt.Sprintf("exited: %v (pid %d)", p.cmd.ProcessState, p.cmd.Process.Pid)
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM without waiting.
func (p *proc) term() error { return p.cmd.Process.Signal(syscall.SIGTERM) }

// waitExit waits up to d for the process to exit.
func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// logLine is one JSON log line of the Sentinel.
type logLine map[string]any

func (l logLine) str(key string) string {
	s, _ := l[key].(string)
	return s
}

// logs parses the JSON lines of the process's stderr; other lines are skipped.
func (p *proc) logs() []logLine {
	var out []logLine
	for _, line := range p.stderr.lines() {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var l logLine
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// logsWith returns the log lines whose message is msg.
func (p *proc) logsWith(msg string) []logLine {
	var out []logLine
	for _, l := range p.logs() {
		if l.str("message") == msg {
			out = append(out, l)
		}
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago, and
// that no other test of this binary was given: the tests run in parallel,
// and the kernel may hand a port it gave one test to the next once the first
// has closed its probe but before its Sentinel has bound the port.
func freePort(t *testing.T) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			t.Fatalf("free port: %v", err)
		}
		givenPorts.Lock()
		_, taken := givenPorts.m[port]
		givenPorts.m[port] = struct{}{}
		givenPorts.Unlock()
		if !taken {
			return port
		}
	}
}

// givenPorts is every port freePort returned in this test binary.
var givenPorts = struct {
	sync.Mutex
	m map[int]struct{}
}{m: map[int]struct{}{}}

// seededFile is what a job's file should produce: FileStats reports its size
// and line count.
type seededFile struct {
	size, lines int64
}

// cluster is one test's Sentinel database, port and processes.
type cluster struct {
	t        *testing.T
	dir      string
	dbPath   string
	endpoint string
	store    *db.DB
	rootID   int64

	files map[int64]seededFile // file version id → expected stats

	mu    sync.Mutex
	procs []*proc // every process started, for cleanup and failure dumps
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{
		t:        t,
		dir:      dir,
		dbPath:   filepath.Join(dir, "sentinel.db"),
		endpoint: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)),
		files:    map[int64]seededFile{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := db.Open(ctx, c.dbPath)
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	c.store = store
	root := filepath.Join(dir, "files")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sr, err := store.SourceRootAdd(ctx, root)
	if err != nil {
		t.Fatalf("add source root: %v", err)
	}
	c.rootID = sr.ID
	t.Cleanup(func() {
		c.mu.Lock()
		procs := append([]*proc(nil), c.procs...)
		c.mu.Unlock()
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("=== %s: %s\n--- stderr tail:\n%s\n--- stdout tail:\n%s",
					p.name, p.status(), p.stderr.tail(40), p.stdout.tail(10))
			}
		}
		if err := store.Close(); err != nil {
			t.Errorf("close database: %v", err)
		}
	})
	return c
}

func (c *cluster) track(p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

func (c *cluster) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// sentinelOpts are the settings a test varies.
type sentinelOpts struct {
	maxRetries      int
	drainTimeout    time.Duration
	shutdownTimeout time.Duration
	extra           []string // more flags
}

func defaultSentinelOpts() sentinelOpts {
	return sentinelOpts{maxRetries: 5, drainTimeout: 3 * time.Second, shutdownTimeout: 10 * time.Second}
}

// startSentinel starts a Sentinel on the cluster's database and port and
// waits for its "sentinel started" line.
func (c *cluster) startSentinel(name string, o sentinelOpts) *proc {
	c.t.Helper()
	p, err := startProc(name, sentinelBin, c.sentinelArgs(c.endpoint, o)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.track(p)
	testwait.Eventually(c.t, readyTimeout, name+" to log \"sentinel started\"", func() (bool, string) {
		if p.exited() {
			c.t.Fatalf("%s %s before it started; stderr:\n%s", name, p.status(), p.stderr.tail(40))
		}
		if started := p.logsWith("sentinel started"); len(started) > 0 {
			if bind := started[0].str("bind"); bind != c.endpoint {
				c.t.Fatalf("%s bound %q, want %q", name, bind, c.endpoint)
			}
			return true, ""
		}
		return false, p.stderr.tail(3)
	})
	return p
}

// sentinelArgs is the command line of a Sentinel on the cluster's database
// that binds bind.
func (c *cluster) sentinelArgs(bind string, o sentinelOpts) []string {
	args := []string{
		"--bind", bind,
		"--database", c.dbPath,
		"--log-format", "json",
		"--log-level", "info",
		"--heartbeat-interval", heartbeatInterval.String(),
		"--worker-timeout", workerTimeout.String(),
		"--recovery-grace", recoveryGrace.String(),
		"--max-retries", strconv.Itoa(o.maxRetries),
		"--retry-backoff", retryBackoff.String(),
		"--retry-backoff-max", retryBackoffMax.String(),
		"--poll-interval", pollInterval.String(),
		"--drain-timeout", o.drainTimeout.String(),
		"--shutdown-timeout", o.shutdownTimeout.String(),
		"--allowed-roots", c.dir,
	}
	return append(args, o.extra...)
}

// workerArgs are the command line of a testworker with identity id.
func (c *cluster) workerArgs(id string, slots int, delay time.Duration, extra ...string) []string {
	return append([]string{
		"--endpoint", c.endpoint,
		"--identity", id,
		"--capabilities", "*",
		"--slots", strconv.Itoa(slots),
		"--job-delay", delay.String(),
		"--heartbeat", workerHeartbeat.String(),
	}, extra...)
}

// startWorker starts a testworker and waits until it has identified.
func (c *cluster) startWorker(id string, slots int, delay time.Duration, extra ...string) *proc {
	c.t.Helper()
	p, err := startProc("worker "+id, workerBin, c.workerArgs(id, slots, delay, extra...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.track(p)
	want := fmt.Sprintf("worker %s connected to %s", id, c.endpoint)
	testwait.Eventually(c.t, readyTimeout, want, func() (bool, string) {
		if p.exited() {
			c.t.Fatalf("worker %s %s before it connected; stderr:\n%s", id, p.status(), p.stderr.tail(20))
		}
		return strings.Contains(p.stdout.String(), want), p.stdout.tail(2)
	})
	return p
}

// activatePlugin stores an ACTIVE manifest so jobs for name can be dispatched.
func (c *cluster) activatePlugin(name string) {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.store.PluginManifestActivate(ctx, name, "1.0.0", "# process test plugin "+name, "", ""); err != nil {
		c.t.Fatalf("activate %s: %v", name, err)
	}
}

// addFile writes a file under the source root and records a version of it;
// its content depends on i, so every file has its own size and hash.
func (c *cluster) addFile(i int) int64 {
	c.t.Helper()
	var b strings.Builder
	for r := 0; r <= i%17; r++ {
		fmt.Fprintf(&b, "row %d of file %d\n", r, i)
	}
	rel := fmt.Sprintf("input-%04d.txt", i)
	data := []byte(b.String())
	if err := os.WriteFile(filepath.Join(c.dir, "files", rel), data, 0o644); err != nil {
		c.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	ctx, cancel := c.ctx()
	defer cancel()
	fv, err := c.store.FileVersionAdd(ctx, c.rootID, rel, hex.EncodeToString(sum[:]), int64(len(data)), time.Now(), []string{"txt"})
	if err != nil {
		c.t.Fatalf("add file version %s: %v", rel, err)
	}
	c.files[fv] = seededFile{size: int64(len(data)), lines: int64(i%17 + 1)}
	return fv
}

// enqueue queues n jobs for pluginName, spread over at most 100 files, and
// returns their ids in order. The plugin must be activated.
func (c *cluster) enqueue(pluginName string, n int) []int64 {
	c.t.Helper()
	var fvs []int64
	for i := 0; i < min(n, 100); i++ {
		fvs = append(fvs, c.addFile(len(c.files)))
	}
	// One commit per job: on a loaded machine a thousand take longer than
	// c.ctx()'s ten seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+time.Duration(n)*50*time.Millisecond)
	defer cancel()
	ids := make([]int64, 0, n)
	for i := range n {
		id, err := c.store.JobEnqueue(ctx, job.Submission{FileVersionID: fvs[i%len(fvs)], Plugin: pluginName})
		if err != nil {
			c.t.Fatalf("enqueue: %v", err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (c *cluster) job(id int64) job.Job {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	j, err := c.store.JobGet(ctx, id)
	if err != nil {
		c.t.Fatalf("get job: %v", err)
	}
	return j.Job
}

func (c *cluster) counts() map[job.Status]int64 {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	n, err := c.store.JobsCountByStatus(ctx)
	if err != nil {
		c.t.Fatalf("count jobs: %v", err)
	}
	return n
}

func fmtCounts(n map[job.Status]int64) string {
	var parts []string
	for _, s := range []job.Status{job.StatusQueued, job.StatusRunning, job.StatusCompleted, job.StatusFailed, job.StatusSkipped, job.StatusPending} {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, n[s]))
		}
	}
	return strings.Join(parts, " ")
}

// waitSettled waits until no job is RUNNING or QUEUED (beyond wantQueued).
func (c *cluster) waitSettled(timeout time.Duration, wantQueued int64) map[job.Status]int64 {
	c.t.Helper()
	var last map[job.Status]int64
	testwait.Eventually(c.t, timeout, "every job to settle", func() (bool, string) {
		last = c.counts()
		return last[job.StatusRunning] == 0 && last[job.StatusQueued] == wantQueued, fmtCounts(last)
	})
	return last
}

// expect is what the final state must look like.
type expect struct {
	completed int64
	failed    int64
	queued    int64 // jobs the test expects never to have run
}

// checkFinal verifies the end state of the jobs: nothing RUNNING, QUEUED only
// as expected, the COMPLETED and FAILED counts, every FAILED row with a
// reason, every COMPLETED row with the receipt of its own file, and attempt
// numbers consistent with the retries (each claim is one attempt, each retry
// one more claim, so a finished job has attempt = retry_count + 1: a job
// claimed or completed twice would break it). It returns the rows.
func (c *cluster) checkFinal(ids []int64, want expect) []job.Job {
	c.t.Helper()
	n := c.counts()
	if n[job.StatusRunning] != 0 {
		c.t.Errorf("%d jobs left RUNNING (%s)", n[job.StatusRunning], fmtCounts(n))
	}
	if n[job.StatusQueued] != want.queued {
		c.t.Errorf("%d jobs QUEUED, want %d (%s)", n[job.StatusQueued], want.queued, fmtCounts(n))
	}
	if n[job.StatusCompleted] != want.completed || n[job.StatusFailed] != want.failed {
		c.t.Errorf("COMPLETED=%d FAILED=%d, want %d and %d (%s)",
			n[job.StatusCompleted], n[job.StatusFailed], want.completed, want.failed, fmtCounts(n))
	}
	var total int64
	for _, v := range n {
		total += v
	}
	if total != int64(len(ids)) {
		c.t.Errorf("%d rows in the queue, want the %d seeded", total, len(ids))
	}
	jobs := make([]job.Job, 0, len(ids))
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			c.t.Errorf(format, args...)
		}
	}
	for _, id := range ids {
		j := c.job(id)
		jobs = append(jobs, j)
		switch j.Status {
		case job.StatusFailed:
			if strings.TrimSpace(j.ErrorMessage) == "" {
				report("job %d FAILED without an error_message", id)
			}
		case job.StatusCompleted:
			f := c.files[j.FileVersionID]
			if j.ResultSummary == "" {
				report("job %d COMPLETED without a result_summary", id)
			}
			if j.Metrics["size_bytes"] != f.size || j.Metrics["rows"] != f.lines {
				report("job %d COMPLETED with metrics %v, want size_bytes=%d rows=%d", id, j.Metrics, f.size, f.lines)
			}
			if j.ClaimedBy == "" {
				report("job %d COMPLETED with no claimed_by", id)
			}
		}
		if j.Status == job.StatusQueued {
			if j.Attempt != 0 || j.RetryCount != 0 {
				report("job %d QUEUED with attempt %d retry_count %d, want a job never run", id, j.Attempt, j.RetryCount)
			}
			continue
		}
		if j.Attempt != j.RetryCount+1 {
			report("job %d %s with attempt %d and retry_count %d, want attempt = retry_count + 1",
				id, j.Status, j.Attempt, j.RetryCount)
		}
	}
	if bad > 10 {
		c.t.Errorf("… and %d more bad rows", bad-10)
	}
	return jobs
}

// retried counts the jobs with retry_count > 0.
func retried(jobs []job.Job) int {
	n := 0
	for _, j := range jobs {
		if j.RetryCount > 0 {
			n++
		}
	}
	return n
}

// crashLines returns the job ids a worker said it crashed on.
func crashLines(p *proc) ([]int64, error) {
	var ids []int64
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	for sc.Scan() {
		var id int64
		var name string
		if n, _ := fmt.Sscanf(sc.Text(), "crashing on job %d (%s", &id, &name); n == 2 {
			ids = append(ids, id)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}

// keeper runs one worker slot: it restarts the worker process, with the same
// identity, every time it exits, at most maxRestarts times.
type keeper struct {
	c           *cluster
	id          string
	args        []string
	maxRestarts int

	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	runs     []*proc
	startErr error
}

func (c *cluster) keepWorker(id string, maxRestarts int, args []string) *keeper {
	k := &keeper{c: c, id: id, args: args, maxRestarts: maxRestarts,
		stop: make(chan struct{}), done: make(chan struct{})}
	go k.loop()
	c.t.Cleanup(k.halt)
	return k
}

func (k *keeper) loop() {
	defer close(k.done)
	for {
		k.mu.Lock()
		run := len(k.runs)
		k.mu.Unlock()
		if run > k.maxRestarts {
			return
		}
		p, err := startProc(fmt.Sprintf("worker %s (run %d)", k.id, run+1), workerBin, k.args...)
		if err != nil {
			k.mu.Lock()
			k.startErr = err
			k.mu.Unlock()
			return
		}
		k.c.track(p)
		k.mu.Lock()
		k.runs = append(k.runs, p)
		k.mu.Unlock()
		select {
		case <-p.done:
		case <-k.stop:
			p.kill()
			return
		}
	}
}

// halt stops restarting and kills the current process.
func (k *keeper) halt() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}

// snapshot returns the processes started so far and any start error.
func (k *keeper) snapshot() ([]*proc, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*proc(nil), k.runs...), k.startErr
}

// exitCodes lists how each finished run ended.
func (k *keeper) exitCodes() []int {
	runs, _ := k.snapshot()
	var codes []int
	for _, p := range runs {
		if p.exited() {
			codes = append(codes, p.exitCode())
		}
	}
	return codes
}
