package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// The job path of db.Store, tested the same way on both backends: SQLite
// (package db) and PostgreSQL (this package, on a real throwaway server).

// jobStore is the job path of db.Store, the part both backends implement,
// and the bulk enqueue the benchmarks seed with.
type jobStore interface {
	db.JobStore
	JobsEnqueueBulk(ctx context.Context, fileVersionID int64, plugin string, priority int64, n int) error
	JobsCountWithStatus(ctx context.Context, status job.Status) (int64, error)
	JobsFinishedBulk(ctx context.Context, fileVersionID int64, plugin string, status job.Status, ended time.Time, n int) error
}

var (
	_ jobStore = (*db.DB)(nil)
	_ jobStore = (*DB)(nil)
)

// testNow is a fixed clock for claims and conclusions.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// fixture is a backend's store seeded with the source root /data, the file
// /data/in/a.csv (version fv) and whatever plugins activate deploys.
type fixture struct {
	s        jobStore
	fv       int64
	activate func(plugin string)                   // an ACTIVE manifest for plugin
	topic    func(plugin, topic, uri, mode string) // a cf_topic_config row
}

type backend struct {
	name string
	open func(t testing.TB) fixture
}

var backends = []backend{{"sqlite", openSQLite}, {"postgres", openPostgres}}

