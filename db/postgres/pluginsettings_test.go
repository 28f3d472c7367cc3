package postgres

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Per-plugin settings, backfills and reruns, on both backends.

// pluginStore is the part of db.Store these tests call.
type pluginStore interface {
	catalogueStore
	PluginPause(ctx context.Context, now time.Time, plugin string, pause bool) (job.PluginSettings, error)
	PluginSettingsSet(ctx context.Context, now time.Time, plugin string, u job.PluginSettingsUpdate) (job.PluginSettings, error)
	PluginBackfillFiles(ctx context.Context, plugin string) ([]db.BackfillFile, error)
	PluginBackfill(ctx context.Context, now time.Time, plugin string, files []db.BackfillFile) (int64, error)
	PluginRerun(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.BackfillResult, error)
}

var (
	_ pluginStore = (*db.DB)(nil)
	_ pluginStore = (*DB)(nil)
)

func (fx fixture) plugins(t testing.TB) pluginStore {
	t.Helper()
	s, ok := fx.s.(pluginStore)
	if !ok {
		t.Fatalf("%T is no pluginStore", fx.s)
	}
	return s
}

func settingsOf(t testing.TB, s pluginStore, plugin string) job.PluginSettings {
	t.Helper()
	for _, p := range must(s.PluginsList(context.Background())).get(t) {
		if p.Name == plugin {
			return p.Settings
		}
	}
	t.Fatalf("plugin %s not listed", plugin)
	return job.PluginSettings{}
}

func TestPluginPause_SkipsClaimsUntilResumed(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		s := fx.plugins(t)
		fx.activate("p")
		fx.activate("q")
		jp, jq := fx.enqueue(t, "p", 10), fx.enqueue(t, "q", 0)

		paused := must(s.PluginPause(ctx, testNow, "p", true)).get(t)
		if !paused.Paused() {
			t.Fatalf("after pause: %+v", paused)
		}
		again := must(s.PluginPause(ctx, testNow.Add(time.Minute), "p", true)).get(t)
		if !again.PausedAt.Equal(paused.PausedAt) {
			t.Errorf("pausing again moved paused_at from %v to %v", paused.PausedAt, again.PausedAt)
		}
		if !settingsOf(t, s, "p").Paused() || settingsOf(t, s, "q").Paused() {
			t.Errorf("PluginsList: p paused %v, q paused %v; want true, false", settingsOf(t, s, "p").Paused(), settingsOf(t, s, "q").Paused())
		}

		for _, tc := range []struct {
			name    string
			plugins []string
			want    []int64
		}{
			{"Named", []string{"p"}, nil},
			{"Several", []string{"p", "q"}, []int64{jq}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := claimIDs(fx.claim(t, testNow, "w-"+tc.name, 10, tc.plugins...)); !slices.Equal(got, tc.want) {
					t.Errorf("claimed %v, want %v", got, tc.want)
				}
			})
		}
		if got := claimIDs(fx.claim(t, testNow, "w-any", 10, "*")); len(got) != 0 {
			t.Errorf("any-plugin claim while p paused took %v", got)
		}

		resumed := must(s.PluginPause(ctx, testNow, "p", false)).get(t)
		if resumed.Paused() {
			t.Fatalf("after resume: %+v", resumed)
		}
		if got := claimIDs(fx.claim(t, testNow, "w-any", 10, "*")); !slices.Equal(got, []int64{jp}) {
			t.Errorf("after resume claimed %v, want [%d]", got, jp)
		}

		_, err := s.PluginPause(ctx, testNow, "nobody", true)
		wantErr(t, "pause an unknown plugin", err, job.ErrNotFound)
		_, err = s.PluginPause(ctx, testNow, " ", true)
		wantErr(t, "pause no plugin", err, job.ErrInvalid)
	})
}

