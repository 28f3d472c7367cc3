package db

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func TestJobsClaim_PriorityThenIDOrder(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	low := enqueue(t, db, s.fv, "p", 10)
	highOld := enqueue(t, db, s.fv, "p", 100)
	mid := enqueue(t, db, s.fv, "p", 50)
	highNew := enqueue(t, db, s.fv, "p", 100)

	got := claimIDs(claim(t, db, "w1", 10, "p"))
	want := []int64{highOld, highNew, mid, low}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claim order = %v, want %v", got, want)
	}
}

func TestJobsClaim_RespectsLimit(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	var ids []int64
	for range 5 {
		ids = append(ids, enqueue(t, db, s.fv, "p", 0))
	}
	if got := claimIDs(claim(t, db, "w1", 2, "p")); !reflect.DeepEqual(got, ids[:2]) {
		t.Errorf("first claim = %v, want %v", got, ids[:2])
	}
	if got := claimIDs(claim(t, db, "w1", 0, "p")); len(got) != 0 {
		t.Errorf("limit 0 claimed %v", got)
	}
	if got := claimIDs(claim(t, db, "w2", 10, "p")); !reflect.DeepEqual(got, ids[2:]) {
		t.Errorf("second claim = %v, want %v", got, ids[2:])
	}
	if got := claim(t, db, "w3", 10, "p"); len(got) != 0 {
		t.Errorf("empty queue claimed %v", claimIDs(got))
	}
}

func TestJobsClaim_PluginFilterAndWildcard(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "a", "b", "c")
	ja := enqueue(t, db, s.fv, "a", 0)
	jb := enqueue(t, db, s.fv, "b", 0)
	jc := enqueue(t, db, s.fv, "c", 5)

	if got := claimIDs(claim(t, db, "w1", 10, "b", "b", "")); !reflect.DeepEqual(got, []int64{jb}) {
		t.Errorf("plugin b claimed %v, want [%d]", got, jb)
	}
	if got := claimIDs(claim(t, db, "w2", 10, "nothing")); len(got) != 0 {
		t.Errorf("unknown plugin claimed %v", got)
	}
	if got := claimIDs(claim(t, db, "w3", 10)); len(got) != 0 {
		t.Errorf("no plugins claimed %v", got)
	}
	if got := claimIDs(claim(t, db, "w4", 10, "x", "*")); !reflect.DeepEqual(got, []int64{jc, ja}) {
		t.Errorf("wildcard claimed %v, want [%d %d]", got, jc, ja)
	}
}

func TestJobsClaim_SkipsPluginsNobodyRuns(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "orphan", "p")
	// The highest-priority, oldest job belongs to a plugin no worker runs.
	orphan := enqueue(t, db, s.fv, "orphan", 1000)
	j1 := enqueue(t, db, s.fv, "p", 1)
	j2 := enqueue(t, db, s.fv, "p", 1)

	got := claimIDs(claim(t, db, "w1", 10, "p"))
	if !reflect.DeepEqual(got, []int64{j1, j2}) {
		t.Errorf("claimed %v, want [%d %d]", got, j1, j2)
	}
	if j := getJob(t, db, orphan); j.Status != job.StatusQueued || j.ClaimedBy != "" {
		t.Errorf("orphan job = %s claimed by %q, want QUEUED and unclaimed", j.Status, j.ClaimedBy)
	}
}

func TestJobsClaim_SkipsJobsNotYetDue(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	later := enqueue(t, db, s.fv, "p", 100)
	due := enqueue(t, db, s.fv, "p", 100)
	now := enqueue(t, db, s.fv, "p", 0)
	rawExec(t, db.writer,
		fmt.Sprintf(`UPDATE cf_processing_queue SET next_run_at = %d WHERE id = %d`, testNow.Add(time.Minute).UnixMilli(), later),
		fmt.Sprintf(`UPDATE cf_processing_queue SET next_run_at = %d WHERE id = %d`, testNow.UnixMilli(), due))

	if got := claimIDs(claim(t, db, "w1", 10, "p")); !reflect.DeepEqual(got, []int64{due, now}) {
		t.Errorf("claimed %v, want [%d %d]", got, due, now)
	}
	next, ok, err := db.JobsNextRunAt(context.Background(), testNow)
	if err != nil || !ok || !next.Equal(testNow.Add(time.Minute)) {
		t.Errorf("JobsNextRunAt = %v, %v, %v; want %v", next, ok, err, testNow.Add(time.Minute))
	}
	// Once due, it is claimable.
	claims, _, err := db.JobsClaim(context.Background(), testNow.Add(time.Minute), []job.ClaimRequest{{Worker: "w1", Plugins: []string{"p"}, Limit: 10}})
	if err != nil || !reflect.DeepEqual(claimIDs(claims), []int64{later}) {
		t.Errorf("claim when due = %v, %v; want [%d]", claimIDs(claims), err, later)
	}
	if _, ok, err := db.JobsNextRunAt(context.Background(), testNow); ok || err != nil {
		t.Errorf("JobsNextRunAt with nothing waiting = %v, %v", ok, err)
	}
}