func openSQLite(t testing.TB) fixture {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sentinel.db")
	if err := os.WriteFile(path, migratedSQLite(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := db.Open(ctx, "sqlite://"+path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	root, err := s.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	fv, err := s.FileVersionAdd(ctx, root.ID, "in/a.csv", "hash-a", 10, testNow.Add(-time.Hour), []string{"csv"})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{s: s, fv: fv,
		activate: func(p string) {
			if _, err := s.PluginManifestActivate(ctx, p, "1.0", "print('"+p+"')", "", "art-"+p); err != nil {
				t.Fatal(err)
			}
		},
		topic: func(p, topic, uri, mode string) {
			if _, err := s.TopicConfigAdd(ctx, p, topic, uri, mode, ""); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// sqliteTemplate is a SQLite file that db.Open created and migrated, made
// once per test binary, as package db's own tests do: under the race
// detector migrating a new file costs about 400 ms of CPU, opening a copy a
// few ms, and these tests open some hundred (the migrations of SQLite have
// their tests in package db).
var sqliteTemplate struct {
	once sync.Once
	file []byte
	err  error
}

// migratedSQLite returns the bytes of the migrated file.
func migratedSQLite(t testing.TB) []byte {
	t.Helper()
	sqliteTemplate.once.Do(func() {
		dir, err := os.MkdirTemp("", "postgres-test-sqlite-")
		if err != nil {
			sqliteTemplate.err = err
			return
		}
		defer func() { _ = os.RemoveAll(dir) }() // a leftover folder costs disk, not a result
		path := filepath.Join(dir, "migrated.db")
		s, err := db.Open(context.Background(), "sqlite://"+path)
		if err != nil {
			sqliteTemplate.err = err
			return
		}
		if sqliteTemplate.err = s.Close(); sqliteTemplate.err != nil {
			return
		}
		// The last connection's close checkpoints the WAL into the file
		// and removes it; a WAL left behind would hold part of the schema.
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
			sqliteTemplate.err = fmt.Errorf("%s-wal left behind (%d bytes)", path, fi.Size())
			return
		}
		sqliteTemplate.file, sqliteTemplate.err = os.ReadFile(path)
	})
	if sqliteTemplate.err != nil {
		t.Fatalf("migrated SQLite template: %v", sqliteTemplate.err)
	}
	return sqliteTemplate.file
}

func openPostgres(t testing.TB) fixture {
	t.Helper()
	return seedWith(t, openStore(t))
}

// seedWith seeds d with the fixture's file and returns it.
func seedWith(t testing.TB, d *DB) fixture {
	t.Helper()
	ctx := context.Background()
	var fv int64
	err := d.pool.QueryRow(ctx, `WITH
		r AS (INSERT INTO cf_source_root (path, type, active) VALUES ('/data', 'local', 1) RETURNING id),
		h AS (INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('hash-a', 10)),
		l AS (INSERT INTO cf_file_location (source_root_id, rel_path, filename) SELECT id, 'in/a.csv', 'a.csv' FROM r RETURNING id)
		INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time)
		SELECT id, 'hash-a', 10, $1 FROM l RETURNING id`, testNow.Add(-time.Hour)).Scan(&fv)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	if _, err := d.pool.Exec(ctx, `UPDATE cf_file_location SET current_version_id = $1`, fv); err != nil {
		t.Fatalf("seed: %v", err)
	}
	exec := func(q string, args ...any) {
		if _, err := d.pool.Exec(ctx, q, args...); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	return fixture{s: d, fv: fv,
		activate: func(p string) {
			exec(`INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters)
				VALUES ($1, '', '{}') ON CONFLICT DO NOTHING`, p)
			exec(`INSERT INTO cf_plugin_manifest (plugin_name, version, source_code, source_hash, status, env_hash, artifact_hash, deployed_at)
				VALUES ($1::text, '1.0', 'print(''' || $1::text || ''')', 'src-' || $1::text, 'ACTIVE', NULL, 'art-' || $1::text, now())`, p)
		},
		topic: func(p, topic, uri, mode string) {
			exec(`INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters)
				VALUES ($1, '', '{}') ON CONFLICT DO NOTHING`, p)
			exec(`INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode) VALUES ($1, $2, $3, NULLIF($4, ''))`, p, topic, uri, mode)
		},
	}
}

// openStore opens a new PostgreSQL database, migrated and otherwise empty,
// for any test or benchmark.
func openStore(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := Open(ctx, migratedDatabase(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// forEachBackend runs f as a subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, fx fixture)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

func (fx fixture) enqueue(t testing.TB, plugin string, priority int64) int64 {
	t.Helper()
	id, err := fx.s.JobEnqueue(context.Background(), job.Submission{FileVersionID: fx.fv, Plugin: plugin, Priority: priority})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (fx fixture) batch(t testing.TB, now time.Time, cs []job.Conclusion, reqs ...job.ClaimRequest) db.BatchResult {
	t.Helper()
	res, err := fx.s.JobsBatch(context.Background(), now, cs, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) > 0 {
		t.Fatalf("unexpected claim failures: %+v", res.Failures)
	}
	return res
}

func (fx fixture) claim(t testing.TB, now time.Time, worker string, limit int, plugins ...string) []db.Claim {
	t.Helper()
	return fx.batch(t, now, nil, job.ClaimRequest{Worker: worker, Plugins: plugins, Limit: limit}).Claims
}

func (fx fixture) conclude(t testing.TB, now time.Time, cs ...job.Conclusion) []job.Outcome {
	t.Helper()
	return fx.batch(t, now, cs).Outcomes
}

func (fx fixture) get(t testing.TB, id int64) job.Info {
	t.Helper()
	j, err := fx.s.JobGet(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func claimIDs(cs []db.Claim) []int64 {
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.Ref.JobID
	}
	return ids
}

func TestJobs_ClaimOrderLimitAndPluginFilter(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		fx.activate("q")
		low := fx.enqueue(t, "p", 0)
		high := fx.enqueue(t, "p", 10)
		low2 := fx.enqueue(t, "p", 0)
		other := fx.enqueue(t, "q", 5)

		if got := claimIDs(fx.claim(t, testNow, "w1", 2, "p")); !reflect.DeepEqual(got, []int64{high, low}) {
			t.Errorf("claim p limit 2 = %v, want [%d %d]", got, high, low)
		}
		if got := claimIDs(fx.claim(t, testNow, "w2", 10, "*")); !reflect.DeepEqual(got, []int64{other, low2}) {
			t.Errorf("claim * = %v, want [%d %d]", got, other, low2)
		}
		if got := fx.claim(t, testNow, "w3", 10, "*"); len(got) != 0 {
			t.Errorf("claim of an empty queue = %v", claimIDs(got))
		}
		j := fx.get(t, high)
		if j.Status != job.StatusRunning || j.ClaimedBy != "w1" || j.WorkerHost != "w1" || j.Attempt != 1 || !j.ClaimTime.Equal(testNow) {
			t.Errorf("claimed job = %+v", j.Job)
		}
		counts, err := fx.s.JobsCountByStatus(context.Background())
		if err != nil || counts[job.StatusRunning] != 4 || len(counts) != 1 {
			t.Errorf("counts = %v, %v", counts, err)
		}
	})
}

func TestJobs_PreferAndExclude(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		for _, p := range []string{"a", "b", "c"} {
			fx.activate(p)
		}
		a := fx.enqueue(t, "a", 9)
		b := fx.enqueue(t, "b", 0)
		c := fx.enqueue(t, "c", 5)
		res := fx.batch(t, testNow, nil,
			job.ClaimRequest{Worker: "w1", Plugins: []string{"*"}, Limit: 1, Prefer: []string{"b"}},
			job.ClaimRequest{Worker: "w2", Plugins: []string{"*"}, Limit: 5, Exclude: []string{"a"}})
		got := map[int64]string{}
		for _, cl := range res.Claims {
			got[cl.Ref.JobID] = cl.Ref.Worker
		}
		if want := map[int64]string{b: "w1", c: "w2"}; !reflect.DeepEqual(got, want) {
			t.Errorf("claims = %v, want %v (a=%d left)", got, want, a)
		}
	})
}

func TestJobs_DispatchAssembly(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		fx.topic("p", "output", "parquet://out/{file_stem}.parquet", "")
		fx.topic("p", "errors", "csv://err.csv", "replace")
		id, err := fx.s.JobEnqueue(context.Background(), job.Submission{FilePath: "/data/in/a.csv", Plugin: "p",
			ConfigOverrides: `{"errors": {"uri": "sqlite://e.db/{file_name}", "mode": "error"}, "extra": [{"uri": "csv://x.csv"}]}`})
		if err != nil {
			t.Fatal(err)
		}
		cs := fx.claim(t, testNow, "w1", 1, "p")
		if len(cs) != 1 || cs[0].Ref.JobID != id {
			t.Fatalf("claims = %+v", cs)
		}
		want := db.Dispatch{
			PluginName: "p", FilePath: "/data/in/a.csv", FileVersionID: fx.fv,
			EnvHash: "system", SourceCode: "print('p')", ArtifactHash: "art-p",
			Sinks: []db.Sink{
				{Topic: "output", URI: "parquet://out/a.parquet", Mode: "append"},
				{Topic: "errors", URI: "sqlite://e.db/a_csv", Mode: "error"},
				{Topic: "extra", URI: "csv://x.csv", Mode: "append"},
			},
		}
		if !reflect.DeepEqual(cs[0].Dispatch, want) {
			t.Errorf("dispatch =\n%+v\nwant\n%+v", cs[0].Dispatch, want)
		}
		// The job's detail shows the same DISPATCH, without the source.
		view := &job.DispatchView{PluginName: "p", FilePath: "/data/in/a.csv", FileVersionID: fx.fv, EnvHash: "system",
			ArtifactHash: "art-p", SourceBytes: len("print('p')")}
		for _, s := range want.Sinks {
			view.Sinks = append(view.Sinks, job.DispatchSink{Topic: s.Topic, URI: s.URI, Mode: s.Mode})
		}
		if got := fx.get(t, id).Dispatch; !reflect.DeepEqual(got, view) {
			t.Errorf("detail's dispatch =\n%+v\nwant\n%+v", got, view)
		}

		// No ACTIVE manifest: claimed, then FAILED with the reason.
		ghost := fx.enqueue(t, "ghost", 0)
		res, err := fx.s.JobsBatch(context.Background(), testNow, nil, []job.ClaimRequest{{Worker: "w1", Plugins: []string{"*"}, Limit: 5}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Claims) != 0 || len(res.Failures) != 1 || res.Failures[0].Ref.JobID != ghost ||
			res.Failures[0].Reason != `dispatch: no ACTIVE manifest for plugin "ghost"` {
			t.Errorf("claim of a job without manifest = %+v", res)
		}
		if j := fx.get(t, ghost); j.Status != job.StatusFailed || j.ErrorMessage != res.Failures[0].Reason || j.EndTime.IsZero() ||
			j.Dispatch == nil || j.Dispatch.Reason != res.Failures[0].Reason {
			t.Errorf("job without manifest = %+v (dispatch %+v)", j.Job, j.Dispatch)
		}
	})
}

// TestJobs_ConclusionFencing: a conclusion whose claim no longer holds (late,
// duplicate, another worker's, another attempt's) is stale and changes
// nothing.
func TestJobs_ConclusionFencing(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		id := fx.enqueue(t, "p", 0)
		first := fx.claim(t, testNow, "w1", 1, "p")[0].Ref
		// Requeued, then claimed again by w2: attempt 2.
		if o := fx.conclude(t, testNow, job.Conclusion{Ref: first, Kind: job.ConcludeRequeue, MaxRetries: 3}); o[0] != job.OutcomeRequeued {
			t.Fatalf("requeue = %v", o)
		}
		second := fx.claim(t, testNow, "w2", 1, "p")[0].Ref
		if second.Attempt != 2 || second.Worker != "w2" {
			t.Fatalf("second claim = %+v", second)
		}
		before := fx.get(t, id)
		spoofed := job.Ref{JobID: id, Worker: "w1", Attempt: 2}
		wrongAttempt := job.Ref{JobID: id, Worker: "w2", Attempt: 1}
		for _, c := range []job.Conclusion{
			{Ref: first, Kind: job.ConcludeComplete},               // late: the first attempt
			{Ref: spoofed, Kind: job.ConcludeComplete},             // another worker, right attempt
			{Ref: wrongAttempt, Kind: job.ConcludeFail},            // right worker, wrong attempt
			{Ref: first, Kind: job.ConcludeRequeue, MaxRetries: 9}, // late requeue
			{Ref: spoofed, Kind: job.ConcludeAbort},
			{Ref: job.Ref{JobID: id + 100, Worker: "w2", Attempt: 2}, Kind: job.ConcludeComplete}, // no such job
		} {
			if o := fx.conclude(t, testNow, c); o[0] != job.OutcomeStale {
				t.Errorf("%v of %+v = %v, want stale", c.Kind, c.Ref, o[0])
			}
		}
		if after := fx.get(t, id); !reflect.DeepEqual(after, before) {
			t.Errorf("stale conclusions changed the job:\n%+v\n%+v", before.Job, after.Job)
		}
		// The right claim concludes once; a duplicate in the same batch
		// and a later one are stale, and a FAILED job never completes.
		out := fx.conclude(t, testNow,
			job.Conclusion{Ref: second, Kind: job.ConcludeFail, Message: "boom"},
			job.Conclusion{Ref: second, Kind: job.ConcludeComplete})
		if !reflect.DeepEqual(out, []job.Outcome{job.OutcomeFailed, job.OutcomeStale}) {
			t.Errorf("fail then duplicate complete = %v", out)
		}
		if o := fx.conclude(t, testNow, job.Conclusion{Ref: second, Kind: job.ConcludeComplete}); o[0] != job.OutcomeStale {
			t.Errorf("late complete = %v", o)
		}
		if j := fx.get(t, id); j.Status != job.StatusFailed || j.ErrorMessage != "boom" {
			t.Errorf("job = %+v", j.Job)
		}
	})
}

func TestJobs_CompleteStoresReceipt(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		id := fx.enqueue(t, "p", 0)
		ref := fx.claim(t, testNow, "w1", 1, "p")[0].Ref
		o := fx.conclude(t, testNow.Add(time.Minute), job.Conclusion{Ref: ref, Kind: job.ConcludeComplete,
			Metrics: map[string]int64{"rows": 7}, Artifacts: []map[string]string{{"uri": "x"}}})
		if o[0] != job.OutcomeCompleted {
			t.Fatalf("complete = %v", o)
		}
		j := fx.get(t, id)
		if j.Status != job.StatusCompleted || j.ResultSummary != "Success" || j.Metrics["rows"] != 7 ||
			len(j.Artifacts) != 1 || j.Artifacts[0]["uri"] != "x" || !j.EndTime.Equal(testNow.Add(time.Minute)) ||
			j.FilePath != "/data/in/a.csv" {
			t.Errorf("completed job = %+v", j)
		}
		running, err := fx.s.JobsRunning(context.Background(), "")
		if err != nil || len(running) != 0 {
			t.Errorf("running = %v, %v", running, err)
		}
	})
}

// TestJobs_RetriesAndBackoff: a requeue counts a retry and waits until
// NextRunAt; past MaxRetries the job fails.
func TestJobs_RetriesAndBackoff(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		fx.activate("p")
		id := fx.enqueue(t, "p", 0)
		now := testNow
		for retry := int64(1); retry <= 2; retry++ {
			cs := fx.claim(t, now, "w1", 1, "p")
			if len(cs) != 1 || cs[0].Ref.Attempt != retry || cs[0].RetryCount != retry-1 {
				t.Fatalf("claim %d = %+v", retry, cs)
			}
			running, err := fx.s.JobsRunning(ctx, "w1")
			if err != nil || len(running) != 1 || running[0].Ref != cs[0].Ref || running[0].RetryCount != retry-1 || !running[0].ClaimTime.Equal(now) {
				t.Fatalf("running = %+v, %v", running, err)
			}
			due := now.Add(time.Minute)
			o := fx.conclude(t, now, job.Conclusion{Ref: cs[0].Ref, Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 2, NextRunAt: due})
			if o[0] != job.OutcomeRequeued {
				t.Fatalf("requeue %d = %v", retry, o)
			}
			if j := fx.get(t, id); j.Status != job.StatusQueued || j.RetryCount != retry || j.ErrorMessage != "worker lost" || j.ClaimedBy != "" {
				t.Errorf("requeued job = %+v", j.Job)
			}
			if got := fx.claim(t, now.Add(30*time.Second), "w1", 1, "p"); len(got) != 0 {
				t.Errorf("claimed a job before it was due: %v", claimIDs(got))
			}
			next, ok, err := fx.s.JobsNextRunAt(ctx, now)
			if err != nil || !ok || !next.Equal(due) {
				t.Errorf("next run at = %v, %v, %v; want %v", next, ok, err, due)
			}
			now = due
		}
		cs := fx.claim(t, now, "w1", 1, "p")
		o := fx.conclude(t, now, job.Conclusion{Ref: cs[0].Ref, Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 2})
		if o[0] != job.OutcomeFailed {
			t.Fatalf("third requeue = %v", o)
		}
		if j := fx.get(t, id); j.Status != job.StatusFailed || j.ErrorMessage != "worker lost (gave up after 2 retries)" {
			t.Errorf("job = %+v", j.Job)
		}
		if _, ok, err := fx.s.JobsNextRunAt(ctx, now); ok || err != nil {
			t.Errorf("next run at after failure = %v, %v", ok, err)
		}
		// An operator's retry starts over: QUEUED, no retries, attempt kept.
		if err := fx.s.JobRetry(ctx, now, id); err != nil {
			t.Fatal(err)
		}
		if j := fx.get(t, id); j.Status != job.StatusQueued || j.RetryCount != 0 || j.Attempt != 3 || j.ErrorMessage != "" {
			t.Errorf("retried job = %+v", j.Job)
		}
		if o := fx.conclude(t, now, job.Conclusion{Ref: cs[0].Ref, Kind: job.ConcludeComplete}); o[0] != job.OutcomeStale {
			t.Errorf("old attempt after retry = %v", o)
		}
		if err := fx.s.JobRetry(ctx, now, id); !errors.Is(err, job.ErrConflict) {
			t.Errorf("retry of a QUEUED job = %v", err)
		}
		if err := fx.s.JobRetry(ctx, now, id+100); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("retry of no job = %v", err)
		}
	})
}

