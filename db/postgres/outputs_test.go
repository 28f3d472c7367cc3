package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// TestOutputs_LineageStaleRerunAndReuse runs issue #20's database path on
// PostgreSQL: lineage written with a batch of completions, staleness by a
// newer file version and a newer manifest, a rerun that supersedes, and a
// copy linked to the earlier result.
func TestOutputs_LineageStaleRerunAndReuse(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	d.SetLineage(true)
	ctx := testContext(t)
	root, err := d.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	fv, err := d.FileVersionAdd(ctx, root.ID, "in/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.PluginManifestActivate(ctx, "csv", job.BuiltinVersion, job.BuiltinSource("csv"), "", "art-csv"); err != nil {
		t.Fatal(err)
	}
	var reported []string
	d.OnReuse(func(p string) { reported = append(reported, p) })

	run := func(n int) []db.Claim {
		t.Helper()
		res, err := d.JobsBatch(ctx, testNow, nil, []job.ClaimRequest{{Worker: "w", Plugins: []string{"csv"}, Limit: n}})
		if err != nil || len(res.Claims) != n {
			t.Fatalf("claim: %+v, %v", res, err)
		}
		var cs []job.Conclusion
		for i, c := range res.Claims {
			cs = append(cs, job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Metrics: map[string]int64{"rows": int64(i)},
				Artifacts:    []map[string]string{{"topic": "output", "uri": "parquet://output/csv.parquet"}},
				ArtifactHash: c.Dispatch.ArtifactHash, SinksHash: db.SinksHash(c.Dispatch.Sinks)})
		}
		// A repeated receipt in the same batch records nothing twice.
		cs = append(cs, cs[0])
		res, err = d.JobsBatch(ctx, testNow, cs, nil)
		if err != nil || res.Outcomes[n] != job.OutcomeStale {
			t.Fatalf("conclude: %+v, %v", res, err)
		}
		return res.Claims
	}
	for range 3 {
		if _, err := d.JobEnqueue(ctx, job.Submission{FileVersionID: fv, Plugin: "csv"}); err != nil {
			t.Fatal(err)
		}
	}
	run(3)
	lin, err := d.OutputsOfVersion(ctx, fv)
	if err != nil || len(lin) != 3 || lin[0].ArtifactHash != "art-csv" || lin[0].ContentHash != "hash-a" ||
		lin[0].FilePath != "/data/in/a.csv" || lin[0].Rows == nil || lin[0].Stale {
		t.Fatalf("lineage = %+v, %v", lin, err)
	}
	if prov, err := d.OutputProvenance(ctx, "parquet://output/csv.parquet", 2); err != nil || len(prov) != 2 {
		t.Fatalf("provenance = %+v, %v", prov, err)
	}
	if _, err := d.OutputProvenance(ctx, "bad", 2); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("bad uri: %v", err)
	}

	// A copy: reused, no job to claim.
	cp, err := d.FileVersionAdd(ctx, root.ID, "copy/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.JobEnqueue(ctx, job.Submission{FileVersionID: cp, Plugin: "csv"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.JobGet(ctx, id)
	if err != nil || info.Status != job.StatusCompleted || info.ResultSummary != fmt.Sprintf("reused from job %d", lin[2].JobID) {
		t.Fatalf("copy's job = %+v, %v", info, err)
	}
	if l, err := d.OutputsOfVersion(ctx, cp); err != nil || len(l) != 1 || l[0].ReusedFromJob != lin[2].JobID {
		t.Fatalf("copy's lineage = %+v, %v", l, err)
	}
	if len(reported) != 1 {
		t.Errorf("reported %v", reported)
	}

	// Edited: stale, rerun, superseded.
	if _, err := d.FileVersionAdd(ctx, root.ID, "in/a.csv", "hash-b", 11, testNow, nil); err != nil {
		t.Fatal(err)
	}
	stale, err := d.OutputsStale(ctx, "")
	if err != nil || len(stale) != 1 || stale[0].StaleReason != job.StaleNewerFile {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	if res, err := d.OutputsRerunStale(ctx, testNow, "csv", false); err != nil || res.Queued != 1 {
		t.Fatalf("rerun = %+v, %v", res, err)
	}
	run(1)
	if stale, err := d.OutputsStale(ctx, ""); err != nil || len(stale) != 0 {
		t.Fatalf("stale after rerun = %+v, %v", stale, err)
	}
	if _, err := d.PluginManifestActivate(ctx, "csv", "2", "builtin:csv ", "", "art-csv2"); err != nil {
		t.Fatal(err)
	}
	if stale, err := d.OutputsStale(ctx, "csv"); err != nil || len(stale) != 2 || stale[0].StaleReason != job.StaleNewerManifest {
		t.Fatalf("stale after deploy = %+v, %v", stale, err)
	}
	off := 0
	if s, err := d.PluginSettingsSet(ctx, testNow, "csv", job.PluginSettingsUpdate{Reuse: &off}); err != nil || s.Reuse == nil || *s.Reuse {
		t.Fatalf("settings = %+v, %v", s, err)
	}
}
