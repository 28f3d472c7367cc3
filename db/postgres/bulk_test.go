package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// bulkFixture makes, for plugins p and q: two FAILED p jobs ("disk full",
// "Bad header"), one FAILED q job ("disk full"), one RUNNING p job held by
// w, two QUEUED p jobs and one COMPLETED p job. It returns them by name.
func bulkFixture(t *testing.T, fx fixture) map[string]int64 {
	t.Helper()
	fx.activate("p")
	fx.activate("q")
	ids := map[string]int64{}
	for _, name := range []string{"failDisk", "failHeader", "running", "done"} {
		ids[name] = fx.enqueue(t, "p", 9)
	}
	ids["qFail"] = fx.enqueue(t, "q", 9)
	claims := fx.claim(t, testNow, "w", 10, "p", "q")
	if len(claims) != 5 {
		t.Fatalf("claimed %d, want 5", len(claims))
	}
	ref := map[int64]job.Ref{}
	for _, c := range claims {
		ref[c.Ref.JobID] = c.Ref
	}
	fx.conclude(t, testNow,
		job.Conclusion{Ref: ref[ids["failDisk"]], Kind: job.ConcludeFail, Message: "write: disk full"},
		job.Conclusion{Ref: ref[ids["failHeader"]], Kind: job.ConcludeFail, Message: "Bad header in row 1"},
		job.Conclusion{Ref: ref[ids["qFail"]], Kind: job.ConcludeFail, Message: "DISK FULL"},
		job.Conclusion{Ref: ref[ids["done"]], Kind: job.ConcludeComplete})
	ids["queued1"] = fx.enqueue(t, "p", 0)
	ids["queued2"] = fx.enqueue(t, "p", 0)
	return ids
}

func listIDs(t *testing.T, fx fixture, f job.Filter) []int64 {
	t.Helper()
	page, err := fx.s.JobsList(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, j := range page.Jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

func TestJobs_ListFiltersByPathErrorAndKeyset(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ids := bulkFixture(t, fx)
		// Error text, ignoring case, on both backends.
		if got, want := listIDs(t, fx, job.Filter{Error: "disk FULL"}), []int64{ids["qFail"], ids["failDisk"]}; !slices.Equal(got, want) {
			t.Errorf("error filter: %v, want %v", got, want)
		}
		// LIKE's wildcards are plain characters in a filter.
		if got := listIDs(t, fx, job.Filter{Error: "%"}); len(got) != 0 {
			t.Errorf("error filter %%: %v, want none", got)
		}
		if got := listIDs(t, fx, job.Filter{Path: "IN/A.CSV", Plugin: "q"}); !slices.Equal(got, []int64{ids["qFail"]}) {
			t.Errorf("path and plugin filter: %v", got)
		}
		if got := listIDs(t, fx, job.Filter{Path: "nowhere"}); len(got) != 0 {
			t.Errorf("path filter nowhere: %v", got)
		}
		page, err := fx.s.JobsList(context.Background(), job.Filter{Path: "a.csv", Status: job.StatusFailed})
		if err != nil || page.Total != 3 {
			t.Errorf("count with a path filter: %d, %v; want 3", page.Total, err)
		}
		// Keyset: the page after the first two, newest first.
		all := listIDs(t, fx, job.Filter{})
		if got := listIDs(t, fx, job.Filter{Limit: 2, BeforeID: all[1]}); !slices.Equal(got, all[2:4]) {
			t.Errorf("page before %d: %v, want %v", all[1], got, all[2:4])
		}
	})
}

func TestJobs_BulkRetryAndCancel(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		ids := bulkFixture(t, fx)

		// A dry run counts and changes nothing.
		res, err := fx.s.JobsBulk(ctx, testNow, job.BulkRetry, job.Filter{Error: "disk full"}, true)
		if err != nil || res.Matched != 2 || res.Changed != 0 {
			t.Fatalf("dry retry: %+v, %v; want 2 matched", res, err)
		}
		if fx.get(t, ids["failDisk"]).Status != job.StatusFailed {
			t.Error("the dry run retried")
		}
		// Retry acts on FAILED jobs only, within the filter.
		res, err = fx.s.JobsBulk(ctx, testNow, job.BulkRetry, job.Filter{Plugin: "p"}, false)
		if err != nil || res.Changed != 2 {
			t.Fatalf("retry of p: %+v, %v; want 2 changed", res, err)
		}
		for name, want := range map[string]job.Status{"failDisk": job.StatusQueued, "failHeader": job.StatusQueued,
			"qFail": job.StatusFailed, "done": job.StatusCompleted, "running": job.StatusRunning} {
			if j := fx.get(t, ids[name]); j.Status != want || (want == job.StatusQueued && (j.ErrorMessage != "" || j.RetryCount != 0)) {
				t.Errorf("%s after the retry: %s %q retries %d, want %s, cleared", name, j.Status, j.ErrorMessage, j.RetryCount, want)
			}
		}

		// Cancel: the dry run counts waiting and running jobs.
		res, err = fx.s.JobsBulk(ctx, testNow, job.BulkCancel, job.Filter{Plugin: "p"}, true)
		if err != nil || res.Matched != 5 {
			t.Fatalf("dry cancel of p: %+v, %v; want 5 (4 QUEUED, 1 RUNNING)", res, err)
		}
		res, err = fx.s.JobsBulk(ctx, testNow, job.BulkCancel, job.Filter{Plugin: "p"}, false)
		if err != nil || res.Changed != 5 || len(res.Running) != 1 || res.Running[0].Claim.JobID != ids["running"] ||
			res.Running[0].Claim.Worker != "w" || res.Running[0].Claim.Attempt != 1 {
			t.Fatalf("cancel of p: %+v, %v", res, err)
		}
		for _, name := range []string{"failDisk", "failHeader", "queued1", "queued2"} {
			if j := fx.get(t, ids[name]); j.Status != job.StatusSkipped || j.ErrorMessage != db.CancelledMessage {
				t.Errorf("%s after the cancel: %s %q", name, j.Status, j.ErrorMessage)
			}
		}
		if j := fx.get(t, ids["running"]); j.Status != job.StatusRunning || !j.CancelRequested {
			t.Errorf("the running job after the cancel: %s, cancel requested %v", j.Status, j.CancelRequested)
		}
		// Marked once: a second cancel finds nothing left to do.
		if res, err := fx.s.JobsBulk(ctx, testNow, job.BulkCancel, job.Filter{Plugin: "p"}, false); err != nil || res.Changed != 0 {
			t.Errorf("second cancel: %+v, %v", res, err)
		}
		if _, err := fx.s.JobsBulk(ctx, testNow, "delete", job.Filter{}, true); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("unknown action: %v", err)
		}
	})
}