// TestJobs_Cancel: QUEUED is skipped at once; RUNNING is marked and ends
// SKIPPED when it is aborted or would be requeued; a finished job is a
// conflict.
func TestJobs_Cancel(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		fx.activate("p")
		queued := fx.enqueue(t, "p", 0)
		res, err := fx.s.JobCancel(ctx, testNow, queued)
		if err != nil || res.Previous != job.StatusQueued || res.Status != job.StatusSkipped {
			t.Fatalf("cancel queued = %+v, %v", res, err)
		}
		if j := fx.get(t, queued); j.Status != job.StatusSkipped || j.ErrorMessage != db.CancelledMessage {
			t.Errorf("cancelled queued job = %+v", j.Job)
		}
		if res, err := fx.s.JobCancel(ctx, testNow, queued); err != nil || res.Status != job.StatusSkipped {
			t.Errorf("second cancel = %+v, %v", res, err)
		}

		a, b := fx.enqueue(t, "p", 0), fx.enqueue(t, "p", 0)
		cs := fx.claim(t, testNow, "w1", 2, "p")
		for _, c := range cs {
			res, err := fx.s.JobCancel(ctx, testNow, c.Ref.JobID)
			if err != nil || res.Status != job.StatusRunning || res.Claim != c.Ref {
				t.Fatalf("cancel running = %+v, %v", res, err)
			}
			if j := fx.get(t, c.Ref.JobID); !j.CancelRequested || j.Status != job.StatusRunning {
				t.Errorf("cancel-requested job = %+v", j)
			}
		}
		out := fx.conclude(t, testNow,
			job.Conclusion{Ref: cs[0].Ref, Kind: job.ConcludeRequeue, MaxRetries: 5},
			job.Conclusion{Ref: cs[1].Ref, Kind: job.ConcludeAbort, Message: "aborted"})
		if !reflect.DeepEqual(out, []job.Outcome{job.OutcomeSkipped, job.OutcomeSkipped}) {
			t.Errorf("conclusions of cancelled jobs = %v", out)
		}
		for _, id := range []int64{a, b} {
			if j := fx.get(t, id); j.Status != job.StatusSkipped || !strings.HasPrefix(j.ErrorMessage, db.CancelledMessage) {
				t.Errorf("job %d = %+v", id, j.Job)
			}
		}
		// Abort without a cancel fails the job.
		c := fx.enqueue(t, "p", 0)
		ref := fx.claim(t, testNow, "w1", 1, "p")[0].Ref
		if o := fx.conclude(t, testNow, job.Conclusion{Ref: ref, Kind: job.ConcludeAbort, Message: "killed"}); o[0] != job.OutcomeFailed {
			t.Errorf("abort = %v", o)
		}
		if _, err := fx.s.JobCancel(ctx, testNow, c); !errors.Is(err, job.ErrConflict) {
			t.Errorf("cancel of a FAILED job = %v", err)
		}
		if _, err := fx.s.JobCancel(ctx, testNow, c+100); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("cancel of no job = %v", err)
		}
	})
}

