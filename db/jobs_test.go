package db

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestJobGet_NotFound(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	if _, err := db.JobGet(context.Background(), 42); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("err = %v, want job.ErrNotFound", err)
	}
}

func TestJobEnqueue_ValidatesInput(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	ctx := context.Background()
	if _, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", ConfigOverrides: "{not json"}); err == nil {
		t.Error("invalid overrides accepted")
	}
	if _, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: ""}); err == nil {
		t.Error("empty plugin accepted")
	}
	// foreign_keys=ON: a job must name an existing file version.
	if _, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: 12345, Plugin: "p"}); err == nil {
		t.Error("job for a missing file version accepted")
	}
	id, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", Priority: 3, ConfigOverrides: `{"output": {"uri": "x://y"}}`})
	if err != nil {
		t.Fatal(err)
	}
	j := getJob(t, db, id)
	if j.Status != job.StatusQueued || j.Priority != 3 || j.PluginName != "p" || j.FileVersionID != s.fv || j.ConfigOverrides == "" {
		t.Errorf("job = %+v", j)
	}
}

func TestJobsList_FiltersAndPaginatesNewestFirst(t *testing.T) {
	t.Parallel()
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

func TestJobGet_ReceiptAndNotFound(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

func TestJobRetry_FailedOnlyResetsRetriesKeepsAttempt(t *testing.T) {
	t.Parallel()
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

func jobIDs(js []job.Info) []int64 {
	out := make([]int64, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}
