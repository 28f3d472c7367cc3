package worker_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/job"
)

func TestWorker_CSVToSQLiteWithLineage(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("csv")
	out := filepath.Join(h.out, "warehouse.db")
	h.Topic("csv", "output", "sqlite://"+out+"/orders", "append")
	startWorker(t, h, worker.Options{})

	files := map[int64]int{h.sample("orders.csv"): 10, h.File("more.csv", "order_id,customer,amount,quantity,paid,order_date,zip\n2001,Hooli,1.5,1,true,2026-02-01,94043\n2002,Acme Corp,2,2,false,2026-02-02,02139\n"): 2}
	jobs := map[int64]int64{} // job → file version
	for fv := range files {
		jobs[h.EnqueueOverrides(fv, "csv", "")] = fv
	}
	for id, fv := range jobs {
		j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed)
		if j.Status != job.StatusCompleted {
			t.Fatalf("job %d: %s: %s", id, j.Status, j.ErrorMessage)
		}
		if j.Metrics["rows"] != int64(files[fv]) {
			t.Errorf("job %d: metrics rows %d, want %d (metrics %v)", id, j.Metrics["rows"], files[fv], j.Metrics)
		}
		st, _ := os.Stat(filepath.Join(h.Root, map[bool]string{true: "orders.csv", false: "more.csv"}[files[fv] == 10]))
		if j.Metrics["bytes"] != st.Size() {
			t.Errorf("job %d: metrics bytes %d, want %d", id, j.Metrics["bytes"], st.Size())
		}
		if _, ok := j.Metrics["duration_ms"]; !ok {
			t.Errorf("job %d: no duration_ms in %v", id, j.Metrics)
		}
		want := []map[string]string{{"topic": "output", "uri": "sqlite://" + out + "/orders"}}
		if fmt.Sprint(placed(j.Artifacts)) != fmt.Sprint(want) || j.Artifacts[0]["rows"] != fmt.Sprint(files[fv]) {
			t.Errorf("job %d: artifacts %v, want %v with %d rows", id, j.Artifacts, want, files[fv])
		}
		got := querySQLite(t, out, `SELECT COUNT(*), MIN(_file_version_id), MAX(_file_version_id) FROM orders WHERE _job_id = ?`, id)
		if w := fmt.Sprintf("%d|%d|%d", files[fv], fv, fv); got[0] != w {
			t.Errorf("job %d: count|min fv|max fv = %s, want %s", id, got[0], w)
		}
	}
	// The columns carry the types inferred from the file.
	types := querySQLite(t, out, `SELECT name, type FROM pragma_table_info('orders')`)
	want := []string{"order_id|INTEGER", "customer|TEXT", "amount|REAL", "quantity|INTEGER", "paid|BOOLEAN",
		"order_date|TEXT", "zip|TEXT", "_job_id|INTEGER", "_file_version_id|INTEGER"}
	if !slices.Equal(types, want) {
		t.Errorf("columns %v, want %v", types, want)
	}
	row := querySQLite(t, out, `SELECT customer, amount, quantity IS NULL, paid, zip FROM orders WHERE order_id = 1010`)
	if len(row) != 1 || row[0] != "Initech|5|1|1|10001" {
		t.Errorf("order 1010 = %v", row)
	}
	if total := querySQLite(t, out, `SELECT COUNT(*) FROM orders`); total[0] != "12" {
		t.Errorf("%s rows in total, want 12", total[0])
	}
}

