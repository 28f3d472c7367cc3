package process_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the test holds a lock with a connection of its own

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// A second Sentinel on the same database is refused, naming the first; the
// first keeps its running job. After the first is SIGKILLed, a new one takes
// the stale lease over and says so.
func TestProcess_SecondSentinelIsRefused(t *testing.T) {
	t.Parallel()
	const delay = 4 * time.Second
	c := newCluster(t)
	c.activatePlugin(plugin)
	ids := c.enqueue(plugin, 1)
	first := c.startSentinel("sentinel (first)", defaultSentinelOpts())
	c.startWorker("worker-1", 1, delay)
	testwait.Eventually(t, 10*time.Second, "the job to be RUNNING", func() (bool, string) {
		j := c.job(ids[0])
		return j.Status == job.StatusRunning, string(j.Status)
	})
	claim := c.job(ids[0])

	began := time.Now()
	second, err := startProc("sentinel (second)", sentinelBin,
		c.sentinelArgs(fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), defaultSentinelOpts())...)
	if err != nil {
		t.Fatal(err)
	}
	c.track(second)
	if !second.waitExit(readyTimeout) {
		t.Fatalf("the second Sentinel is still running: %s", second.stderr.tail(10))
	}
	refusedIn := time.Since(began)
	if second.exitCode() == 0 {
		t.Errorf("second Sentinel exited 0, want an error")
	}
	host, _ := os.Hostname()
	msg := second.stderr.String()
	for _, want := range []string{"owned by another Sentinel", "host " + host, "pid " + strconv.Itoa(first.cmd.Process.Pid),
		"endpoint " + c.endpoint, "since "} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal does not name %q:\n%s", want, second.stderr.tail(5))
		}
	}
	if strings.Contains(msg, "sentinel started") {
		t.Error("the second Sentinel logged that it started")
	}

	c.waitSettled(delay+10*time.Second, 0)
	j := c.job(ids[0])
	if first.exited() {
		t.Errorf("first Sentinel %s", first.status())
	}
	if j.Status != job.StatusCompleted || j.RetryCount != 0 || j.Attempt != claim.Attempt || j.ClaimedBy != claim.ClaimedBy {
		t.Errorf("job ended %s, retry_count %d, attempt %d by %s; want COMPLETED on its first claim (attempt %d by %s)",
			j.Status, j.RetryCount, j.Attempt, j.ClaimedBy, claim.Attempt, claim.ClaimedBy)
	}

	firstPID := first.cmd.Process.Pid
	first.kill()
	began = time.Now()
	third := c.startSentinel("sentinel (after the kill)", defaultSentinelOpts())
	restartIn := time.Since(began)
	var took []logLine
	for _, l := range third.logs() {
		if strings.Contains(l.str("message"), "took over the database lease") {
			took = append(took, l)
		}
	}
	if len(took) != 1 || took[0]["previous_pid"] != float64(firstPID) || took[0].str("level") != "warn" {
		t.Errorf("takeover lines %v, want one warning naming previous_pid %d", took, firstPID)
	}
	t.Logf("second Sentinel refused in %s; the first's job completed on its first claim; restart after SIGKILL took the stale lease over in %s",
		refusedIn.Round(time.Millisecond), restartIn.Round(time.Millisecond))
}