// TestJobs_BatchConcludesThenClaims: a requeue due now is claimed back by
// the same call.
func TestJobs_BatchConcludesThenClaims(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		id := fx.enqueue(t, "p", 0)
		ref := fx.claim(t, testNow, "w1", 1, "p")[0].Ref
		res := fx.batch(t, testNow, []job.Conclusion{{Ref: ref, Kind: job.ConcludeRequeue, MaxRetries: 1}},
			job.ClaimRequest{Worker: "w2", Plugins: []string{"p"}, Limit: 1})
		if !reflect.DeepEqual(res.Outcomes, []job.Outcome{job.OutcomeRequeued}) || len(res.Claims) != 1 ||
			res.Claims[0].Ref != (job.Ref{JobID: id, Worker: "w2", Attempt: 2}) || res.Claims[0].RetryCount != 1 {
			t.Errorf("batch = %+v", res)
		}
		if _, err := fx.s.JobsBatch(context.Background(), testNow, nil, []job.ClaimRequest{{Plugins: []string{"*"}, Limit: 1}}); err == nil {
			t.Error("claim without a worker succeeded")
		}
		if _, err := fx.s.JobsBatch(context.Background(), testNow, []job.Conclusion{{Ref: ref, Kind: 99}}, nil); err == nil {
			t.Error("unknown conclusion kind accepted")
		}
	})
}

