package db

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

// TestJobsClaim_SinkNamingTheDatabaseFailsTheJob: a sink whose path leads
// to the database or its -wal/-shm file, however it is spelt, fails the job
// at dispatch (FAILED, not retried) with a reason saying so; other sinks
// are dispatched.
func TestJobsClaim_SinkNamingTheDatabaseFailsTheJob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sentinel.db")
	db := openAt(t, path)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	if err := os.Symlink(path, filepath.Join(dir, "innocent.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{
		"Direct":         "sqlite://" + path + "/cf_plugin_config",
		"WAL":            "parquet://" + path + "-wal",
		"SHM":            "parquet://" + path + "-shm",
		"DotDot":         "sqlite://" + dir + "/sub/../sentinel.db/cf_plugin_config",
		"Symlink":        "sqlite://" + dir + "/innocent.db/t",
		"PercentEncoded": "sqlite://" + dir + "/%73entinel.db/t",
		"DoubleSlash":    "sqlite://" + dir + "//./sentinel.db/t",
	}
	for name, uri := range refused {
		t.Run(name, func(t *testing.T) {
			id := insertJob(t, db, s.fv, "p", fmt.Sprintf(`{"output": {"uri": %q, "mode": "replace"}}`, uri))
			claims, failures, err := db.JobsClaim(ctx, testNow, []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: 1}})
			if err != nil {
				t.Fatal(err)
			}
			if len(claims) != 0 || len(failures) != 1 || failures[0].Ref.JobID != id ||
				!strings.Contains(failures[0].Reason, "sink "+uri+" names the Sentinel's database") {
				t.Fatalf("claims %+v, failures %+v; want job %d failed for naming the database", claims, failures, id)
			}
			j := getJob(t, db, id)
			if j.Status != job.StatusFailed || j.RetryCount != 0 || !strings.Contains(j.ErrorMessage, "names the Sentinel's database") {
				t.Errorf("job after the refusal: %s, retries %d, %q; want FAILED at once", j.Status, j.RetryCount, j.ErrorMessage)
			}
		})
	}
	t.Run("OtherSinksDispatched", func(t *testing.T) {
		for _, uri := range []string{"sqlite://" + dir + "/other.db/t", "parquet://output/p.parquet", "sqlite://" + dir + "/sentinel.db.bak/t"} {
			id, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", ConfigOverrides: fmt.Sprintf(`{"output": {"uri": %q}}`, uri)})
			if err != nil {
				t.Fatal(err)
			}
			if got := claim(t, db, "w", 1, "p"); len(got) != 1 || got[0].Ref.JobID != id {
				t.Errorf("sink %s: claims %+v", uri, got)
			}
		}
	})
}

// A relative sink resolves against the worker's --output-dir, which the
// Sentinel cannot see: it is judged from the Sentinel's working directory,
// where a worker started beside it writes by default.
func TestJobsClaim_RelativeSinkNamingTheDatabaseFromTheWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	db := openAt(t, "casparian_flow.db") // sqlite://casparian_flow.db, the default
	s := seedBasics(t, db, "p")
	id := insertJob(t, db, s.fv, "p", `{"output": {"uri": "sqlite://casparian_flow.db/cf_plugin_config"}}`)
	_, failures, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: 1}})
	if err != nil || len(failures) != 1 || failures[0].Ref.JobID != id || !strings.Contains(failures[0].Reason, "names the Sentinel's database") {
		t.Fatalf("failures %+v, %v; want the relative sink refused", failures, err)
	}
}

// Sinks naming the database are refused where they are added, too: the
// API's config_overrides (JobEnqueue), topic configs, the bootstrap file.
func TestSinkGuard_RefusedWhereSinksAreAdded(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	db := openAt(t, path)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	uri := "sqlite://" + path + "/cf_plugin_config"

	_, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p",
		ConfigOverrides: fmt.Sprintf(`{"output": [{"uri": "parquet://ok.parquet"}, {"uri": %q}]}`, uri)})
	if !errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), "sink "+uri+" names the Sentinel's database") {
		t.Errorf("JobEnqueue = %v; want job.ErrInvalid naming the sink", err)
	}
	if _, err := db.TopicConfigAdd(ctx, "p", "output", uri, "replace", ""); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("TopicConfigAdd = %v; want job.ErrInvalid", err)
	}
	_, err = db.BootstrapApply(ctx, Bootstrap{Plugins: []BootstrapPlugin{{Name: "q", Topics: []Sink{{Topic: "output", URI: uri}}}}})
	if !errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), "names the Sentinel's database") {
		t.Errorf("BootstrapApply = %v; want job.ErrInvalid", err)
	}
	if plugins, err := db.PluginsList(ctx); err != nil || len(plugins) != 1 {
		t.Errorf("plugins after the refusals: %+v, %v; want only p", plugins, err)
	}
	if _, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p",
		ConfigOverrides: `{"output": {"uri": "parquet://ok.parquet"}}`}); err != nil {
		t.Errorf("JobEnqueue with an ordinary sink: %v", err)
	}
}
