package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
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

// call makes one request and decodes the JSON answer into out (when not
// nil); it returns the status code and the raw body.
func call(t *testing.T, method, url, body string, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && res.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return res.StatusCode, string(raw)
}

// errorOf decodes an error body.
func errorOf(t *testing.T, body string) string {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": ...}: %v", body, err)
	}
	return e.Error
}

// blockUntilAborted holds every job until the Sentinel aborts it.
func blockUntilAborted(ctx context.Context, _ testworker.Job) transport.Conclude {
	<-ctx.Done()
	return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted on request"}
}

func failing(context.Context, testworker.Job) transport.Conclude {
	return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "bad input"}
}

func TestAPI_JobsRoundTrip(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	fv := e.File("in/a.csv", "a,b\n1,2\n")

	// Enqueue by version and by path, then watch them complete.
	var byVersion, byPath api.Job
	code, body := call(t, "POST", e.URL+"/api/v1/jobs",
		fmt.Sprintf(`{"file_version_id": %d, "plugin": "p", "priority": 7, "config_overrides": {"output": {"uri": "parquet://x.parquet"}}}`, fv), &byVersion)
	if code != http.StatusCreated || byVersion.ID == 0 || byVersion.Status != "QUEUED" || byVersion.Priority != 7 ||
		!strings.Contains(string(byVersion.ConfigOverrides), "parquet://x.parquet") {
		t.Fatalf("enqueue by version: %d %s", code, body)
	}
	code, body = call(t, "POST", e.URL+"/api/v1/jobs",
		fmt.Sprintf(`{"file_path": %q, "plugin": "p"}`, filepath.Join(e.Root, "in/a.csv")), &byPath)
	if code != http.StatusCreated || byPath.FileVersionID != fv || byPath.FilePath != filepath.Join(e.Root, "in/a.csv") {
		t.Fatalf("enqueue by path: %d %s", code, body)
	}

	w := e.Worker(testworker.Options{Identity: "tw-api"})
	testwait.Eventually(t, 10*time.Second, "both jobs COMPLETED", func() bool {
		return e.Job(byVersion.ID).Status == job.StatusCompleted && e.Job(byPath.ID).Status == job.StatusCompleted
	})

	var shown api.Job
	if code, body := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", e.URL, byPath.ID), "", &shown); code != 200 {
		t.Fatalf("show: %d %s", code, body)
	}
	if shown.Status != "COMPLETED" || shown.Worker != w.Identity() || shown.Metrics["rows"] != 2 ||
		len(shown.Artifacts) != 1 || !strings.HasPrefix(shown.Artifacts[0]["uri"], "sha256:") || shown.EndTime == nil {
		t.Errorf("shown job = %+v", shown)
	}

	// Lists: all, filtered, paginated.
	var list api.JobList
	call(t, "GET", e.URL+"/api/v1/jobs", "", &list)
	if list.Total != 2 || len(list.Jobs) != 2 || list.Jobs[0].ID != byPath.ID {
		t.Errorf("list = %+v", list)
	}
	call(t, "GET", e.URL+"/api/v1/jobs?status=completed&plugin=p&limit=1&offset=1", "", &list)
	if list.Total != 2 || len(list.Jobs) != 1 || list.Jobs[0].ID != byVersion.ID || list.Limit != 1 || list.Offset != 1 {
		t.Errorf("filtered page = %+v", list)
	}
	call(t, "GET", e.URL+"/api/v1/jobs?status=FAILED", "", &list)
	if list.Total != 0 || len(list.Jobs) != 0 {
		t.Errorf("failed jobs = %+v", list)
	}
}