// Deleting or replacing the database file under a running Sentinel turns
// /healthz 503 within a few seconds, logs an ERROR and stops dispatching.
func TestProcess_LostDatabaseStopsTheSentinel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, path string)
	}{
		{"Deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"Replaced", func(t *testing.T, path string) {
			// An empty file is an empty SQLite database.
			if err := os.WriteFile(path+".new", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.activatePlugin(plugin)
			httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			o := defaultSentinelOpts()
			o.extra = []string{"--http", httpAddr}
			s := c.startSentinel("sentinel", o)
			// Dispatching works before.
			ids := c.enqueue(plugin, 2)
			w := c.startWorker("worker-1", 1, 0)
			c.waitSettled(10*time.Second, 0)
			w.kill()
			testwait.Eventually(t, 10*time.Second, "worker-1 to be removed", func() (bool, string) {
				for _, l := range s.logsWith("worker removed; its running jobs are requeued") {
					if l.str("worker_id") == "worker-1" {
						return true, ""
					}
				}
				return false, s.stderr.tail(2)
			})
			if code, body := healthz(t, httpAddr); code != http.StatusOK {
				t.Fatalf("healthz before: %d %s", code, body)
			}
			// Queued while no worker is there, so only a dispatch after the
			// loss could run them.
			queued := c.enqueue(plugin, 5)

			tc.tamper(t, c.dbPath)
			began := time.Now()
			var body string
			testwait.Eventually(t, 5*time.Second, "/healthz to answer 503", func() (bool, string) {
				var code int
				code, body = healthz(t, httpAddr)
				return code == http.StatusServiceUnavailable, fmt.Sprintf("%d %s", code, body)
			})
			noticed := time.Since(began)
			if !strings.Contains(body, "database file is gone") {
				t.Errorf("healthz body %s does not say the file is gone", body)
			}
			testwait.Eventually(t, 2*time.Second, "an ERROR about the lost database", func() (bool, string) {
				for _, l := range s.logs() {
					if l.str("level") == "error" && strings.Contains(l.str("message"), "the database is lost") {
						return true, ""
					}
				}
				return false, s.stderr.tail(3)
			})

			before := dispatched(t, httpAddr)
			c.startWorker("worker-2", 4, 0)
			time.Sleep(3 * time.Second) // a dispatch would take a poll interval (100 ms); give it 30
			if after := dispatched(t, httpAddr); after != before {
				t.Errorf("jobs dispatched after the loss: %d, want none", after-before)
			}
			if tc.name == "Deleted" {
				// The test's connections still see the deleted file.
				for _, id := range queued {
					if j := c.job(id); j.Status != job.StatusQueued || j.Attempt != 0 {
						t.Errorf("job %d %s attempt %d after the loss, want QUEUED and never claimed", id, j.Status, j.Attempt)
					}
				}
			}
			if s.exited() {
				t.Errorf("sentinel %s", s.status())
			}
			t.Logf("%s: /healthz 503 %s after the file was %s; %d jobs completed before, %d queued stayed undispatched",
				tc.name, noticed.Round(time.Millisecond), strings.ToLower(tc.name), len(ids), len(queued))
		})
	}
}

// /healthz answers within a second while another connection holds the
// database's write lock: 200 "degraded", and 200 "ok" again after.
func TestProcess_HealthzAnswersWhileDatabaseLocked(t *testing.T) {
	// Not parallel: it bounds /healthz's answer time, which the other
	// process tests' load would stretch.
	//
	// The lease renewal (every 5 s) is what waits on the lock and says
	// degraded once it has waited 1 s: a renewal that began just before
	// the lock says so only after 5 + 1 s. 6 s held missed it when the
	// phases fell that way; 8 s always covers it.
	const held = 8 * time.Second
	c := newCluster(t)
	c.activatePlugin(plugin)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	o := defaultSentinelOpts()
	o.extra = []string{"--http", httpAddr}
	c.startSentinel("sentinel", o)
	c.startWorker("worker-1", 2, 0)

	fv := c.addFile(0)
	raw, err := sql.Open("sqlite", "file:"+c.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx := context.Background()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	// Jobs queued now need the lock to be claimed.
	ids := enqueueLocked(t, conn, fv, 3)
	var slowest time.Duration
	statuses := map[string]int{}
	for time.Since(locked) < held {
		start := time.Now()
		code, body := healthz(t, httpAddr)
		took := time.Since(start)
		slowest = max(slowest, took)
		if took > time.Second {
			t.Errorf("healthz took %s while the database was locked", took)
		}
		if code != http.StatusOK {
			t.Errorf("healthz while locked: %d %s, want 200 (degraded)", code, body)
		}
		var h map[string]string
		_ = json.Unmarshal([]byte(body), &h)
		statuses[h["status"]]++
		time.Sleep(200 * time.Millisecond)
	}
	if statuses["degraded"] == 0 {
		t.Errorf("healthz never said degraded while the lock was held %s: %v", held, statuses)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "/healthz ok again", func() (bool, string) {
		code, body := healthz(t, httpAddr)
		return code == http.StatusOK && strings.Contains(body, `"ok"`), body
	})
	c.waitSettled(20*time.Second, 0)
	c.checkFinal(ids, expect{completed: int64(len(ids))})
	t.Logf("database locked %s: slowest /healthz %s, answers %v; ok again after the lock", held, slowest.Round(time.Millisecond), statuses)
}

// enqueueLocked queues n jobs for file version fv inside the transaction
// conn holds, so that the lock is really a writer's, and returns their ids.
func enqueueLocked(t *testing.T, conn *sql.Conn, fv int64, n int) []int64 {
	t.Helper()
	var ids []int64
	for range n {
		res, err := conn.ExecContext(context.Background(),
			`INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count) VALUES (?, ?, 'QUEUED', 0, 0)`,
			fv, plugin)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		ids = append(ids, id)
	}
	return ids
}

func healthz(t *testing.T, addr string) (int, string) {
	t.Helper()
	client := http.Client{Timeout: 3 * time.Second}
	res, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b))
}