func TestJobsClaim_MarksRowsRunning(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	id := enqueue(t, db, s.fv, "p", 7)
	claims := claim(t, db, "worker-A", 1, "p")
	if len(claims) != 1 {
		t.Fatalf("claimed %d jobs, want 1", len(claims))
	}
	c := claims[0]
	if c.Ref != (job.Ref{JobID: id, Worker: "worker-A", Attempt: 1}) || c.Priority != 7 || c.RetryCount != 0 {
		t.Errorf("claim = %+v", c)
	}
	j := getJob(t, db, id)
	if j.Status != job.StatusRunning || j.ClaimedBy != "worker-A" || j.WorkerHost != "worker-A" || j.Attempt != 1 || !j.ClaimTime.Equal(testNow) {
		t.Errorf("job after claim = %+v", j)
	}
	running, err := db.JobsRunning(context.Background(), "worker-A")
	want := []job.Running{{Ref: c.Ref, RetryCount: 0, ClaimTime: testNow}}
	if err != nil || len(running) != 1 || running[0].Ref != want[0].Ref || !running[0].ClaimTime.Equal(testNow) {
		t.Errorf("JobsRunning = %v, %v; want %v", running, err, want)
	}
}

func TestJobsClaim_ReclaimIncrementsAttempt(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	id := enqueue(t, db, s.fv, "p", 0)
	first := claim(t, db, "w1", 1, "p")[0]
	if out := conclude(t, db, job.Conclusion{Ref: first.Ref, Kind: job.ConcludeRequeue, Message: "worker gone", MaxRetries: 5}); out[0] != job.OutcomeRequeued {
		t.Fatalf("requeue = %v", out[0])
	}
	second := claim(t, db, "w2", 1, "p")[0]
	if second.Ref != (job.Ref{JobID: id, Worker: "w2", Attempt: 2}) || second.RetryCount != 1 {
		t.Errorf("second claim = %+v", second)
	}
	// The first claim is fenced off.
	if out := conclude(t, db, job.Conclusion{Ref: first.Ref, Kind: job.ConcludeComplete}); out[0] != job.OutcomeStale {
		t.Errorf("conclusion with old attempt = %v, want stale", out[0])
	}
}

func TestJobsClaim_SeveralRequestsNeverShareAJob(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p", "q")
	for i := range 6 {
		enqueue(t, db, s.fv, []string{"p", "q"}[i%2], int64(i))
	}
	claims, failures, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{
		{Worker: "w1", Plugins: []string{"*"}, Limit: 2},
		{Worker: "w2", Plugins: []string{"p"}, Limit: 5},
		{Worker: "w3", Plugins: []string{"q", "p"}, Limit: 5},
	})
	if err != nil || len(failures) != 0 {
		t.Fatal(err, failures)
	}
	seen := make(map[int64]string)
	perWorker := make(map[string]int)
	for _, c := range claims {
		if w, dup := seen[c.Ref.JobID]; dup {
			t.Errorf("job %d claimed by %s and %s", c.Ref.JobID, w, c.Ref.Worker)
		}
		seen[c.Ref.JobID] = c.Ref.Worker
		perWorker[c.Ref.Worker]++
	}
	if len(seen) != 6 || perWorker["w1"] != 2 || perWorker["w2"]+perWorker["w3"] != 4 {
		t.Errorf("claims per worker = %v", perWorker)
	}
}

func TestJobsClaim_RejectsEmptyWorker(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	if _, _, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{{Plugins: []string{"*"}, Limit: 1}}); err == nil {
		t.Error("claim without a worker identity succeeded")
	}
}

