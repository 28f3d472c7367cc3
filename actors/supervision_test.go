package actors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
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
	for _, target := range []string{"queue", "dispatcher", "socket", "worker", "supervisor"} {
		t.Run(target, func(t *testing.T) {
			h := newHarness(t, nil)
			h.plugin("p")
			fv := h.file("a.txt", "a\n")
			const n = 200
			for i := 0; i < n; i++ {
				h.enqueue(fv, "p", 0)
			}
			var workers []*testworker.Worker
			for i := 0; i < 2; i++ {
				workers = append(workers, h.worker(testworker.Options{Slots: 2, Run: slowSucceed, HeartbeatInterval: 50 * time.Millisecond}))
			}
			eventually(t, 10*time.Second, "a quarter done", func() bool { return h.counts()[job.StatusCompleted] >= n/4 })

			victim := target
			if target == "worker" {
				victim = workers[0].Identity()
			}
			h.s.InjectPanic(victim)
			eventually(t, 5*time.Second, "a restart happened", func() bool { return h.s.Stats().ActorRestarts.Load() > 0 })

			eventually(t, 20*time.Second, "every job COMPLETED", func() bool { return h.counts()[job.StatusCompleted] == n })
			if c := h.counts(); c[job.StatusRunning]+c[job.StatusQueued]+c[job.StatusFailed] != 0 {
				t.Fatalf("counts after the run: %v", c)
			}
		})
	}
}

func TestSupervision_TopLevelGivesUpAfterRepeatedPanics(t *testing.T) {
	h := newHarness(t, nil)
	for i := 0; i < 4; i++ {
		want := int64(i + 1)
		h.s.InjectPanic("supervisor")
		eventually(t, 5*time.Second, fmt.Sprintf("restart %d", want), func() bool { return h.s.Stats().ActorRestarts.Load() >= want })
	}
	select {
	case err := <-h.s.Fatal():
		if err == nil {
			t.Fatal("Fatal delivered a nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("supervision did not give up after 4 panics of the supervisor within a minute")
	}
}

func TestSupervision_RestartedWorkerActorKeepsItsJobs(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.RecoveryGrace = time.Minute })
	h.plugin("p")
	id := h.enqueue(h.file("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	w := h.worker(testworker.Options{Run: blockingRun(release)})
	eventually(t, 5*time.Second, "job RUNNING", func() bool { return h.job(id).Status == job.StatusRunning })

	h.s.InjectPanic(w.Identity())
	eventually(t, 5*time.Second, "worker actor restarted", func() bool { return h.s.Stats().ActorRestarts.Load() == 1 })
	close(release)
	eventually(t, 5*time.Second, "job COMPLETED", func() bool { return h.job(id).Status == job.StatusCompleted })
	if j := h.job(id); j.Attempt != 1 || h.s.Stats().StaleMessages.Load() != 0 {
		t.Errorf("attempt %d stale %d: the restart was visible", j.Attempt, h.s.Stats().StaleMessages.Load())
	}
}
