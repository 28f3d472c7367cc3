package actors_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// deployEnvPlugin stores an ACTIVE manifest of plugin whose jobs need the
// environment of lockfile, and returns its env_hash.
func deployEnvPlugin(t *testing.T, h *harness, plugin, lockfile string) string {
	t.Helper()
	a := artifact(plugin, "1", "module of "+plugin, lockfile)
	d := deploy.NewDeploy(a, nil)
	_, err := h.Store.PluginDeploy(context.Background(), time.Now(), db.Deployment{Plugin: plugin, Version: "1",
		SourceCode: d.SourceCode, Lockfile: lockfile, EnvHash: d.EnvHash, ArtifactHash: d.ArtifactHash, PublisherName: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	return d.EnvHash
}

func registered(t *testing.T, h *harness, n int) {
	t.Helper()
	testwait.Eventually(t, 5*time.Second, "workers registered", func() bool { ws, _ := h.Sentinel.Workers(time.Second); return len(ws) == n })
}

func prefixed(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func TestEnv_DispatchOnlyAfterEnvReady(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	env := deployEnvPlugin(t, h, "wc", "dep==1\n")
	release := make(chan struct{})
	var prepared []string
	w := h.Worker(testworker.Options{Capabilities: []string{"*"}, PrepareEnv: func(p transport.PrepareEnv) error {
		prepared = append(prepared, p.LockfileContent) // one PREPARE_ENV at a time in this test
		select {
		case <-release:
			return nil
		case <-time.After(30 * time.Second):
			return testworker.ErrNoAnswer
		}
	}})
	registered(t, h, 1)
	fv := h.File("a.txt", "x\n")
	first := h.Enqueue(fv, "wc", 0)
	testwait.Eventually(t, 5*time.Second, "PREPARE_ENV received", func() bool { return prefixed(w.Events(), "prepare:") == 1 })
	if j := h.Job(first); j.Status != job.StatusRunning || j.ClaimedBy != w.Identity() {
		t.Fatalf("job while preparing: %s claimed by %q", j.Status, j.ClaimedBy)
	}
	// The worker has not answered: no DISPATCH. Heartbeats come and go
	// meanwhile, answered without the job in active_job_ids; the held job
	// must survive their reconciliation (two misses requeue a dispatched one).
	beats := w.Heartbeats()
	testwait.Eventually(t, 5*time.Second, "four heartbeats while preparing", func() bool { return w.Heartbeats() >= beats+4 })
	if j := h.Job(first); j.Status != job.StatusRunning || j.RetryCount != 0 {
		t.Fatalf("job while preparing: %s, %d retries", j.Status, j.RetryCount)
	}
	if n := prefixed(w.Events(), "dispatch:"); n != 0 {
		t.Fatalf("DISPATCH sent before ENV_READY: %v", w.Events())
	}
	close(release)
	testwait.Eventually(t, 5*time.Second, "first job completed", func() bool { return h.Job(first).Status == job.StatusCompleted })
	if ev := w.Events(); ev[0] != "prepare:"+env || prepared[0] != "dep==1\n" {
		t.Fatalf("events %v, lockfile %q", ev, prepared)
	}

	// Same environment again: no second PREPARE_ENV.
	second := h.Enqueue(fv, "wc", 0)
	testwait.Eventually(t, 5*time.Second, "second job completed", func() bool { return h.Job(second).Status == job.StatusCompleted })
	if n := prefixed(w.Events(), "prepare:"); n != 1 {
		t.Fatalf("%d PREPARE_ENV for one environment: %v", n, w.Events())
	}
	if j := h.Job(second); j.RetryCount != 0 {
		t.Fatalf("second job retried %d times", j.RetryCount)
	}
}

func TestEnv_UnansweredPrepareGoesToAnotherWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.EnvTimeout = 500 * time.Millisecond })
	deployEnvPlugin(t, h, "wc", "dep==1\n")
	silent := h.Worker(testworker.Options{Identity: "tw-silent", PrepareEnv: func(transport.PrepareEnv) error { return testworker.ErrNoAnswer }})
	registered(t, h, 1)
	id := h.Enqueue(h.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 5*time.Second, "the silent worker was asked", func() bool { return prefixed(silent.Events(), "prepare:") == 1 })
	good := h.Worker(testworker.Options{Identity: "tw-good"})
	testwait.Eventually(t, 10*time.Second, "job completed", func() bool { return h.Job(id).Status == job.StatusCompleted })
	j := h.Job(id)
	if j.ClaimedBy != good.Identity() || j.RetryCount != 1 || len(silent.Received()) != 0 || len(good.Received()) != 1 {
		t.Fatalf("job %+v; silent got %d, good got %d", j, len(silent.Received()), len(good.Received()))
	}
	if h.Sentinel.Stats().EnvFailures.Load() != 1 {
		t.Fatalf("EnvFailures = %d", h.Sentinel.Stats().EnvFailures.Load())
	}
}

