package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// runJob claims the job of plugin (the only one QUEUED) and completes it as
// the worker actor would, with the DISPATCH's artifact and sinks hashes.
func runJob(t *testing.T, db *DB, plugin string, artifacts []map[string]string, metrics map[string]int64) Claim {
	t.Helper()
	cs := claim(t, db, "w1", 1, plugin)
	if len(cs) != 1 {
		t.Fatalf("claimed %d jobs, want 1", len(cs))
	}
	c := cs[0]
	out := conclude(t, db, job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Artifacts: artifacts, Metrics: metrics,
		ArtifactHash: c.Dispatch.ArtifactHash, SinksHash: SinksHash(c.Dispatch.Sinks)})
	if out[0] != job.OutcomeCompleted {
		t.Fatalf("outcome %v", out[0])
	}
	return c
}

func TestOutputs_RecordedWithTheCompletion(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	c := runJob(t, db, "p", []map[string]string{
		{"topic": "output", "uri": "parquet://output/p.parquet", "rows": "7"},
		{"topic": "errors", "uri": "sqlite://output/e.db/errors"},
	}, map[string]int64{"rows": 9, "bytes": 100})

	got, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("lineage = %+v, want 2 outputs", got)
	}
	o := got[0]
	if o.JobID != c.Ref.JobID || o.Attempt != 1 || o.Plugin != "p" || o.ArtifactHash != "art-p" || o.ContentHash != "hash-a" ||
		o.URI != "parquet://output/p.parquet" || o.Topic != "output" || o.Rows == nil || *o.Rows != 7 || o.Bytes != nil ||
		o.FilePath != "/data/in/a.csv" || o.Stale {
		t.Errorf("first output = %+v", o)
	}
	// Two artifacts: the job's metrics are not split between them.
	if got[1].Rows != nil || got[1].URI != "sqlite://output/e.db/errors" {
		t.Errorf("second output = %+v", got[1])
	}

	prov, err := db.OutputProvenance(ctx, "parquet://output/p.parquet", 10)
	if err != nil || len(prov) != 1 || prov[0].FileVersionID != s.fv {
		t.Fatalf("provenance = %+v, %v", prov, err)
	}
	if _, err := db.OutputProvenance(ctx, "parquet://output/none.parquet", 10); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("unknown uri: %v, want ErrNotFound", err)
	}
	if _, err := db.OutputProvenance(ctx, "no-scheme", 10); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("bad uri: %v, want ErrInvalid", err)
	}
	if _, err := db.OutputsOfVersion(ctx, 999); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("unknown version: %v, want ErrNotFound", err)
	}
}

func TestOutputs_BatchOfCompletionsOneRowEachFailuresNone(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	const n = 75 // a chunk of 64, one of 8, three one by one
	for range n + 1 {
		enqueue(t, db, s.fv, "p", 0)
	}
	cs := claim(t, db, "w1", n+1, "p")
	var concl []job.Conclusion
	for i, c := range cs {
		k := job.ConcludeComplete
		if i == n {
			k = job.ConcludeFail
		}
		// No ArtifactHash: the lineage records the ACTIVE manifest's.
		concl = append(concl, job.Conclusion{Ref: c.Ref, Kind: k, Metrics: map[string]int64{"rows": int64(i)},
			Artifacts: []map[string]string{{"topic": "output", "uri": fmt.Sprintf("parquet://output/%d.parquet", i)}}})
	}
	conclude(t, db, concl...)
	got, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d outputs, want %d (the failed job has none)", len(got), n)
	}
	for _, o := range got {
		if o.ArtifactHash != "art-p" || o.Rows == nil || o.URI != fmt.Sprintf("parquet://output/%d.parquet", *o.Rows) {
			t.Fatalf("output %+v", o)
		}
	}
}

