package db

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func TestJobsList_FiltersAndPaginatesNewestFirst(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "a", "b")
	var ids []int64
	for i := 0; i < 7; i++ {
		ids = append(ids, enqueue(t, db, s.fv, []string{"a", "b"}[i%2], int64(i)))
	}
	claim(t, db, "w1", 1, "b") // b's highest priority job (ids[5]) is RUNNING
	ctx := context.Background()

	page, err := db.JobsList(ctx, job.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 7 || len(page.Jobs) != 7 || page.Jobs[0].ID != ids[6] || page.Jobs[6].ID != ids[0] {
		t.Fatalf("all jobs: total %d, got %d, first %d", page.Total, len(page.Jobs), page.Jobs[0].ID)
	}
	if got := page.Jobs[0].FilePath; got != "/data/in/a.csv" {
		t.Errorf("file path = %q, want /data/in/a.csv", got)
	}

	page, err = db.JobsList(ctx, job.Filter{Plugin: "a", Limit: 2, Offset: 1})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 4 || len(page.Jobs) != 2 || page.Jobs[0].ID != ids[4] || page.Jobs[1].ID != ids[2] {
		t.Errorf("plugin a, page 2 of size 2: total %d, jobs %+v", page.Total, jobIDs(page.Jobs))
	}

	page, err = db.JobsList(ctx, job.Filter{Status: job.StatusRunning})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || page.Jobs[0].ID != ids[5] || page.Jobs[0].ClaimedBy != "w1" {
		t.Errorf("running: total %d, jobs %v", page.Total, jobIDs(page.Jobs))
	}

	// A row another tool wrote with NULL status counts as QUEUED.
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status) VALUES (1, 'a', NULL)`)
	page, err = db.JobsList(ctx, job.Filter{Status: job.StatusQueued, Plugin: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 5 || page.Jobs[0].Status != job.StatusQueued {
		t.Errorf("queued a incl. NULL status: total %d, first %+v", page.Total, page.Jobs[0].Job)
	}

	if _, err := db.JobsList(ctx, job.Filter{Limit: -1}); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("negative limit: %v, want job.ErrInvalid", err)
	}
	if page, err := db.JobsList(ctx, job.Filter{Limit: job.MaxLimit * 10}); err != nil || len(page.Jobs) != 8 {
		t.Errorf("huge limit: %d jobs, %v", len(page.Jobs), err)
	}
}

func jobIDs(js []job.Info) []int64 {
	out := make([]int64, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

func TestJobGet_ReceiptAndNotFound(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	cl := claim(t, db, "w1", 1, "p")
	conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeComplete, Metrics: map[string]int64{"rows": 3},
		Artifacts: []map[string]string{{"topic": "output", "uri": "x"}}})
	j, err := db.JobGet(context.Background(), cl[0].Ref.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != job.StatusCompleted || j.Metrics["rows"] != 3 || j.Artifacts[0]["uri"] != "x" || j.UpdatedAt.IsZero() {
		t.Errorf("job = %+v", j)
	}
	if _, err := db.JobGet(context.Background(), 999); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("unknown job: %v, want job.ErrNotFound", err)
	}
}

func TestJobEnqueue_ByVersionOrPathAndRejectsBadInput(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "p")
	ctx := context.Background()
	id, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", Priority: 7,
		ConfigOverrides: `{"output": {"uri": "parquet://x.parquet"}}`})
	if err != nil {
		t.Fatal(err)
	}
	if j := getJob(t, db, id); j.Status != job.StatusQueued || j.Priority != 7 || j.FileVersionID != s.fv {
		t.Errorf("by version: %+v", j)
	}
	id, err = db.JobEnqueue(ctx, job.Submission{FilePath: "/data/in/a.csv", Plugin: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if j := getJob(t, db, id); j.FileVersionID != s.fv {
		t.Errorf("by path: version %d, want %d", j.FileVersionID, s.fv)
	}

	cases := []struct {
		name string
		sub  job.Submission
		want error
		msg  string
	}{
		{"no plugin", job.Submission{FileVersionID: s.fv}, job.ErrInvalid, "plugin"},
		{"no file", job.Submission{Plugin: "p"}, job.ErrInvalid, "file_version_id or file_path"},
		{"both files", job.Submission{FileVersionID: s.fv, FilePath: "/data/in/a.csv", Plugin: "p"}, job.ErrInvalid, "not both"},
		{"relative path", job.Submission{FilePath: "in/a.csv", Plugin: "p"}, job.ErrInvalid, "absolute"},
		{"bad overrides", job.Submission{FileVersionID: s.fv, Plugin: "p", ConfigOverrides: `{"output": 3}`}, job.ErrInvalid, "config_overrides"},
		{"overrides not json", job.Submission{FileVersionID: s.fv, Plugin: "p", ConfigOverrides: `{`}, job.ErrInvalid, "config_overrides"},
		{"unknown version", job.Submission{FileVersionID: 999, Plugin: "p"}, job.ErrNotFound, "999"},
		{"path outside roots", job.Submission{FilePath: "/elsewhere/a.csv", Plugin: "p"}, job.ErrNotFound, "no active source root"},
		{"unscanned path", job.Submission{FilePath: "/data/in/b.csv", Plugin: "p"}, job.ErrNotFound, "no recorded version"},
		{"climbing path", job.Submission{FilePath: "/data/../etc/passwd", Plugin: "p"}, job.ErrNotFound, "no active source root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.JobEnqueue(ctx, tc.sub)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestJobCancel_QueuedSkipsRunningIsMarkedOthersConflict(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "p")
	ctx := context.Background()
	queued := enqueue(t, db, s.fv, "p", 0)
	running := enqueue(t, db, s.fv, "p", 10)
	cl := claim(t, db, "w1", 1, "p")
	if cl[0].Ref.JobID != running {
		t.Fatalf("claimed %d, want %d", cl[0].Ref.JobID, running)
	}

	res, err := db.JobCancel(ctx, testNow, queued)
	if err != nil || res.Previous != job.StatusQueued || res.Status != job.StatusSkipped {
		t.Fatalf("cancel queued = %+v, %v", res, err)
	}
	if j := getJob(t, db, queued); j.Status != job.StatusSkipped || j.ErrorMessage != "cancelled by operator" {
		t.Errorf("cancelled queued job: %+v", j)
	}
	if again, err := db.JobCancel(ctx, testNow, queued); err != nil || again.Status != job.StatusSkipped {
		t.Errorf("cancelling twice = %+v, %v; want a no-op", again, err)
	}

	res, err = db.JobCancel(ctx, testNow, running)
	if err != nil || res.Previous != job.StatusRunning || res.Status != job.StatusRunning || res.Claim != cl[0].Ref {
		t.Fatalf("cancel running = %+v, %v", res, err)
	}
	if j, _ := db.JobGet(ctx, running); j.Status != job.StatusRunning || !j.CancelRequested {
		t.Errorf("running job after cancel: %s, cancel requested %v", j.Status, j.CancelRequested)
	}

	// The cancelled job can no longer be requeued, whatever the reason.
	if out := conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 5}); out[0] != job.OutcomeSkipped {
		t.Fatalf("requeue of a cancelled job = %v, want skipped", out[0])
	}
	if j := getJob(t, db, running); j.Status != job.StatusSkipped || j.ErrorMessage != "cancelled by operator (worker lost)" {
		t.Errorf("job = %s %q", j.Status, j.ErrorMessage)
	}

	if _, err := db.JobCancel(ctx, testNow, 999); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	done := enqueue(t, db, s.fv, "p", 0)
	c := claim(t, db, "w1", 1, "p")
	conclude(t, db, job.Conclusion{Ref: c[0].Ref, Kind: job.ConcludeComplete})
	if _, err := db.JobCancel(ctx, testNow, done); !errors.Is(err, job.ErrConflict) || !strings.Contains(err.Error(), "COMPLETED") {
		t.Errorf("cancel completed: %v, want job.ErrConflict naming the status", err)
	}
}

func TestJobsConclude_AbortSkipsOnlyCancelledJobs(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "p")
	a := enqueue(t, db, s.fv, "p", 10)
	b := enqueue(t, db, s.fv, "p", 0)
	cl := claim(t, db, "w1", 2, "p")
	if _, err := db.JobCancel(context.Background(), testNow, a); err != nil {
		t.Fatal(err)
	}
	out := conclude(t, db,
		job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeAbort, Message: "aborted: by request"},
		job.Conclusion{Ref: cl[1].Ref, Kind: job.ConcludeAbort, Message: "aborted: worker shutting down"})
	if out[0] != job.OutcomeSkipped || out[1] != job.OutcomeFailed {
		t.Fatalf("outcomes = %v, want skipped, failed", out)
	}
	if j := getJob(t, db, a); j.Status != job.StatusSkipped {
		t.Errorf("cancelled job = %s", j.Status)
	}
	if j := getJob(t, db, b); j.Status != job.StatusFailed || j.ErrorMessage != "aborted: worker shutting down" {
		t.Errorf("uncancelled aborted job = %s %q", j.Status, j.ErrorMessage)
	}
	// A late abort of a finished job is stale, like any other receipt.
	if out := conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeAbort}); out[0] != job.OutcomeStale {
		t.Errorf("late abort = %v", out[0])
	}
	if job.ConcludeAbort.String() != "abort" || job.OutcomeSkipped.String() != "skipped" {
		t.Error("names of the new kind and outcome")
	}
}

func TestJobRetry_FailedOnlyResetsRetriesKeepsAttempt(t *testing.T) {
	db := openTest(t)
	s := seedBasics(t, db, "p")
	ctx := context.Background()
	id := enqueue(t, db, s.fv, "p", 0)
	cl := claim(t, db, "w1", 1, "p")
	conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeRequeue, Message: "lost", MaxRetries: 0}) // gives up at once
	if j := getJob(t, db, id); j.Status != job.StatusFailed {
		t.Fatalf("job = %s, want FAILED", j.Status)
	}
	if err := db.JobRetry(ctx, testNow, id); err != nil {
		t.Fatal(err)
	}
	j := getJob(t, db, id)
	if j.Status != job.StatusQueued || j.RetryCount != 0 || j.Attempt != 1 || j.ErrorMessage != "" || j.ClaimedBy != "" {
		t.Errorf("retried job = %+v", j)
	}
	// The old claim's receipt stays stale; the new claim gets attempt 2.
	if out := conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeComplete}); out[0] != job.OutcomeStale {
		t.Errorf("old receipt after retry = %v", out[0])
	}
	if again := claim(t, db, "w2", 1, "p"); len(again) != 1 || again[0].Ref.Attempt != 2 {
		t.Errorf("re-claim = %+v", again)
	}
	if err := db.JobRetry(ctx, testNow, id); !errors.Is(err, job.ErrConflict) || !strings.Contains(err.Error(), "RUNNING") {
		t.Errorf("retry running: %v", err)
	}
	if err := db.JobRetry(ctx, testNow, 999); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("retry unknown: %v", err)
	}
}

func TestPluginsList_ActiveManifestVersionsAndSubscriptions(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.PluginManifestActivate(ctx, "p", "1.0", "v1", "", "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginManifestActivate(ctx, "p", "2.0", "v2", "env", "a2"); err != nil {
		t.Fatal(err)
	}
	tags, err := db.PluginSubscribe(ctx, "q", []string{"csv", " json "})
	if err != nil {
		t.Fatal(err)
	}
	if tags, err = db.PluginSubscribe(ctx, "q", []string{"csv", "parquet"}); err != nil || !reflect.DeepEqual(tags, []string{"csv", "json", "parquet"}) {
		t.Errorf("merged tags = %v, %v", tags, err)
	}
	plugins, err := db.PluginsList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plugins) != 2 || plugins[0].Name != "p" || plugins[1].Name != "q" {
		t.Fatalf("plugins = %+v", plugins)
	}
	p := plugins[0]
	if p.Active == nil || p.Active.Version != "2.0" || p.Active.EnvHash != "env" || len(p.Versions) != 2 ||
		p.Versions[1].Status != "SUPERSEDED" || p.Versions[1].EnvHash != "system" {
		t.Errorf("p = %+v", p)
	}
	if q := plugins[1]; q.Active != nil || !reflect.DeepEqual(q.SubscriptionTags, []string{"csv", "json", "parquet"}) {
		t.Errorf("q = %+v", q)
	}
	for _, bad := range [][]string{nil, {""}, {"a,b"}} {
		if _, err := db.PluginSubscribe(ctx, "q", bad); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("subscribe %q: %v, want job.ErrInvalid", bad, err)
		}
	}
}

func TestRoutingRulesSourcesAndIgnoreRules(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	id, err := db.RoutingRuleAdd(ctx, "*.csv", "csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := db.RoutingRuleAdd(ctx, "*.csv", "csv", 5); err != nil || again != id {
		t.Errorf("same rule again = %d, %v; want %d", again, err, id)
	}
	if _, err := db.RoutingRuleAdd(ctx, "data/**", "raw", 9); err != nil {
		t.Fatal(err)
	}
	rules, err := db.RoutingRules(ctx)
	if err != nil || len(rules) != 2 || rules[0].Tag != "raw" {
		t.Errorf("rules = %+v, %v", rules, err)
	}
	if _, err := db.RoutingRuleAdd(ctx, "", "x", 0); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("empty pattern: %v", err)
	}

	root, err := db.SourceRootAdd(ctx, "/data/in/")
	if err != nil || root.Path != "/data/in" || !root.Active {
		t.Fatalf("root = %+v, %v", root, err)
	}
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, `UPDATE cf_source_root SET active = 0`)
	if active, _ := db.SourceRootsActive(ctx); len(active) != 0 {
		t.Errorf("inactive root listed as active: %+v", active)
	}
	if again, err := db.SourceRootAdd(ctx, "/data/in"); err != nil || again.ID != root.ID {
		t.Errorf("reactivate = %+v, %v", again, err)
	}
	if active, _ := db.SourceRootsActive(ctx); len(active) != 1 {
		t.Errorf("reactivated root not active: %+v", active)
	}
	if _, err := db.SourceRootAdd(ctx, "relative"); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("relative root: %v", err)
	}

	if _, err := db.IgnoreRuleAdd(ctx, 0, "*.tmp"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.IgnoreRuleAdd(ctx, root.ID, "cache/"); err != nil {
		t.Fatal(err)
	}
	rawExec(t, raw, `INSERT INTO cf_ignore_rule (pattern, active) VALUES ('old', 0), ('legacy', NULL)`)
	ign, err := db.IgnoreRules(ctx)
	if err != nil || len(ign) != 3 || ign[0].RootID != 0 || ign[1].RootID != root.ID || ign[2].Pattern != "legacy" {
		t.Errorf("ignore rules = %+v, %v", ign, err)
	}
}

func TestScanPriority_ByAge(t *testing.T) {
	for age, want := range map[time.Duration]int64{time.Minute: 100, 30 * time.Hour: 50, 8 * 24 * time.Hour: 10} {
		if got := ScanPriority(age); got != want {
			t.Errorf("ScanPriority(%s) = %d, want %d", age, got, want)
		}
	}
}