func TestJobs_EnqueueListGet(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		fx.activate("p")
		var ids []int64
		for i := 0; i < 5; i++ {
			ids = append(ids, fx.enqueue(t, []string{"p", "q"}[i%2], int64(i)))
		}
		page, err := fx.s.JobsList(ctx, job.Filter{Plugin: "p", Limit: 2})
		if err != nil || page.Total != 3 || len(page.Jobs) != 2 || page.Jobs[0].ID != ids[4] || page.Jobs[1].ID != ids[2] {
			t.Errorf("list p = %+v, %v", page, err)
		}
		page, err = fx.s.JobsList(ctx, job.Filter{Status: job.StatusQueued, Offset: 4})
		if err != nil || page.Total != 5 || len(page.Jobs) != 1 || page.Jobs[0].ID != ids[0] || page.Jobs[0].FilePath != "/data/in/a.csv" {
			t.Errorf("list queued offset 4 = %+v, %v", page, err)
		}
		if page, err := fx.s.JobsList(ctx, job.Filter{Status: job.StatusCompleted}); err != nil || page.Total != 0 || len(page.Jobs) != 0 {
			t.Errorf("list completed = %+v, %v", page, err)
		}
		if _, err := fx.s.JobsList(ctx, job.Filter{Limit: -1}); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("negative limit = %v", err)
		}
		if _, err := fx.s.JobGet(ctx, 9999); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("get of no job = %v", err)
		}
		for _, tc := range []struct {
			s    job.Submission
			want error
		}{
			{job.Submission{FileVersionID: fx.fv}, job.ErrInvalid},
			{job.Submission{Plugin: "p"}, job.ErrInvalid},
			{job.Submission{Plugin: "p", FileVersionID: fx.fv, FilePath: "/data/in/a.csv"}, job.ErrInvalid},
			{job.Submission{Plugin: "p", FilePath: "in/a.csv"}, job.ErrInvalid},
			{job.Submission{Plugin: "p", FileVersionID: fx.fv, ConfigOverrides: `{"output": 1}`}, job.ErrInvalid},
			{job.Submission{Plugin: "p", FileVersionID: 9999}, job.ErrNotFound},
			{job.Submission{Plugin: "p", FilePath: "/elsewhere/a.csv"}, job.ErrNotFound},
			{job.Submission{Plugin: "p", FilePath: "/data/in/b.csv"}, job.ErrNotFound},
		} {
			if _, err := fx.s.JobEnqueue(ctx, tc.s); !errors.Is(err, tc.want) {
				t.Errorf("enqueue %+v = %v, want %v", tc.s, err, tc.want)
			}
		}
		if err := fx.s.JobsEnqueueBulk(ctx, fx.fv, "p", 0, 10); err != nil {
			t.Fatal(err)
		}
		counts, err := fx.s.JobsCountByStatus(ctx)
		if err != nil || counts[job.StatusQueued] != 15 {
			t.Errorf("counts = %v, %v", counts, err)
		}
	})
}

