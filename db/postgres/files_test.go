package postgres

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

func TestScan_RecordVersionsTagsAndJobsOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		root := must(s.SourceRoots(ctx, true)).get(t)[0]
		for plugin, tags := range map[string][]string{"csv_reader": {"csv"}, "everything": {"csv", "raw"}, "json_reader": {"json"}} {
			must(s.PluginSubscribe(ctx, plugin, tags)).get(t)
		}
		fresh := db.ScannedFile{RootID: root.ID, RelPath: "in/b.csv", Hash: "h1", Size: 5, ModTime: testNow.Add(-time.Hour), Tags: []string{"raw", "csv", "csv"}}
		week := db.ScannedFile{RootID: root.ID, RelPath: "week.json", Hash: "h2", Size: 6, ModTime: testNow.Add(-3 * 24 * time.Hour), Tags: []string{"json"}}
		old := db.ScannedFile{RootID: root.ID, RelPath: "old/x.csv", Hash: "h3", Size: 7, ModTime: testNow.Add(-30 * 24 * time.Hour), Tags: []string{"csv"}}
		untagged := db.ScannedFile{RootID: root.ID, RelPath: "notes.txt", Hash: "h4", Size: 1, ModTime: testNow}
		// The fixture's file, unchanged: its location, no version, no job.
		known := db.ScannedFile{RootID: root.ID, RelPath: "in/a.csv", Hash: "hash-a", Size: 10, ModTime: testNow, Tags: []string{"csv"}}

		recs := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{fresh, week, old, untagged, known})).get(t)
		if len(recs) != 5 {
			t.Fatalf("records = %+v", recs)
		}
		wantJobs := []struct {
			n        int
			priority int64
			path     string
		}{{2, 100, "/data/in/b.csv"}, {1, 50, "/data/week.json"}, {2, 10, "/data/old/x.csv"}, {0, 0, ""}, {0, 0, ""}}
		plugins := map[int][]string{}
		for i, w := range wantJobs {
			if len(recs[i].Jobs) != w.n {
				t.Errorf("file %d: %d jobs, want %d (%+v)", i, len(recs[i].Jobs), w.n, recs[i])
			}
			for _, id := range recs[i].Jobs {
				j := fx.get(t, id)
				if j.Priority != w.priority || j.FilePath != w.path || j.Status != job.StatusQueued || j.FileVersionID != recs[i].VersionID {
					t.Errorf("file %d: job %+v, want priority %d path %s", i, j, w.priority, w.path)
				}
				plugins[i] = append(plugins[i], j.PluginName)
			}
			sort.Strings(plugins[i])
		}
		if got := plugins[0]; len(got) != 2 || got[0] != "csv_reader" || got[1] != "everything" {
			t.Errorf("fresh csv+raw file queued for %v", got)
		}
		if got := plugins[1]; len(got) != 1 || got[0] != "json_reader" {
			t.Errorf("json file queued for %v", got)
		}
		if recs[3].VersionID == 0 || recs[3].LocationID == 0 {
			t.Errorf("untagged file not recorded: %+v", recs[3])
		}
		if recs[4].VersionID != 0 || recs[4].LocationID == 0 {
			t.Errorf("unchanged fixture file got a version: %+v", recs[4])
		}
		seen := map[int64]bool{}
		for _, r := range recs {
			if seen[r.LocationID] {
				t.Errorf("location %d twice in %+v", r.LocationID, recs)
			}
			seen[r.LocationID] = true
		}

		// The same content again (a retried batch, a touched file): no new
		// version, no new job, the size and mtime are refreshed.
		touched := fresh
		touched.ModTime, touched.Size = testNow, 5
		again := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{touched})).get(t)
		if again[0].VersionID != 0 || len(again[0].Jobs) != 0 || again[0].LocationID != recs[0].LocationID {
			t.Errorf("unchanged content recorded again: %+v", again[0])
		}
		locs := must(s.ScanLocations(ctx, root.ID)).get(t)
		if len(locs) != 5 {
			t.Errorf("locations = %+v", locs)
		}
		if l := locs["in/b.csv"]; l.ID != recs[0].LocationID || l.Size != 5 || l.MTime != db.ScanMTime(testNow) || l.Missing {
			t.Errorf("location after touch = %+v", l)
		}
		if l := locs["old/x.csv"]; l.RelPath != "old/x.csv" || l.Size != 7 || l.MTime != db.ScanMTime(old.ModTime) {
			t.Errorf("old location = %+v", l)
		}

		// New content at the same path: a new version and new jobs.
		edited := fresh
		edited.Hash, edited.Size = "h1b", 9
		rec := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{edited})).get(t)[0]
		if rec.VersionID == 0 || rec.VersionID == recs[0].VersionID || rec.LocationID != recs[0].LocationID || len(rec.Jobs) != 2 {
			t.Errorf("edited file = %+v", rec)
		}
		if c := must(fx.s.JobsCountByStatus(ctx)).get(t); c[job.StatusQueued] != 7 {
			t.Errorf("queued jobs = %v, want 7", c)
		}
		// Back to the first content: that is a change too (the current
		// version is compared, not the history).
		back := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{fresh})).get(t)[0]
		if back.VersionID == 0 || back.VersionID == rec.VersionID || len(back.Jobs) != 2 {
			t.Errorf("reverted file = %+v", back)
		}

		// A bad file refuses the batch before anything is written.
		_, err := s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{{RootID: root.ID, RelPath: "new", Hash: "hn"}, {RootID: root.ID, RelPath: "nohash"}})
		if err == nil {
			t.Error("file without hash accepted")
		}
		if _, ok := must(s.ScanLocations(ctx, root.ID)).get(t)["new"]; ok {
			t.Error("a refused batch recorded a file")
		}
		if got := must(s.ScanRecordFiles(ctx, testNow, nil)).get(t); got != nil {
			t.Errorf("empty batch = %+v", got)
		}
	})
}

