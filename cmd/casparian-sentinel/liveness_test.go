package main

// Interop tests of issue #14: workers that behave like the original
// Casparian workers (worker.py --no-heartbeat: no HEARTBEAT sent or
// answered, no ZMQ_HEARTBEAT_IVL, the job run in the receive thread, an ERR
// of job_id 0 for a failed PREPARE_ENV) stay connected, through ZMTP PINGs
// that libzmq answers on its own, and are still dropped when they die.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

const (
	livenessTimeout  = time.Second
	livenessInterval = 200 * time.Millisecond
)

// livenessArgs shorten the worker timeout so that "3 × --worker-timeout"
// takes seconds. Later flags win over the fixture's.
func (fx *interopFixture) livenessArgs(extra ...string) []string {
	args := append(fx.sentinelArgs(),
		"--worker-timeout", livenessTimeout.String(),
		"--heartbeat-interval", livenessInterval.String())
	return append(args, extra...)
}

// workerProc is a worker.py running in the background.
type workerProc struct {
	cmd            *exec.Cmd
	stdout, stderr *sentineltest.Logs
	done           chan error
}

// startWorker starts worker.py like runWorker does, without waiting for it.
func startWorker(t *testing.T, endpoint, identity string, jobs int, extra ...string) *workerProc {
	t.Helper()
	args := append([]string{workerScript(t),
		"--endpoint", endpoint,
		"--capabilities", strings.Join(interopPlugins, ","),
		"--jobs", strconv.Itoa(jobs),
		"--identity", identity,
		"--timeout", "40",
	}, extra...)
	p := &workerProc{cmd: exec.Command(systemPython, args...), stdout: &sentineltest.Logs{}, stderr: &sentineltest.Logs{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		exit := <-p.done // "signal: killed", unless it had exited already
		if t.Failed() {
			t.Logf("worker %s (%v) stdout:\n%s\nstderr:\n%s", identity, exit, p.stdout, p.stderr)
		}
	})
	return p
}

// wait waits for the worker to exit by itself.
func (p *workerProc) wait(t *testing.T, within time.Duration) workerRun {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return workerRun{err: err, stdout: p.stdout.String(), stderr: p.stderr.String()}
	case <-time.After(within):
		t.Fatalf("worker still running after %s", within)
		return workerRun{}
	}
}

// originalLike are worker.py's flags for behaving like the original
// workers: nothing from them proves life but what libzmq does by itself.
var originalLike = []string{"--no-heartbeat", "--zmq-heartbeat-ms", "0"}

// TestInterop_WorkerWithoutHeartbeatStaysConnected: a libzmq worker that
// never sends HEARTBEAT and ignores ours stays registered while idle for 3 ×
// --worker-timeout, then gets a job that runs 3 × --worker-timeout in its
// receive thread and completes it exactly once; kill -9 of such a worker
// mid-job still requeues its job within about --worker-timeout. Plaintext
// and over CURVE.
//
// Not parallel, nor are its subtests: the kill -9 to requeue bound (about
// 2 s) is a timing that another test's CPU beside it pushed over.
func TestInterop_WorkerWithoutHeartbeatStaysConnected(t *testing.T) {
	requirePyZMQ(t)
	t.Run("Plaintext", func(t *testing.T) {
		fx := newInteropFixture(t, 0)
		s := startSentinel(t, fx.livenessArgs(), nil)
		checkStaysConnected(t, fx, s, nil)
	})
	t.Run("Curve", func(t *testing.T) {
		fx := newInteropFixture(t, 0)
		cs := newCurveSetup(t, "orig-1", "orig-2")
		s := startSentinel(t, fx.livenessArgs(cs.sentinelArgs()...), nil)
		checkStaysConnected(t, fx, s, cs)
	})
}

