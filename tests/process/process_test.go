// Package process_test runs the Sentinel and test workers as real processes
// and kills them (SIGKILL) or stops them (SIGTERM) at awkward moments, then
// checks the database: every job ends COMPLETED, FAILED with a reason, or
// (where a test says so) still QUEUED; none is left RUNNING or run twice.
package process_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

func TestProcess_KilledWorkerJobCompletedElsewhere(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.activatePlugin(plugin)
	ids := c.enqueue(plugin, 4)
	sentinel := c.startSentinel("sentinel", defaultSentinelOpts())

	const delay = 2 * time.Second
	a := c.startWorker("worker-a", 1, delay)
	c.startWorker("worker-b", 1, delay)

	var victim int64
	testwait.Eventually(t, 10*time.Second, "a job RUNNING on worker-a", func() (bool, string) {
		var seen []string
		for _, id := range ids {
			j := c.job(id)
			if j.Status == job.StatusRunning && j.ClaimedBy == "worker-a" {
				victim = id
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%d:%s/%s", id, j.Status, j.ClaimedBy))
		}
		return false, strings.Join(seen, " ")
	})
	a.kill()
	killed := time.Now()

	// worker-b may first have to finish the job it is running, then runs
	// the requeued one: worker timeout (+ one heartbeat tick to notice), the
	// retry backoff, up to two job delays, and slack for a loaded machine.
	limit := workerTimeout + heartbeatInterval + retryBackoffMax + 2*delay + 3*time.Second
	testwait.Eventually(t, limit, fmt.Sprintf("job %d (killed on worker-a) to complete elsewhere", victim), func() (bool, string) {
		j := c.job(victim)
		if j.Status == job.StatusFailed {
			t.Fatalf("job %d FAILED: %s", victim, j.ErrorMessage)
		}
		return j.Status == job.StatusCompleted, fmt.Sprintf("%s claimed_by=%s retry_count=%d", j.Status, j.ClaimedBy, j.RetryCount)
	})
	took := time.Since(killed)

	j := c.job(victim)
	if j.ClaimedBy != "worker-b" {
		t.Errorf("job %d completed by %q, want worker-b", victim, j.ClaimedBy)
	}
	if j.RetryCount != 1 {
		t.Errorf("job %d retry_count = %d, want 1", victim, j.RetryCount)
	}
	removed := false
	for _, l := range sentinel.logsWith("worker removed; its running jobs are requeued") {
		removed = removed || l.str("worker_id") == "worker-a"
	}
	if !removed {
		t.Errorf("the Sentinel never logged removing worker-a")
	}

	c.waitSettled(2*limit, 0)
	jobs := c.checkFinal(ids, expect{completed: int64(len(ids))})
	if n := retried(jobs); n != 1 {
		t.Errorf("%d jobs were retried, want only the one worker-a held", n)
	}
	for _, j := range jobs {
		if j.ID != victim && j.ClaimedBy == "worker-a" {
			t.Errorf("job %d is recorded as completed by the dead worker-a", j.ID)
		}
	}
	if sentinel.exited() {
		t.Errorf("sentinel %s", sentinel.status())
	}
	t.Logf("job %d killed on worker-a was COMPLETED by worker-b %s later (retry_count %d, attempt %d, last error %q)",
		victim, took.Round(time.Millisecond), j.RetryCount, j.Attempt, j.ErrorMessage)
}

func TestProcess_KilledSentinelLosesNothing(t *testing.T) {
	t.Parallel()
	const total = 1000
	const workers = 4
	c := newCluster(t)
	c.activatePlugin(plugin)
	ids := c.enqueue(plugin, total)
	first := c.startSentinel("sentinel (first run)", defaultSentinelOpts())

	started := time.Now()
	var ws []*proc
	for i := range workers {
		ws = append(ws, c.startWorker(fmt.Sprintf("worker-%d", i+1), 4, 20*time.Millisecond))
	}

	testwait.Eventually(t, 20*time.Second, "30% of the jobs to complete", func() (bool, string) {
		n := c.counts()
		return n[job.StatusCompleted] >= total*3/10, fmtCounts(n)
	})
	first.kill()
	killed := time.Now()
	atKill := c.counts()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	inFlight, err := c.store.JobsRunning(ctx, "")
	cancel()
	if err != nil {
		t.Fatalf("running jobs: %v", err)
	}
	if first.exitCode() != -1 {
		t.Errorf("first sentinel ended with %s, want killed by SIGKILL", first.status())
	}

	second := c.startSentinel("sentinel (second run)", defaultSentinelOpts())
	restarted := time.Now()

	// The workers were never restarted: they must find the new Sentinel and
	// identify again on their own.
	testwait.Eventually(t, 10*time.Second, "every worker to identify with the second Sentinel", func() (bool, string) {
		seen := map[string]bool{}
		for _, l := range second.logsWith("worker registered") {
			seen[l.str("worker_id")] = true
		}
		return len(seen) == workers, fmt.Sprintf("%d registered: %v", len(seen), seen)
	})
	reidentified := time.Since(restarted)

	var inFlightSettled time.Duration
	testwait.Eventually(t, 20*time.Second, "the jobs in flight at the kill to settle", func() (bool, string) {
		for _, r := range inFlight {
			if j := c.job(r.Ref.JobID); j.Status == job.StatusRunning || j.Status == job.StatusQueued {
				return false, fmt.Sprintf("job %d %s", j.ID, j.Status)
			}
		}
		inFlightSettled = time.Since(restarted)
		return true, ""
	})
	c.waitSettled(25*time.Second, 0)
	finished := time.Since(restarted)

	jobs := c.checkFinal(ids, expect{completed: total})
	for _, w := range ws {
		if w.exited() {
			t.Errorf("%s %s", w.name, w.status())
		}
		if n := strings.Count(w.stdout.String(), " connected to "); n != 1 {
			t.Errorf("%s started %d times, want once", w.name, n)
		}
	}
	if second.exited() {
		t.Errorf("second sentinel %s", second.status())
	}

	kept, requeued := 0, 0
	reasons := map[string]int{}
	for _, r := range inFlight {
		j := c.job(r.Ref.JobID)
		if j.RetryCount > r.RetryCount {
			requeued++
			reasons[j.ErrorMessage]++
		} else {
			kept++
		}
	}
	t.Logf("%d jobs, %d workers × 4 slots: killed the Sentinel after %s at %s; %d jobs RUNNING at the kill",
		total, workers, killed.Sub(started).Round(time.Millisecond), fmtCounts(atKill), len(inFlight))
	t.Logf("recovery: restart took %s; workers re-identified %s after it; in-flight jobs settled after %s "+
		"(%d kept by their worker, %d requeued); all %d COMPLETED %s after the restart; %d jobs retried (retry_count > 0)",
		restarted.Sub(killed).Round(time.Millisecond), reidentified.Round(time.Millisecond),
		inFlightSettled.Round(time.Millisecond), kept, requeued, total, finished.Round(time.Millisecond), retried(jobs))
	if len(reasons) > 0 {
		t.Logf("requeue reasons of the in-flight jobs: %v", reasons)
	}
}

// A job still running on its worker when the Sentinel is killed is adopted by
// the next run when the worker re-identifies and reports it: it completes
// once, on the same claim, without a retry.
func TestProcess_KilledSentinelWorkersKeepRunningJobs(t *testing.T) {
	t.Parallel()
	const delay = 3 * time.Second
	c := newCluster(t)
	c.activatePlugin(plugin)
	ids := c.enqueue(plugin, 4)
	first := c.startSentinel("sentinel (first run)", defaultSentinelOpts())
	for i := range 2 {
		c.startWorker(fmt.Sprintf("worker-%d", i+1), 2, delay)
	}
	testwait.Eventually(t, 10*time.Second, "every job to be RUNNING", func() (bool, string) {
		n := c.counts()
		return n[job.StatusRunning] == int64(len(ids)), fmtCounts(n)
	})
	claimedBy := map[int64]string{}
	for _, id := range ids {
		claimedBy[id] = c.job(id).ClaimedBy
	}
	first.kill()
	second := c.startSentinel("sentinel (second run)", defaultSentinelOpts())
	restarted := time.Now()

	c.waitSettled(delay+recoveryGrace+5*time.Second, 0)
	took := time.Since(restarted)
	jobs := c.checkFinal(ids, expect{completed: int64(len(ids))})
	for _, j := range jobs {
		if j.RetryCount != 0 || j.ClaimedBy != claimedBy[j.ID] {
			t.Errorf("job %d: retry_count %d, completed by %s; want it kept by %s without a retry",
				j.ID, j.RetryCount, j.ClaimedBy, claimedBy[j.ID])
		}
	}
	held := 0
	for _, l := range second.logsWith("worker holds running jobs") {
		if n, ok := l["jobs"].(float64); ok {
			held += int(n)
		}
	}
	if held != len(ids) {
		t.Errorf("the second Sentinel adopted %d running jobs, want %d", held, len(ids))
	}
	t.Logf("%d jobs running across a SIGKILL of the Sentinel were adopted and COMPLETED %s after the restart, none retried",
		len(ids), took.Round(time.Millisecond))
}

func TestProcess_PoisonPillFailsAfterRetryLimit(t *testing.T) {
	t.Parallel()
	const maxRetries = 2
	c := newCluster(t)
	c.activatePlugin(plugin)
	c.activatePlugin("poison")
	ids := c.enqueue(plugin, 25)
	poison := c.enqueue("poison", 1)[0]
	ids = append(ids, poison)
	ids = append(ids, c.enqueue(plugin, 25)...)

	o := defaultSentinelOpts()
	o.maxRetries = maxRetries
	sentinel := c.startSentinel("sentinel", o)

	// One slot per worker: a job dispatched to the same process as the
	// poison pill dies with it, and since it is requeued with the same
	// backoff it is claimed next to the pill again, so with more slots an
	// innocent job can use up its retries too. That is the retry limit
	// working as specified, not what this test is about.
	var keepers []*keeper
	for i := range 2 {
		id := fmt.Sprintf("worker-%d", i+1)
		keepers = append(keepers, c.keepWorker(id, 10,
			c.workerArgs(id, 1, 20*time.Millisecond, "--crash-on-plugin", "poison")))
	}

	testwait.Eventually(t, 25*time.Second, fmt.Sprintf("poison job %d to fail", poison), func() (bool, string) {
		for _, k := range keepers {
			if _, err := k.snapshot(); err != nil {
				t.Fatalf("keeper %s: %v", k.id, err)
			}
		}
		if sentinel.exited() {
			t.Fatalf("sentinel %s", sentinel.status())
		}
		j := c.job(poison)
		if j.Status == job.StatusCompleted {
			t.Fatalf("poison job %d COMPLETED", poison)
		}
		return j.Status == job.StatusFailed, fmt.Sprintf("%s retry_count=%d attempt=%d", j.Status, j.RetryCount, j.Attempt)
	})
	c.waitSettled(15*time.Second, 0)
	for _, j := range c.checkFinal(ids, expect{completed: int64(len(ids) - 1), failed: 1}) {
		if j.ID != poison && j.Status != job.StatusCompleted {
			t.Errorf("innocent job %d is %s after %d attempts: %q", j.ID, j.Status, j.Attempt, j.ErrorMessage)
		}
	}

	j := c.job(poison)
	want := fmt.Sprintf("gave up after %d retries", maxRetries)
	if !strings.Contains(j.ErrorMessage, want) {
		t.Errorf("poison job error_message = %q, want it to say %q", j.ErrorMessage, want)
	}
	if j.RetryCount != maxRetries {
		t.Errorf("poison job retry_count = %d, want %d", j.RetryCount, maxRetries)
	}
	if sentinel.exited() {
		t.Errorf("sentinel %s, want it still running", sentinel.status())
	}

	// Every crash was on the poison job, and each exited with status 3. A
	// claim sent to a worker in the instant it was dead never reaches a
	// process, so there may be fewer crashes than attempts, never more.
	crashes, restarts := 0, 0
	for _, k := range keepers {
		runs, _ := k.snapshot()
		restarts += len(runs) - 1
		for _, p := range runs {
			got, err := crashLines(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range got {
				if id != poison {
					t.Errorf("%s crashed on job %d, which is not the poison job %d", p.name, id, poison)
				}
			}
			crashes += len(got)
		}
		for _, code := range k.exitCodes() {
			if code != 3 {
				t.Errorf("a run of %s exited with status %d, want 3 (crash on poison)", k.id, code)
			}
		}
	}
	if crashes < 1 || crashes > maxRetries+1 {
		t.Errorf("workers crashed %d times, want 1..%d", crashes, maxRetries+1)
	}
	t.Logf("poison job %d FAILED after %d attempts: %q; %d worker crashes, %d restarts; %d other jobs COMPLETED",
		poison, j.Attempt, j.ErrorMessage, crashes, restarts, len(ids)-1)
}

func TestProcess_SigtermDrainsAndExitsZero(t *testing.T) {
	t.Parallel()
	const jobs, workers = 6, 3
	const delay = 500 * time.Millisecond
	c := newCluster(t)
	c.activatePlugin(plugin)
	ids := c.enqueue(plugin, jobs)
	o := defaultSentinelOpts()
	o.drainTimeout = 5 * time.Second
	o.shutdownTimeout = 10 * time.Second
	sentinel := c.startSentinel("sentinel", o)
	for i := range workers {
		c.startWorker(fmt.Sprintf("worker-%d", i+1), 1, delay)
	}

	var running []int64
	testwait.Eventually(t, 10*time.Second, "a job RUNNING on every worker", func() (bool, string) {
		ctx, cancel := c.ctx()
		defer cancel()
		rs, err := c.store.JobsRunning(ctx, "")
		if err != nil {
			return false, err.Error()
		}
		running = running[:0]
		for _, r := range rs {
			running = append(running, r.Ref.JobID)
		}
		return len(running) == workers, fmt.Sprintf("RUNNING %v", running)
	})
	if err := sentinel.term(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	signalled := time.Now()
	if !sentinel.waitExit(o.shutdownTimeout + 2*time.Second) {
		t.Fatalf("sentinel still running %s after SIGTERM (shutdown timeout %s)", time.Since(signalled).Round(time.Millisecond), o.shutdownTimeout)
	}
	took := time.Since(signalled)
	if code := sentinel.exitCode(); code != 0 {
		t.Errorf("sentinel exited with status %d after SIGTERM, want 0 (%s)", code, sentinel.status())
	}
	if took > o.drainTimeout {
		t.Errorf("stop took %s, longer than the drain timeout %s though jobs needed at most %s", took, o.drainTimeout, delay)
	}

	for _, id := range running {
		if j := c.job(id); j.Status != job.StatusCompleted {
			t.Errorf("job %d, RUNNING at SIGTERM, is %s (%s), want COMPLETED during the drain", id, j.Status, j.ErrorMessage)
		}
	}
	// Jobs dispatched in the instant the signal arrived drain too; after
	// that nothing new may be claimed. The rest stay QUEUED for the next run.
	n := c.counts()
	done := n[job.StatusCompleted]
	if done < workers {
		t.Errorf("%d jobs COMPLETED, want at least the %d running at SIGTERM", done, workers)
	}
	final := c.checkFinal(ids, expect{completed: done, queued: int64(jobs) - done})
	for _, j := range final {
		if j.Status == job.StatusCompleted && !slices.Contains(running, j.ID) && j.ClaimTime.After(signalled.Add(250*time.Millisecond)) {
			t.Errorf("job %d was claimed %s after SIGTERM: the Sentinel kept dispatching while draining",
				j.ID, j.ClaimTime.Sub(signalled).Round(time.Millisecond))
		}
	}

	msgs := map[string]bool{}
	draining := 0
	for _, l := range sentinel.logs() {
		msgs[l.str("message")] = true
		if l.str("message") == "draining: waiting for running jobs to conclude" {
			draining++
		}
	}
	// The drain's progress is logged at most once a second.
	if most := int(took/time.Second) + 1; draining > most {
		t.Errorf("the drain of %s logged its progress %d times, want at most %d", took.Round(time.Millisecond), draining, most)
	}
	for _, m := range []string{"shutting down", "sentinel stopped"} {
		if !msgs[m] {
			t.Errorf("sentinel did not log %q", m)
		}
	}
	if msgs["drain timeout: stopping with jobs still RUNNING; they are reconciled at the next start"] {
		t.Errorf("sentinel hit its drain timeout with jobs of %s each", delay)
	}
	t.Logf("SIGTERM with %d jobs running: exit 0 after %s; %s", len(running), took.Round(time.Millisecond), fmtCounts(n))
}