func TestWorker_DefaultParquetOutputReadBack(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("jsonl")
	w := startWorker(t, h, worker.Options{})
	fv := h.sample("events.jsonl")
	id := h.EnqueueOverrides(fv, "jsonl", "")
	j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted {
		t.Fatalf("job: %s: %s", j.Status, j.ErrorMessage)
	}
	// The Sentinel's default sink, parquet://output/jsonl.parquet, resolves
	// against the worker's output directory.
	path := filepath.Join(w.outputDir, "output", "jsonl.parquet")
	if fmt.Sprint(placed(j.Artifacts)) != fmt.Sprint([]map[string]string{{"topic": "output", "uri": "parquet://" + path}}) {
		t.Fatalf("artifacts %v", j.Artifacts)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, fl := range pf.Schema().Fields() {
		cols = append(cols, fl.Name()+":"+fl.Type().String())
	}
	wantCols := []string{"event_id:INT(64,true)", "type:STRING", "user:STRING", "ok:BOOLEAN", "latency_ms:DOUBLE",
		"bytes:INT(64,true)", "error:STRING", "query:STRING", "tags:STRING", "_job_id:INT(64,true)", "_file_version_id:INT(64,true)"}
	if !slices.Equal(cols, wantCols) {
		t.Fatalf("parquet columns\n%v\nwant\n%v", cols, wantCols)
	}
	rows := make([]parquet.Row, 20)
	r := parquet.NewReader(pf)
	defer r.Close()
	n, _ := r.ReadRows(rows)
	if n != 6 || j.Metrics["rows"] != 6 {
		t.Fatalf("read %d rows, receipt says %d, want 6", n, j.Metrics["rows"])
	}
	for _, row := range rows[:n] {
		if row[9].Int64() != id || row[10].Int64() != fv {
			t.Fatalf("lineage %v %v, want job %d file version %d", row[9], row[10], id, fv)
		}
	}
	if q := rows[3][7]; string(q.ByteArray()) != `{"q":"parquet","limit":10}` {
		t.Errorf("nested query column = %q", q.ByteArray())
	}
	if lat := rows[1][4].Double(); lat != 340.5 {
		t.Errorf("latency_ms of event 2 = %v", lat)
	}
	if !rows[0][5].IsNull() {
		t.Errorf("bytes of event 1 should be null, got %v", rows[0][5])
	}
}

func TestWorker_SinkModes(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("csv")
	startWorker(t, h, worker.Options{})
	fv := h.sample("customers.csv")
	dir := h.out
	out := filepath.Join(dir, "crm.db")
	overrides := func(uri, mode string) string {
		return fmt.Sprintf(`{"output": {"uri": %q, "mode": %q}}`, uri, mode)
	}
	run := func(uri, mode string) job.Job {
		t.Helper()
		return h.WaitJob(h.EnqueueOverrides(fv, "csv", overrides(uri, mode)), job.StatusCompleted, job.StatusFailed)
	}
	table := "sqlite://" + out + "/customers"
	count := func() string {
		return querySQLite(t, out, `SELECT COUNT(*), COUNT(DISTINCT _job_id) FROM customers`)[0]
	}

	t.Run("AppendAdds", func(t *testing.T) {
		for range 2 {
			if j := run(table, "append"); j.Status != job.StatusCompleted {
				t.Fatalf("append: %s %s", j.Status, j.ErrorMessage)
			}
		}
		if c := count(); c != "12|2" {
			t.Fatalf("rows|jobs after two appends = %s, want 12|2", c)
		}
	})
	t.Run("ReplaceSwaps", func(t *testing.T) {
		j := run(table, "replace")
		if j.Status != job.StatusCompleted {
			t.Fatalf("replace: %s %s", j.Status, j.ErrorMessage)
		}
		if c := count(); c != "6|1" {
			t.Fatalf("rows|jobs after replace = %s, want 6|1", c)
		}
		if got := querySQLite(t, out, `SELECT DISTINCT _job_id FROM customers`); got[0] != fmt.Sprint(j.ID) {
			t.Fatalf("rows belong to job %s, want %d", got[0], j.ID)
		}
	})
	t.Run("ErrorRefusesFullTarget", func(t *testing.T) {
		j := run(table, "error")
		if j.Status != job.StatusFailed || !strings.Contains(j.ErrorMessage, "target exists and is not empty") {
			t.Fatalf("error mode on a full table: %s %q", j.Status, j.ErrorMessage)
		}
		if c := count(); c != "6|1" {
			t.Fatalf("rows|jobs after a refused job = %s, want 6|1", c)
		}
		// ... but writes a target that does not exist yet.
		fresh := "file://" + filepath.Join(dir, "fresh.jsonl")
		if j := run(fresh, "error"); j.Status != job.StatusCompleted {
			t.Fatalf("error mode on a new file: %s %s", j.Status, j.ErrorMessage)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "fresh.jsonl"))
		if n := strings.Count(string(b), "\n"); n != 6 || !strings.Contains(string(b), `"name":"Umbrella, Ltd"`) {
			t.Fatalf("fresh.jsonl has %d lines:\n%s", n, b)
		}
	})
	if left := stagingLeft(t, dir); len(left) > 0 {
		t.Fatalf("staging files left: %v", left)
	}
}

