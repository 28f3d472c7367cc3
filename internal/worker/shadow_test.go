package worker_test

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// TestShadow_ChangedPluginReportsDifferingRowCount is issue #20 part 5's
// test with every part real: a Sentinel on SQLite, this package's worker,
// its sinks. Plugin "csv" runs the built-in CSV parser (v1), which finds a
// header and two rows in the file "rows 3\na\nb"; v2, deployed with Shadow,
// is the misbehave WebAssembly module, which writes 3 rows for it (its first
// line says so). The shadow jobs write into shadow sinks, v1's tables keep
// their rows, and compare reports the row counts 2 → 3.
func TestShadow_ChangedPluginReportsDifferingRowCount(t *testing.T) {
	t.Parallel()
	mods := worker.BuildTestModules(t)
	h := newSentinel(t, func(c *config.Config) {
		c.HeartbeatInterval = 5 * time.Second
		c.WorkerTimeout = 60 * time.Second
	})
	ctx := t.Context()
	if _, err := h.Store.PluginManifestActivate(ctx, "csv", "1.0.0", "builtin:csv", "", worker.ArtifactHash("builtin:csv", "")); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(h.out, "csv.db")
	h.Topic("csv", "output", "sqlite://"+dbPath+"/{file_stem}", transport.ModeReplace)
	var base []int64
	for i := range 2 {
		fv := h.File(fmt.Sprintf("in/f%d.csv", i), "rows 3\na\nb\n")
		base = append(base, h.EnqueueOverrides(fv, "csv", ""))
	}
	startWorker(t, h, worker.Options{Wasm: testWasm(0), Concurrency: 2})
	for _, id := range base {
		if j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
			t.Fatalf("v1 job %+v", j)
		}
	}
	v1Rows := querySQLite(t, dbPath, `SELECT count(*) FROM f0`)

	src := base64.StdEncoding.EncodeToString(mods.Misbehave)
	res, err := h.Store.PluginDeploy(ctx, time.Now(), db.Deployment{Plugin: "csv", Version: "2.0.0", SourceCode: src,
		EnvHash: "system", ArtifactHash: worker.ArtifactHash(src, ""), PublisherName: "test", Shadow: true})
	if err != nil || res.Shadow == nil || res.Shadow.Jobs != 2 {
		t.Fatalf("shadow deploy: %+v, %v", res, err)
	}
	var c job.ShadowComparison
	testwait.Eventually(t, wasmWithin, "the shadow jobs are compared", func() bool {
		c, err = h.Sentinel.ShadowCompare(ctx, "csv", "1.0.0", "2.0.0")
		return err == nil && c.Summary.Compared+c.Summary.MissingShadow == 2
	})
	if c.Summary.Differing != 2 {
		t.Fatalf("comparison %+v: want 2 differing", c)
	}
	for _, f := range c.Files {
		var diffs []string
		for _, tp := range f.Topics {
			diffs = append(diffs, tp.Differences...)
		}
		if !strings.Contains(strings.Join(diffs, ";"), "rows 2 → 3") {
			t.Errorf("file %d: differences %q, want the row counts", f.FileVersionID, diffs)
		}
	}
	// v1's table is as it was; v2's rows are in the shadow database.
	if got := querySQLite(t, dbPath, `SELECT count(*) FROM f0`); got[0] != v1Rows[0] {
		t.Errorf("v1's output has %v rows after the shadow run, had %v", got, v1Rows)
	}
	shadowDB := filepath.Join(h.out, "_shadow", fmt.Sprintf("run-%d", res.Shadow.ID), "csv.db")
	if got := querySQLite(t, shadowDB, `SELECT count(*) FROM f0`); len(got) != 1 || got[0] != "3" {
		t.Errorf("shadow output rows %v, want 3", got)
	}
}