func TestJobs_CountWithStatus(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		fx.activate("p")
		if err := fx.s.JobsEnqueueBulk(ctx, fx.fv, "p", 0, 5); err != nil {
			t.Fatal(err)
		}
		claimed := fx.claim(t, testNow, "w1", 3, "p")
		fx.conclude(t, testNow, job.Conclusion{Ref: claimed[0].Ref, Kind: job.ConcludeComplete})
		for status, want := range map[job.Status]int64{
			job.StatusQueued: 2, job.StatusRunning: 2, job.StatusCompleted: 1, job.StatusFailed: 0, "NO-SUCH": 0,
		} {
			if n, err := fx.s.JobsCountWithStatus(ctx, status); err != nil || n != want {
				t.Errorf("JobsCountWithStatus(%s) = %d, %v; want %d", status, n, err, want)
			}
		}
	})
}

// TestPostgres_ClaimersNeverShareAJob: Sentinels on one database claim and
// conclude from the same queue at once, each through its own pool; every job
// is claimed exactly once (SKIP LOCKED) and nobody waits for anybody's locks.
func TestPostgres_ClaimersNeverShareAJob(t *testing.T) {
	t.Parallel()
	url := migratedDatabase(t)
	ctx := testContext(t)
	const sentinels, jobs = 4, 2000
	var stores []*DB
	for i := 0; i < sentinels; i++ {
		d, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		d.SetSentinelID(fmt.Sprintf("s%d", i))
		stores = append(stores, d)
	}
	fx := seedPostgres(t, stores[0])
	fx.activate("p")
	fx.activate("q")
	if err := stores[0].JobsEnqueueBulk(ctx, fx.fv, "p", 0, jobs/2); err != nil {
		t.Fatal(err)
	}
	if err := stores[0].JobsEnqueueBulk(ctx, fx.fv, "q", 1, jobs/2); err != nil {
		t.Fatal(err)
	}
	claimed := make([][]int64, sentinels)
	errs := make(chan error, sentinels)
	for i, d := range stores {
		go func() {
			var pending []job.Conclusion
			for {
				res, err := d.JobsBatch(ctx, testNow, pending, []job.ClaimRequest{
					{Worker: fmt.Sprintf("s%d-a", i), Plugins: []string{"*"}, Limit: 7},
					{Worker: fmt.Sprintf("s%d-b", i), Plugins: []string{"p"}, Limit: 5},
				})
				if err != nil {
					errs <- err
					return
				}
				for _, o := range res.Outcomes {
					if o != job.OutcomeCompleted {
						errs <- fmt.Errorf("sentinel %d: outcome %v", i, o)
						return
					}
				}
				if len(res.Claims) == 0 {
					errs <- nil
					return
				}
				pending = pending[:0]
				for _, c := range res.Claims {
					claimed[i] = append(claimed[i], c.Ref.JobID)
					pending = append(pending, job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete})
				}
			}
		}()
	}
	for range stores {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int64]int{}
	for i, ids := range claimed {
		t.Logf("sentinel %d claimed %d jobs", i, len(ids))
		for _, id := range ids {
			if prev, dup := seen[id]; dup {
				t.Errorf("job %d claimed by sentinels %d and %d", id, prev, i)
			}
			seen[id] = i
		}
	}
	if len(seen) != jobs {
		t.Errorf("%d distinct jobs claimed, want %d", len(seen), jobs)
	}
	counts, err := stores[0].JobsCountByStatus(ctx)
	if err != nil || counts[job.StatusCompleted] != jobs || len(counts) != 1 {
		t.Errorf("counts = %v, %v", counts, err)
	}
	var perSentinel []string
	rows, err := stores[0].pool.Query(ctx, `SELECT sentinel_id || ':' || count(*) FROM cf_processing_queue GROUP BY sentinel_id ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		perSentinel = append(perSentinel, s)
	}
	rows.Close()
	sort.Strings(perSentinel)
	if len(perSentinel) == 0 || strings.Contains(strings.Join(perSentinel, ","), "::") {
		t.Errorf("sentinel_id per claim = %v", perSentinel)
	}
}

// TestPostgres_ClaimNormalisesNullsAndFailsBadRows: rows other tools wrote
// (NULL status, priority and retry_count; unusable config_overrides; a
// rel_path leaving its root) are claimed as on SQLite.
func TestPostgres_ClaimNormalisesNullsAndFailsBadRows(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := testContext(t)
	fx := seedPostgres(t, d)
	fx.activate("p")
	_, err := d.pool.Exec(ctx, fmt.Sprintf(`
		INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count, config_overrides) VALUES
			(1, %[1]d, 'p', NULL, NULL, NULL, NULL),
			(2, %[1]d, 'p', 'QUEUED', 5, NULL, NULL),
			(3, %[1]d, 'p', 'QUEUED', 0, 0, '{"x": ['),
			(4, %[1]d, 'p', 'QUEUED', 0, 0, 'null');
		INSERT INTO cf_file_location (id, source_root_id, rel_path, filename)
			SELECT 61, source_root_id, '../../etc/passwd', 'passwd' FROM cf_file_location LIMIT 1;
		INSERT INTO cf_file_version (id, location_id, content_hash, size_bytes, modified_time) VALUES (52, 61, 'hash-a', 1, now());
		INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status) VALUES (5, 52, 'p', 'QUEUED')`, fx.fv))
	if err != nil {
		t.Fatal(err)
	}
	counts, err := d.JobsCountByStatus(ctx)
	if err != nil || counts[job.StatusQueued] != 5 {
		t.Errorf("counts = %v, %v", counts, err)
	}
	res, err := d.JobsBatch(ctx, testNow, nil, []job.ClaimRequest{{Worker: "w", Plugins: []string{"*"}, Limit: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if got := claimIDs(res.Claims); !reflect.DeepEqual(got, []int64{2, 1, 4}) {
		t.Errorf("claims = %v, want [2 1 4]", got)
	}
	reasons := map[int64]string{}
	for _, f := range res.Failures {
		reasons[f.Ref.JobID] = f.Reason
	}
	if !strings.HasPrefix(reasons[3], "dispatch: invalid config_overrides") ||
		reasons[5] != `dispatch: rel_path "../../etc/passwd" of file location 61 leaves its source root` || len(reasons) != 2 {
		t.Errorf("failures = %v", reasons)
	}
	if j, err := d.JobGet(ctx, 1); err != nil || j.Priority != 0 || j.RetryCount != 0 || j.Status != job.StatusRunning {
		t.Errorf("normalised job = %+v, %v", j.Job, err)
	}
	// A legacy RUNNING row (no claimed_by, no attempt) is concluded by the
	// ref JobsRunning reports for it.
	if _, err := d.pool.Exec(ctx, fmt.Sprintf(`INSERT INTO cf_processing_queue (id, file_version_id, plugin_name, status, priority, retry_count)
		VALUES (6, %d, 'p', 'RUNNING', 0, 0)`, fx.fv)); err != nil {
		t.Fatal(err)
	}
	running, err := d.JobsRunning(ctx, "")
	if err != nil || len(running) != 4 || running[3].Ref != (job.Ref{JobID: 6}) {
		t.Fatalf("running = %+v, %v", running, err)
	}
	res, err = d.JobsBatch(ctx, testNow, []job.Conclusion{{Ref: running[3].Ref, Kind: job.ConcludeComplete}}, nil)
	if err != nil || res.Outcomes[0] != job.OutcomeCompleted {
		t.Errorf("legacy conclusion = %+v, %v", res, err)
	}
}

// seedPostgres seeds an open database as openPostgres does.
func seedPostgres(t testing.TB, d *DB) fixture {
	t.Helper()
	return seedWith(t, d)
}

// TestPostgres_ClaimSkipsLockedRowsWithoutWaiting: a job another
// transaction holds (another Sentinel concluding or claiming it) is passed
// over at once, not waited for, and not claimed.
func TestPostgres_ClaimSkipsLockedRowsWithoutWaiting(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := testContext(t)
	fx := seedWith(t, d)
	fx.activate("p")
	top := fx.enqueue(t, "p", 9)
	next := fx.enqueue(t, "p", 0)
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT id FROM cf_processing_queue WHERE id = $1 FOR UPDATE`, top); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res, err := d.JobsBatch(short, testNow, nil, []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: 2}})
	if err != nil {
		t.Fatalf("claim beside a locked row: %v", err)
	}
	if got := claimIDs(res.Claims); !reflect.DeepEqual(got, []int64{next}) {
		t.Errorf("claims = %v, want [%d] (job %d is locked)", got, next, top)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := claimIDs(fx.claim(t, testNow, "w", 2, "p")); !reflect.DeepEqual(got, []int64{top}) {
		t.Errorf("claims after the lock went = %v, want [%d]", got, top)
	}
}