func TestWorker_BadInputFailsWithClearMessage(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("csv", "jsonl", "checksum")
	w := startWorker(t, h, worker.Options{})
	cases := []struct {
		id   int64
		want string
	}{
		{h.EnqueueOverrides(h.sample("bad.csv"), "csv", ""), "csv: line 3: wrong number of fields (the header has 3)"},
		{h.EnqueueOverrides(h.sample("bad.jsonl"), "jsonl", ""), "jsonl: line 3: not a JSON object"},
		{h.EnqueueOverrides(h.sample("notes.txt"), "csv", `{"output": {"uri": "s3://bucket/x", "mode": "append"}}`), `unknown scheme "s3"`},
	}
	gone := h.File("gone.csv", "a\n1\n")
	if err := os.Remove(filepath.Join(h.Root, "gone.csv")); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		id   int64
		want string
	}{h.EnqueueOverrides(gone, "checksum", ""), "no such file or directory"})
	for _, c := range cases {
		j := h.WaitJob(c.id, job.StatusCompleted, job.StatusFailed)
		if j.Status != job.StatusFailed || !strings.Contains(j.ErrorMessage, c.want) {
			t.Errorf("job %d: %s %q, want FAILED with %q", c.id, j.Status, j.ErrorMessage, c.want)
		}
	}
	// Nothing was written for the failed jobs, and the worker still works.
	if _, err := os.Stat(filepath.Join(w.outputDir, "output", "csv.parquet")); !os.IsNotExist(err) {
		t.Errorf("a failed csv job left output: %v", err)
	}
	if left := stagingLeft(t, w.outputDir); len(left) > 0 {
		t.Errorf("staging files left: %v", left)
	}
	ok := h.WaitJob(h.EnqueueOverrides(h.sample("orders.csv"), "csv", ""), job.StatusCompleted, job.StatusFailed)
	if ok.Status != job.StatusCompleted {
		t.Fatalf("good job after bad ones: %s %s", ok.Status, ok.ErrorMessage)
	}
}

// The Sentinel aborts a job that outlives --job-timeout. The aborted run
// must leave nothing in the target; the retry then writes the rows once.
func TestWorker_AbortMidJobLeavesNoPartialOutput(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, func(c *config.Config) {
		c.JobTimeout = 400 * time.Millisecond
		c.AbortGrace = 5 * time.Second
	})
	h.Plugin("slow")
	out := filepath.Join(h.out, "out.db")
	h.Topic("slow", "output", "sqlite://"+out+"/rows", "append")
	g := newGate("slow", 300)
	g.blockRuns = 1 // the first run hangs until aborted; the retry is quick
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}})
	id := h.EnqueueOverrides(h.File("in.txt", "x\n"), "slow", "")

	g.waitStarted(t, 1) // 300 rows are staged and the run is waiting
	testwait.Eventually(t, within, "ABORTED receipt sent", func() bool { return w.Stats().JobsAborted == 1 })
	j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.Attempt != 2 {
		t.Fatalf("job: %s attempt %d %q, want COMPLETED on attempt 2", j.Status, j.Attempt, j.ErrorMessage)
	}
	if got := querySQLite(t, out, `SELECT COUNT(*), COUNT(DISTINCT _job_id) FROM rows`)[0]; got != "300|1" {
		t.Fatalf("rows|jobs = %s, want 300|1: the aborted run's rows must not be there", got)
	}
	if left := stagingLeft(t, filepath.Dir(out)); len(left) > 0 {
		t.Fatalf("staging files left: %v", left)
	}
}