func TestPluginSettings_TimeoutAndRetriesReachClaimsAndConclusions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		s := fx.plugins(t)
		fx.activate("p")
		dur := func(d time.Duration) *time.Duration { return &d }
		num := func(n int) *int { return &n }

		for _, tc := range []struct {
			name        string
			update      job.PluginSettingsUpdate
			wantTimeout time.Duration // db.Claim.JobTimeout
			wantRetries *int
		}{
			{"TimeoutAndNoRetries", job.PluginSettingsUpdate{JobTimeout: dur(5 * time.Minute), MaxRetries: num(0)}, 5 * time.Minute, num(0)},
			{"RetriesKeepTimeout", job.PluginSettingsUpdate{MaxRetries: num(2)}, 5 * time.Minute, num(2)},
			{"NoTimeout", job.PluginSettingsUpdate{JobTimeout: dur(0)}, -1, num(2)},
			{"BackToDefaults", job.PluginSettingsUpdate{JobTimeout: dur(-1), MaxRetries: num(-1)}, 0, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := must(s.PluginSettingsSet(ctx, testNow, "p", tc.update)).get(t)
				if (got.MaxRetries == nil) != (tc.wantRetries == nil) || (got.MaxRetries != nil && *got.MaxRetries != *tc.wantRetries) {
					t.Errorf("max retries = %v, want %v", got.MaxRetries, tc.wantRetries)
				}
				id := fx.enqueue(t, "p", 0)
				claims := fx.claim(t, testNow, "w", 1, "p")
				if len(claims) != 1 || claims[0].Ref.JobID != id {
					t.Fatalf("claimed %v, want [%d]", claimIDs(claims), id)
				}
				if claims[0].JobTimeout != tc.wantTimeout {
					t.Errorf("claim's job timeout = %v, want %v", claims[0].JobTimeout, tc.wantTimeout)
				}
				// The global max retries is 5; the plugin's, when set, wins.
				out := fx.conclude(t, testNow, job.Conclusion{Ref: claims[0].Ref, Kind: job.ConcludeRequeue, Message: "lost", MaxRetries: 5})
				want := job.OutcomeRequeued
				if tc.wantRetries != nil && *tc.wantRetries == 0 {
					want = job.OutcomeFailed
				}
				if out[0] != want {
					t.Errorf("requeue outcome = %v, want %v", out[0], want)
				}
				if out[0] == job.OutcomeRequeued { // out of the way of the next case
					c := fx.claim(t, testNow.Add(time.Hour), "w", 1, "p")
					fx.conclude(t, testNow, job.Conclusion{Ref: c[0].Ref, Kind: job.ConcludeComplete})
				}
			})
		}

		_, err := s.PluginSettingsSet(ctx, testNow, "p", job.PluginSettingsUpdate{MaxRetries: num(100000)})
		wantErr(t, "max retries out of range", err, job.ErrInvalid)
		_, err = s.PluginSettingsSet(ctx, testNow, "nobody", job.PluginSettingsUpdate{MaxRetries: num(1)})
		wantErr(t, "settings of an unknown plugin", err, job.ErrNotFound)
	})
}