func checkStaysConnected(t *testing.T, fx *interopFixture, s *sentinel, cs *curveSetup) {
	ctx := context.Background()
	creds := func(name string) []string {
		if cs == nil {
			return nil
		}
		return cs.workerArgs(t, name)
	}
	jobLength := 3 * livenessTimeout
	identity := fmt.Sprintf("w-orig-%d", time.Now().UnixNano())
	w := startWorker(t, s.endpoint, identity, 1, append(append(creds("orig-1"), originalLike...),
		"--job-seconds", strconv.FormatFloat(jobLength.Seconds(), 'f', -1, 64))...)
	testwait.Eventually(t, 10*time.Second, "the worker registered", func() (bool, string) {
		return strings.Contains(s.logs.String(), `"name":"`+identity+`"`), "not yet"
	})

	// Idle for 3 × --worker-timeout: it sends nothing at all.
	idle := 3 * livenessTimeout
	time.Sleep(idle) // the condition is that nothing happens meanwhile
	if strings.Contains(s.logs.String(), "worker timed out") {
		t.Fatalf("the idle worker timed out within %s", idle)
	}

	// A job longer than --worker-timeout, run in the worker's only thread.
	id, err := fx.store.JobEnqueue(ctx, job.Submission{FileVersionID: fx.files[0].version, Plugin: "line_count"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run := w.wait(t, 30*time.Second)
	if run.err != nil {
		t.Fatalf("worker: %v", run.err)
	}
	testwait.Eventually(t, 5*time.Second, "the job COMPLETED", func() (bool, string) {
		j, err := fx.store.JobGet(ctx, id)
		return err == nil && j.Status == job.StatusCompleted, fmt.Sprint(j.Status, err)
	})
	took := time.Since(start)
	t.Logf("idle %s, then a %s job completed %s after it was enqueued", idle, jobLength, took.Round(time.Millisecond))
	j, err := fx.store.JobGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.RetryCount != 0 || j.ClaimedBy != identity || j.Metrics["rows"] != fx.files[0].lines() {
		t.Errorf("job: retry_count %d, claimed by %q, metrics %v; want one clean run by %s", j.RetryCount, j.ClaimedBy, j.Metrics, identity)
	}
	if n := len(parseDone(t, run.stdout)[id]); n != 1 || strings.Count(run.stdout, fmt.Sprintf("start %d\n", id)) != 1 {
		t.Errorf("the worker ran job %d %d times, want once:\n%s", id, n, run.stdout)
	}
	for _, bad := range []string{"worker timed out", "ignored: worker does not hold this job", "worker removed"} {
		if strings.Contains(s.logs.String(), bad) {
			t.Errorf("sentinel logged %q", bad)
		}
	}
	if summaryValue(t, run.stdout, "identifies") != 1 || summaryValue(t, run.stdout, "heartbeats_answered") != 0 ||
		summaryValue(t, run.stdout, "heartbeats_ignored") < 10 {
		t.Errorf("worker summary: want 1 IDENTIFY, no HEARTBEAT answered and many ignored:\n%s", run.stdout)
	}

	// The worker exited after its job: its connection is gone, so no PONG
	// comes back and it is dropped (else the next job could go to it).
	testwait.Eventually(t, 5*time.Second, "the exited worker dropped", func() (bool, string) {
		return strings.Contains(s.logs.String(), "worker timed out"), "not yet"
	})

	// kill -9 mid-job: nothing answers PINGs any more.
	victim := fmt.Sprintf("w-victim-%d", time.Now().UnixNano())
	v := startWorker(t, s.endpoint, victim, 1, append(append(creds("orig-2"), originalLike...), "--job-seconds", "60")...)
	testwait.Eventually(t, 10*time.Second, "the victim registered", func() (bool, string) {
		return strings.Contains(s.logs.String(), `"name":"`+victim+`"`), "not yet"
	})
	id, err = fx.store.JobEnqueue(ctx, job.Submission{FileVersionID: fx.files[1].version, Plugin: "byte_count"})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "the victim started the job", func() (bool, string) {
		return strings.Contains(v.stdout.String(), fmt.Sprintf("start %d\n", id)), "not yet"
	})
	time.Sleep(2 * livenessTimeout) // alive mid-job, on PONGs alone
	if j, _ := fx.store.JobGet(ctx, id); j.Status != job.StatusRunning || j.RetryCount != 0 {
		t.Fatalf("before the kill: job %s, retry_count %d; want RUNNING", j.Status, j.RetryCount)
	}
	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	testwait.Eventually(t, 10*time.Second, "the killed worker's job requeued", func() (bool, string) {
		j, err := fx.store.JobGet(ctx, id)
		return err == nil && j.RetryCount == 1, fmt.Sprint(j.Status, j.RetryCount, err)
	})
	detected := time.Since(killed)
	t.Logf("kill -9 to requeue: %s (--worker-timeout %s, --heartbeat-interval %s)", detected.Round(time.Millisecond), livenessTimeout, livenessInterval)
	if limit := livenessTimeout + 3*livenessInterval + 500*time.Millisecond; detected > limit {
		t.Errorf("requeued %s after the kill, want within %s", detected, limit)
	}
}

// TestInterop_EnvErrWithoutJobIDIsRetriedAtOnce: workers that answer
// PREPARE_ENV with an ERR of job_id 0 naming no environment (the originals'
// "PREPARE_ENV failed: …") make the job retry on another worker at once, not
// after --env-timeout, until it is FAILED with the worker's message after
// --max-retries.
func TestInterop_EnvErrWithoutJobIDIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	requirePyZMQ(t)
	ctx := context.Background()
	fx := newInteropFixture(t, 0)
	const lockfile = "numpy==99.0.0\n"
	source := "def run(path):\n    return 1\n"
	envSum := sha256.Sum256([]byte(lockfile))
	artSum := sha256.Sum256([]byte(source + lockfile))
	if _, err := fx.store.PluginDeploy(ctx, time.Now(), db.Deployment{Plugin: "line_count", Version: "2.0.0",
		SourceCode: source, Lockfile: lockfile, EnvHash: hex.EncodeToString(envSum[:]),
		ArtifactHash: hex.EncodeToString(artSum[:]), PublisherName: "test"}); err != nil {
		t.Fatal(err)
	}
	const maxRetries = 2
	s := startSentinel(t, fx.livenessArgs("--max-retries", strconv.Itoa(maxRetries), "--env-timeout", "10m"), nil)

	// One worker per attempt: a worker that failed an environment is
	// avoided for it (one --env-timeout), so each retry goes elsewhere.
	const message = "PREPARE_ENV failed: Failed to create venv: uv exited with 2"
	var workers []*workerProc
	for i := 0; i <= maxRetries; i++ {
		name := fmt.Sprintf("w-envfail-%d-%d", i, time.Now().UnixNano())
		workers = append(workers, startWorker(t, s.endpoint, name, 0, append(originalLike, "--env-fail", message, "--stay", "15")...))
		testwait.Eventually(t, 10*time.Second, "worker registered", func() (bool, string) {
			return strings.Contains(s.logs.String(), `"name":"`+name+`"`), "not yet"
		})
	}
	id, err := fx.store.JobEnqueue(ctx, job.Submission{FileVersionID: fx.files[0].version, Plugin: "line_count"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testwait.Eventually(t, 10*time.Second, "the job FAILED", func() (bool, string) {
		j, err := fx.store.JobGet(ctx, id)
		return err == nil && j.Status == job.StatusFailed, fmt.Sprint(j.Status, j.RetryCount, err)
	})
	t.Logf("%d PREPARE_ENV answered ERR(0): job FAILED %s after it was enqueued (--env-timeout 10m)",
		maxRetries+1, time.Since(start).Round(time.Millisecond))
	j, err := fx.store.JobGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(j.ErrorMessage, message) || !strings.Contains(j.ErrorMessage, fmt.Sprintf("gave up after %d retries", maxRetries)) {
		t.Errorf("error_message %q, want the worker's message and the retries", j.ErrorMessage)
	}
	asked := 0
	for _, w := range workers {
		asked += strings.Count(w.stdout.String(), "env-fail ")
		if strings.Contains(w.stdout.String(), "start ") {
			t.Errorf("a job was dispatched although its environment failed:\n%s", w.stdout)
		}
	}
	if asked != maxRetries+1 {
		t.Errorf("PREPARE_ENV answered with ERR %d times, want %d (one per attempt)", asked, maxRetries+1)
	}
}
