package db

import (
	"context"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func TestScanRecordFiles_VersionsTagsAndJobsOnce(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	root, err := db.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginSubscribe(ctx, "csv_reader", []string{"csv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginSubscribe(ctx, "everything", []string{"csv", "raw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginSubscribe(ctx, "json_reader", []string{"json"}); err != nil {
		t.Fatal(err)
	}
	fresh := ScannedFile{RootID: root.ID, RelPath: "in/a.csv", Hash: "h1", Size: 5, ModTime: testNow.Add(-time.Hour), Tags: []string{"raw", "csv", "csv"}}
	old := ScannedFile{RootID: root.ID, RelPath: "old.csv", Hash: "h2", Size: 6, ModTime: testNow.Add(-30 * 24 * time.Hour), Tags: []string{"csv"}}
	untagged := ScannedFile{RootID: root.ID, RelPath: "notes.txt", Hash: "h3", Size: 1, ModTime: testNow}

	recs, err := db.ScanRecordFiles(ctx, testNow, []ScannedFile{fresh, old, untagged})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs[0].Jobs) != 2 || len(recs[1].Jobs) != 2 || len(recs[2].Jobs) != 0 || recs[2].VersionID == 0 {
		t.Fatalf("records = %+v", recs)
	}
	for _, id := range recs[0].Jobs {
		j, err := db.JobGet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Priority != 100 || j.FilePath != "/data/in/a.csv" || j.Status != job.StatusQueued {
			t.Errorf("fresh file job = %+v", j)
		}
	}
	if j := getJob(t, db, recs[1].Jobs[0]); j.Priority != 10 {
		t.Errorf("old file job priority = %d, want 10", j.Priority)
	}
	raw := rawOpen(t, db.Path())
	var tags string
	if err := raw.QueryRow(`SELECT applied_tags FROM cf_file_version WHERE id = ?`, recs[0].VersionID).Scan(&tags); err != nil || tags != "csv,raw" {
		t.Errorf("applied_tags = %q, %v", tags, err)
	}

	// The same content again (a retried batch, a touched file): no new
	// version, no new job, the mtime is refreshed.
	touched := fresh
	touched.ModTime = testNow
	again, err := db.ScanRecordFiles(ctx, testNow, []ScannedFile{touched})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].VersionID != 0 || len(again[0].Jobs) != 0 || again[0].LocationID != recs[0].LocationID {
		t.Errorf("unchanged content recorded again: %+v", again[0])
	}
	locs, err := db.ScanLocations(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l := locs["in/a.csv"]; l.ID != recs[0].LocationID || l.Size != 5 || l.MTime != float64(testNow.UnixNano())/1e9 {
		t.Errorf("location after touch = %+v", l)
	}

	// New content at the same path: a new version and new jobs.
	edited := fresh
	edited.Hash, edited.Size = "h1b", 9
	rec, err := db.ScanRecordFiles(ctx, testNow, []ScannedFile{edited})
	if err != nil {
		t.Fatal(err)
	}
	if rec[0].VersionID == 0 || rec[0].VersionID == recs[0].VersionID || len(rec[0].Jobs) != 2 {
		t.Errorf("edited file = %+v", rec[0])
	}
	if c, _ := db.JobsCountByStatus(ctx); c[job.StatusQueued] != 6 {
		t.Errorf("queued jobs = %d, want 6", c[job.StatusQueued])
	}
}

func TestScanFinish_MarksMissingAndSeen(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	root, err := db.SourceRootAdd(ctx, "/data")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := db.ScanRecordFiles(ctx, testNow, []ScannedFile{
		{RootID: root.ID, RelPath: "a", Hash: "ha", Size: 1, ModTime: testNow},
		{RootID: root.ID, RelPath: "b", Hash: "hb", Size: 1, ModTime: testNow},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := recs[0].LocationID, recs[1].LocationID
	if err := db.ScanFinish(ctx, testNow, root.ID, []int64{a}, []int64{b}); err != nil {
		t.Fatal(err)
	}
	locs, _ := db.ScanLocations(ctx, root.ID)
	if locs["a"].Missing || !locs["b"].Missing {
		t.Errorf("after b vanished: %+v", locs)
	}
	// b is back.
	if err := db.ScanFinish(ctx, testNow, root.ID, []int64{a, b}, nil); err != nil {
		t.Fatal(err)
	}
	locs, _ = db.ScanLocations(ctx, root.ID)
	if locs["b"].Missing {
		t.Errorf("b still missing after it was seen: %+v", locs["b"])
	}

	// Many ids at once are chunked under SQLite's parameter limit.
	many := make([]int64, 3*scanChunk+7)
	for i := range many {
		many[i] = int64(i + 1000)
	}
	if err := db.ScanFinish(ctx, testNow, root.ID, many, many); err != nil {
		t.Errorf("finish with %d ids: %v", len(many), err)
	}
}

func TestScanPriority_ByAge(t *testing.T) {
	t.Parallel()
	for age, want := range map[time.Duration]int64{time.Minute: 100, 30 * time.Hour: 50, 8 * 24 * time.Hour: 10} {
		if got := ScanPriority(age); got != want {
			t.Errorf("ScanPriority(%s) = %d, want %d", age, got, want)
		}
	}
}

func TestFileVersionAdd_UpsertsHashAndLocation(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	r, _ := db.SourceRootAdd(ctx, "/r")
	root := r.ID
	mod := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	v1, err := db.FileVersionAdd(ctx, root, "dir/f.csv", "h1", 10, mod, []string{"b", "a", "b", " "})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := db.FileVersionAdd(ctx, root, "dir/f.csv", "h2", 20, mod.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	v3, err := db.FileVersionAdd(ctx, root, "other.csv", "h1", 10, mod, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}

	var locs, hashes int
	if err := db.writer.QueryRow(`SELECT COUNT(*) FROM cf_file_location`).Scan(&locs); err != nil {
		t.Fatal(err)
	}
	if err := db.writer.QueryRow(`SELECT COUNT(*) FROM cf_file_hash_registry`).Scan(&hashes); err != nil {
		t.Fatal(err)
	}
	if locs != 2 || hashes != 2 {
		t.Errorf("locations=%d hashes=%d, want 2 and 2", locs, hashes)
	}
	var filename string
	var current, size int64
	if err := db.writer.QueryRow(`SELECT l.filename, l.current_version_id, l.last_known_size FROM cf_file_location l
		JOIN cf_file_version v ON v.location_id = l.id WHERE v.id = ?`, v1).Scan(&filename, &current, &size); err != nil {
		t.Fatal(err)
	}
	if filename != "f.csv" || current != v2 || size != 20 {
		t.Errorf("location: filename=%q current=%d size=%d; want f.csv, %d, 20", filename, current, size, v2)
	}
	tags := map[int64]string{}
	for _, v := range []int64{v1, v2, v3} {
		var s string
		if err := db.writer.QueryRow(`SELECT applied_tags FROM cf_file_version WHERE id = ?`, v).Scan(&s); err != nil {
			t.Fatal(err)
		}
		tags[v] = s
	}
	if tags[v1] != "a,b" || tags[v2] != "" || tags[v3] != "x" {
		t.Errorf("applied_tags = %v", tags)
	}
}