func TestWorker_ConcurrencyLimit(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("gate")
	g := newGate("gate", 1)
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}, Concurrency: 2})
	fv := h.File("in.txt", "x\n")
	var ids []int64
	for range 5 {
		ids = append(ids, h.EnqueueOverrides(fv, "gate", ""))
	}
	g.waitStarted(t, 2)
	// Two run; the Sentinel holds the others back because the worker
	// announced max_concurrent_jobs=2.
	testwait.Eventually(t, within, "2 RUNNING, 3 QUEUED", func() bool {
		c, _ := h.Store.JobsCountByStatus(t.Context())
		return c[job.StatusRunning] == 2 && c[job.StatusQueued] == 3
	})
	g.release()
	for _, id := range ids {
		if j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
			t.Fatalf("job %d: %s %s", id, j.Status, j.ErrorMessage)
		}
	}
	if m := g.max(); m != 2 {
		t.Fatalf("at most %d runs overlapped, want exactly 2", m)
	}
	if r := w.Stats().JobsRejected; r != 0 {
		t.Fatalf("%d jobs rejected, want 0", r)
	}
}

// A Sentinel restart while a job runs: the job finishes while the Sentinel
// is down (its receipt is lost with the connection), the worker reconnects,
// identifies again and re-sends the receipt, so the job completes without
// running twice; then new jobs flow again.
func TestWorker_ReconnectAndReidentifyAfterSentinelRestart(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, func(c *config.Config) { c.RecoveryGrace = 10 * time.Second })
	h.Plugin("gate")
	out := filepath.Join(h.out, "out.db")
	h.Topic("gate", "output", "sqlite://"+out+"/rows", "append")
	g := newGate("gate", 50)
	g.blockRuns = 1
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}})
	h.WaitWorkers(1)
	identifies := w.Stats().Identifies
	id := h.EnqueueOverrides(h.File("in.txt", "x\n"), "gate", "")
	g.waitStarted(t, 1)

	h.Restart(func() {
		g.release()
		testwait.Eventually(t, within, "job concluded while the Sentinel is down", func() bool { return w.Stats().JobsSucceeded == 1 })
	})
	testwait.Eventually(t, within, "worker re-identified", func() bool {
		s := w.Stats()
		return s.Reconnects >= 1 && s.Identifies > identifies
	})
	h.WaitWorkers(1)
	j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.Attempt != 1 {
		st := h.Sentinel.Stats()
		t.Fatalf("job: %s attempt %d %q, want COMPLETED on attempt 1; worker %+v; sentinel: received %d, stale %d, unknown-worker %d, registered %d",
			j.Status, j.Attempt, j.ErrorMessage, w.Stats(), st.MessagesReceived.Load(), st.StaleMessages.Load(),
			st.UnknownWorkers.Load(), st.WorkersRegistered.Load())
	}
	if got := querySQLite(t, out, `SELECT COUNT(*) FROM rows`)[0]; got != "50" {
		t.Fatalf("%s rows, want 50 (written once)", got)
	}
	next := h.EnqueueOverrides(h.File("next.txt", "y\n"), "gate", "")
	if j := h.WaitJob(next, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("job after restart: %s %s", j.Status, j.ErrorMessage)
	}
}

// Heartbeats come from their own goroutine: a job that runs for several
// worker timeouts does not get the worker dropped.
func TestWorker_LongJobKeepsWorkerAlive(t *testing.T) {
	h := newSentinel(t, func(c *config.Config) {
		c.HeartbeatInterval = time.Hour // only the worker's own heartbeats
		c.WorkerTimeout = 500 * time.Millisecond
	})
	h.Plugin("gate")
	g := newGate("gate", 1)
	startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}, HeartbeatInterval: 50 * time.Millisecond})
	id := h.EnqueueOverrides(h.File("in.txt", "x\n"), "gate", "")
	g.waitStarted(t, 1)
	// Three worker timeouts pass with the job running; the Sentinel must
	// still hold it as RUNNING under the same worker.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if j := h.Job(id); j.Status != job.StatusRunning || j.Attempt != 1 {
			t.Fatalf("job while running: %s attempt %d %q", j.Status, j.Attempt, j.ErrorMessage)
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.release()
	if j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted || j.Attempt != 1 {
		t.Fatalf("job: %s attempt %d %q", j.Status, j.Attempt, j.ErrorMessage)
	}
}