// dispatched reads casparian_jobs_dispatched_total from /metrics.
func dispatched(t *testing.T, addr string) int64 {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	res, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "casparian_jobs_dispatched_total "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return int64(n)
		}
	}
	t.Fatalf("no casparian_jobs_dispatched_total in /metrics:\n%s", b)
	return 0
}

// /healthz answers 503 while writes fail, and 200 once they work again. A
// full disk is hard to make here: a trigger that fails every renewal of the
// lease row stands in for it (the renewal is the Sentinel's write probe).
func TestProcess_HealthzUnavailableWhileWritesFail(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	o := defaultSentinelOpts()
	o.extra = []string{"--http", httpAddr}
	s := c.startSentinel("sentinel", o)
	raw, err := sql.Open("sqlite", "file:"+c.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER test_fail_writes BEFORE UPDATE ON sentinel_lease
		BEGIN SELECT RAISE(FAIL, 'simulated write failure'); END`); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	testwait.Eventually(t, 10*time.Second, "/healthz 503 while writes fail", func() (bool, string) {
		code, body := healthz(t, httpAddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "database writes fail"), body
	})
	noticed := time.Since(began)
	if len(s.logsWith("database writes fail; /healthz answers 503 until a write succeeds")) == 0 {
		t.Error("no ERROR about failing writes")
	}
	if _, err := raw.Exec(`DROP TRIGGER test_fail_writes`); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "/healthz 200 once writes work", func() (bool, string) {
		code, body := healthz(t, httpAddr)
		return code == http.StatusOK, body
	})
	t.Logf("failing writes turned /healthz 503 after %s (renewal every 5 s); 200 again %s after they worked",
		noticed.Round(time.Millisecond), (time.Since(began) - noticed).Round(time.Millisecond))
}

// The queue actor's own writes tell health at once: a claim that cannot be
// written turns /healthz 503 naming job claims, without waiting for the
// lease renewal's probe (which here keeps succeeding), and the job runs
// once writes work again.
func TestProcess_HealthzUnavailableWhileClaimsFail(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	o := defaultSentinelOpts()
	o.extra = []string{"--http", httpAddr}
	s := c.startSentinel("sentinel", o)
	c.activatePlugin("p")
	c.startWorker("w1", 1, 0)
	raw, err := sql.Open("sqlite", "file:"+c.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER test_fail_claims BEFORE UPDATE ON cf_processing_queue
		BEGIN SELECT RAISE(FAIL, 'simulated write failure'); END`); err != nil {
		t.Fatal(err)
	}
	ids := c.enqueue("p", 1)
	testwait.Eventually(t, 10*time.Second, "/healthz 503 naming job claims", func() (bool, string) {
		code, body := healthz(t, httpAddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "job claims and conclusions"), body
	})
	if len(s.logsWith("database writes fail; /healthz answers 503 until a write succeeds")) == 0 {
		t.Error("no ERROR about failing writes")
	}
	if _, err := raw.Exec(`DROP TRIGGER test_fail_claims`); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 15*time.Second, "the job COMPLETED and /healthz 200 once writes work", func() (bool, string) {
		code, body := healthz(t, httpAddr)
		j := c.job(ids[0])
		return code == http.StatusOK && j.Status == job.StatusCompleted, fmt.Sprintf("%d %s, job %s", code, body, j.Status)
	})
}
