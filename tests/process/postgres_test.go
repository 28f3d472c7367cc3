package process_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db/postgres/pgtest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// Several Sentinels on one PostgreSQL database (issue #17): real processes,
// a real server (pgtest's), testworkers that fail over between the
// Sentinels and log every job they run. These tests do not run in parallel:
// the second stops the server every test of the binary shares.

// Two Sentinels, four workers each, 10,000 jobs; the leading Sentinel is
// SIGKILLed a third of the way through. Its workers fail over to the other
// one, which adopts their running jobs and dispatches them the rest: every
// job ends COMPLETED exactly once, and no job ran on two workers at once.
func TestProcess_Postgres_SentinelKilledMidRun(t *testing.T) {
	const (
		// 10,000 jobs: at the 1,100 jobs/s of a quiet 2-core machine the
		// two thirds left at the kill last some 6 s, four times the
		// pgSentinelTimeout after which the victim's workers fail over, so
		// they still find work on the survivor (which the test checks);
		// a loaded machine only lengthens them. 50,000 jobs proved the
		// same at five times the CPU (some 45 s when quiet).
		files   = 100
		perFile = 100
		slots   = 4
		workers = 4 // per Sentinel
		// A few milliseconds per job: the victim's workers are in the
		// middle of jobs when it dies, not only between them.
		delay = 2 * time.Millisecond
	)
	c := newPGCluster(t)
	sentinels := []*pgSentinel{c.startSentinel("sentinel a"), c.startSentinel("sentinel b")}
	// The leader dies, so that the lead has to move as well.
	var victim, survivor *pgSentinel
	testwait.Eventually(t, 15*time.Second, "one Sentinel to lead", func() (bool, string) {
		var seen string
		for i, s := range sentinels {
			h, err := s.health()
			if err != nil {
				return false, err.Error()
			}
			seen += fmt.Sprintf("[%s: %s] ", s.name, h)
			if h.Leader {
				victim, survivor = s, sentinels[1-i]
				return true, ""
			}
		}
		return false, seen
	})
	var victimsWorkers []string
	for i := range workers {
		id := fmt.Sprintf("pg-v%d", i+1)
		victimsWorkers = append(victimsWorkers, id)
		c.startWorker(id, slots, delay, victim.endpoint, survivor.endpoint)
		c.startWorker(fmt.Sprintf("pg-s%d", i+1), slots, delay, survivor.endpoint, victim.endpoint)
	}

	began := time.Now() // the workers start on the first jobs while the rest are queued
	n := c.enqueue(files, perFile)
	c.waitCompleted(60*time.Second, int64(n/3))
	victim.kill()
	killedAt := time.Now()
	t.Logf("%s (the leader) SIGKILLed after %s", victim.name, killedAt.Sub(began).Round(time.Millisecond))
	// Not renewed any more: after this, the leader may requeue its jobs
	// under workers it cannot know are alive.
	expiry := c.leaseExpiry(victim.id)

	// About 9 s here when the machine is quiet; the deadline is only spent
	// when the test fails or the host is loaded.
	c.waitCompleted(4*time.Minute, int64(n))
	took := time.Since(began)
	after := c.waitSettled(10 * time.Second)
	t.Logf("%d jobs COMPLETED in %s (%.0f jobs/s); %s", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), fmtCounts(after))

	rows := c.checkCompletedOnce(n, victim, survivor)
	runs := c.allRuns()
	if o := overlaps(runs, expiry); len(o) > 0 {
		t.Errorf("%d runs overlapped another run of the same job before %s's lease expired:\n%s", len(o), victim.name, first(o, 10))
	}
	c.checkEveryJobRan(runs, rows)

	// The victim's workers finished on the survivor: they received jobs
	// from it after the kill, and every job last run through it was
	// claimed or adopted under its lease.
	last := map[int64]jobRun{}
	viaSurvivor := map[string]int{}
	for _, r := range runs {
		if l, ok := last[r.job]; !ok || r.start.After(l.start) {
			last[r.job] = r
		}
		if r.endpoint == survivor.endpoint {
			viaSurvivor[r.worker]++
		}
		if r.endpoint == victim.endpoint && r.start.After(killedAt) {
			t.Errorf("job %d started on %s through %s after it was killed", r.job, r.worker, victim.name)
		}
	}
	for _, w := range victimsWorkers {
		if viaSurvivor[w] == 0 {
			t.Errorf("worker %s ran no job through %s after %s was killed", w, survivor.name, victim.name)
		}
	}
	// A job last run through the survivor was claimed there; one the
	// survivor concluded after the kill (end_time), whichever Sentinel
	// dispatched it, was claimed there or adopted with its worker.
	wrong := 0
	for id, r := range last {
		row := rows[id]
		if (r.endpoint == survivor.endpoint || row.endTime.After(killedAt)) && row.sentinelID != survivor.id {
			if wrong++; wrong <= 10 {
				t.Errorf("job %d last ran on %s through %s, concluded %s after the kill, but its sentinel_id is %q, want %s's %q",
					id, r.worker, r.endpoint, row.endTime.Sub(killedAt).Round(time.Millisecond), row.sentinelID, survivor.name, survivor.id)
			}
		}
	}
	t.Logf("jobs run through %s by each worker: %v", survivor.name, viaSurvivor)
	adopted := map[string]float64{}
	for _, l := range survivor.logsWith("worker holds running jobs") {
		n, _ := l["jobs"].(float64)
		adopted[l.str("worker_id")] += n
	}
	t.Logf("running jobs %s adopted from each worker that failed over: %v; receipts it ignored (re-sent ones %s had committed): %d",
		survivor.name, adopted, victim.name,
		len(survivor.logsWith("ignored: worker does not hold this job"))+len(survivor.logsWith("ignored: job no longer held by this claim")))

	testwait.Eventually(t, 15*time.Second, survivor.name+" to lead and answer 200 ok", func() (bool, string) {
		h, err := survivor.health()
		if err != nil {
			return false, err.Error()
		}
		return h.code == http.StatusOK && h.Status == "ok" && h.Leader, h.String()
	})
	c.checkAlive(survivor)
}