func TestOutputs_StaleByFileOrManifestAndRerunSupersedes(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	runJob(t, db, "p", []map[string]string{{"topic": "output", "uri": "parquet://output/p.parquet"}}, nil)
	if stale, err := db.OutputsStale(ctx, ""); err != nil || len(stale) != 0 {
		t.Fatalf("stale before any change = %+v, %v", stale, err)
	}

	// The file is edited: a new version of the same location.
	v2, err := db.FileVersionAdd(ctx, s.root, "in/a.csv", "hash-b", 11, testNow, []string{"csv"})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := db.OutputsStale(ctx, "p")
	if err != nil || len(stale) != 1 || stale[0].StaleReason != job.StaleNewerFile || stale[0].FileVersionID != s.fv {
		t.Fatalf("stale after edit = %+v, %v", stale, err)
	}
	res, err := db.OutputsRerunStale(ctx, testNow, "", true)
	if err != nil || res.Matched != 1 || res.Queued != 0 {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	res, err = db.OutputsRerunStale(ctx, testNow, "", false)
	if err != nil || res.Queued != 1 {
		t.Fatalf("rerun = %+v, %v", res, err)
	}
	// Already queued: a second rerun queues nothing.
	if res, err := db.OutputsRerunStale(ctx, testNow, "", false); err != nil || res.Queued != 0 {
		t.Fatalf("second rerun = %+v, %v", res, err)
	}
	c := runJob(t, db, "p", []map[string]string{{"topic": "output", "uri": "parquet://output/p.parquet"}}, nil)
	if c.Dispatch.FileVersionID != v2 {
		t.Fatalf("rerun ran version %d, want %d", c.Dispatch.FileVersionID, v2)
	}
	if stale, err := db.OutputsStale(ctx, ""); err != nil || len(stale) != 0 {
		t.Fatalf("stale after rerun = %+v, %v", stale, err)
	}
	// The old output stays as history, marked stale.
	old, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil || len(old) != 1 || !old[0].Stale {
		t.Fatalf("history = %+v, %v", old, err)
	}

	// A new ACTIVE manifest: the newest output is stale by manifest.
	if _, err := db.PluginManifestActivate(ctx, "p", "2.0", "print('p2')", "", "art-p2"); err != nil {
		t.Fatal(err)
	}
	stale, err = db.OutputsStale(ctx, "")
	if err != nil || len(stale) != 1 || stale[0].StaleReason != job.StaleNewerManifest {
		t.Fatalf("stale after deploy = %+v, %v", stale, err)
	}
	if stale, _ := db.OutputsStale(ctx, "other"); len(stale) != 0 {
		t.Errorf("stale of another plugin = %+v", stale)
	}
}

func TestReuse_CopyIsLinkedToTheEarlierResult(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db)
	if _, err := db.PluginManifestActivate(ctx, "csv", job.BuiltinVersion, job.BuiltinSource("csv"), "", "art-csv"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginManifestActivate(ctx, "py", "1", "print(1)", "", "art-py"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reported []string
	db.OnReuse(func(p string) { mu.Lock(); reported = append(reported, p); mu.Unlock() })

	first := enqueue(t, db, s.fv, "csv", 0)
	runJob(t, db, "csv", []map[string]string{{"topic": "output", "uri": "parquet://output/csv.parquet"}}, map[string]int64{"rows": 3})
	enqueue(t, db, s.fv, "py", 0)
	runJob(t, db, "py", nil, nil)

	// A copy elsewhere, same content: reused for csv (built-in), run for
	// py (not deterministic).
	copyV, err := db.FileVersionAdd(ctx, s.root, "other/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	reusedID := enqueue(t, db, copyV, "csv", 0)
	j := getJob(t, db, reusedID)
	if j.Status != job.StatusCompleted || j.ResultSummary != fmt.Sprintf("reused from job %d", first) {
		t.Fatalf("copy's job = %+v", j)
	}
	lin, err := db.OutputsOfVersion(ctx, copyV)
	if err != nil || len(lin) != 1 || lin[0].ReusedFromJob != first || lin[0].URI != "parquet://output/csv.parquet" ||
		lin[0].JobID != reusedID || lin[0].Rows == nil || *lin[0].Rows != 3 {
		t.Fatalf("copy's lineage = %+v, %v", lin, err)
	}
	if pyID := enqueue(t, db, copyV, "py", 0); getJob(t, db, pyID).Status != job.StatusQueued {
		t.Errorf("non-deterministic plugin reused")
	}
	// The same version queued again runs: that is an explicit re-run.
	if again := enqueue(t, db, s.fv, "csv", 0); getJob(t, db, again).Status != job.StatusQueued {
		t.Errorf("same version reused")
	}
	mu.Lock()
	if strings.Join(reported, ",") != "csv" {
		t.Errorf("reported reuses = %v, want [csv]", reported)
	}
	mu.Unlock()

	// Reuse off for csv: a third copy runs; default again: reused.
	off, def := 0, -1
	if _, err := db.PluginSettingsSet(ctx, testNow, "csv", job.PluginSettingsUpdate{Reuse: &off}); err != nil {
		t.Fatal(err)
	}
	third, err := db.FileVersionAdd(ctx, s.root, "third/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := enqueue(t, db, third, "csv", 0); getJob(t, db, id).Status != job.StatusQueued {
		t.Errorf("reused with reuse off")
	}
	set, err := db.PluginSettingsSet(ctx, testNow, "csv", job.PluginSettingsUpdate{Reuse: &def})
	if err != nil || set.Reuse != nil {
		t.Fatalf("settings = %+v, %v", set, err)
	}
	fourth, err := db.FileVersionAdd(ctx, s.root, "fourth/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := enqueue(t, db, fourth, "csv", 0); getJob(t, db, id).Status != job.StatusCompleted {
		t.Errorf("not reused with reuse back to default")
	}
	// Other sinks (an override): not the same result.
	fifth, err := db.FileVersionAdd(ctx, s.root, "fifth/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: fifth, Plugin: "csv",
		ConfigOverrides: `{"output": {"uri": "parquet://output/elsewhere.parquet"}}`})
	if err != nil {
		t.Fatal(err)
	}
	if getJob(t, db, id).Status != job.StatusQueued {
		t.Errorf("reused with other sinks")
	}
}

func TestReuse_ScannerRevertIsLinked(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	root, err := db.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginManifestActivate(ctx, "csv", job.BuiltinVersion, job.BuiltinSource("csv"), "", "art-csv"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginSubscribe(ctx, "csv", []string{"csv"}); err != nil {
		t.Fatal(err)
	}
	scan := func(hash string) ScanRecord {
		recs, err := db.ScanRecordFiles(ctx, testNow, []ScannedFile{{RootID: root.ID, RelPath: "a.csv", Hash: hash, Size: 1,
			ModTime: testNow.Add(-time.Hour), Tags: []string{"csv"}}})
		if err != nil {
			t.Fatal(err)
		}
		return recs[0]
	}
	v1 := scan("h1")
	runJob(t, db, "csv", nil, nil)
	scan("h2")
	runJob(t, db, "csv", nil, nil)
	v3 := scan("h1") // reverted
	if len(v3.Jobs) != 1 || getJob(t, db, v3.Jobs[0]).Status != job.StatusCompleted {
		t.Fatalf("revert's jobs %v not reused", v3.Jobs)
	}
	if want := fmt.Sprintf("reused from job %d", v1.Jobs[0]); getJob(t, db, v3.Jobs[0]).ResultSummary != want {
		t.Errorf("summary %q, want %q", getJob(t, db, v3.Jobs[0]).ResultSummary, want)
	}
	if stale, err := db.OutputsStale(ctx, ""); err != nil || len(stale) != 0 {
		t.Errorf("stale after revert = %+v, %v", stale, err)
	}
}

// TestOutputs_NothingRecordedWhileLineageIsOff: with lineage off (the
// default) a completion records no output.
func TestOutputs_NothingRecordedWhileLineageIsOff(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	runJob(t, db, "p", []map[string]string{{"topic": "output", "uri": "parquet://output/p.parquet"}}, nil)
	var n int
	if err := db.reader.QueryRowContext(ctx, `SELECT count(*) FROM sentinel_lineage`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d outputs recorded with lineage off", n)
	}
}

// A batch's completions are recorded alike whether the worker actor gave
// the DISPATCH's hashes or not (a receipt before registration: the ACTIVE
// manifest's hash, no sinks hash), with or without the job's plugin, mixed
// in one batch large enough for the batch statement; the sinks hash is the
// reuse key.
func TestOutputs_BatchWithAndWithoutHashesRecordsTheSame(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	const n = 80
	for range n {
		enqueue(t, db, s.fv, "p", 0)
	}
	cs := claim(t, db, "w1", n, "p")
	if len(cs) != n {
		t.Fatalf("claimed %d", len(cs))
	}
	var concl []job.Conclusion
	for i, c := range cs {
		cn := job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Metrics: map[string]int64{"rows": int64(i)},
			Artifacts: []map[string]string{{"topic": "output", "uri": fmt.Sprintf("parquet://output/%d.parquet", i)}}}
		if i%3 != 0 {
			cn.ArtifactHash, cn.SinksHash = c.Dispatch.ArtifactHash, fmt.Sprintf("sinks-%d", i)
		} else if i%2 == 0 {
			cn.Plugin = "p" // the manifest is looked up by plugin, else by job
		}
		concl = append(concl, cn)
	}
	for i, o := range conclude(t, db, concl...) {
		if o != job.OutcomeCompleted {
			t.Fatalf("job %d: outcome %v", cs[i].Ref.JobID, o)
		}
	}
	got, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d outputs, want %d", len(got), n)
	}
	byJob := map[int64]int{}
	for i, c := range cs {
		byJob[c.Ref.JobID] = i
	}
	for _, o := range got {
		i, ok := byJob[o.JobID]
		if !ok || o.Attempt != cs[i].Ref.Attempt || o.Plugin != "p" || o.ArtifactHash != "art-p" || o.ContentHash != "hash-a" ||
			o.Rows == nil || *o.Rows != int64(i) || o.URI != fmt.Sprintf("parquet://output/%d.parquet", i) || o.Topic != "output" {
			t.Errorf("output of job %d (conclusion %d) = %+v", o.JobID, i, o)
		}
	}
	// The sinks hash is not in job.Output: read it where reuse reads it.
	for i, c := range cs {
		var sinks string
		if err := db.reader.QueryRowContext(ctx, `SELECT sinks_hash FROM sentinel_lineage WHERE job_id = ?`, c.Ref.JobID).Scan(&sinks); err != nil {
			t.Fatal(err)
		}
		if want := concl[i].SinksHash; sinks != want {
			t.Errorf("job %d: sinks_hash %q, want %q", c.Ref.JobID, sinks, want)
		}
	}
}

// lineageRows reads what sentinel_outputs (the kept history) holds and the
// whole lineage (sentinel_lineage: with the COMPLETED job rows' outputs),
// as comparable strings.
func lineageRows(t *testing.T, db *DB) (kept, all []string) {
	t.Helper()
	read := func(from string) []string {
		rows, err := db.reader.Query(`SELECT file_version_id, job_id, attempt, artifact_index, plugin_name, artifact_hash,
			sinks_hash, COALESCE(topic, '-'), COALESCE(uri, '-'), COALESCE(row_count, -9), COALESCE(byte_count, -9), created_at
			FROM ` + from + ` ORDER BY job_id, attempt, artifact_index`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var fv, job, attempt, index, rowCount, byteCount int64
			var plugin, art, sinks, topic, uri string
			var created nullTime // end_time is DATETIME: the driver reads it as a time
			if err := rows.Scan(&fv, &job, &attempt, &index, &plugin, &art, &sinks, &topic, &uri, &rowCount, &byteCount, &created); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("v%d j%d a%d #%d %s %s %.8s %s %s rows=%d bytes=%d %s",
				fv, job, attempt, index, plugin, art, sinks, topic, uri, rowCount, byteCount, created.Time.Format(time.RFC3339Nano)))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return read("sentinel_outputs"), read("sentinel_lineage")
}

// The outputs of a COMPLETED job are read from its row (migration 0016);
// they outlive the row: pruning it, or another tool setting it QUEUED to
// run it again, keeps them, unchanged, in sentinel_outputs, and the next
// attempt's outputs join them.
func TestOutputs_KeptWhenTheJobIsPrunedOrRunAgain(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "p")
	enqueue(t, db, s.fv, "p", 0)
	enqueue(t, db, s.fv, "p", 0)
	first := runJob(t, db, "p", []map[string]string{
		{"topic": "output", "uri": "parquet://output/a.parquet", "rows": "12", "bytes": "-3"},
		{"topic": "errors", "uri": "parquet://output/e.parquet", "rows": "1x", "bytes": "0042"},
	}, map[string]int64{"rows": 99, "bytes": 5})
	runJob(t, db, "p", nil, map[string]int64{"rows": 4})

	kept, live := lineageRows(t, db)
	if len(kept) != 0 || len(live) != 3 {
		t.Fatalf("before: kept %q, live %q; want none kept, 3 live", kept, live)
	}
	// The rules of rows and bytes: the artifact's own whole number, else the
	// job's metric only when it has at most one artifact; none reported: one
	// row, index -1, with the metrics.
	for i, want := range []string{"#0 p art-p", "rows=12 bytes=-9", "#1 p art-p", "rows=-9 bytes=42", "#-1 p art-p", "- - rows=4 bytes=-9"} {
		if row := live[i/2]; !strings.Contains(row, want) {
			t.Errorf("live[%d] = %q, want it to hold %q", i/2, row, want)
		}
	}
	before, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil || len(before) != 3 {
		t.Fatalf("lineage before = %+v, %v", before, err)
	}

	// Another tool sets the first job QUEUED, COMPLETED and QUEUED again:
	// its row still holds attempt 1's outputs, shown once.
	for _, status := range []string{"QUEUED", "COMPLETED", "QUEUED"} {
		if _, err := db.writer.Exec(`UPDATE cf_processing_queue SET status = ? WHERE id = ?`, status, first.Ref.JobID); err != nil {
			t.Fatal(err)
		}
		kept2, all2 := lineageRows(t, db)
		if len(kept2) != 0 || !slicesEqual(all2, live) {
			t.Fatalf("%s: kept %q, lineage %q; want none kept, lineage %q", status, kept2, all2, live)
		}
	}
	// The claim that runs it again keeps attempt 1's outputs and clears the
	// row's key; the completion records attempt 2's.
	cs := claim(t, db, "w1", 1, "p")
	if len(cs) != 1 || cs[0].Ref.JobID != first.Ref.JobID || cs[0].Ref.Attempt != 2 {
		t.Fatalf("claimed %+v, want job %d attempt 2", cs, first.Ref.JobID)
	}
	var key sql.NullInt64
	if err := db.reader.QueryRow(`SELECT output_key FROM cf_processing_queue WHERE id = ?`, first.Ref.JobID).Scan(&key); err != nil || key.Valid {
		t.Fatalf("output_key after the claim = %v, %v; want NULL", key, err)
	}
	kept2, all2 := lineageRows(t, db)
	if !slicesEqual(kept2, live[:2]) || !slicesEqual(all2, live) {
		t.Fatalf("after the claim: kept %q, lineage %q; want kept %q, lineage %q", kept2, all2, live[:2], live)
	}
	out := conclude(t, db, job.Conclusion{Ref: cs[0].Ref, Kind: job.ConcludeComplete, Plugin: "p",
		Artifacts: []map[string]string{{"topic": "output", "uri": "parquet://output/a.parquet"}}})
	if out[0] != job.OutcomeCompleted {
		t.Fatalf("outcome %v", out[0])
	}
	prov, err := db.OutputProvenance(ctx, "parquet://output/a.parquet", 10)
	if err != nil || len(prov) != 2 || prov[0].Attempt != 2 || prov[1].Attempt != 1 {
		t.Fatalf("provenance after the second run = %+v, %v; want attempts 2 and 1", prov, err)
	}

	// Prune both jobs: nothing of the lineage is lost.
	_, liveBefore := lineageRows(t, db)
	res, err := db.JobsPrune(ctx, job.Prune{CompletedBefore: time.Now().Add(time.Hour)}, 100, false)
	if err != nil || res.Completed != 2 {
		t.Fatalf("prune = %+v, %v", res, err)
	}
	kept3, all3 := lineageRows(t, db)
	if len(kept3) != 4 || !slicesEqual(all3, kept3) {
		t.Fatalf("after prune: kept %q, lineage %q; want 4 kept, and nothing else", kept3, all3)
	}
	if len(liveBefore) != 4 {
		t.Fatalf("before prune: lineage %q, want 4 outputs", liveBefore)
	}
	for _, row := range liveBefore {
		if !slicesContain(kept3, row) {
			t.Errorf("pruned output %q not kept as it was (kept: %q)", row, kept3)
		}
	}
	after, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil || len(after) != 4 {
		t.Fatalf("lineage after prune = %+v, %v; want 4 outputs", after, err)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A plugin whose ACTIVE manifest has no artifact_hash (a built-in
// registered without one) still completes its jobs with lineage on, by
// plugin and by job: the lineage records an unknown manifest (an empty hash).
func TestOutputs_ManifestWithoutHashRecordsUnknown(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db, "q")
	if _, err := db.writer.Exec(`UPDATE cf_plugin_manifest SET artifact_hash = NULL WHERE plugin_name = 'q'`); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for range n {
		enqueue(t, db, s.fv, "q", 0)
	}
	cs := claim(t, db, "w1", n, "q")
	var concl []job.Conclusion
	for i, c := range cs {
		cn := job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete}
		if i%2 == 0 {
			cn.Plugin = "q"
		}
		concl = append(concl, cn)
	}
	for i, o := range conclude(t, db, concl...) {
		if o != job.OutcomeCompleted {
			t.Fatalf("job %d: outcome %v", cs[i].Ref.JobID, o)
		}
	}
	got, err := db.OutputsOfVersion(ctx, s.fv)
	if err != nil || len(got) != n {
		t.Fatalf("lineage = %d outputs, %v; want %d", len(got), err, n)
	}
	for _, o := range got {
		if o.ArtifactHash != "" || o.Plugin != "q" {
			t.Errorf("output %+v, want plugin q and no artifact hash", o)
		}
	}
}

// A result whose job ran twice (another tool set it QUEUED after it
// completed) has the outputs of both attempts; a copy reuses those of the
// newest attempt only.
func TestReuse_SourceRunTwiceLinksItsNewestAttempt(t *testing.T) {
	db := openTest(t)
	db.SetLineage(true)
	ctx := context.Background()
	s := seedBasics(t, db)
	if _, err := db.PluginManifestActivate(ctx, "csv", job.BuiltinVersion, job.BuiltinSource("csv"), "", "art-csv"); err != nil {
		t.Fatal(err)
	}
	first := enqueue(t, db, s.fv, "csv", 0)
	runJob(t, db, "csv", []map[string]string{{"topic": "output", "uri": "parquet://output/one.parquet"}}, nil)
	if _, err := db.writer.Exec(`UPDATE cf_processing_queue SET status = 'QUEUED' WHERE id = ?`, first); err != nil {
		t.Fatal(err)
	}
	runJob(t, db, "csv", []map[string]string{{"topic": "output", "uri": "parquet://output/two.parquet"}}, nil)
	if lin, err := db.OutputsOfVersion(ctx, s.fv); err != nil || len(lin) != 2 {
		t.Fatalf("source's lineage = %+v, %v; want both attempts", lin, err)
	}

	copyV, err := db.FileVersionAdd(ctx, s.root, "other/a.csv", "hash-a", 10, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	reusedID := enqueue(t, db, copyV, "csv", 0)
	if j := getJob(t, db, reusedID); j.Status != job.StatusCompleted {
		t.Fatalf("copy's job = %+v, want it reused", j)
	}
	lin, err := db.OutputsOfVersion(ctx, copyV)
	if err != nil || len(lin) != 1 || lin[0].URI != "parquet://output/two.parquet" || lin[0].ReusedFromJob != first {
		t.Fatalf("copy's lineage = %+v, %v; want attempt 2's output", lin, err)
	}
}