func TestJobsClaim_FailsJobsWhoseDispatchCannotBeAssembled(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	noManifest := enqueue(t, db, s.fv, "ghost", 0)
	badJSON := insertJob(t, db, s.fv, "p", `{"output": 42}`)
	good := enqueue(t, db, s.fv, "p", 0)
	// Broken chains, written by a tool that does not enforce foreign keys.
	// (A NULL file_version_id can no longer be written: the original's
	// NOT NULL holds since migration 0006.)
	raw := rawOpen(t, db.Path())
	rawExec(t, raw,
		`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count) VALUES
			(100, 999, 'p', 'QUEUED', 0, 0),
			(102, 50, 'p', 'QUEUED', 0, 0),
			(103, 51, 'p', 'QUEUED', 0, 0)`,
		`INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time) VALUES (50, 777, 'hash-a', 1, '2024-01-01 00:00:00')`,
		`INSERT INTO cf_file_location (id, source_root_id, rel_path, filename) VALUES (60, 888, 'x.csv', 'x.csv')`,
		`INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time) VALUES (51, 60, 'hash-a', 1, '2024-01-01 00:00:00')`,
		`UPDATE cf_processing_queue SET config_overrides = 'not json' WHERE id = 100`)
	rawExec(t, raw, `INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, config_overrides) VALUES (104, 1, 'p', 'QUEUED', '{"x": [')`,
		fmt.Sprintf(`INSERT INTO cf_file_location (id, source_root_id, rel_path, filename) VALUES (61, %d, '../../etc/passwd', 'passwd')`, s.root),
		`INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time) VALUES (52, 61, 'hash-a', 1, '2024-01-01 00:00:00')`,
		`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status) VALUES (105, 52, 'p', 'QUEUED')`)

	claims, failures, err := db.JobsClaim(ctx, testNow, []job.ClaimRequest{{Worker: "w1", Plugins: []string{"*"}, Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if got := claimIDs(claims); !reflect.DeepEqual(got, []int64{good}) {
		t.Errorf("good claims = %v, want [%d]", got, good)
	}
	wantReasons := map[int64]string{
		noManifest: `dispatch: no ACTIVE manifest for plugin "ghost"`,
		badJSON:    `dispatch: invalid config_overrides topic "output"`,
		100:        "dispatch: file version 999 not found",
		102:        "dispatch: file version 50 has no file location",
		103:        "dispatch: file location 60 of version 51 has no source root",
		104:        "dispatch: invalid config_overrides",
		105:        `dispatch: rel_path "../../etc/passwd" of file location 61 leaves its source root`,
	}
	if len(failures) != len(wantReasons) {
		t.Errorf("got %d failures, want %d: %+v", len(failures), len(wantReasons), failures)
	}
	for _, f := range failures {
		want, ok := wantReasons[f.Ref.JobID]
		if !ok || !strings.HasPrefix(f.Reason, want) {
			t.Errorf("failure of job %d = %q, want prefix %q", f.Ref.JobID, f.Reason, want)
			continue
		}
		j := getJob(t, db, f.Ref.JobID)
		if j.Status != job.StatusFailed || j.ErrorMessage != f.Reason || j.EndTime.IsZero() || f.Ref.Worker != "w1" || f.Ref.Attempt != 1 {
			t.Errorf("job %d after failed dispatch = %+v (ref %+v)", f.Ref.JobID, j, f.Ref)
		}
	}
	if refs, _ := runningRefs(db.JobsRunning(ctx, "")); len(refs) != 1 {
		t.Errorf("RUNNING jobs = %v, want only %d", refs, good)
	}
}

func TestJobsClaim_NormalisesNullsFromOtherTools(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, fmt.Sprintf(`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count)
		VALUES (1, %[1]d, 'p', NULL, NULL, NULL), (2, %[1]d, 'p', 'QUEUED', 5, NULL), (3, %[1]d, 'p', 'QUEUED', NULL, 2)`, s.fv))
	counts, err := db.JobsCountByStatus(context.Background())
	if err != nil || counts[job.StatusQueued] != 3 {
		t.Errorf("counts before claim = %v, %v; want 3 QUEUED", counts, err)
	}
	claims := claim(t, db, "w1", 10, "p")
	if got := claimIDs(claims); !reflect.DeepEqual(got, []int64{2, 1, 3}) {
		t.Errorf("claimed %v, want [2 1 3]", got)
	}
	if claims[2].RetryCount != 2 || claims[1].Priority != 0 || claims[1].RetryCount != 0 {
		t.Errorf("claims = %+v", claims)
	}
}

func TestJobsClaim_AtomicUnderConcurrentCallers(t *testing.T) {
	const (
		// 1,000 jobs: each of the 12 claimers still takes some 14
		// batches (limits 1 to 12), all of them at once; 2,000 only
		// doubled the rounds of the same race.
		jobs       = 1000
		separate   = 8 // own Open each, like separate processes
		sharedGoes = 4 // goroutines sharing one DB
	)
	path := testPath(t)
	main := openAt(t, path)
	s := seedBasics(t, main, "p", "q")
	ctx := context.Background()
	// The same jobs as enqueueing job i with plugin p or q (i%2) and
	// priority i%7, in 14 transactions rather than 1,000: the enqueue is
	// not what this test is about, and one transaction per job cost most
	// of its CPU under the race detector.
	perGroup := map[[2]int]int{}
	for i := range jobs {
		perGroup[[2]int{i % 2, i % 7}]++
	}
	for g, n := range perGroup {
		if err := main.JobsEnqueueBulk(ctx, s.fv, []string{"p", "q"}[g[0]], int64(g[1]), n); err != nil {
			t.Fatal(err)
		}
	}
	if counts, err := main.JobsCountByStatus(ctx); err != nil || counts[job.StatusQueued] != jobs {
		t.Fatalf("counts after enqueue = %v, %v; want %d QUEUED", counts, err, jobs)
	}

	type claimer struct {
		db      *DB
		worker  string
		plugins []string
	}
	var claimers []claimer
	for i := range separate {
		claimers = append(claimers, claimer{openAt(t, path), fmt.Sprintf("proc-%d", i), [][]string{{"*"}, {"p"}, {"q", "p"}}[i%3]})
	}
	for i := range sharedGoes {
		claimers = append(claimers, claimer{main, fmt.Sprintf("shared-%d", i), []string{"*"}})
	}

	var mu sync.Mutex
	owner := make(map[int64]string, jobs)
	var dups []string
	errs := make(chan error, len(claimers))
	var wg sync.WaitGroup
	for n, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit := 1 + n%16
			for {
				claims, failures, err := c.db.JobsClaim(ctx, testNow, []job.ClaimRequest{{Worker: c.worker, Plugins: c.plugins, Limit: limit}})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", c.worker, err)
					return
				}
				if len(failures) > 0 {
					errs <- fmt.Errorf("%s: failures %+v", c.worker, failures)
					return
				}
				if len(claims) == 0 {
					return
				}
				mu.Lock()
				for _, cl := range claims {
					if prev, ok := owner[cl.Ref.JobID]; ok {
						dups = append(dups, fmt.Sprintf("job %d: %s and %s", cl.Ref.JobID, prev, c.worker))
					}
					owner[cl.Ref.JobID] = c.worker
				}
				mu.Unlock()
				cs := make([]job.Conclusion, len(claims))
				for i, cl := range claims {
					cs[i] = job.Conclusion{Ref: cl.Ref, Kind: job.ConcludeComplete}
				}
				out, err := c.db.JobsConclude(ctx, testNow, cs)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", c.worker, err)
					return
				}
				for i, o := range out {
					if o != job.OutcomeCompleted {
						errs <- fmt.Errorf("%s: job %d concluded %v", c.worker, cs[i].Ref.JobID, o)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(dups) > 0 {
		t.Fatalf("%d jobs claimed twice, e.g. %s", len(dups), dups[0])
	}
	if len(owner) != jobs {
		t.Errorf("claimed %d distinct jobs, want %d", len(owner), jobs)
	}
	counts, err := main.JobsCountByStatus(ctx)
	if err != nil || counts[job.StatusCompleted] != jobs || len(counts) != 1 {
		t.Errorf("counts = %v, %v; want %d COMPLETED", counts, err, jobs)
	}
}

func TestJobsConclude_AppliesEachKind(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	for range 4 {
		enqueue(t, db, s.fv, "p", 0)
	}
	cl := claim(t, db, "w1", 4, "p")
	metrics := map[string]int64{"rows": 12, "size_bytes": 3456}
	artifacts := []map[string]string{{"topic": "output", "uri": "parquet://out/a.parquet"}}
	next := testNow.Add(30 * time.Second)
	out := conclude(t, db,
		job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeComplete, Metrics: metrics, Artifacts: artifacts},
		job.Conclusion{Ref: cl[1].Ref, Kind: job.ConcludeFail, Message: "boom"},
		job.Conclusion{Ref: cl[2].Ref, Kind: job.ConcludeRequeue, Message: "worker rejected", MaxRetries: 5, NextRunAt: next},
		job.Conclusion{Ref: cl[3].Ref, Kind: job.ConcludeComplete, Message: "wrote 12 rows"},
	)
	if want := []job.Outcome{job.OutcomeCompleted, job.OutcomeFailed, job.OutcomeRequeued, job.OutcomeCompleted}; !reflect.DeepEqual(out, want) {
		t.Fatalf("outcomes = %v, want %v", out, want)
	}

	done := getJob(t, db, cl[0].Ref.JobID)
	if done.Status != job.StatusCompleted || done.ResultSummary != "Success" || !done.EndTime.Equal(testNow) ||
		!reflect.DeepEqual(done.Metrics, metrics) || !reflect.DeepEqual(done.Artifacts, artifacts) {
		t.Errorf("completed job = %+v", done)
	}
	if j := getJob(t, db, cl[3].Ref.JobID); j.ResultSummary != "wrote 12 rows" || j.Metrics != nil || j.Artifacts != nil {
		t.Errorf("completed job with message = %+v", j)
	}
	failed := getJob(t, db, cl[1].Ref.JobID)
	if failed.Status != job.StatusFailed || failed.ErrorMessage != "boom" || !failed.EndTime.Equal(testNow) {
		t.Errorf("failed job = %+v", failed)
	}
	requeued := getJob(t, db, cl[2].Ref.JobID)
	if requeued.Status != job.StatusQueued || requeued.RetryCount != 1 || requeued.ClaimedBy != "" ||
		requeued.ErrorMessage != "worker rejected" || requeued.Attempt != 1 {
		t.Errorf("requeued job = %+v", requeued)
	}
	if at, ok, err := db.JobsNextRunAt(context.Background(), testNow); err != nil || !ok || !at.Equal(next) {
		t.Errorf("JobsNextRunAt = %v, %v, %v; want %v", at, ok, err, next)
	}
	if refs, err := db.JobsRunning(context.Background(), ""); err != nil || len(refs) != 0 {
		t.Errorf("still RUNNING: %v, %v", refs, err)
	}
}

func TestJobsConclude_StaleClaimsChangeNothing(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	enqueue(t, db, s.fv, "p", 0)
	cl := claim(t, db, "w1", 2, "p")
	running, failed := cl[0].Ref, cl[1].Ref
	if out := conclude(t, db, job.Conclusion{Ref: failed, Kind: job.ConcludeFail, Message: "first word"}); out[0] != job.OutcomeFailed {
		t.Fatalf("fail = %v", out[0])
	}
	beforeRunning, beforeFailed := getJob(t, db, running.JobID), getJob(t, db, failed.JobID)

	wrongWorker, wrongAttempt, missing := running, running, running
	wrongWorker.Worker = "w2"
	wrongAttempt.Attempt = 2
	missing.JobID = 9999
	var cs []job.Conclusion
	for _, ref := range []job.Ref{wrongWorker, wrongAttempt, missing, failed} {
		for _, kind := range []job.ConclusionKind{job.ConcludeComplete, job.ConcludeFail, job.ConcludeRequeue} {
			cs = append(cs, job.Conclusion{Ref: ref, Kind: kind, Message: "late", MaxRetries: 5})
		}
	}
	for i, o := range conclude(t, db, cs...) {
		if o != job.OutcomeStale {
			t.Errorf("conclusion %d (%+v) = %v, want stale", i, cs[i], o)
		}
	}
	if got := getJob(t, db, running.JobID); !reflect.DeepEqual(got, beforeRunning) {
		t.Errorf("RUNNING job changed:\n%+v\n%+v", beforeRunning, got)
	}
	if got := getJob(t, db, failed.JobID); !reflect.DeepEqual(got, beforeFailed) {
		t.Errorf("FAILED job changed (must never become COMPLETED):\n%+v\n%+v", beforeFailed, got)
	}

	// A duplicate receipt in one batch: the first applies, the second is stale.
	out := conclude(t, db, job.Conclusion{Ref: running, Kind: job.ConcludeComplete}, job.Conclusion{Ref: running, Kind: job.ConcludeFail})
	if !reflect.DeepEqual(out, []job.Outcome{job.OutcomeCompleted, job.OutcomeStale}) {
		t.Errorf("duplicate conclusions = %v", out)
	}
	if j := getJob(t, db, running.JobID); j.Status != job.StatusCompleted {
		t.Errorf("job = %s, want COMPLETED", j.Status)
	}
}

func TestJobsConclude_RequeueOverMaxRetriesFails(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	id := enqueue(t, db, s.fv, "p", 0)
	const maxRetries = 3
	for i := 1; ; i++ {
		cl := claim(t, db, "w1", 1, "p")
		if len(cl) != 1 {
			t.Fatalf("round %d: claimed %d", i, len(cl))
		}
		out := conclude(t, db, job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeRequeue, Message: "rejected", MaxRetries: maxRetries})
		if i <= maxRetries {
			if out[0] != job.OutcomeRequeued {
				t.Fatalf("round %d: %v, want requeued", i, out[0])
			}
			continue
		}
		if out[0] != job.OutcomeFailed {
			t.Fatalf("round %d: %v, want failed", i, out[0])
		}
		break
	}
	j := getJob(t, db, id)
	if j.Status != job.StatusFailed || j.ErrorMessage != "rejected (gave up after 3 retries)" || j.RetryCount != maxRetries || j.Attempt != maxRetries+1 {
		t.Errorf("job = %+v", j)
	}
}

func TestJobsConclude_BatchOf500InOneCall(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	for range 500 {
		enqueue(t, db, s.fv, "p", 0)
	}
	cl := claim(t, db, "w1", 500, "p")
	if len(cl) != 500 {
		t.Fatalf("claimed %d", len(cl))
	}
	cs := make([]job.Conclusion, len(cl))
	for i, c := range cl {
		cs[i] = job.Conclusion{Ref: c.Ref, Kind: []job.ConclusionKind{job.ConcludeComplete, job.ConcludeFail, job.ConcludeRequeue}[i%3], Message: "m", MaxRetries: 1}
	}
	out := conclude(t, db, cs...)
	for i, o := range out {
		want := []job.Outcome{job.OutcomeCompleted, job.OutcomeFailed, job.OutcomeRequeued}[i%3]
		if o != want {
			t.Fatalf("outcome %d = %v, want %v", i, o, want)
		}
	}
	counts, err := db.JobsCountByStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[job.Status]int64{job.StatusCompleted: 167, job.StatusFailed: 167, job.StatusQueued: 166}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("counts = %v, want %v", counts, want)
	}
}