// The list sorts by priority, updated and end time, either way, and pages
// by the cursor each page hands out.
func TestAPI_JobsSortAndPageByCursor(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("in/a.csv", "a\n")
	prio := []int64{5, 1, 5, 3, 1}
	ids := make([]int64, len(prio))
	for i, p := range prio {
		ids[i] = e.Enqueue(fv, "nobody", p)
	}
	pages := func(query string) (got []int64, lists []api.JobList) {
		t.Helper()
		for next := query; ; {
			var list api.JobList
			if code, body := call(t, "GET", e.URL+"/api/v1/jobs?"+next, "", &list); code != 200 {
				t.Fatalf("GET /api/v1/jobs?%s: %d %s", next, code, body)
			}
			lists = append(lists, list)
			for _, j := range list.Jobs {
				got = append(got, j.ID)
			}
			if list.NextCursor == "" || len(lists) > 5 {
				return got, lists
			}
			// The cursor alone names the order.
			next = "limit=2&after=" + url.QueryEscape(list.NextCursor)
		}
	}
	at := func(ns ...int) []int64 {
		out := make([]int64, len(ns))
		for i, n := range ns {
			out[i] = ids[n]
		}
		return out
	}
	got, lists := pages("sort=priority&limit=2")
	if want := at(2, 0, 3, 4, 1); fmt.Sprint(got) != fmt.Sprint(want) || len(lists) != 3 ||
		lists[0].Sort != "priority" || lists[0].Order != "desc" || lists[0].Total != 5 || lists[1].Total != 3 ||
		lists[2].Sort != "priority" || lists[2].NextCursor != "" {
		t.Errorf("by priority, highest first: %v, want %v; pages %+v", got, want, lists)
	}
	got, lists = pages("sort=PRIORITY&order=asc&limit=2")
	if want := at(1, 4, 3, 0, 2); fmt.Sprint(got) != fmt.Sprint(want) || lists[1].Order != "asc" {
		t.Errorf("by priority, lowest first: %v, want %v", got, want)
	}
	got, _ = pages("order=asc&limit=2")
	if want := at(0, 1, 2, 3, 4); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("by id, oldest first: %v, want %v", got, want)
	}
	// Jobs that have not ended come last either way: here, all of them.
	got, _ = pages("sort=ended&order=asc&limit=2")
	if want := at(0, 1, 2, 3, 4); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("by end time, none ended: %v, want %v", got, want)
	}
	got, _ = pages("sort=updated&limit=2")
	if want := at(4, 3, 2, 1, 0); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("by update, latest first: %v, want %v", got, want)
	}
	// A cursor with its own sort and order repeated is fine; with others, 400.
	var first api.JobList
	call(t, "GET", e.URL+"/api/v1/jobs?sort=priority&limit=2", "", &first)
	var second api.JobList
	if code, body := call(t, "GET", e.URL+"/api/v1/jobs?sort=priority&order=desc&limit=2&after="+url.QueryEscape(first.NextCursor), "", &second); code != 200 ||
		len(second.Jobs) != 2 || second.Jobs[0].ID != ids[3] {
		t.Errorf("second page with the sort repeated: %d %s", code, body)
	}
	if code, body := call(t, "GET", e.URL+"/api/v1/jobs?sort=priority&order=asc&after="+url.QueryEscape(first.NextCursor), "", nil); code != 400 ||
		!strings.Contains(errorOf(t, body), "the cursor was made for sort=priority order=desc, not sort=priority order=asc") {
		t.Errorf("a cursor of another order: %d %s", code, body)
	}
}