// TestPostgres_ClaimStatementsUseIndexes: with a deep queue and no
// statistics, every claim shape walks a partial claim index in claim order
// and stops at its LIMIT: no sort of the queue.
func TestPostgres_ClaimStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := testContext(t)
	fx := seedWith(t, d)
	fx.activate("p")
	if err := d.JobsEnqueueBulk(ctx, fx.fv, "p", 0, 20000); err != nil {
		t.Fatal(err)
	}
	base := []any{"w", testNow, testNow, nil, 64}
	for _, tc := range []struct {
		name, filter, index string
		args                []any
	}{
		{"any", "", "ix_cf_queue_claimable_any", base},
		{"one", ` AND plugin_name = $6`, "ix_cf_queue_claimable ", append(base[:5:5], "p")},
		{"several", ` AND plugin_name = ANY($6::text[])`, "ix_cf_queue_claimable_any", append(base[:5:5], []string{"p", "q"})},
		{"excluding", ` AND NOT (plugin_name = ANY($6::text[]))`, "ix_cf_queue_claimable_any", append(base[:5:5], []string{"q"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := d.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(context.Background()) }()
			if _, err := tx.Exec(ctx, claimSettingsSQL); err != nil {
				t.Fatal(err)
			}
			rows, err := tx.Query(ctx, "EXPLAIN "+claimSQL(tc.filter), tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "Index Scan using "+tc.index) || strings.Contains(text, "Sort") {
				t.Errorf("claim plan does not walk %s in order:\n%s", tc.index, text)
			}
		})
	}
}