func TestJobsConclude_RejectsUnknownKindBeforeWriting(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	cl := claim(t, db, "w1", 1, "p")
	_, err := db.JobsConclude(context.Background(), testNow, []job.Conclusion{{Ref: cl[0].Ref, Kind: job.ConcludeComplete}, {Ref: cl[0].Ref}})
	if err == nil {
		t.Fatal("unknown kind accepted")
	}
	if j := getJob(t, db, cl[0].Ref.JobID); j.Status != job.StatusRunning {
		t.Errorf("job = %s, want still RUNNING", j.Status)
	}
	if out, err := db.JobsConclude(context.Background(), testNow, nil); err != nil || len(out) != 0 {
		t.Errorf("empty batch = %v, %v", out, err)
	}
}

func TestJobsRunning_FiltersByWorkerAndKeepsLegacyRows(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	for range 3 {
		enqueue(t, db, s.fv, "p", 0)
	}
	a := claim(t, db, "a", 2, "p")
	b := claim(t, db, "b", 1, "p")
	// A RUNNING row left by the original Sentinel: no claimed_by, no attempt.
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, fmt.Sprintf(`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, worker_host)
		VALUES (500, %d, 'p', 'RUNNING', 'old-host')`, s.fv))
	ctx := context.Background()

	if refs, err := runningRefs(db.JobsRunning(ctx, "a")); err != nil || !reflect.DeepEqual(refs, []job.Ref{a[0].Ref, a[1].Ref}) {
		t.Errorf("JobsRunning(a) = %v, %v", refs, err)
	}
	all, err := runningRefs(db.JobsRunning(ctx, ""))
	legacy := job.Ref{JobID: 500}
	if err != nil || !reflect.DeepEqual(all, []job.Ref{a[0].Ref, a[1].Ref, b[0].Ref, legacy}) {
		t.Errorf("JobsRunning() = %v, %v", all, err)
	}
	// The legacy row can be requeued through the ref JobsRunning gave.
	out := conclude(t, db, job.Conclusion{Ref: legacy, Kind: job.ConcludeRequeue, Message: "orphaned by restart", MaxRetries: 5})
	if out[0] != job.OutcomeRequeued {
		t.Errorf("legacy requeue = %v", out[0])
	}
}