// TestEnv_EveryWorkerFailingFailsTheJobWithTheReason: a worker that
// answers every PREPARE_ENV with an error is asked once per attempt, and
// the job FAILS with that error once the retries run out.
//
// --env-timeout is both how long an answer may take and how long the
// dispatcher then avoids the worker for that environment. At 300 ms a
// loaded machine delayed the worker's answer past it: the Sentinel gave up
// on the PREPARE_ENV itself, and the job failed with "did not prepare
// environment … within 300ms" instead of the worker's reason. At 2 s (two
// avoid windows: some 4 s of wall time, no CPU) the answer is in well
// before; a Sentinel that dropped the reason, or asked more or fewer
// times, still fails the test.
func TestEnv_EveryWorkerFailingFailsTheJobWithTheReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.EnvTimeout = 2 * time.Second
		c.MaxRetries = 2
	})
	env := deployEnvPlugin(t, h, "wc", "dep==broken\n")
	w := h.Worker(testworker.Options{PrepareEnv: func(transport.PrepareEnv) error { return errors.New("no such package") }})
	registered(t, h, 1)
	id := h.Enqueue(h.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 45*time.Second, "job failed", func() bool { return h.Job(id).Status == job.StatusFailed })
	j := h.Job(id)
	if !strings.Contains(j.ErrorMessage, "could not prepare environment "+env) || !strings.Contains(j.ErrorMessage, "no such package") ||
		!strings.Contains(j.ErrorMessage, "gave up") {
		t.Fatalf("error_message %q", j.ErrorMessage)
	}
	if n := prefixed(w.Events(), "prepare:"); n != 3 || len(w.Received()) != 0 {
		t.Fatalf("%d PREPARE_ENV (want 1 + 2 retries), %d DISPATCH", n, len(w.Received()))
	}
}

func TestEnv_PrefersAWorkerWithTheEnvironmentReady(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	deployEnvPlugin(t, h, "wc", "dep==1\n")
	// Without the preference, tw-a would win ties: requests of equal size
	// run in worker key order.
	ready := h.Worker(testworker.Options{Identity: "tw-z"})
	registered(t, h, 1)
	fv := h.File("a.txt", "x\n")
	first := h.Enqueue(fv, "wc", 0)
	testwait.Eventually(t, 5*time.Second, "first job completed", func() bool { return h.Job(first).Status == job.StatusCompleted })
	other := h.Worker(testworker.Options{Identity: "tw-a"})
	registered(t, h, 2)
	for i := 0; i < 3; i++ {
		id := h.Enqueue(fv, "wc", 0)
		testwait.Eventually(t, 5*time.Second, "job completed", func() bool { return h.Job(id).Status == job.StatusCompleted })
		if j := h.Job(id); j.ClaimedBy != ready.Identity() {
			t.Fatalf("job %d ran on %s, not on the worker with the environment ready", id, j.ClaimedBy)
		}
	}
	if n := prefixed(other.Events(), "prepare:"); n != 0 {
		t.Fatalf("the other worker was asked to prepare: %v", other.Events())
	}
	// Built-in jobs still go anywhere (both workers run "*").
	h.Plugin("builtin")
	id := h.Enqueue(fv, "builtin", 0)
	testwait.Eventually(t, 5*time.Second, "built-in job completed", func() bool { return h.Job(id).Status == job.StatusCompleted })
}

