//go:build docker

package docker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// goodSamples are the sample files whose jobs all succeed, and the jobs the
// bootstrap routes them to (docker/bootstrap.json).
var goodSamples = []string{"orders.csv", "customers.csv", "events.jsonl", "notes.txt"}

var sampleJobs = []string{
	"orders.csv csv", "orders.csv checksum",
	"customers.csv csv", "customers.csv checksum",
	"events.jsonl jsonl", "events.jsonl checksum",
	"notes.txt text_stats", "notes.txt checksum",
}

// The stack as a user starts it: healthy, bootstrapped, and files copied
// into the inbox end up processed into SQLite and Parquet outputs.
func TestCompose_UpProcessesTheInbox(t *testing.T) {
	s := newStack(t, 0)
	workers := s.up(3)
	// Secured by default: every worker connected over CURVE with the key
	// made on the first start, and the API refuses a request without a token.
	for _, w := range workers {
		if w.KeyFingerprint == "" {
			t.Errorf("worker %s connected without CURVE", w.ID)
		}
	}
	if err := s.getWith("/api/v1/jobs", "", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("GET /api/v1/jobs without a token: %v, want 401", err)
	}
	// The first start applied the bootstrap file: one log line, some changes.
	if lines := s.logLines(s.sentinel(), "bootstrap applied"); len(lines) != 1 || lines[0]["changes"] == float64(0) {
		t.Fatalf("bootstrap log lines: %v", lines)
	}

	s.copyIn(goodSamples...)
	jobs := s.checkFinal(sampleJobs, nil)
	out := s.checkOutputs(jobs)

	// The outputs hold what the samples hold.
	db := filepath.Join(out, "casparian.db")
	for table, rows := range map[string]int64{"orders": 10, "customers": 6} {
		if n := querySQLite(t, db, fmt.Sprintf(`SELECT COUNT(*) FROM %q`, table)); n != rows {
			t.Errorf("table %s: %d rows, want %d", table, n, rows)
		}
	}
	for _, f := range []string{"jsonl/events.parquet", "text_stats/notes.parquet", "checksum/orders_csv.parquet",
		"checksum/customers_csv.parquet", "checksum/events_jsonl.parquet", "checksum/notes_txt.parquet"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
	// Logs are JSON lines (conclusions() checks the workers').
	logs := s.docker("logs", s.sentinel())
	for _, line := range strings.Split(logs, "\n") {
		if line != "" && !strings.HasPrefix(line, "{") {
			t.Errorf("sentinel log line is not JSON: %q", line)
		}
	}
}

// A worker killed (SIGKILL, see crash) while it runs a job: the job is requeued and completed by
// another worker, and the killed container is restarted by its restart
// policy and identifies again under a new identity.
func TestCompose_KilledWorkerJobIsCompletedByAnother(t *testing.T) {
	s := newStack(t, 10*time.Second)
	s.up(3)
	s.copyIn("orders.csv")

	running := s.waitJob("orders.csv csv", "RUNNING", func(j job) bool { return j.Status == "RUNNING" && j.Worker != "" })
	victim := s.workerContainers()[containerOf(running.Worker)]
	if victim == "" {
		t.Fatalf("no container for worker %s", running.Worker)
	}
	s.crash(victim)
	t.Logf("killed %s (worker %s) while it ran job %d", victim[:12], running.Worker, running.ID)

	// The restart policy brings the container back, and its worker
	// registers under a new identity (the same hostname, a new random part).
	s.eventually(upTimeout, "the killed worker restarts", func() (bool, string) {
		st := s.docker("inspect", "-f", "{{.RestartCount}} {{.State.Running}}", victim)
		count, running, _ := strings.Cut(st, " ")
		n, _ := strconv.Atoi(count)
		return n >= 1 && running == "true", st
	})
	s.eventually(upTimeout, "the restarted worker re-identifies", func() (bool, string) {
		ws, err := s.workers()
		if err != nil {
			return false, err.Error()
		}
		for _, w := range ws {
			if containerOf(w.ID) == containerOf(running.Worker) && w.ID != running.Worker && w.Ready {
				return true, ""
			}
		}
		return false, fmt.Sprint(ws)
	})

	final := s.checkFinal([]string{"orders.csv csv", "orders.csv checksum"}, nil)
	j := final["orders.csv csv"]
	if j.Worker == running.Worker || j.Attempt < 2 || j.RetryCount < 1 {
		t.Errorf("job %d: completed by %s on attempt %d (retry_count %d); want another worker than %s, attempt >= 2",
			j.ID, j.Worker, j.Attempt, j.RetryCount, running.Worker)
	}
	s.checkOutputs(final)
}

// The Sentinel killed (SIGKILL, see crash) mid-run: its restart policy restarts it, the workers
// reconnect and identify again with the jobs they hold, and every job
// completes exactly once.
func TestCompose_KilledSentinelRestartsAndLosesNothing(t *testing.T) {
	s := newStack(t, 8*time.Second)
	s.up(3)
	before := s.waitWorkers(3)
	s.copyIn(goodSamples...)
	s.eventually(jobsTimeout, "jobs RUNNING", func() (bool, string) {
		running := 0
		for _, j := range s.jobs() {
			if j.Status == "RUNNING" {
				running++
			}
		}
		return running >= 3, fmt.Sprint(running)
	})
	sentinel := s.sentinel()
	s.crash(sentinel)
	t.Log("killed the sentinel with jobs running")

	s.eventually(upTimeout, "the sentinel restarts and is healthy", func() (bool, string) {
		st := s.docker("inspect", "-f", "{{.RestartCount}} {{.State.Health.Status}}", sentinel)
		count, health, _ := strings.Cut(st, " ")
		n, _ := strconv.Atoi(count)
		return n >= 1 && health == "healthy", st
	})
	// The same three workers (same identities) come back.
	after := s.waitWorkers(3)
	ids := func(ws []worker) string {
		var out []string
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return fmt.Sprint(sortedCopy(out))
	}
	if ids(before) != ids(after) {
		t.Errorf("workers before the kill %s, after %s: want the same identities back", ids(before), ids(after))
	}
	// Both runs of the Sentinel logged the three workers' IDENTIFYs.
	if n := len(s.logLines(sentinel, "worker re-identified")) + len(s.logLines(sentinel, "worker registered")); n < 6 {
		t.Errorf("%d IDENTIFYs logged over both runs, want at least 6", n)
	}

	final := s.checkFinal(sampleJobs, nil)
	s.checkOutputs(final)
}

// A worker cut off from the network for longer than the worker timeout:
// the Sentinel removes it and requeues its job, another worker takes it
// over, and when the cut-off worker is back its late SUCCESS for the old
// attempt is counted as stale and changes nothing.
func TestCompose_DisconnectedWorkerIsReplacedAndItsLateReceiptIgnored(t *testing.T) {
	s := newStack(t, 12*time.Second)
	s.up(3)
	s.copyIn("orders.csv")
	running := s.waitJob("orders.csv csv", "RUNNING", func(j job) bool { return j.Status == "RUNNING" && j.Worker != "" })
	victim := s.workerContainers()[containerOf(running.Worker)]
	network := s.project + "_default"
	staleBefore, err := s.metric("casparian_stale_messages_total")
	if err != nil {
		t.Fatal(err)
	}
	// Every job the worker holds (it has two slots) runs twice: its copy
	// and the requeued one.
	held := map[int64]bool{}
	for _, j := range s.jobs() {
		if j.Status == "RUNNING" && j.Worker == running.Worker {
			held[j.ID] = true
		}
	}

	s.docker("network", "disconnect", network, victim)
	t.Logf("disconnected %s (worker %s) while it ran job %d", victim[:12], running.Worker, running.ID)
	s.eventually(upTimeout, "the cut-off worker is removed", func() (bool, string) {
		ws, err := s.workers()
		if err != nil {
			return false, err.Error()
		}
		for _, w := range ws {
			if w.ID == running.Worker {
				return false, fmt.Sprint(ws)
			}
		}
		return true, ""
	})
	requeued := s.waitJob("orders.csv csv", "claimed again by another worker", func(j job) bool {
		return j.Attempt >= 2 && j.Worker != running.Worker
	})
	// The cut-off worker finishes its copy while still cut off; its
	// CONCLUDE cannot reach the Sentinel yet.
	s.eventually(jobsTimeout, "the cut-off worker concludes its copies", func() (bool, string) {
		succeeded := map[int64]bool{}
		for _, c := range s.conclusions() {
			if held[c.JobID] && c.WorkerID == running.Worker && c.Status == "SUCCESS" {
				succeeded[c.JobID] = true
			}
		}
		return len(succeeded) == len(held), fmt.Sprintf("%v of %v", succeeded, held)
	})
	s.docker("network", "connect", network, victim)
	t.Logf("reconnected %s after it concluded job %d; the job now runs on %s (attempt %d)",
		victim[:12], running.ID, requeued.Worker, requeued.Attempt)

	// Back on the network, the worker identifies again and re-sends its
	// SUCCESS for attempt 1, which the Sentinel no longer holds: counted
	// stale, and the row stays with the attempt that now runs it.
	s.eventually(jobsTimeout, "the late receipt is counted stale", func() (bool, string) {
		v, err := s.metric("casparian_stale_messages_total")
		if err != nil {
			return false, err.Error()
		}
		return v > staleBefore, fmt.Sprint(v)
	})
	if j := s.waitJob("orders.csv csv", "read", func(job) bool { return true }); j.Worker == running.Worker {
		t.Errorf("after the late SUCCESS, job %d is %s for %s attempt %d: the late receipt was applied", j.ID, j.Status, j.Worker, j.Attempt)
	} else {
		t.Logf("after the late SUCCESS arrived, job %d is %s for %s (attempt %d)", j.ID, j.Status, j.Worker, j.Attempt)
	}

	// The jobs it held were completed twice by design (at-least-once):
	// once each by the cut-off worker, whose receipts were ignored, and by
	// the worker that took them over. The sinks replace per file, so the
	// output holds each job's rows once.
	final := s.checkFinal([]string{"orders.csv csv", "orders.csv checksum"}, held)
	j := final["orders.csv csv"]
	if j.Worker == running.Worker || j.Attempt < 2 {
		t.Errorf("job %d recorded for %s attempt %d; the late receipt of %s must not count", j.ID, j.Worker, j.Attempt, running.Worker)
	}
	s.checkOutputs(final)
}

// `down` (volumes kept) in the middle of a queue, then `up`: the database
// is intact (concluded jobs unchanged, the bootstrap adds nothing) and the
// remaining jobs are processed, none twice.
func TestCompose_DownAndUpKeepsTheDatabaseAndResumes(t *testing.T) {
	s := newStack(t, 5*time.Second)
	s.up(3)
	dir := t.TempDir()
	var files []string
	var expected []string
	for i := range 12 {
		name := fmt.Sprintf("note-%02d.txt", i)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("line\n", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(dir, name))
		expected = append(expected, name+" text_stats", name+" checksum")
	}
	s.copyIn(files...)
	var done []job
	s.eventually(jobsTimeout, "some jobs done and some queued", func() (bool, string) {
		jobs := s.jobs()
		done = done[:0]
		queued := 0
		for _, j := range jobs {
			switch j.Status {
			case "COMPLETED":
				done = append(done, j)
			case "QUEUED":
				queued++
			}
		}
		return len(done) >= 3 && queued >= 6, fmt.Sprintf("%d jobs, %d done, %d queued", len(jobs), len(done), queued)
	})
	// `down` is `stop` then remove: stopping first lets the test keep the
	// workers' logs (their conclusions during the drain) before removal.
	s.compose("stop", "-t", "40")
	s.saved = s.conclusions()
	s.compose("down")
	t.Logf("down with %d of %d jobs COMPLETED when the stop began", len(done), len(expected))

	s.up(3)
	if lines := s.logLines(s.sentinel(), "bootstrap applied"); len(lines) != 1 || lines[0]["changes"] != float64(0) {
		t.Errorf("bootstrap on the second start: %v, want one line with 0 changes", lines)
	}
	final := s.checkFinal(expected, nil)
	for _, d := range done {
		j := final[d.key()]
		if j.ID != d.ID || j.Worker != d.Worker || j.Attempt != d.Attempt {
			t.Errorf("job %s before down: id %d by %s attempt %d; after: id %d by %s attempt %d",
				d.key(), d.ID, d.Worker, d.Attempt, j.ID, j.Worker, j.Attempt)
		}
	}
	s.checkOutputs(final)
}

func sortedCopy(in []string) []string {
	out := append([]string{}, in...)
	sort.Strings(out)
	return out
}
