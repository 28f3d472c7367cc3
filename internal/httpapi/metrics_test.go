package httpapi_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// scrape reads /metrics and parses the text exposition format into
// "name{labels}" → value. It checks the format as it goes: every sample
// line is a name, optional labels and a number; every family has TYPE.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	typed := map[string]bool{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# TYPE ") {
			typed[strings.Fields(line)[2]] = true
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		key := line[:i]
		name := key
		if j := strings.IndexByte(key, '{'); j >= 0 {
			name = key[:j]
		}
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !typed[name] && !typed[family] {
			t.Errorf("sample %q has no # TYPE line", line)
		}
		out[key] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMetrics_MoveAsJobsFlow(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	e.Plugin("bad")
	fv := e.File("a.txt", "a\n")

	before := scrape(t, e.URL)
	for _, name := range []string{
		"casparian_jobs_dispatched_total",
		"casparian_jobs_rejected_total", "casparian_jobs_pruned_total", "casparian_workers_registered_total",
		"casparian_workers_removed_total", "casparian_messages_received_total", "casparian_messages_sent_total",
		"casparian_protocol_errors_total", "casparian_db_errors_total", "casparian_stale_messages_total",
		"casparian_workers_connected", `casparian_worker_slots{state="free"}`, `casparian_worker_slots{state="busy"}`,
		`casparian_jobs{status="QUEUED"}`, "casparian_dispatch_latency_seconds_count",
		`casparian_db_batch_seconds_count{op="claim"}`,
		`casparian_db_batch_seconds_count{op="conclude"}`, "casparian_up", "go_goroutines",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if before["casparian_up"] != 1 || before["casparian_jobs_dispatched_total"] != 0 || before["casparian_workers_connected"] != 0 {
		t.Errorf("fresh sentinel: up %v dispatched %v workers %v", before["casparian_up"],
			before["casparian_jobs_dispatched_total"], before["casparian_workers_connected"])
	}

	const ok, failing = 6, 2
	for i := 0; i < ok; i++ {
		e.Enqueue(fv, "p", 0)
	}
	for i := 0; i < failing; i++ {
		e.Enqueue(fv, "bad", 0)
	}
	hold := e.Enqueue(fv, "hold", 0)
	e.Plugin("hold")
	release := make(chan struct{})
	e.Worker(testworker.Options{Slots: 2, Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		switch j.Dispatch.PluginName {
		case "bad":
			return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "bad"}
		case "hold":
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return testworker.Succeed(ctx, j)
	}})
	testwait.Eventually(t, 10*time.Second, "all but the held job concluded", func() bool {
		c, _ := e.Store.JobsCountByStatus(context.Background())
		// Dispatches are counted when the worker actor sends them, a moment
		// after the claim made the job RUNNING.
		return c[job.StatusCompleted] == ok && c[job.StatusFailed] == failing && e.Job(hold).Status == job.StatusRunning &&
			e.Sentinel.Stats().JobsDispatched.Load() == ok+failing+1
	})

	during := scrape(t, e.URL)
	want := map[string]float64{
		"casparian_jobs_dispatched_total":                    ok + failing + 1,
		`casparian_jobs_completed_total{plugin="p"}`:         ok,
		`casparian_jobs_completed_total{plugin="bad"}`:       0,
		`casparian_jobs_failed_total{plugin="bad"}`:          failing,
		`casparian_jobs_failed_total{plugin="p"}`:            0,
		`casparian_jobs_requeued_total{plugin="p"}`:          0,
		"casparian_workers_registered_total":                 1,
		"casparian_workers_connected":                        1,
		`casparian_worker_slots{state="busy"}`:               1,
		`casparian_worker_slots{state="free"}`:               1,
		`casparian_jobs{status="COMPLETED"}`:                 ok,
		`casparian_jobs{status="FAILED"}`:                    failing,
		`casparian_jobs{status="RUNNING"}`:                   1,
		`casparian_jobs{status="QUEUED"}`:                    0,
		"casparian_dispatch_latency_seconds_count":           ok + failing + 1,
		`casparian_job_duration_seconds_count{plugin="p"}`:   ok,
		`casparian_job_duration_seconds_count{plugin="bad"}`: failing,
	}
	for name, v := range want {
		if during[name] != v {
			t.Errorf("%s = %v, want %v", name, during[name], v)
		}
	}
	if during["casparian_messages_received_total"] <= before["casparian_messages_received_total"] ||
		during["casparian_messages_sent_total"] < ok+failing+1 {
		t.Errorf("messages: received %v sent %v", during["casparian_messages_received_total"], during["casparian_messages_sent_total"])
	}
	// Receipts usually share the commit of the claim that follows them, so
	// transactions of receipts alone may not have happened: that series
	// need only be exported.
	_, concludeExported := during[`casparian_db_batch_seconds_count{op="conclude"}`]
	if !concludeExported || during[`casparian_db_batch_seconds_count{op="claim"}`] < 1 ||
		during[`casparian_job_duration_seconds_sum{plugin="p"}`] <= 0 {
		t.Errorf("histograms did not move: %v", during)
	}
	// Cumulative buckets: the +Inf bucket equals the count.
	if during[`casparian_dispatch_latency_seconds_bucket{le="+Inf"}`] != during["casparian_dispatch_latency_seconds_count"] {
		t.Errorf("+Inf bucket %v != count %v", during[`casparian_dispatch_latency_seconds_bucket{le="+Inf"}`],
			during["casparian_dispatch_latency_seconds_count"])
	}

	// A spoofed receipt moves stale_messages; a garbage frame moves
	// protocol_errors.
	spoof := e.Worker(testworker.Options{Identity: "tw-spoof", Capabilities: []string{"nothing"}})
	if err := spoof.Send(transport.OpConclude, uint64(hold), &transport.Conclude{Status: transport.StatusSuccess}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "stale counted", func() bool {
		return scrape(t, e.URL)["casparian_stale_messages_total"] > during["casparian_stale_messages_total"]
	})
	close(release)
	testwait.Eventually(t, 5*time.Second, "held job completed", func() bool {
		return scrape(t, e.URL)[`casparian_jobs_completed_total{plugin="hold"}`] == 1
	})
	// Every job's first claim has its enqueue-to-start latency, read
	// shortly after the claim.
	testwait.Eventually(t, 5*time.Second, "enqueue-to-start latencies observed", func() bool {
		m := scrape(t, e.URL)
		return m[`casparian_job_enqueue_to_start_seconds_count{plugin="p"}`] == ok &&
			m[`casparian_job_enqueue_to_start_seconds_count{plugin="bad"}`] == failing &&
			m[`casparian_job_enqueue_to_start_seconds_count{plugin="hold"}`] == 1
	})
	after := scrape(t, e.URL)
	if s := after[`casparian_job_enqueue_to_start_seconds_sum{plugin="hold"}`]; s <= 0 || s > 10 {
		t.Errorf("hold's enqueue-to-start = %vs, want the moments it waited for a worker", s)
	}
	// Nothing waits in the queue: no age series.
	for name := range after {
		if strings.HasPrefix(name, "casparian_queue_oldest_age_seconds") {
			t.Errorf("%s = %v with an empty queue", name, after[name])
		}
	}
}