func TestPluginBackfill_QueuesEachCurrentVersionOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		s := fx.plugins(t)
		fx.activate("p")
		roots := must(s.SourceRoots(ctx, true)).get(t)
		add := func(rel, hash string, tags ...string) int64 {
			return must(s.FileVersionAdd(ctx, roots[0].ID, rel, hash, 1, testNow.Add(-time.Hour), tags)).get(t)
		}
		b := add("in/b.txt", "hash-b", "txt")
		old := add("in/c.csv", "hash-c1", "csv")
		c := add("in/c.csv", "hash-c2", "csv") // the current version; old is not
		fx.enqueue(t, "other", 0)              // another plugin's job does not count

		files := must(s.PluginBackfillFiles(ctx, "p")).get(t)
		got := map[int64]string{}
		for _, f := range files {
			got[f.VersionID] = f.RelPath + " " + f.AppliedTags
		}
		// The fixture's own file has applied_tags "csv" on SQLite and none
		// on PostgreSQL: only its path is compared.
		want := map[int64]string{b: "in/b.txt txt", c: "in/c.csv csv"}
		if len(got) != 3 || !strings.HasPrefix(got[fx.fv], "in/a.csv ") || got[b] != want[b] || got[c] != want[c] {
			t.Fatalf("candidates = %v, want %v (not the old version %d)", got, want, old)
		}

		// The caller picks the files the subscriptions match.
		pick := []db.BackfillFile{files[0], files[2]}
		if n := must(s.PluginBackfill(ctx, testNow, "p", pick)).get(t); n != 2 {
			t.Errorf("backfill queued %d, want 2", n)
		}
		if n := must(s.PluginBackfill(ctx, testNow, "p", pick)).get(t); n != 0 {
			t.Errorf("second backfill queued %d, want 0", n)
		}
		left := must(s.PluginBackfillFiles(ctx, "p")).get(t)
		if len(left) != 1 || left[0].VersionID != b {
			t.Errorf("candidates after the backfill = %+v, want only version %d", left, b)
		}
		page := must(fx.s.JobsList(ctx, job.Filter{Plugin: "p", Limit: 10})).get(t)
		if page.Total != 2 {
			t.Errorf("jobs of p = %d, want 2", page.Total)
		}
		for _, j := range page.Jobs {
			if j.Status != job.StatusQueued || j.Priority != 100 {
				t.Errorf("backfilled job %+v: want QUEUED with priority 100 (modified within a day)", j)
			}
		}
	})
}

func TestPluginRerun_QueuesJobsCompletedBeforeTheActiveDeployOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		ctx := context.Background()
		s := fx.plugins(t)
		_, err := s.PluginRerun(ctx, testNow, "p", true)
		wantErr(t, "rerun without an ACTIVE manifest", err, job.ErrNotFound)

		fx.activate("p") // deployed now, after testNow
		id := fx.enqueue(t, "p", 7)
		c := fx.claim(t, testNow, "w", 1, "p")
		fx.conclude(t, testNow, job.Conclusion{Ref: c[0].Ref, Kind: job.ConcludeComplete})

		for _, tc := range []struct {
			name                string
			dryRun              bool
			wantMatched, wantQd int64
		}{
			{"DryRun", true, 1, 0},
			{"Run", false, 1, 1},
			{"Again", false, 0, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				res := must(s.PluginRerun(ctx, testNow, "p", tc.dryRun)).get(t)
				if res.Matched != tc.wantMatched || res.Queued != tc.wantQd {
					t.Errorf("rerun = %+v, want matched %d, queued %d", res, tc.wantMatched, tc.wantQd)
				}
			})
		}
		page := must(fx.s.JobsList(ctx, job.Filter{Plugin: "p", Limit: 10})).get(t)
		if page.Total != 2 || page.Jobs[0].Status != job.StatusQueued || page.Jobs[0].Priority != 7 ||
			page.Jobs[1].ID != id || page.Jobs[1].Status != job.StatusCompleted {
			t.Errorf("jobs after the rerun = %+v; want the COMPLETED job %d kept and one new QUEUED with its priority", page.Jobs, id)
		}
	})
}

// Resuming a plugin notifies casparian_queue with its name, so that every
// Sentinel of the database claims its jobs at once; pausing does not.
func TestPluginPause_ResumeNotifiesEverySentinel(t *testing.T) {
	t.Parallel()
	d, url := openTest(t)
	ctx := testContext(t)
	seedFile(t, ctx, connect(t, url)) // plugins csv_parser and xml_parser
	listener := connect(t, url)
	if _, err := listener.Exec(ctx, "LISTEN "+QueueChannel); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		pause bool
		want  []string
	}{
		{"Pause", true, nil},
		{"Resume", false, []string{"csv_parser"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := d.PluginPause(ctx, time.Now(), "csv_parser", tc.pause); err != nil {
				t.Fatal(err)
			}
			got, _, err := notifications(ctx, listener, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("notifications %q, want %q", got, tc.want)
			}
		})
	}
}