func TestEnv_CancelWhilePreparingSkipsTheJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	deployEnvPlugin(t, h, "wc", "dep==1\n")
	release := make(chan struct{})
	defer close(release)
	w := h.Worker(testworker.Options{PrepareEnv: func(transport.PrepareEnv) error {
		<-release
		return testworker.ErrNoAnswer
	}})
	registered(t, h, 1)
	id := h.Enqueue(h.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 5*time.Second, "PREPARE_ENV received", func() bool { return prefixed(w.Events(), "prepare:") == 1 })
	if _, err := h.Sentinel.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "job skipped", func() bool { return h.Job(id).Status == job.StatusSkipped })
	if len(w.Received()) != 0 || prefixed(w.Events(), "dispatch:") != 0 {
		t.Fatalf("a cancelled job was dispatched: %v", w.Events())
	}
}

// TestEnv_ErrWithoutTheEnvHashAnswersTheOldestPrepare: the original workers
// answer a failed PREPARE_ENV with an ERR of job_id 0 that names no
// environment. It is taken for the oldest outstanding PREPARE_ENV, whose
// job is requeued at once with the worker's message (not after
// --env-timeout); the other keeps waiting, and the next such ERR is its.
func TestEnv_ErrWithoutTheEnvHashAnswersTheOldestPrepare(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil) // --env-timeout stays at its default of minutes
	envA := deployEnvPlugin(t, h, "wa", "dep==a\n")
	envB := deployEnvPlugin(t, h, "wb", "dep==b\n")
	w := h.Worker(testworker.Options{Slots: 2, PrepareEnv: func(transport.PrepareEnv) error { return testworker.ErrNoAnswer }})
	registered(t, h, 1)
	fv := h.File("a.txt", "x\n")
	jobOf := map[string]int64{envA: h.Enqueue(fv, "wa", 0), envB: h.Enqueue(fv, "wb", 0)}
	testwait.Eventually(t, 5*time.Second, "both PREPARE_ENV received", func() bool { return prefixed(w.Events(), "prepare:") == 2 })
	first, second := strings.TrimPrefix(w.Events()[0], "prepare:"), strings.TrimPrefix(w.Events()[1], "prepare:")

	const msg = "PREPARE_ENV failed: Failed to create venv: no such package"
	if err := w.Send(transport.OpErr, 0, &transport.Err{Message: msg}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "the first environment's job requeued", func() bool { return h.Job(jobOf[first]).RetryCount == 1 })
	if j := h.Job(jobOf[first]); j.Status != job.StatusQueued || !strings.Contains(j.ErrorMessage, msg) ||
		!strings.Contains(j.ErrorMessage, first) {
		t.Fatalf("first job: %s %q", j.Status, j.ErrorMessage)
	}
	if j := h.Job(jobOf[second]); j.Status != job.StatusRunning || j.RetryCount != 0 {
		t.Fatalf("second job after the first ERR: %s, %d retries", j.Status, j.RetryCount)
	}
	if err := w.Send(transport.OpErr, 0, &transport.Err{Message: "uv venv failed"}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "the second environment's job requeued", func() bool { return h.Job(jobOf[second]).RetryCount == 1 })
	if j := h.Job(jobOf[second]); !strings.Contains(j.ErrorMessage, "uv venv failed") {
		t.Fatalf("second job: %s %q", j.Status, j.ErrorMessage)
	}
	if n := h.Sentinel.Stats().EnvFailures.Load(); n != 2 {
		t.Fatalf("EnvFailures = %d, want 2", n)
	}
	if len(w.Received()) != 0 {
		t.Fatalf("a job was dispatched: %v", w.Events())
	}
}