func TestScan_FinishMarksMissingAndSeen(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		root := must(s.SourceRoots(ctx, true)).get(t)[0]
		other := must(s.SourceRootAdd(ctx, "/elsewhere")).get(t)
		recs := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{
			{RootID: root.ID, RelPath: "a", Hash: "ha", Size: 1, ModTime: testNow},
			{RootID: root.ID, RelPath: "b", Hash: "hb", Size: 1, ModTime: testNow},
			{RootID: other.ID, RelPath: "c", Hash: "hc", Size: 1, ModTime: testNow},
		})).get(t)
		a, b, c := recs[0].LocationID, recs[1].LocationID, recs[2].LocationID
		// c belongs to another root: naming it in this root's scan does
		// nothing to it.
		if err := s.ScanFinish(ctx, testNow, root.ID, []int64{a}, []int64{b, c}); err != nil {
			t.Fatal(err)
		}
		locs := must(s.ScanLocations(ctx, root.ID)).get(t)
		if locs["a"].Missing || !locs["b"].Missing || locs["in/a.csv"].Missing {
			t.Errorf("after b vanished: %+v", locs)
		}
		if l := must(s.ScanLocations(ctx, other.ID)).get(t)["c"]; l.ID != c || l.Missing {
			t.Errorf("other root's file = %+v", l)
		}
		// b is back: seen by a scan's finish.
		if err := s.ScanFinish(ctx, testNow.Add(time.Minute), root.ID, []int64{a, b}, nil); err != nil {
			t.Fatal(err)
		}
		if l := must(s.ScanLocations(ctx, root.ID)).get(t)["b"]; l.Missing {
			t.Errorf("b still missing after it was seen: %+v", l)
		}
		// b vanishes again, then is recorded with new content: recording
		// clears the mark too.
		if err := s.ScanFinish(ctx, testNow, root.ID, nil, []int64{b}); err != nil {
			t.Fatal(err)
		}
		must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{{RootID: root.ID, RelPath: "b", Hash: "hb2", Size: 2, ModTime: testNow}})).get(t)
		if l := must(s.ScanLocations(ctx, root.ID)).get(t)["b"]; l.Missing || l.Size != 2 {
			t.Errorf("b recorded again = %+v", l)
		}
		if err := s.ScanFinish(ctx, testNow, root.ID, nil, nil); err != nil {
			t.Errorf("finish with nothing: %v", err)
		}

		// Many ids at once (SQLite chunks them under its parameter limit).
		many := make([]int64, 1507)
		for i := range many {
			many[i] = int64(i + 1000)
		}
		if err := s.ScanFinish(ctx, testNow, root.ID, many, many); err != nil {
			t.Errorf("finish with %d ids: %v", len(many), err)
		}
	})
}

func TestFileVersionAdd_UpsertsHashAndLocation(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		root := must(s.SourceRootAdd(ctx, "/r")).get(t).ID
		mod := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
		v1 := must(s.FileVersionAdd(ctx, root, "dir/f.csv", "h1", 10, mod, []string{"b", "a", "b", " "})).get(t)
		v2 := must(s.FileVersionAdd(ctx, root, "dir/f.csv", "h2", 20, mod.Add(time.Hour), nil)).get(t)
		v3 := must(s.FileVersionAdd(ctx, root, "other.csv", "h1", 10, mod, []string{"x"})).get(t)
		if v1 == v2 || v2 == v3 || v1 == v3 {
			t.Errorf("versions %d %d %d must differ", v1, v2, v3)
		}
		if _, err := s.FileVersionAdd(ctx, root, "", "h", 1, mod, nil); err == nil {
			t.Error("empty rel path accepted")
		}
		locs := must(s.ScanLocations(ctx, root)).get(t)
		if len(locs) != 2 || locs["dir/f.csv"].Size != 20 || locs["dir/f.csv"].MTime != db.ScanMTime(mod.Add(time.Hour)) {
			t.Errorf("locations = %+v", locs)
		}
		// The location points at v2: a job by path gets it.
		id := must(fx.s.JobEnqueue(ctx, job.Submission{FilePath: "/r/dir/f.csv", Plugin: "p"})).get(t)
		if j := fx.get(t, id); j.FileVersionID != v2 || j.FilePath != "/r/dir/f.csv" {
			t.Errorf("job by path = %+v, want version %d", j, v2)
		}
		// The same content under the path again is a scan's no-op.
		if rec := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{{RootID: root, RelPath: "dir/f.csv", Hash: "h2", Size: 20, ModTime: mod}})).get(t)[0]; rec.VersionID != 0 {
			t.Errorf("current content recorded as new: %+v", rec)
		}
	})
}

// A file of 2 GiB or more is recorded on both backends (PostgreSQL's
// original INTEGER sizes are BIGINT since migration 0006).
func TestScan_RecordsFilesOverTwoGiB(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		root := must(s.SourceRoots(ctx, true)).get(t)[0]
		const size = 5 << 30
		rec := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{{RootID: root.ID, RelPath: "big.bin", Hash: "hbig", Size: size, ModTime: testNow}})).get(t)[0]
		if rec.VersionID == 0 {
			t.Fatalf("big file = %+v", rec)
		}
		if l := must(s.ScanLocations(ctx, root.ID)).get(t)["big.bin"]; l.Size != size {
			t.Errorf("big file's location = %+v", l)
		}
		v := must(s.FileVersionAdd(ctx, root.ID, "big.bin", "hbig2", size+1, testNow, nil)).get(t)
		if v == 0 {
			t.Error("no version for a bigger file")
		}
	})
}