func TestAPI_CancelAndRetry(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("blocked")
	e.Plugin("broken")
	fv := e.File("a.txt", "a\n")

	// A QUEUED job nobody can run is cancelled at once.
	e.Plugin("nobody")
	queued := e.Enqueue(fv, "nobody", 0)
	var res api.CancelResponse
	if code, body := call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, queued), "", &res); code != 200 {
		t.Fatalf("cancel queued: %d %s", code, body)
	}
	if res.PreviousStatus != "QUEUED" || res.Job.Status != "SKIPPED" || res.AbortSent {
		t.Errorf("cancel queued = %+v", res)
	}

	// A RUNNING job: its worker gets ABORT, concludes ABORTED, the job ends
	// SKIPPED and is never requeued.
	running := e.Enqueue(fv, "blocked", 0)
	w := e.Worker(testworker.Options{Capabilities: []string{"blocked", "broken"}, Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if j.Dispatch.PluginName == "broken" {
			return failing(ctx, j)
		}
		return blockUntilAborted(ctx, j)
	}})
	testwait.Eventually(t, 5*time.Second, "job running on the worker", func() bool { return len(w.Received()) == 1 })
	if code, body := call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, running), "", &res); code != 200 {
		t.Fatalf("cancel running: %d %s", code, body)
	}
	if res.PreviousStatus != "RUNNING" || !res.AbortSent || !res.Job.CancelRequested {
		t.Errorf("cancel running = %+v", res)
	}
	testwait.Eventually(t, 5*time.Second, "cancelled job SKIPPED", func() bool { return e.Job(running).Status == job.StatusSkipped })
	if j := e.Job(running); j.RetryCount != 0 || len(w.Received()) != 1 {
		t.Errorf("cancelled job: retries %d, dispatched %d times", j.RetryCount, len(w.Received()))
	}
	if st := e.Sentinel.Stats(); st.JobsCancelled.Load() != 2 {
		t.Errorf("jobs cancelled = %d, want 2", st.JobsCancelled.Load())
	}

	// Cancelling a finished job is a conflict that names the status.
	code, body := call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, running), "", nil)
	if code != 200 { // SKIPPED again: a no-op
		t.Errorf("cancel skipped again: %d %s", code, body)
	}

	// A FAILED job is retried: QUEUED, retry_count 0, runs again (and fails again).
	failed := e.Enqueue(fv, "broken", 0)
	testwait.Eventually(t, 5*time.Second, "job FAILED", func() bool { return e.Job(failed).Status == job.StatusFailed })
	code, body = call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, failed), "", nil)
	if code != http.StatusConflict || !strings.Contains(errorOf(t, body), "FAILED") {
		t.Errorf("cancel failed job: %d %s", code, body)
	}
	var retried api.Job
	if code, body := call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/retry", e.URL, failed), "", &retried); code != 200 {
		t.Fatalf("retry: %d %s", code, body)
	}
	if retried.Status != "QUEUED" && retried.Status != "RUNNING" && retried.Status != "FAILED" {
		t.Errorf("retried job = %+v", retried)
	}
	testwait.Eventually(t, 5*time.Second, "retried job ran again", func() bool {
		j := e.Job(failed)
		return j.Status == job.StatusFailed && j.Attempt == 2
	})
	// Its detail lists both attempts, each FAILED.
	var detail api.Job
	if code, body := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", e.URL, failed), "", &detail); code != 200 {
		t.Fatalf("get: %d %s", code, body)
	}
	if len(detail.Attempts) != 2 || detail.Attempts[0].Attempt != 1 || detail.Attempts[1].Attempt != 2 ||
		detail.Attempts[0].Outcome != "FAILED" || detail.Attempts[1].Outcome != "FAILED" ||
		detail.Attempts[0].Worker == "" || detail.Attempts[0].EndTime == nil || detail.Attempts[0].Message == "" {
		t.Errorf("attempts = %+v", detail.Attempts)
	}
	code, body = call(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/retry", e.URL, queued), "", nil)
	if code != http.StatusConflict || !strings.Contains(errorOf(t, body), "only FAILED jobs can be retried") {
		t.Errorf("retry skipped job: %d %s", code, body)
	}
}