func TestOutcomeAndKind_String(t *testing.T) {
	t.Parallel()
	if job.OutcomeStale.String() != "stale" || job.ConcludeRequeue.String() != "requeue" || job.Outcome(0).String() != "Outcome(0)" {
		t.Error("String methods")
	}
}

// runningRefs keeps only the claims of JobsRunning's rows.
func runningRefs(rows []job.Running, err error) ([]job.Ref, error) {
	var refs []job.Ref
	for _, r := range rows {
		refs = append(refs, r.Ref)
	}
	return refs, err
}

// TestJobsBatch_ConcludesThenClaimsInOneTransaction checks the order inside a
// batch: the conclusions are applied first, so a job requeued (and due) is
// claimable by the same call, a job just completed is not, and a failed batch
// changes nothing at all.
func TestJobsBatch_ConcludesThenClaimsInOneTransaction(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	first := enqueue(t, db, s.fv, "p", 10)
	second := enqueue(t, db, s.fv, "p", 10)
	cl := claim(t, db, "w1", 2, "p")
	waiting := enqueue(t, db, s.fv, "p", 0)

	res, err := db.JobsBatch(ctx, testNow, []job.Conclusion{
		{Ref: cl[0].Ref, Kind: job.ConcludeComplete},
		{Ref: cl[1].Ref, Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 5},
	}, []job.ClaimRequest{{Worker: "w2", Plugins: []string{"p"}, Limit: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []job.Outcome{job.OutcomeCompleted, job.OutcomeRequeued}; !reflect.DeepEqual(res.Outcomes, want) {
		t.Errorf("outcomes = %v, want %v", res.Outcomes, want)
	}
	// The requeued job keeps its priority and so comes first.
	if got, want := claimIDs(res.Claims), []int64{second, waiting}; !reflect.DeepEqual(got, want) {
		t.Errorf("claimed %v, want %v", got, want)
	}
	if j := getJob(t, db, second); j.Status != job.StatusRunning || j.ClaimedBy != "w2" || j.Attempt != 2 || j.RetryCount != 1 {
		t.Errorf("requeued then reclaimed job = %+v", j)
	}
	if j := getJob(t, db, first); j.Status != job.StatusCompleted {
		t.Errorf("completed job = %+v", j)
	}

	// An unknown kind fails the whole batch before anything is written.
	if _, err := db.JobsBatch(ctx, testNow, []job.Conclusion{
		{Ref: res.Claims[0].Ref, Kind: job.ConcludeComplete},
		{Ref: res.Claims[1].Ref, Kind: job.ConclusionKind(99)},
	}, []job.ClaimRequest{{Worker: "w3", Plugins: []string{"p"}, Limit: 5}}); err == nil {
		t.Fatal("batch with an unknown kind succeeded")
	}
	if j := getJob(t, db, second); j.Status != job.StatusRunning || j.ClaimedBy != "w2" {
		t.Errorf("job changed by a rejected batch: %+v", j)
	}
}

// TestJobsClaim_ShortClaimSkipsSamePluginSet checks that skipping workers
// whose plugin set came back short loses nothing: workers with another set,
// or any plugin, still get what is theirs.
func TestJobsClaim_ShortClaimSkipsSamePluginSet(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p", "q", "r")
	var ps, qs []int64
	for range 3 {
		ps = append(ps, enqueue(t, db, s.fv, "p", 0))
	}
	for range 2 {
		qs = append(qs, enqueue(t, db, s.fv, "q", 0))
	}
	rid := enqueue(t, db, s.fv, "r", 0)
	claims, failures, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{
		{Worker: "w1", Plugins: []string{"q", "p"}, Limit: 5},
		{Worker: "w2", Plugins: []string{"p", "q", "p"}, Limit: 5},
		{Worker: "w3", Plugins: []string{"p"}, Limit: 5},
		{Worker: "w4", Plugins: []string{"*"}, Limit: 5},
	})
	if err != nil || len(failures) > 0 {
		t.Fatal(err, failures)
	}
	got := map[string][]int64{}
	for _, c := range claims {
		got[c.Ref.Worker] = append(got[c.Ref.Worker], c.Ref.JobID)
	}
	want := map[string][]int64{"w1": append(append([]int64{}, ps...), qs...), "w4": {rid}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims by worker = %v, want %v", got, want)
	}
}

func TestJobsConclude_AbortSkipsOnlyCancelledJobs(t *testing.T) {
	t.Parallel()
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

// TestJobsConclude_ManyCompletionsMatchOneByOne checks the statement that
// completes a chunk of jobs at once against the one-job statement: the same
// columns, and the same guard (a wrong worker, a wrong attempt, a job no
// longer RUNNING and a missing job are stale, inside a chunk).
func TestJobsConclude_ManyCompletionsMatchOneByOne(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "p")
	const n = 75 // one chunk of 64, one of 8, three one by one
	for range n + 1 {
		enqueue(t, db, s.fv, "p", 0)
	}
	cl := claim(t, db, "w1", n+1, "p")
	if len(cl) != n+1 {
		t.Fatalf("claimed %d", len(cl))
	}
	// The last job is completed alone: the reference row.
	ref := cl[n].Ref
	metrics := map[string]int64{"rows": 7}
	artifacts := []map[string]string{{"topic": "t", "uri": "parquet://x"}}
	if out := conclude(t, db, job.Conclusion{Ref: ref, Kind: job.ConcludeComplete, Message: "ok", Metrics: metrics, Artifacts: artifacts}); out[0] != job.OutcomeCompleted {
		t.Fatalf("single completion = %v", out[0])
	}
	failedRef := cl[5].Ref
	if out := conclude(t, db, job.Conclusion{Ref: failedRef, Kind: job.ConcludeFail, Message: "x"}); out[0] != job.OutcomeFailed {
		t.Fatalf("fail = %v", out[0])
	}
	cs := make([]job.Conclusion, n)
	stale := map[int]bool{3: true, 5: true, 40: true, 66: true, 73: true}
	for i := range n {
		c := job.Conclusion{Ref: cl[i].Ref, Kind: job.ConcludeComplete, Message: "ok", Metrics: metrics, Artifacts: artifacts}
		switch i {
		case 3:
			c.Ref.Worker = "w2"
		case 40:
			c.Ref.Attempt++
		case 66:
			c.Ref.JobID = 1 << 40 // no such job
		case 73:
			c.Ref.Attempt = 0
		}
		cs[i] = c
	}
	out := conclude(t, db, cs...)
	want := getJob(t, db, ref.JobID)
	for i, o := range out {
		if stale[i] {
			if o != job.OutcomeStale {
				t.Errorf("conclusion %d = %v, want stale", i, o)
			}
			continue
		}
		if o != job.OutcomeCompleted {
			t.Errorf("conclusion %d = %v, want completed", i, o)
			continue
		}
		got := getJob(t, db, cs[i].Ref.JobID)
		if got.Status != job.StatusCompleted || got.ResultSummary != want.ResultSummary ||
			!reflect.DeepEqual(got.Metrics, want.Metrics) || !reflect.DeepEqual(got.Artifacts, want.Artifacts) ||
			!got.EndTime.Equal(want.EndTime) && got.EndTime.IsZero() {
			t.Errorf("job %d = %+v\nwant like %+v", cs[i].Ref.JobID, got, want)
		}
	}
	for _, i := range []int{3, 40, 73} {
		if j := getJob(t, db, cl[i].Ref.JobID); j.Status != job.StatusRunning {
			t.Errorf("job %d with a stale completion is %s, want RUNNING", cl[i].Ref.JobID, j.Status)
		}
	}
	if j := getJob(t, db, failedRef.JobID); j.Status != job.StatusFailed {
		t.Errorf("FAILED job became %s", j.Status)
	}
}

// TestJobsClaim_PausedPluginsAreNotClaimed pauses and resumes a plugin
// between claims: a pause takes effect at the next claim although the
// claim before it cached "nothing paused", and so does a resume.
func TestJobsClaim_PausedPluginsAreNotClaimed(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "p", "q")
	for range 3 {
		enqueue(t, db, s.fv, "p", 0)
		enqueue(t, db, s.fv, "q", 0)
	}
	if got := claim(t, db, "w1", 1, "p", "q"); len(got) != 1 {
		t.Fatalf("first claim: %d jobs", len(got))
	}
	if _, err := db.PluginPause(ctx, time.Now(), "p", true); err != nil {
		t.Fatal(err)
	}
	for _, c := range claim(t, db, "w1", 10, "p", "q") {
		if j := getJob(t, db, c.Ref.JobID); j.PluginName != "q" {
			t.Errorf("claimed job %d of paused plugin %s", c.Ref.JobID, j.PluginName)
		}
	}
	if _, err := db.PluginPause(ctx, time.Now(), "p", false); err != nil {
		t.Fatal(err)
	}
	got := claim(t, db, "w1", 10, "p", "q")
	if len(got) == 0 {
		t.Fatal("nothing claimed after resume")
	}
	for _, c := range got {
		if j := getJob(t, db, c.Ref.JobID); j.PluginName != "p" {
			t.Errorf("after resume claimed job %d of %s, want p's", c.Ref.JobID, j.PluginName)
		}
	}
}
