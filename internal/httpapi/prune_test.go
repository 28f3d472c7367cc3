package httpapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// gone reports whether job id no longer exists.
func gone(t *testing.T, e *sentineltest.Env, id int64) bool {
	t.Helper()
	_, err := e.DB.JobGet(context.Background(), id)
	if err != nil && !errors.Is(err, job.ErrNotFound) {
		t.Fatal(err)
	}
	return errors.Is(err, job.ErrNotFound)
}

// finishedJobs runs three jobs of plugin ok to COMPLETED and two of plugin
// broken to FAILED, and queues one of plugin nobody that no worker runs.
func finishedJobs(t *testing.T, e *sentineltest.Env) (completed, failed []int64, queued int64) {
	t.Helper()
	completed, failed, queued = finishingJobs(t, e)
	for _, id := range completed {
		e.WaitJob(id, job.StatusCompleted)
	}
	for _, id := range failed {
		e.WaitJob(id, job.StatusFailed)
	}
	return completed, failed, queued
}

// finishingJobs is finishedJobs without waiting for the jobs to finish: with
// a retention of milliseconds a finished job may be gone before a wait sees
// it finished.
func finishingJobs(t *testing.T, e *sentineltest.Env) (completed, failed []int64, queued int64) {
	t.Helper()
	e.Plugin("ok", "broken", "nobody")
	fv := e.File("in/a.txt", "a\n")
	for range 3 {
		completed = append(completed, e.Enqueue(fv, "ok", 0))
	}
	for range 2 {
		failed = append(failed, e.Enqueue(fv, "broken", 0))
	}
	queued = e.Enqueue(fv, "nobody", 0)
	e.Worker(testworker.Options{Capabilities: []string{"ok", "broken"}, Slots: 2, Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if j.Dispatch.PluginName == "broken" {
			return failing(ctx, j)
		}
		return testworker.Succeed(ctx, j)
	}})
	return completed, failed, queued
}

// The operator's prune: a dry run counts and deletes nothing; the real one
// deletes the finished jobs of the kinds asked for, never a QUEUED one.
func TestAPI_PruneDryRunThenDeletes(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	completed, failed, queued := finishedJobs(t, e)

	var res api.PruneResult
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/prune", `{"completed_older_than": "1ns", "dry_run": true}`, &res); code != 200 ||
		res != (api.PruneResult{Completed: 3, DryRun: true}) {
		t.Fatalf("dry prune: %d %s", code, body)
	}
	if gone(t, e, completed[0]) {
		t.Fatal("a dry run deleted a job")
	}
	res = api.PruneResult{}
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/prune", `{"completed_older_than": "1ns"}`, &res); code != 200 ||
		res != (api.PruneResult{Completed: 3}) {
		t.Fatalf("prune: %d %s", code, body)
	}
	for _, id := range completed {
		if !gone(t, e, id) {
			t.Errorf("COMPLETED job %d was not pruned", id)
		}
	}
	for _, id := range append(failed, queued) {
		if gone(t, e, id) {
			t.Errorf("job %d was pruned; only COMPLETED ones were asked for", id)
		}
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/prune", `{"failed_older_than": "1h"}`, &res); code != 200 || res.Failed != 0 {
		t.Errorf("prune of failures older than an hour: %d %s", code, body)
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/prune", `{"failed_older_than": "1ns"}`, &res); code != 200 || res.Failed != 2 {
		t.Errorf("prune of failures: %d %s", code, body)
	}
	if gone(t, e, queued) {
		t.Error("the QUEUED job was pruned")
	}
	if got := scrape(t, e.URL)["casparian_jobs_pruned_total"]; got != 5 {
		t.Errorf("casparian_jobs_pruned_total = %v, want 5", got)
	}
	for _, body := range []string{`{}`, `{"completed_older_than": "soon"}`, `{"failed_older_than": "-1h"}`} {
		if code, raw := call(t, "POST", e.URL+"/api/v1/jobs/prune", body, nil); code != 400 {
			t.Errorf("prune %s: %d %s, want 400", body, code, raw)
		}
	}
}

// With --retain-completed and --retain-failed the Sentinel deletes
// finished jobs by itself once they are that old, and leaves QUEUED ones.
func TestSentinel_RetentionDeletesOldFinishedJobs(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) {
		c.RetainCompleted = 200 * time.Millisecond
		c.RetainFailed = 400 * time.Millisecond
	})
	// Only finished jobs are pruned, so gone means finished and then pruned;
	// the metric below counts them.
	completed, failed, queued := finishingJobs(t, e)
	testwait.Eventually(t, 10*time.Second, "finished jobs pruned", func() bool {
		for _, id := range append(completed, failed...) {
			if !gone(t, e, id) {
				return false
			}
		}
		return true
	})
	if gone(t, e, queued) {
		t.Error("the QUEUED job was pruned")
	}
	m := scrape(t, e.URL)
	if m["casparian_jobs_pruned_total"] != 5 || m[`casparian_db_batch_seconds_count{op="prune"}`] < 1 {
		t.Errorf("casparian_jobs_pruned_total = %v, prune batches %v; want 5 and at least 1",
			m["casparian_jobs_pruned_total"], m[`casparian_db_batch_seconds_count{op="prune"}`])
	}
}

// The age of the oldest due QUEUED job, by plugin: it grows while the job
// waits, and a plugin whose jobs all run has no series.
func TestMetrics_QueueOldestAgeByPlugin(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("idle", "late")
	fv := e.File("a.txt", "a\n")
	e.Enqueue(fv, "idle", 0)
	testwait.Eventually(t, 10*time.Second, "idle's age passes 300ms", func() bool {
		return scrape(t, e.URL)[`casparian_queue_oldest_age_seconds{plugin="idle"}`] > 0.3
	})
	e.Enqueue(fv, "late", 0)
	m := scrape(t, e.URL)
	idle, late := m[`casparian_queue_oldest_age_seconds{plugin="idle"}`], m[`casparian_queue_oldest_age_seconds{plugin="late"}`]
	if _, ok := m[`casparian_queue_oldest_age_seconds{plugin="late"}`]; !ok || late >= idle || idle > 60 {
		t.Errorf("ages: idle %v, late %v (exported %v); want late younger than idle", idle, late, ok)
	}
}