func TestAPI_BadRequestsSayWhatIsWrong(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	fv := e.File("a.txt", "a\n")
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/api/v1/jobs?status=DONE", "", 400, `unknown status "DONE"`},
		{"GET", "/api/v1/jobs?limit=0", "", 400, "limit must be a whole number from 1 to 1000"},
		{"GET", "/api/v1/jobs?offset=-1", "", 400, "offset"},
		{"GET", "/api/v1/jobs?stauts=FAILED", "", 400, `unknown query parameter "stauts"`},
		{"GET", "/api/v1/jobs?sort=size", "", 400, `sort: unknown sort "size" (want one of id, priority, updated, ended)`},
		{"GET", "/api/v1/jobs?order=up", "", 400, `order must be asc or desc, got "up"`},
		{"GET", "/api/v1/jobs?after=7", "", 400, `after: cursor "7" is not one this server wrote`},
		{"GET", "/api/v1/jobs?sort=priority&after=id.d.-.7", "", 400, "after: the cursor was made for sort=id order=desc, not sort=priority order=desc"},
		{"GET", "/api/v1/jobs?sort=priority&before_id=7", "", 400, "before_id pages the default order"},
		{"GET", "/api/v1/jobs/abc", "", 400, `job id must be a positive whole number, got "abc"`},
		{"GET", "/api/v1/jobs/999", "", 404, "job 999 not found"},
		{"POST", "/api/v1/jobs/999/cancel", "", 404, "job 999 not found"},
		{"POST", "/api/v1/jobs/999/retry", "", 404, "job 999 not found"},
		{"POST", "/api/v1/jobs", "", 400, "request body is empty"},
		{"POST", "/api/v1/jobs", `{"plugin": "p", "file_version_id": 1,}`, 400, "invalid JSON body"},
		{"POST", "/api/v1/jobs", `{"plugn": "p"}`, 400, `unknown field "plugn"`},
		{"POST", "/api/v1/jobs", fmt.Sprintf(`{"file_version_id": %d}`, fv), 400, "plugin is required"},
		{"POST", "/api/v1/jobs", `{"plugin": "p"}`, 400, "give file_version_id or file_path"},
		{"POST", "/api/v1/jobs", `{"plugin": "p", "file_version_id": 999}`, 404, "file version 999 not found"},
		{"POST", "/api/v1/jobs", `{"plugin": "p", "file_path": "/nowhere/x.csv"}`, 404, "under no active source root"},
		{"POST", "/api/v1/jobs", `{"plugin": "p", "file_path": "relative.csv"}`, 400, "must be absolute"},
		{"POST", "/api/v1/jobs", fmt.Sprintf(`{"plugin": "p", "file_version_id": %d, "config_overrides": [1]}`, fv), 400, "config_overrides must be an object"},
		{"POST", "/api/v1/jobs", fmt.Sprintf(`{"plugin": "p", "file_version_id": %d, "config_overrides": {"output": {"mode": "x"}}}`, fv), 400, "sink has no uri"},
		{"POST", "/api/v1/plugins/p/subscriptions", `{"tags": []}`, 400, "at least one tag"},
		{"POST", "/api/v1/sources", `{"path": "relative"}`, 400, "must be absolute"},
		{"POST", "/api/v1/sources", `{}`, 400, "path is required"},
		{"POST", "/api/v1/routes", `{"pattern": "*.csv", "tag": "a,b"}`, 400, "contain no comma"},
		{"GET", "/api/v1/nothing", "", 404, "no such endpoint: GET /api/v1/nothing"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, body := call(t, tc.method, e.URL+tc.path, tc.body, nil)
			if code != tc.code {
				t.Errorf("status %d, want %d (%s)", code, tc.code, body)
			}
			if msg := errorOf(t, body); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
		})
	}
	// A wrong content type is refused before the body is read.
	res, err := http.Post(e.URL+"/api/v1/jobs", "text/plain", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %d", res.StatusCode)
	}
}