// Cancelling Run drains: no new jobs are taken, the running one finishes
// and concludes, Run returns nil.
func TestWorker_DrainFinishesRunningJobs(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("gate")
	g := newGate("gate", 10)
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}, DrainTimeout: 10 * time.Second})
	fv := h.File("in.txt", "x\n")
	running := h.EnqueueOverrides(fv, "gate", "")
	g.waitStarted(t, 1)

	w.cancel() // starts the drain
	testwait.Eventually(t, within, "worker re-identified with no capabilities", func() bool { return w.Stats().Identifies >= 2 })
	queued := h.EnqueueOverrides(fv, "gate", "")
	// The dispatcher gets many poll intervals to send the new job. A
	// DISPATCH that crossed the draining IDENTIFY is REJECTED and requeued
	// once; after that the Sentinel knows the worker takes nothing. Without
	// the IDENTIFY the job would bounce every retry backoff (20-200 ms).
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if j := h.Job(queued); j.Attempt > 1 || (j.Status != job.StatusQueued && j.Status != job.StatusRunning) {
			t.Fatalf("job queued during the drain: %s after %d claims, want QUEUED and claimed at most once", j.Status, j.Attempt)
		}
	}
	if st := w.Stats(); st.JobsStarted != 1 {
		t.Fatalf("%d jobs started, want only the one running before the drain", st.JobsStarted)
	}
	select {
	case <-w.finished:
		t.Fatal("Run returned while a job was still running")
	default:
	}
	g.release()
	select {
	case <-w.finished:
		if w.err != nil {
			t.Fatalf("Run: %v", w.err)
		}
	case <-time.After(within):
		t.Fatal("drain did not end")
	}
	if j := h.WaitJob(running, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("running job: %s %s", j.Status, j.ErrorMessage)
	}
}

// At the drain deadline running jobs are aborted, concluded ABORTED, and
// their staged rows discarded; the Sentinel requeues them for another
// worker (an abort is not the plugin's verdict).
func TestWorker_DrainDeadlineAbortsAndConcludes(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("gate")
	g := newGate("gate", 100)
	out := filepath.Join(h.out, "out.jsonl")
	h.Topic("gate", "output", "file://"+out, "append")
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}, DrainTimeout: 200 * time.Millisecond})
	id := h.EnqueueOverrides(h.File("in.txt", "x\n"), "gate", "")
	g.waitStarted(t, 1)
	if err := w.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	j := h.WaitJob(id, job.StatusFailed, job.StatusCompleted, job.StatusQueued)
	if j.Status != job.StatusQueued || j.RetryCount != 1 || !strings.Contains(j.ErrorMessage, "drain deadline") {
		t.Fatalf("job: %s retry %d %q, want requeued by an ABORTED receipt naming the drain deadline", j.Status, j.RetryCount, j.ErrorMessage)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("aborted job left output: %v", err)
	}
	if left := stagingLeft(t, filepath.Dir(out)); len(left) > 0 {
		t.Fatalf("staging files left: %v", left)
	}
}

// Topics route to their configured sinks; a topic without one fails the
// job with a message saying how to configure it.
type twoTopics struct{ extra string }

func (twoTopics) Name() string { return "split" }

func (p twoTopics) Run(_ context.Context, in plugin.Input, emit plugin.Emitter) error {
	for i := range 3 {
		if err := emit.Emit("output", plugin.Row{Columns: []string{"i"}, Values: []any{i}}); err != nil {
			return err
		}
	}
	return emit.Emit(p.extra, plugin.Row{Columns: []string{"note"}, Values: []any{"hello"}})
}