// TestPostgres_CancelRacingARequeueAlwaysEndsSkipped: an operator's cancel
// and the worker's requeue of the same job, at once from different
// connections, end SKIPPED whichever comes first (cancel then requeue:
// SKIPPED by the requeue; requeue then cancel: a QUEUED job cancelled). A
// requeue that read "not cancelled" and then requeued a job cancelled in
// between would leave it QUEUED with its cancel forgotten.
func TestPostgres_CancelRacingARequeueAlwaysEndsSkipped(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := testContext(t)
	fx := seedWith(t, d)
	fx.activate("p")
	for i := 0; i < 40; i++ {
		id := fx.enqueue(t, "p", 0)
		ref := fx.claim(t, testNow, "w", 1, "p")[0].Ref
		errs := make(chan error, 2)
		go func() {
			_, err := d.JobsBatch(ctx, testNow, []job.Conclusion{{Ref: ref, Kind: job.ConcludeRequeue, MaxRetries: 5}}, nil)
			errs <- err
		}()
		go func() {
			_, err := d.JobCancel(ctx, testNow, id)
			errs <- err
		}()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if j := fx.get(t, id); j.Status != job.StatusSkipped {
			t.Fatalf("round %d: job = %+v, want SKIPPED", i, j.Job)
		}
	}
}

// TestJobs_AttemptsHistory: a job requeued, then failed, then retried by an
// operator and completed lists its four attempts, with their workers,
// outcomes, reasons and times, on both backends.
func TestJobs_AttemptsHistory(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		fx.activate("p")
		id := fx.enqueue(t, "p", 0)
		at := testNow
		step := func() time.Time { at = at.Add(time.Second); return at }
		cl := fx.claim(t, step(), "w1", 1, "p")
		fx.conclude(t, step(), job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeRequeue, Message: "worker lost", MaxRetries: 5})
		cl = fx.claim(t, step(), "w2", 1, "p")
		fx.conclude(t, step(), job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeFail, Message: "bad row 7"})
		if err := fx.s.JobRetry(context.Background(), step(), id); err != nil {
			t.Fatal(err)
		}
		cl = fx.claim(t, step(), "w3", 1, "p")
		if got := fx.get(t, id).Attempts; len(got) != 3 || got[2].Outcome != "RUNNING" || got[2].Worker != "w3" {
			t.Fatalf("while attempt 3 runs: %+v", got)
		}
		fx.conclude(t, step(), job.Conclusion{Ref: cl[0].Ref, Kind: job.ConcludeComplete, Message: "done"})
		got := fx.get(t, id).Attempts
		want := []struct{ worker, outcome, msg string }{{"w1", "REQUEUED", "worker lost"}, {"w2", "FAILED", "bad row 7"}, {"w3", "COMPLETED", "done"}}
		if len(got) != len(want) {
			t.Fatalf("attempts = %+v", got)
		}
		for i, w := range want {
			a := got[i]
			if a.Attempt != int64(i+1) || a.Worker != w.worker || a.Outcome != w.outcome || a.Message != w.msg ||
				a.ClaimTime.IsZero() || !a.EndTime.After(a.ClaimTime) {
				t.Errorf("attempt %d = %+v, want %+v", i+1, a, w)
			}
		}
	})
}
