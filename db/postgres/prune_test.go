package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// pruneFixture is bulkFixture (FAILED p and q jobs, one RUNNING, two QUEUED
// and one COMPLETED, all concluded at testNow) and one SKIPPED job, cancelled
// at testNow.
func pruneFixture(t *testing.T, fx fixture) map[string]int64 {
	t.Helper()
	ids := bulkFixture(t, fx)
	ids["skipped"] = fx.enqueue(t, "p", 0)
	if _, err := fx.s.JobCancel(context.Background(), testNow, ids["skipped"]); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestJobs_PruneDeletesOnlyFinishedJobsOlderThanTheirRetention(t *testing.T) {
	t.Parallel()
	after, before := testNow.Add(time.Second), testNow.Add(-time.Second)
	all := []string{"failDisk", "failHeader", "qFail", "running", "done", "queued1", "queued2", "skipped"}
	cases := []struct {
		name        string
		prune       job.Prune
		limit       int
		want        job.PruneResult // deleted by one call, and counted by the dry run when limit is 0
		wantDry     job.PruneResult
		wantRemains []string
	}{
		{name: "CompletedOnly", prune: job.Prune{CompletedBefore: after},
			want: job.PruneResult{Completed: 1}, wantDry: job.PruneResult{Completed: 1},
			wantRemains: []string{"failDisk", "failHeader", "qFail", "running", "queued1", "queued2", "skipped"}},
		{name: "FailedAndSkipped", prune: job.Prune{FailedBefore: after},
			want: job.PruneResult{Failed: 4}, wantDry: job.PruneResult{Failed: 4},
			wantRemains: []string{"running", "done", "queued1", "queued2"}},
		{name: "NotOldEnough", prune: job.Prune{CompletedBefore: before, FailedBefore: before},
			wantRemains: all},
		{name: "NothingAsked", prune: job.Prune{}, wantRemains: all},
		{name: "LimitCoversBothKinds", prune: job.Prune{CompletedBefore: after, FailedBefore: after}, limit: 2,
			want: job.PruneResult{Completed: 1, Failed: 1}, wantDry: job.PruneResult{Completed: 1, Failed: 4}},
		{name: "EverythingFinished", prune: job.Prune{CompletedBefore: after.Add(time.Hour), FailedBefore: after.Add(time.Hour)},
			want: job.PruneResult{Completed: 1, Failed: 4}, wantDry: job.PruneResult{Completed: 1, Failed: 4},
			wantRemains: []string{"running", "queued1", "queued2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, fx fixture) {
				ctx := context.Background()
				ids := pruneFixture(t, fx)
				dry, err := fx.s.JobsPrune(ctx, tc.prune, 0, true)
				if err != nil {
					t.Fatal(err)
				}
				if dry != tc.wantDry {
					t.Errorf("dry run = %+v, want %+v", dry, tc.wantDry)
				}
				got, err := fx.s.JobsPrune(ctx, tc.prune, tc.limit, false)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("prune = %+v, want %+v", got, tc.want)
				}
				if tc.wantRemains == nil {
					return
				}
				var want, remains []int64
				for _, name := range tc.wantRemains {
					want = append(want, ids[name])
				}
				for _, name := range all {
					if _, err := fx.s.JobGet(ctx, ids[name]); err == nil {
						remains = append(remains, ids[name])
					}
				}
				sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
				sort.Slice(remains, func(i, j int) bool { return remains[i] < remains[j] })
				if len(want) != len(remains) {
					t.Fatalf("remaining jobs = %v, want %v", remains, want)
				}
				for i := range want {
					if want[i] != remains[i] {
						t.Fatalf("remaining jobs = %v, want %v", remains, want)
					}
				}
			})
		})
	}
}

func TestJobs_PruneInBatchesEndsWithNothingLeft(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		pruneFixture(t, fx)
		p := job.Prune{CompletedBefore: testNow.Add(time.Hour), FailedBefore: testNow.Add(time.Hour)}
		var total job.PruneResult
		for calls := 0; ; calls++ {
			if calls > 10 {
				t.Fatal("prune never ran out of jobs")
			}
			got, err := fx.s.JobsPrune(ctx, p, 2, false)
			if err != nil {
				t.Fatal(err)
			}
			total.Completed += got.Completed
			total.Failed += got.Failed
			if got.Total() < 2 {
				break
			}
		}
		if want := (job.PruneResult{Completed: 1, Failed: 4}); total != want {
			t.Errorf("pruned %+v in all, want %+v", total, want)
		}
		counts, err := fx.s.JobsCountByStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if counts[job.StatusQueued] != 2 || counts[job.StatusRunning] != 1 || counts[job.StatusCompleted]+counts[job.StatusFailed]+counts[job.StatusSkipped] != 0 {
			t.Errorf("counts after pruning = %v, want 2 QUEUED and 1 RUNNING only", counts)
		}
	})
}