func TestAPI_WorkersPluginsSourcesRoutes(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	fv := e.File("a.txt", "a\n")
	queued := e.Enqueue(fv, "p", 0)
	e.Worker(testworker.Options{Identity: "tw-busy", Capabilities: []string{"p"}, Slots: 3, Run: blockUntilAborted})
	e.Worker(testworker.Options{Identity: "tw-idle", Capabilities: []string{"other"}})
	testwait.Eventually(t, 5*time.Second, "job RUNNING", func() bool { return e.Job(queued).Status == job.StatusRunning })

	// RUNNING in the database comes a moment before the worker actor holds
	// the claim; the list shows what the worker actors hold.
	var workers api.WorkerList
	testwait.Eventually(t, 5*time.Second, "two workers listed, one busy", func() bool {
		call(t, "GET", e.URL+"/api/v1/workers", "", &workers)
		return len(workers.Workers) == 2 && workers.Workers[0].Busy == 1
	})
	busy, idle := workers.Workers[0], workers.Workers[1]
	if busy.ID != "tw-busy" || busy.Slots != 3 || busy.Busy != 1 || len(busy.RunningJobs) != 1 || busy.RunningJobs[0] != queued ||
		busy.Capabilities[0] != "p" || busy.Version != "testworker" || !busy.Ready || time.Since(busy.LastSeen) > 5*time.Second {
		t.Errorf("busy worker = %+v", busy)
	}
	if idle.ID != "tw-idle" || idle.Busy != 0 || len(idle.RunningJobs) != 0 {
		t.Errorf("idle worker = %+v", idle)
	}

	var sub api.Subscription
	if code, body := call(t, "POST", e.URL+"/api/v1/plugins/p/subscriptions", `{"tags": ["csv", "raw"]}`, &sub); code != 200 {
		t.Fatalf("subscribe: %d %s", code, body)
	}
	var plugins api.PluginList
	call(t, "GET", e.URL+"/api/v1/plugins", "", &plugins)
	if len(plugins.Plugins) != 1 || plugins.Plugins[0].Active == nil || plugins.Plugins[0].Active.Version != "1.0.0" ||
		strings.Join(plugins.Plugins[0].SubscriptionTags, ",") != "csv,raw" || len(plugins.Plugins[0].Versions) != 1 {
		t.Errorf("plugins = %+v", plugins)
	}

	var src api.Source
	other := filepath.Join(e.Dir, "other") // under the allowed root; need not exist yet
	if code, body := call(t, "POST", e.URL+"/api/v1/sources", fmt.Sprintf(`{"path": %q}`, other), &src); code != 201 {
		t.Fatalf("add source: %d %s", code, body)
	}
	var sources api.SourceList
	call(t, "GET", e.URL+"/api/v1/sources", "", &sources)
	if len(sources.Sources) != 2 || sources.Sources[1].Path != other || !sources.Sources[1].Active {
		t.Errorf("sources = %+v", sources)
	}

	var route api.Route
	if code, body := call(t, "POST", e.URL+"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv", "priority": 3}`, &route); code != 201 || route.ID == 0 {
		t.Fatalf("add route: %d %s", code, body)
	}
	var routes api.RouteList
	call(t, "GET", e.URL+"/api/v1/routes", "", &routes)
	if len(routes.Routes) != 1 || routes.Routes[0] != route {
		t.Errorf("routes = %+v, want [%+v]", routes, route)
	}

	var status api.Status
	call(t, "GET", e.URL+"/api/v1/status", "", &status)
	if !status.Ready || status.Counts["RUNNING"] != 1 || len(status.Workers) != 2 || status.Endpoint != e.Endpoint {
		t.Errorf("status = %+v", status)
	}
}

func TestHealthz_ReadyThenUnavailableWhileStopping(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.DrainTimeout = 3 * time.Second })
	e.Plugin("p")
	queued := e.Enqueue(e.File("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	e.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return testworker.Succeed(ctx, j)
	}})
	if code, body := call(t, "GET", e.URL+"/healthz", "", nil); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("healthz while serving: %d %s", code, body)
	}
	testwait.Eventually(t, 5*time.Second, "job RUNNING", func() bool { return e.Job(queued).Status == job.StatusRunning })

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = e.Sentinel.Stop(context.Background()) // the test watches how long it takes
	}()
	// While the Sentinel drains, health is 503 but the API still answers,
	// so an operator can watch the drain.
	testwait.Eventually(t, 5*time.Second, "healthz 503 while draining", func() bool {
		code, _ := call(t, "GET", e.URL+"/healthz", "", nil)
		return code == http.StatusServiceUnavailable
	})
	var j api.Job
	if code, body := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", e.URL, queued), "", &j); code != 200 || j.Status != "RUNNING" {
		t.Errorf("job during the drain: %d %s", code, body)
	}
	close(release)
	<-stopped
	code, body := call(t, "GET", e.URL+"/api/v1/jobs", "", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(errorOf(t, body), "shutting down") {
		t.Errorf("API after stop: %d %s", code, body)
	}
	if j := e.Job(queued); j.Status != job.StatusCompleted {
		t.Errorf("drained job = %s, want COMPLETED", j.Status)
	}
}

// TestAPI_CurveWorkersShowTheirKeyAndRefusalsAreCounted: over CURVE the
// worker list names each worker's key, and /metrics counts the handshakes
// refused by reason.
func TestAPI_CurveWorkersShowTheirKeyAndRefusalsAreCounted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serverPub, serverSec, _ := transport.GenerateCurveKeyPair()
	workerPub, workerSec, _ := transport.GenerateCurveKeyPair()
	_, strangerSec, _ := transport.GenerateCurveKeyPair()
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "sentinel"), serverPub, serverSec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "worker"), workerPub, workerSec); err != nil {
		t.Fatal(err)
	}
	e := sentineltest.Start(t, func(c *config.Config) {
		c.CurveSecretKey = filepath.Join(dir, "sentinel.key")
		c.AuthorizedWorkers = filepath.Join(dir, "worker.pub")
	})
	e.Worker(testworker.Options{Identity: "tw-curve", Curve: transport.NewCurveClient(serverPub, workerSec)})
	var workers api.WorkerList
	testwait.Eventually(t, 5*time.Second, "the CURVE worker listed", func() bool {
		call(t, "GET", e.URL+"/api/v1/workers", "", &workers)
		return len(workers.Workers) == 1
	})
	if got := workers.Workers[0]; got.ID != "tw-curve" || got.KeyFingerprint != workerPub.Fingerprint() {
		t.Fatalf("worker %+v, want tw-curve with key %s", got, workerPub.Fingerprint())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := testworker.Start(ctx, testworker.Options{Endpoint: e.Endpoint, Identity: "tw-stranger",
		Curve: transport.NewCurveClient(serverPub, strangerSec)}); err == nil {
		t.Fatal("a worker with an unlisted key connected")
	}
	testwait.Eventually(t, 5*time.Second, "the refusal counted", func() bool {
		_, body := call(t, "GET", e.URL+"/metrics", "", nil)
		return strings.Contains(body, `casparian_curve_refusals_total{reason="unauthorized_key"}`)
	})
}

// Bulk actions over a filter: a dry run counts, the real one acts, a
// cancelled RUNNING job's worker is aborted; the list filters by error text
// and pages by keyset.
func TestAPI_BulkRetryAndCancel(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("broken", "blocked", "nobody")
	fv := e.File("in/a.txt", "a\n")
	var failed []int64
	for range 3 {
		failed = append(failed, e.Enqueue(fv, "broken", 0))
	}
	running := e.Enqueue(fv, "blocked", 0)
	queued := []int64{e.Enqueue(fv, "nobody", 0), e.Enqueue(fv, "nobody", 0)}
	w := e.Worker(testworker.Options{Capabilities: []string{"blocked", "broken"}, Slots: 4, Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if j.Dispatch.PluginName == "broken" {
			return failing(ctx, j)
		}
		return blockUntilAborted(ctx, j)
	}})
	for _, id := range failed {
		e.WaitJob(id, job.StatusFailed)
	}
	e.WaitJob(running, job.StatusRunning)

	var list api.JobList
	if code, body := call(t, "GET", e.URL+"/api/v1/jobs?error="+url.QueryEscape("BAD inp")+"&path=in/a", "", &list); code != 200 || list.Total != 3 {
		t.Errorf("list by error text and path: %d %s (total %d, want 3)", code, body, list.Total)
	}
	if code, body := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs?limit=2&before_id=%d", e.URL, failed[2]), "", &list); code != 200 ||
		len(list.Jobs) != 2 || list.Jobs[0].ID != failed[1] || list.Jobs[1].ID != failed[0] {
		t.Errorf("keyset page before %d: %d %s", failed[2], code, body)
	}

	var res api.BulkResult
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/bulk", `{"action": "retry", "status": "failed", "dry_run": true}`, &res); code != 200 ||
		res.Matched != 3 || res.Changed != 0 || !res.DryRun {
		t.Fatalf("dry bulk retry: %d %s", code, body)
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/bulk", `{"action": "cancel", "plugin": "nobody"}`, &res); code != 200 ||
		res.Changed != 2 {
		t.Fatalf("bulk cancel of nobody: %d %s", code, body)
	}
	for _, id := range queued {
		if j := e.Job(id); j.Status != job.StatusSkipped {
			t.Errorf("job %d after the bulk cancel: %s", id, j.Status)
		}
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/bulk", `{"action": "cancel", "status": "RUNNING"}`, &res); code != 200 ||
		res.Changed != 1 {
		t.Fatalf("bulk cancel of RUNNING: %d %s", code, body)
	}
	e.WaitJob(running, job.StatusSkipped) // its worker was sent ABORT
	if code, body := call(t, "POST", e.URL+"/api/v1/jobs/bulk", `{"action": "retry", "plugin": "broken"}`, &res); code != 200 ||
		res.Changed != 3 {
		t.Fatalf("bulk retry: %d %s", code, body)
	}
	testwait.Eventually(t, 10*time.Second, "retried jobs ran again", func() bool {
		for _, id := range failed {
			if j := e.Job(id); j.Status != job.StatusFailed || j.Attempt != 2 {
				return false
			}
		}
		return true
	})
	if n := len(w.Received()); n != 7 {
		t.Errorf("worker received %d dispatches, want 7 (3 failed twice, 1 blocked)", n)
	}
	for body, want := range map[string]string{
		`{"action": "delete"}`:                    "want \"retry\" or \"cancel\"",
		`{"action": "retry", "status": "broken"}`: "unknown status",
	} {
		if code, got := call(t, "POST", e.URL+"/api/v1/jobs/bulk", body, nil); code != http.StatusBadRequest || !strings.Contains(errorOf(t, got), want) {
			t.Errorf("bulk %s: %d %s", body, code, got)
		}
	}
}