func TestWorker_TopicsRouteToTheirSinks(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("split")
	dir := h.out
	h.Topic("split", "output", "file://"+filepath.Join(dir, "main.csv"), "append")
	h.Topic("split", "notes", "sqlite://"+filepath.Join(dir, "n.db")+"/notes", "append")
	startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{twoTopics{extra: "notes"}}})
	j := h.WaitJob(h.EnqueueOverrides(h.File("in.txt", "x\n"), "split", ""), job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.Metrics["rows"] != 4 || len(j.Artifacts) != 2 {
		t.Fatalf("job: %s %q metrics %v artifacts %v", j.Status, j.ErrorMessage, j.Metrics, j.Artifacts)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "main.csv"))
	if !strings.HasPrefix(string(b), "i,_job_id,_file_version_id\n0,") || strings.Count(string(b), "\n") != 4 {
		t.Fatalf("main.csv:\n%s", b)
	}
	if n := querySQLite(t, filepath.Join(dir, "n.db"), `SELECT note FROM notes`); !slices.Equal(n, []string{"hello"}) {
		t.Fatalf("notes: %v", n)
	}
}

func TestWorker_TopicWithoutSinkFails(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("split")
	w := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{twoTopics{extra: "nowhere"}}})
	j := h.WaitJob(h.EnqueueOverrides(h.File("in.txt", "x\n"), "split", ""), job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusFailed || !strings.Contains(j.ErrorMessage, `no sink is configured for topic "nowhere"`) {
		t.Fatalf("job: %s %q", j.Status, j.ErrorMessage)
	}
	// The rows already emitted to "output" were staged, and discarded.
	if _, err := os.Stat(filepath.Join(w.outputDir, "output", "split.parquet")); !os.IsNotExist(err) {
		t.Fatalf("failed job left output: %v", err)
	}
	if left := stagingLeft(t, w.outputDir); len(left) > 0 {
		t.Fatalf("staging files left: %v", left)
	}
}

type panicky struct{}

func (panicky) Name() string { return "panicky" }

func (panicky) Run(context.Context, plugin.Input, plugin.Emitter) error { panic("boom") }

func TestWorker_PluginPanicFailsTheJobNotTheWorker(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("panicky", "checksum")
	startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{panicky{}, plugin.Checksum{}}})
	fv := h.sample("notes.txt")
	j := h.WaitJob(h.EnqueueOverrides(fv, "panicky", ""), job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusFailed || j.ErrorMessage != "panicky: plugin panicked: boom" {
		t.Fatalf("job: %s %q", j.Status, j.ErrorMessage)
	}
	if j := h.WaitJob(h.EnqueueOverrides(fv, "checksum", ""), job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("next job: %s %q", j.Status, j.ErrorMessage)
	}
}

// --job-delay holds every job before its plugin runs, and an ABORT ends the
// wait at once: the delay makes jobs long without making them unkillable.
func TestWorker_JobDelayHoldsJobsAndYieldsToAbort(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, func(c *config.Config) {
		c.JobTimeout = 1500 * time.Millisecond
		c.AbortGrace = 5 * time.Second
		c.MaxRetries = 0
	})
	h.Plugin("checksum")
	fv := h.File("in.txt", "x\n")

	delayed := startWorker(t, h, worker.Options{JobDelay: 700 * time.Millisecond})
	id := h.EnqueueOverrides(fv, "checksum", "")
	j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.Metrics["duration_ms"] < 700 {
		t.Fatalf("job: %s %q, duration_ms %d, want COMPLETED after at least 700 ms", j.Status, j.ErrorMessage, j.Metrics["duration_ms"])
	}
	if err := delayed.stop(t); err != nil {
		t.Fatal(err)
	}
	// The next job must go to the stuck worker, not to the stopped one
	// before the Sentinel has noticed it left (with --max-retries 0 the
	// job would then fail without the stuck worker ever seeing it).
	testwait.Eventually(t, within, "the stopped worker gone from the Sentinel", func() bool {
		infos, err := h.Sentinel.WorkersInfo(t.Context())
		return err == nil && len(infos) == 0
	})

	// A delay longer than --job-timeout: the Sentinel aborts the job and
	// the worker answers long before the delay would have ended.
	stuck := startWorker(t, h, worker.Options{JobDelay: time.Minute})
	id = h.EnqueueOverrides(fv, "checksum", "")
	testwait.Eventually(t, within, "ABORTED receipt sent", func() bool { return stuck.Stats().JobsAborted == 1 })
	if j := h.WaitJob(id, job.StatusFailed, job.StatusCompleted); j.Status != job.StatusFailed {
		t.Fatalf("job: %s, want FAILED after its only attempt timed out", j.Status)
	}
}

