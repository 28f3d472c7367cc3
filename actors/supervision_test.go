package actors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

func slowSucceed(ctx context.Context, j testworker.Job) transport.Conclude {
	time.Sleep(2 * time.Millisecond)
	return testworker.Succeed(ctx, j)
}

// TestSupervision_PanicInEachActorLosesNoJob panics one actor kind in the
// middle of a run; supervision restarts it and every job still completes.
func TestSupervision_PanicInEachActorLosesNoJob(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"queue", "dispatcher", "socket", "worker", "supervisor"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			h.Plugin("p")
			fv := h.File("a.txt", "a\n")
			const n = 200
			for i := 0; i < n; i++ {
				h.Enqueue(fv, "p", 0)
			}
			var workers []*testworker.Worker
			for i := 0; i < 2; i++ {
				workers = append(workers, h.Worker(testworker.Options{Slots: 2, Run: slowSucceed, HeartbeatInterval: 50 * time.Millisecond}))
			}
			testwait.Eventually(t, 10*time.Second, "a quarter done", func() bool { return h.Counts()[job.StatusCompleted] >= n/4 })

			victim := target
			if target == "worker" {
				victim = workers[0].Identity()
			}
			h.Sentinel.InjectPanic(victim)
			testwait.Eventually(t, 5*time.Second, "a restart happened", func() bool { return h.Sentinel.Stats().ActorRestarts.Load() > 0 })

			testwait.Eventually(t, 20*time.Second, "every job COMPLETED", func() bool { return h.Counts()[job.StatusCompleted] == n })
			if c := h.Counts(); c[job.StatusRunning]+c[job.StatusQueued]+c[job.StatusFailed] != 0 {
				t.Fatalf("counts after the run: %v", c)
			}
		})
	}
}

func TestSupervision_TopLevelGivesUpAfterRepeatedPanics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for i := 0; i < 4; i++ {
		want := int64(i + 1)
		h.Sentinel.InjectPanic("supervisor")
		testwait.Eventually(t, 5*time.Second, fmt.Sprintf("restart %d", want), func() bool { return h.Sentinel.Stats().ActorRestarts.Load() >= want })
	}
	select {
	case err := <-h.Sentinel.Fatal():
		if err == nil {
			t.Fatal("Fatal delivered a nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("supervision did not give up after 4 panics of the supervisor within a minute")
	}
}

// TestSupervision_RestartedWorkerActorKeepsItsJobs: a worker actor that
// panics is restarted with the worker's running job, which then completes
// in its first attempt with no stale message.
//
// The harness's 1 s worker timeout is for tests about dead workers; here a
// loaded machine that kept the worker's answers away that long made the
// Sentinel drop the worker and requeue its job (attempt 2), which read as
// "the restart was visible". The timeout is 30 s, and the deadlines, only
// spent when the test fails, 20 s: a restart that loses the job still
// leaves it RUNNING or in a second attempt, or counts stale messages.
func TestSupervision_RestartedWorkerActorKeepsItsJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.RecoveryGrace = time.Minute
		c.WorkerTimeout = 30 * time.Second
	})
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	w := h.Worker(testworker.Options{Run: blockingRun(release)})
	testwait.Eventually(t, 20*time.Second, "job RUNNING", func() bool { return h.Job(id).Status == job.StatusRunning })

	h.Sentinel.InjectPanic(w.Identity())
	testwait.Eventually(t, 20*time.Second, "worker actor restarted", func() bool { return h.Sentinel.Stats().ActorRestarts.Load() == 1 })
	close(release)
	testwait.Eventually(t, 20*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.Attempt != 1 || h.Sentinel.Stats().StaleMessages.Load() != 0 {
		t.Errorf("attempt %d stale %d: the restart was visible", j.Attempt, h.Sentinel.Stats().StaleMessages.Load())
	}
}