// Every order of the job list, on both backends: the whole list in order,
// then the same list in pages of two, each page after the previous page's
// last job (its cursor). Ties go by id in the list's direction; jobs
// without the time come last in both directions.
func TestJobs_ListSortsAndPagesByCursor(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		prio := []int64{5, 1, 5, 3, 1, 2}
		ids := make([]int64, len(prio))
		for i, p := range prio {
			ids[i] = fx.enqueue(t, "p", p)
		}
		claims := fx.claim(t, testNow, "w", 10, "p")
		ref := map[int64]job.Ref{}
		for _, c := range claims {
			ref[c.Ref.JobID] = c.Ref
		}
		// Ends: job 5 first, jobs 1 and 2 together, then job 0; 3 and 4
		// stay RUNNING, without an end time.
		end := func(at time.Duration, i ...int) {
			var cs []job.Conclusion
			for _, n := range i {
				cs = append(cs, job.Conclusion{Ref: ref[ids[n]], Kind: job.ConcludeComplete})
			}
			fx.conclude(t, testNow.Add(at), cs...)
		}
		end(time.Second, 5)
		end(2*time.Second, 1, 2)
		end(3*time.Second, 0)
		at := func(ns ...int) []int64 {
			out := make([]int64, len(ns))
			for i, n := range ns {
				out[i] = ids[n]
			}
			return out
		}
		for _, c := range []struct {
			sort job.Sort
			asc  bool
			want []int64
		}{
			{job.SortID, false, at(5, 4, 3, 2, 1, 0)},
			{job.SortID, true, at(0, 1, 2, 3, 4, 5)},
			{job.SortPriority, false, at(2, 0, 3, 5, 4, 1)},
			{job.SortPriority, true, at(1, 4, 5, 3, 0, 2)},
			{job.SortEnded, false, at(0, 2, 1, 5, 4, 3)},
			{job.SortEnded, true, at(5, 1, 2, 0, 3, 4)},
			{job.SortUpdated, false, at(0, 2, 1, 5, 4, 3)},
		} {
			name := fmt.Sprintf("%s asc=%v", c.sort, c.asc)
			f := job.Filter{Sort: c.sort, Ascending: c.asc}
			if got := listIDs(t, fx, f); !slices.Equal(got, c.want) {
				t.Errorf("%s: %v, want %v", name, got, c.want)
				continue
			}
			var paged []int64
			f.Limit = 2
			for range 5 {
				page, err := fx.s.JobsList(context.Background(), f)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if want := int64(len(c.want) - len(paged)); page.Total != want {
					t.Errorf("%s: total from the cursor on %d, want %d", name, page.Total, want)
				}
				for _, j := range page.Jobs {
					paged = append(paged, j.ID)
				}
				if len(page.Jobs) < f.Limit {
					break
				}
				cur := job.CursorOf(f, page.Jobs[len(page.Jobs)-1])
				// Through its text, as the API hands it out.
				back, err := job.ParseCursor(cur.String())
				if err != nil {
					t.Fatal(err)
				}
				f.After = &back
			}
			if !slices.Equal(paged, c.want) {
				t.Errorf("%s in pages of 2: %v, want %v", name, paged, c.want)
			}
		}
		// Filters hold with a sort and a cursor.
		f := job.Filter{Sort: job.SortPriority, Status: job.StatusRunning}
		if got := listIDs(t, fx, f); !slices.Equal(got, at(3, 4)) {
			t.Errorf("RUNNING by priority: %v", got)
		}
		if _, err := fx.s.JobsList(context.Background(), job.Filter{Sort: "size"}); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("unknown sort: %v, want ErrInvalid", err)
		}
	})
}
