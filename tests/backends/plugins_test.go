package backends

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Per-plugin settings and backfills, end to end on both backends.

// A paused plugin's job waits while another plugin's job runs, and is
// dispatched once the plugin is resumed.
func TestBackends_PausedPluginsJobWaitsForResume(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		e := start(t, nil)
		e.Plugin("slow", "fast")
		w := e.Worker(testworker.Options{Slots: 2, Run: testworker.Succeed})
		e.WaitWorkers(1)
		if _, err := e.Sentinel.PausePlugin(ctx, "slow", true); err != nil {
			t.Fatal(err)
		}
		fv := e.File("in/a.txt", "a\n")
		paused := e.Enqueue(fv, "slow", 10) // higher priority: it would go first
		other := e.Enqueue(fv, "fast", 0)
		e.WaitJob(other, job.StatusCompleted)
		// The dispatcher has claimed since the paused job was queued (it
		// took the later one): the paused one was passed over, not missed.
		if j := e.Job(paused); j.Status != job.StatusQueued || runs(w)[paused] != 0 {
			t.Fatalf("paused plugin's job: %s, dispatched %d times; want QUEUED, never", j.Status, runs(w)[paused])
		}
		if _, err := e.Sentinel.PausePlugin(ctx, "slow", false); err != nil {
			t.Fatal(err)
		}
		e.WaitJob(paused, job.StatusCompleted)
		if n := runs(w)[paused]; n != 1 {
			t.Errorf("resumed job dispatched %d times, want 1", n)
		}
	})
}

// A plugin's own max retries of 0 fails its job on the first fault that
// would otherwise requeue it (the global --max-retries is 5).
func TestBackends_PluginMaxRetriesZeroFailsOnFirstFault(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		e := start(t, nil)
		e.Plugin("flaky")
		zero := 0
		if _, err := e.Sentinel.SetPluginSettings(ctx, "flaky", job.PluginSettingsUpdate{MaxRetries: &zero}); err != nil {
			t.Fatal(err)
		}
		w := e.Worker(testworker.Options{Run: func(context.Context, testworker.Job) transport.Conclude {
			// The worker gave up on its own: an infrastructure fault,
			// requeued within the max retries.
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "worker shutting down"}
		}})
		e.WaitWorkers(1)
		id := e.Enqueue(e.File("in/a.txt", "a\n"), "flaky", 0)
		j := e.WaitJob(id, job.StatusFailed)
		if !strings.Contains(j.ErrorMessage, "gave up") || j.RetryCount != 0 {
			t.Errorf("job: %q, retry_count %d; want it to give up at once", j.ErrorMessage, j.RetryCount)
		}
		if n := runs(w)[id]; n != 1 {
			t.Errorf("dispatched %d times, want 1", n)
		}
	})
}

// A backfill queues one job for each file the plugin's subscriptions match
// now (through a route added after the files were recorded), and a second
// backfill queues none.
func TestBackends_BackfillQueuesMatchingFilesOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		e := start(t, nil)
		e.Plugin("csvstats")
		a, b := e.File("in/a.csv", "a\n"), e.File("in/b.csv", "b\n")
		e.File("in/c.txt", "c\n")
		if _, err := e.Sentinel.AddRoute(ctx, "*.csv", "csv", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Sentinel.Subscribe(ctx, "csvstats", []string{"csv"}); err != nil {
			t.Fatal(err)
		}
		preview, err := e.Sentinel.Backfill(ctx, "csvstats", true)
		if err != nil || preview.Matched != 2 || preview.Queued != 0 {
			t.Fatalf("dry run = %+v, %v; want 2 matched, none queued", preview, err)
		}
		if c := e.Counts(); c[job.StatusQueued] != 0 {
			t.Fatalf("the dry run queued jobs: %v", c)
		}
		w := e.Worker(testworker.Options{Run: testworker.Succeed})
		res, err := e.Sentinel.Backfill(ctx, "csvstats", false)
		if err != nil || res.Queued != 2 {
			t.Fatalf("backfill = %+v, %v; want 2 queued", res, err)
		}
		waitCompleted(t, e, 2)
		again, err := e.Sentinel.Backfill(ctx, "csvstats", false)
		if err != nil || again.Matched != 0 || again.Queued != 0 {
			t.Errorf("second backfill = %+v, %v; want nothing", again, err)
		}
		page, err := e.Sentinel.Jobs(ctx, job.Filter{Plugin: "csvstats", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]int{}
		for _, j := range page.Jobs {
			got[j.FileVersionID]++
		}
		if len(page.Jobs) != 2 || got[a] != 1 || got[b] != 1 {
			t.Errorf("jobs by file version = %v, want one each for %d and %d", got, a, b)
		}
		if n := len(w.Received()); n != 2 {
			t.Errorf("worker ran %d jobs, want 2", n)
		}
	})
}

func waitCompleted(t *testing.T, e *sentineltest.Env, n int64) {
	t.Helper()
	testwait.Eventually(t, sentineltest.Within, "jobs complete", func() (bool, string) {
		c := e.Counts()
		return c[job.StatusCompleted] == n, ""
	})
}

// A plugin's own job timeout aborts its job though the global
// --job-timeout is off; with its max retries 0 the job then fails.
func TestBackends_PluginJobTimeoutAbortsItsJob(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		e := start(t, nil) // --job-timeout 0: off
		e.Plugin("stuck")
		timeout, zero := 300*time.Millisecond, 0
		if _, err := e.Sentinel.SetPluginSettings(ctx, "stuck", job.PluginSettingsUpdate{JobTimeout: &timeout, MaxRetries: &zero}); err != nil {
			t.Fatal(err)
		}
		e.Worker(testworker.Options{Run: func(ctx context.Context, _ testworker.Job) transport.Conclude {
			<-ctx.Done() // until the Sentinel's ABORT
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		}})
		e.WaitWorkers(1)
		id := e.Enqueue(e.File("in/a.txt", "a\n"), "stuck", 0)
		j := e.WaitJob(id, job.StatusFailed)
		if !strings.Contains(j.ErrorMessage, "job timeout after 300ms") {
			t.Errorf("error message %q, want the plugin's timeout", j.ErrorMessage)
		}
	})
}