func TestJobs_OldestQueuedAndEnqueueTimes(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		fx.activate("p")
		fx.activate("q")
		start := time.Now().Truncate(time.Millisecond)
		backedOff := fx.enqueue(t, "p", 9)
		p2 := fx.enqueue(t, "p", 0)
		q1 := fx.enqueue(t, "q", 0)
		end := time.Now()
		at, err := fx.s.JobsEnqueuedAt(ctx, []int64{backedOff, p2, q1, 999999})
		if err != nil {
			t.Fatal(err)
		}
		if len(at) != 3 {
			t.Fatalf("enqueue times = %v, want the three jobs' (not the missing one)", at)
		}
		for id, ts := range at {
			if ts.Before(start) || ts.After(end) {
				t.Errorf("job %d enqueued at %v, want within [%v, %v]", id, ts, start, end)
			}
		}
		// The p job with priority 9 is claimed and requeued with a backoff:
		// until it is due, p's oldest waiting job is p2.
		now := time.Now()
		claims := fx.claim(t, now, "w", 1, "p")
		if len(claims) != 1 || claims[0].Ref.JobID != backedOff {
			t.Fatalf("claims = %+v, want job %d", claims, backedOff)
		}
		// The claim returns the enqueue time (the enqueue-to-start metric).
		if !claims[0].EnqueuedAt.Equal(at[backedOff]) {
			t.Errorf("claim's enqueue time = %v, want %v", claims[0].EnqueuedAt, at[backedOff])
		}
		fx.conclude(t, now, job.Conclusion{Ref: claims[0].Ref, Kind: job.ConcludeRequeue, MaxRetries: 3, NextRunAt: now.Add(time.Hour)})
		ages := func(now time.Time) map[string]time.Time {
			got, err := fx.s.JobsOldestQueued(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]time.Time{}
			for _, a := range got {
				m[a.Plugin] = a.EnqueuedAt
			}
			return m
		}
		got := ages(now)
		if len(got) != 2 || !got["p"].Equal(at[p2]) || !got["q"].Equal(at[q1]) {
			t.Errorf("oldest queued now = %v, want p at %v, q at %v", got, at[p2], at[q1])
		}
		got = ages(now.Add(2 * time.Hour))
		if !got["p"].Equal(at[backedOff]) {
			t.Errorf("oldest queued once the backoff passed = %v, want p at %v", got, at[backedOff])
		}
		// An operator's retry is a fresh start: the job is enqueued again.
		qc := fx.claim(t, now, "w", 1, "q")
		fx.conclude(t, now, job.Conclusion{Ref: qc[0].Ref, Kind: job.ConcludeFail})
		retryAt := now.Add(time.Minute).Truncate(time.Millisecond)
		if err := fx.s.JobRetry(ctx, retryAt, q1); err != nil {
			t.Fatal(err)
		}
		if at, err = fx.s.JobsEnqueuedAt(ctx, []int64{q1}); err != nil || !at[q1].Equal(retryAt) {
			t.Errorf("retried job enqueued at %v (%v), want %v", at[q1], err, retryAt)
		}
		if qc = fx.claim(t, now, "w", 1, "q"); len(qc) != 1 || !qc[0].EnqueuedAt.Equal(retryAt) {
			t.Errorf("claim of the retried job = %+v, want it enqueued at %v", qc, retryAt)
		}
	})
}

// A backlog of old finished jobs (the bench's) prunes a batch at a time,
// each kind by its own cutoff, and only up to the cutoff.
func TestJobs_FinishedBacklogPrunesByKind(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		old, recent := testNow.Add(-48*time.Hour), testNow.Add(-time.Hour)
		for _, seed := range []struct {
			status job.Status
			ended  time.Time
			n      int
		}{{job.StatusCompleted, old, 1200}, {job.StatusCompleted, recent, 10}, {job.StatusFailed, old, 7}, {job.StatusSkipped, old, 3}} {
			if err := fx.s.JobsFinishedBulk(ctx, fx.fv, "p", seed.status, seed.ended, seed.n); err != nil {
				t.Fatal(err)
			}
		}
		if err := fx.s.JobsFinishedBulk(ctx, fx.fv, "p", job.StatusQueued, old, 1); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("a QUEUED backlog: %v, want job.ErrInvalid", err)
		}
		p := job.Prune{CompletedBefore: testNow.Add(-24 * time.Hour), FailedBefore: testNow.Add(-24 * time.Hour)}
		if dry, err := fx.s.JobsPrune(ctx, p, 0, true); err != nil || dry != (job.PruneResult{Completed: 1200, Failed: 10}) {
			t.Fatalf("dry run = %+v, %v", dry, err)
		}
		var batches []job.PruneResult
		for len(batches) < 10 {
			res, err := fx.s.JobsPrune(ctx, p, 500, false)
			if err != nil {
				t.Fatal(err)
			}
			batches = append(batches, res)
			if res.Total() < 500 {
				break
			}
		}
		want := []job.PruneResult{{Completed: 500}, {Completed: 500}, {Completed: 200, Failed: 10}}
		if fmt.Sprint(batches) != fmt.Sprint(want) {
			t.Errorf("batches = %v, want %v", batches, want)
		}
		if n, err := fx.s.JobsCountWithStatus(ctx, job.StatusCompleted); err != nil || n != 10 {
			t.Errorf("COMPLETED left = %d, %v; want the 10 recent ones", n, err)
		}
	})
}