// A job that runs twice writes its rows once, in every sink. Its first
// attempt commits its output while the Sentinel is down and its worker
// stops, so the receipt is never delivered; the restarted Sentinel requeues
// the job after its recovery grace and another worker runs it again. Another
// job's rows in the same append targets are left alone.
func TestWorker_JobRunTwiceWritesItsRowsOnceInEverySink(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	h.Plugin("gate")
	paths := map[string]string{
		"sqlite":  filepath.Join(h.out, "out.db"),
		"parquet": filepath.Join(h.out, "out.parquet"),
		"jsonl":   filepath.Join(h.out, "out.jsonl"),
		"csv":     filepath.Join(h.out, "out.csv"),
	}
	h.Topic("gate", "output", "sqlite://"+paths["sqlite"]+"/rows", "append")
	h.Topic("gate", "output", "parquet://"+paths["parquet"], "append")
	h.Topic("gate", "output", "file://"+paths["jsonl"], "append")
	h.Topic("gate", "output", "file://"+paths["csv"], "append")
	const rows = 50
	g := newGate("gate", rows)
	g.blockRuns = 1 // the first run waits; the others return at once
	first := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}})
	twice := h.EnqueueOverrides(h.File("twice.txt", "x\n"), "gate", "")
	g.waitStarted(t, 1)
	once := h.EnqueueOverrides(h.File("once.txt", "y\n"), "gate", "")
	if j := h.WaitJob(once, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("job %d: %s %s", once, j.Status, j.ErrorMessage)
	}

	h.Restart(func() {
		g.release()
		testwait.Eventually(t, within, "first attempt concluded", func() bool { return first.Stats().JobsSucceeded == 2 })
		if err := first.stop(t); err != nil { // its receipt is lost with it
			t.Fatal(err)
		}
	})
	second := startWorker(t, h, worker.Options{Plugins: []plugin.Plugin{g}})
	j := h.WaitJob(twice, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.Attempt != 2 || second.Stats().JobsSucceeded != 1 {
		t.Fatalf("job %d: %s on attempt %d %q, second worker %+v; want COMPLETED by a second run",
			twice, j.Status, j.Attempt, j.ErrorMessage, second.Stats())
	}

	for sink, path := range paths {
		got := rowsPerJob(t, sink, path)
		if want := map[int64]int{twice: rows, once: rows}; !maps.Equal(got, want) {
			t.Errorf("%s: rows per job %v, want %v", sink, got, want)
		}
	}
	if left := stagingLeft(t, h.out); len(left) > 0 {
		t.Errorf("staging files left: %v", left)
	}
}

// rowsPerJob counts the rows of a sink target by their _job_id.
func rowsPerJob(t *testing.T, sink, path string) map[int64]int {
	t.Helper()
	counts := map[int64]int{}
	switch sink {
	case "sqlite":
		for _, r := range querySQLite(t, path, `SELECT _job_id, COUNT(*) FROM rows GROUP BY _job_id`) {
			var job int64
			var n int
			if _, err := fmt.Sscanf(r, "%d|%d", &job, &n); err != nil {
				t.Fatal(err)
			}
			counts[job] = n
		}
	case "parquet":
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		col, ok := pf.Schema().Lookup(worker.ColumnJobID)
		if !ok {
			t.Fatalf("%s has no %s column", path, worker.ColumnJobID)
		}
		r := parquet.NewReader(pf)
		defer r.Close()
		buf := make([]parquet.Row, 64)
		for {
			n, err := r.ReadRows(buf)
			for _, row := range buf[:n] {
				counts[row[col.ColumnIndex].Int64()]++
			}
			if err != nil {
				break
			}
		}
	case "jsonl":
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var row struct {
				Job int64 `json:"_job_id"`
			}
			if err := json.Unmarshal([]byte(line), &row); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			counts[row.Job]++
		}
	case "csv":
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := slices.Index(recs[0], worker.ColumnJobID)
		for _, rec := range recs[1:] {
			job, err := strconv.ParseInt(rec[col], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			counts[job]++
		}
	}
	return counts
}
