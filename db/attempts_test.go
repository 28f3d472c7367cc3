package db

import (
	"context"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// TestJobGet_ListsEveryAttempt runs one job through two requeues, a failure,
// an operator's retry and a completion: its detail lists the five attempts
// with their workers, outcomes and reasons, and a prune takes the history
// with the job.
func TestJobGet_ListsEveryAttempt(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	id := enqueue(t, db, s.fv, "p", 0)

	ends := []struct {
		worker string
		c      job.Conclusion
	}{
		{"w1", job.Conclusion{Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 5}},
		{"w2", job.Conclusion{Kind: job.ConcludeRequeue, Message: "busy", MaxRetries: 5}},
		{"w1", job.Conclusion{Kind: job.ConcludeFail, Message: "bad row 7"}},
	}
	for i, e := range ends {
		cl := claim(t, db, e.worker, 1, "p")
		if len(cl) != 1 {
			t.Fatalf("attempt %d: claimed %d", i+1, len(cl))
		}
		e.c.Ref = cl[0].Ref
		if out := conclude(t, db, e.c); out[0] == job.OutcomeStale {
			t.Fatalf("attempt %d: stale", i+1)
		}
	}
	// A stale receipt for the failed attempt records nothing.
	conclude(t, db, job.Conclusion{Ref: job.Ref{JobID: id, Worker: "w1", Attempt: 3}, Kind: job.ConcludeFail, Message: "late"})
	if err := db.JobRetry(ctx, time.Now(), id); err != nil {
		t.Fatal(err)
	}
	cl := claim(t, db, "w3", 1, "p")
	if len(cl) != 1 {
		t.Fatal("retried job not claimed")
	}
	info, err := db.JobGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(info.Attempts); n != 4 || info.Attempts[3].Outcome != "RUNNING" || !info.Attempts[3].EndTime.IsZero() {
		t.Fatalf("while attempt 4 runs: %+v", info.Attempts)
	}
	conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeComplete, Message: "done"})

	info, err = db.JobGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ worker, outcome, msg string }{
		{"w1", "REQUEUED", "worker lost"},
		{"w2", "REQUEUED", "busy"},
		{"w1", "FAILED", "bad row 7"},
		{"w3", "COMPLETED", "done"},
	}
	if len(info.Attempts) != len(want) {
		t.Fatalf("attempts = %+v", info.Attempts)
	}
	for i, w := range want {
		a := info.Attempts[i]
		if a.Attempt != int64(i+1) || a.Worker != w.worker || a.Outcome != w.outcome || a.Message != w.msg ||
			a.ClaimTime.IsZero() || a.EndTime.IsZero() || a.EndTime.Before(a.ClaimTime) {
			t.Errorf("attempt %d = %+v, want %+v", i+1, a, w)
		}
	}

	if _, err := db.JobsPrune(ctx, job.Prune{CompletedBefore: time.Now().Add(time.Hour)}, 0, false); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.reader.QueryRowContext(ctx, `SELECT count(*) FROM sentinel_job_attempts WHERE job_id = ?`, id).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d attempts left after the job was pruned", left)
	}
}