// The PostgreSQL server is stopped and started again while two Sentinels
// run jobs: /healthz reports the outage while it lasts, both Sentinels
// reconnect by themselves, and nothing is lost or run twice.
func TestProcess_Postgres_ServerRestartedUnderLoad(t *testing.T) {
	const (
		// 5,000 jobs: the server stops a quarter of the way through, so
		// thousands are still QUEUED across the outage and the restart,
		// and 1,000 more follow it; 20,000 proved the same at four times
		// the CPU.
		files   = 100
		perFile = 50
		slots   = 4
	)
	c := newPGCluster(t)
	a, b := c.startSentinel("sentinel a"), c.startSentinel("sentinel b")
	for i := range 2 {
		c.startWorker(fmt.Sprintf("pg-a%d", i+1), slots, 0, a.endpoint, b.endpoint)
		c.startWorker(fmt.Sprintf("pg-b%d", i+1), slots, 0, b.endpoint, a.endpoint)
	}
	began := time.Now() // the workers start on the first jobs while the rest are queued
	n := c.enqueue(files, perFile)
	c.waitCompleted(60*time.Second, int64(n/4))

	pgtest.Stop(t)
	stoppedAt := time.Now()
	// The outage lasts until both Sentinels have reported it on /healthz
	// and the leader has noticed it lost its session (and with it the
	// lead), so that the election too has to start over.
	outage := map[string]health{}
	testwait.Eventually(t, 30*time.Second, "both Sentinels to report the outage on /healthz, and neither to lead", func() (bool, string) {
		var seen string
		leading := false
		for _, s := range []*pgSentinel{a, b} {
			h, err := s.health()
			if err != nil {
				seen += fmt.Sprintf("[%s: %v] ", s.name, err)
				leading = true // unknown
				continue
			}
			if _, ok := outage[s.name]; !ok && (h.code != http.StatusOK || h.Status != "ok") {
				outage[s.name] = h
			}
			leading = leading || h.Leader
			seen += fmt.Sprintf("[%s: %s] ", s.name, h)
		}
		return len(outage) == 2 && !leading, seen
	})
	for name, h := range outage {
		t.Logf("%s during the outage: %s", name, h)
	}
	pgtest.Start(t)
	restartedAt := time.Now()
	t.Logf("server down for %s, stopped after %s", restartedAt.Sub(stoppedAt).Round(time.Millisecond), stoppedAt.Sub(began).Round(time.Millisecond))

	testwait.Eventually(t, 30*time.Second, "both Sentinels to answer 200 ok again, one of them leading", func() (bool, string) {
		var seen string
		ok, leaders := 0, 0
		for _, s := range []*pgSentinel{a, b} {
			h, err := s.health()
			if err != nil {
				seen += fmt.Sprintf("[%s: %v] ", s.name, err)
				continue
			}
			if h.code == http.StatusOK && h.Status == "ok" {
				ok++
			}
			if h.Leader {
				leaders++
			}
			seen += fmt.Sprintf("[%s: %s] ", s.name, h)
		}
		return ok == 2 && leaders == 1, seen
	})
	c.waitCompleted(90*time.Second, int64(n))
	took := time.Since(began)
	c.waitSettled(10 * time.Second)
	t.Logf("%d jobs COMPLETED in %s", n, took.Round(time.Millisecond))

	// Jobs queued now reach the Sentinels only by the NOTIFY of their
	// insert: each Sentinel's listener must have reconnected.
	n += c.enqueue(10, 100)
	c.waitCompleted(30*time.Second, int64(n))
	c.waitSettled(10 * time.Second)

	rows := c.checkCompletedOnce(n, a, b)
	runs := c.allRuns()
	// No lease expires in so short an outage: no overlap is excused.
	if o := overlaps(runs, time.Time{}); len(o) > 0 {
		t.Errorf("%d runs overlapped another run of the same job:\n%s", len(o), first(o, 10))
	}
	c.checkEveryJobRan(runs, rows)
	after := map[string]int{}
	for _, r := range runs {
		if r.start.After(restartedAt) {
			after[r.endpoint]++
		}
	}
	for _, s := range []*pgSentinel{a, b} {
		if after[s.endpoint] == 0 {
			t.Errorf("%s dispatched no job after the restart (runs by endpoint: %v)", s.name, after)
		}
	}
	c.checkAlive(a, b)
}

