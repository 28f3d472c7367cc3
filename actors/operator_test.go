package actors_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// deafRun holds every job until release, ignoring ABORT: a worker that never
// confirms a cancel.
func deafRun(release <-chan struct{}) testworker.RunFunc {
	return func(ctx context.Context, j testworker.Job) transport.Conclude {
		<-release
		return testworker.Succeed(ctx, j)
	}
}

func TestOperator_CancelNobodyConfirmsEndsSkippedAfterTheAbortGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AbortGrace = 300 * time.Millisecond }) // job timeout off
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	defer close(release)
	w := h.Worker(testworker.Options{Run: deafRun(release)})
	testwait.Eventually(t, 5*time.Second, "job running on the worker", func() bool { return len(w.Received()) == 1 })

	res, err := h.Sentinel.Cancel(context.Background(), id)
	if err != nil || res.Previous != job.StatusRunning || res.Claim.Worker != w.Identity() {
		t.Fatalf("cancel = %+v, %v", res, err)
	}
	testwait.Eventually(t, 5*time.Second, "job SKIPPED", func() bool { return h.Job(id).Status == job.StatusSkipped })
	if j := h.Job(id); j.RetryCount != 0 || len(w.Received()) != 1 {
		t.Errorf("retries %d, dispatches %d: a cancelled job must not run again", j.RetryCount, len(w.Received()))
	}
}

func TestOperator_CancelledJobOfALostWorkerIsNotRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AbortGrace = time.Minute })
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	// A bare DEALER takes the job and then says nothing more, not even to
	// ABORT: after --worker-timeout it is removed and its jobs requeued.
	h.rawPeer(t, "lost", &transport.Identify{Capabilities: []string{"p"}})
	testwait.Eventually(t, 5*time.Second, "job RUNNING", func() bool { return h.Job(id).Status == job.StatusRunning })
	if _, err := h.Sentinel.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	other := h.Worker(testworker.Options{})
	testwait.Eventually(t, 5*time.Second, "job SKIPPED", func() bool { return h.Job(id).Status == job.StatusSkipped })
	if len(other.Received()) != 0 {
		t.Errorf("the cancelled job was dispatched again")
	}
	// The counter moves just after the commit the test saw.
	testwait.Eventually(t, 5*time.Second, "jobs cancelled = 1", func() bool { return h.Sentinel.Stats().JobsCancelled.Load() == 1 })
}

func TestOperator_RequestsAnswerThroughTheActors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	h.Plugin("p")
	fv := h.File("a.txt", "a\n")
	res, err := h.Sentinel.Enqueue(ctx, job.Submission{FileVersionID: fv, Plugin: "p", Priority: 3})
	if err != nil {
		t.Fatal(err)
	}
	id := res.ID
	if res.Warning == "" || h.Sentinel.Stats().JobsEnqueuedUnrunnable.Load() != 1 {
		t.Errorf("enqueue with no worker connected: warning %q, counted %d; want a warning, counted once",
			res.Warning, h.Sentinel.Stats().JobsEnqueuedUnrunnable.Load())
	}
	w := h.Worker(testworker.Options{Capabilities: []string{"p"}, Slots: 2})
	testwait.Eventually(t, 5*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })

	j, err := h.Sentinel.Job(ctx, id)
	if err != nil || j.Metrics["rows"] != 1 || j.ClaimedBy != w.Identity() {
		t.Errorf("job = %+v, %v", j, err)
	}
	if _, err := h.Sentinel.Job(ctx, 999); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if _, err := h.Sentinel.Enqueue(ctx, job.Submission{Plugin: "p"}); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("enqueue without a file: %v", err)
	}
	second, err := h.Sentinel.Enqueue(ctx, job.Submission{FileVersionID: fv, Plugin: "p"})
	if err != nil || second.Warning != "" {
		t.Errorf("enqueue with a worker that runs p: %+v, %v; want no warning", second, err)
	}
	testwait.Eventually(t, 5*time.Second, "the second job COMPLETED", func() bool { return h.Job(second.ID).Status == job.StatusCompleted })
	if _, err := h.Sentinel.Enqueue(ctx, job.Submission{FileVersionID: fv, Plugin: "nobody"}); !errors.Is(err, job.ErrUnknownPlugin) {
		t.Errorf("enqueue for a plugin without a manifest: %v, want job.ErrUnknownPlugin", err)
	}
	if _, err := h.Sentinel.Enqueue(ctx, job.Submission{FileVersionID: fv, Plugin: "csv"}); err == nil ||
		!strings.Contains(err.Error(), "casparian plugins add-builtin csv") {
		t.Errorf("enqueue for an unregistered built-in: %v, want the add-builtin hint", err)
	}
	if err := h.Sentinel.Retry(ctx, id); !errors.Is(err, job.ErrConflict) {
		t.Errorf("retry of a completed job: %v", err)
	}
	counts, err := h.Sentinel.Counts(ctx)
	if err != nil || counts[job.StatusCompleted] != 2 {
		t.Errorf("counts = %v, %v; want 2 COMPLETED", counts, err)
	}
	workers, err := h.Sentinel.WorkersInfo(ctx)
	if err != nil || len(workers) != 1 || workers[0].ID != w.Identity() || workers[0].Slots != 2 || !workers[0].Ready {
		t.Errorf("workers = %+v, %v", workers, err)
	}
	if err := h.Sentinel.Health(ctx); err != nil {
		t.Errorf("health: %v", err)
	}
	// A caller's deadline bounds the request.
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := h.Sentinel.Counts(expired); err == nil {
		t.Error("a request with an expired context succeeded")
	}

	s := h.Sentinel
	h.Stop()
	if err := s.Health(ctx); !errors.Is(err, actors.ErrStopped) {
		t.Errorf("health after stop: %v", err)
	}
}