// waitSettled waits until no job is QUEUED or RUNNING.
func (c *pgCluster) waitSettled(within time.Duration) map[job.Status]int64 {
	c.t.Helper()
	var last map[job.Status]int64
	testwait.Eventually(c.t, within, "no job QUEUED or RUNNING", func() (bool, string) {
		var err error
		if last, err = c.counts(); err != nil {
			return false, err.Error()
		}
		return last[job.StatusQueued] == 0 && last[job.StatusRunning] == 0, fmtCounts(last)
	})
	return last
}

// allRuns waits until every worker's job log has ended every run it
// started (the log is read through a pipe, behind the database), and
// returns the runs of all workers.
func (c *pgCluster) allRuns() []jobRun {
	c.t.Helper()
	var runs []jobRun
	testwait.Eventually(c.t, 10*time.Second, "every run in the job logs to have ended", func() (bool, string) {
		c.mu.Lock()
		procs := append([]*proc(nil), c.procs...)
		c.mu.Unlock()
		runs = nil
		open := 0
		for _, p := range procs {
			if p.cmd.Path != workerBin {
				continue
			}
			rs, err := jobRuns(strings.TrimPrefix(p.name, "worker "), p)
			if err != nil {
				c.t.Fatal(err)
			}
			for _, r := range rs {
				if r.end.IsZero() {
					open++
				}
			}
			runs = append(runs, rs...)
		}
		return open == 0, fmt.Sprintf("%d runs not ended", open)
	})
	return runs
}

// checkEveryJobRan checks that every job ran successfully on the worker
// that holds its final claim, and reports how many ran more than once.
func (c *pgCluster) checkEveryJobRan(runs []jobRun, rows map[int64]pgRow) {
	c.t.Helper()
	ok := map[int64]bool{}
	count := map[int64]int{}
	for _, r := range runs {
		count[r.job]++
		if r.status == "SUCCESS" && rows[r.job].claimedBy == r.worker {
			ok[r.job] = true
		}
	}
	missing, again := 0, 0
	for id := range rows {
		if !ok[id] {
			if missing++; missing <= 10 {
				c.t.Errorf("job %d (claimed by %q) has no successful run on that worker in the job logs (%d runs)", id, rows[id].claimedBy, count[id])
			}
		}
		if count[id] > 1 {
			again++
		}
	}
	c.t.Logf("%d runs of %d jobs; %d jobs ran more than once (one after the other)", len(runs), len(rows), again)
}

// checkAlive fails the test for each Sentinel and worker that exited.
func (c *pgCluster) checkAlive(sentinels ...*pgSentinel) {
	c.t.Helper()
	for _, s := range sentinels {
		if s.exited() {
			c.t.Errorf("%s %s", s.name, s.status())
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.cmd.Path == workerBin && p.exited() {
			c.t.Errorf("%s %s", p.name, p.status())
		}
	}
}

// first returns the first n lines of lines, joined.
func first(lines []string, n int) string {
	out := ""
	for i, l := range lines {
		if i == n {
			return out + fmt.Sprintf("… and %d more", len(lines)-n)
		}
		out += l + "\n"
	}
	return out
}
