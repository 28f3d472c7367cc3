package actors_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// scanHarness is a harness whose scanner runs every 30 ms over h.Root, with
// routing rules (*.csv → csv, *.txt → txt), ignore rules (tmp/, *.bak) and
// two subscribed plugins: csv_reader (csv) and everything (csv, txt). Its
// tests wait up to 30 s for what a quiet machine sees in well under a
// second, and they do not run in parallel.
//
// It returns once two passes ended after the rules were written: the
// scanner's first pass starts with the Sentinel and reads the rules at once,
// before they exist, and on a loaded machine its walker could list the files
// a test writes next, record them untagged (or not ignored) and, as they
// never change again, never queue their jobs: the test then waited its full
// 30 s. The second of those passes started after the first ended, so it and
// every later one read the rules.
func scanHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, func(c *config.Config) { c.ScanInterval = 30 * time.Millisecond })
	ctx := context.Background()
	for _, r := range [][2]string{{"*.csv", "csv"}, {"*.txt", "txt"}} {
		if _, err := h.Store.RoutingRuleAdd(ctx, r[0], r[1], 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"tmp/", "*.bak"} {
		if _, err := h.Store.IgnoreRuleAdd(ctx, 0, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Store.PluginSubscribe(ctx, "csv_reader", []string{"csv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Store.PluginSubscribe(ctx, "everything", []string{"csv", "txt"}); err != nil {
		t.Fatal(err)
	}
	h.passesAfter(2)
	return h
}

// put writes a file under the root with an mtime age ago (age 0: now).
func (h *harness) put(rel, content string, age time.Duration) {
	h.T.Helper()
	var at time.Time
	if age > 0 {
		at = time.Now().Add(-age)
	}
	h.putAt(rel, content, at)
}

// putAt writes a file under the root with the mtime given (zero: now), in one
// step as the scanner sees it: written and dated under a dot-name, which the
// scanner skips, then renamed into place. Written in place, a pass could
// list it empty, or dated now rather than at, and two passes that saw it so
// on a loaded machine took it as settled: a version of the empty file, then
// a second one of the content, and twice the jobs the test waited for.
func (h *harness) putAt(rel, content string, at time.Time) {
	h.T.Helper()
	p := filepath.Join(h.Root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.T.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(p), ".put-"+filepath.Base(p))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		h.T.Fatal(err)
	}
	if !at.IsZero() {
		if err := os.Chtimes(tmp, at, at); err != nil {
			h.T.Fatal(err)
		}
	}
	if err := os.Rename(tmp, p); err != nil {
		h.T.Fatal(err)
	}
}

// jobsByFile lists the jobs as "plugin rel_path" strings, sorted.
func (h *harness) jobsByFile() []string {
	h.T.Helper()
	page, err := h.Store.JobsList(context.Background(), job.Filter{Limit: job.MaxLimit})
	if err != nil {
		h.T.Fatal(err)
	}
	var out []string
	for _, j := range page.Jobs {
		rel, _ := filepath.Rel(h.Root, j.FilePath)
		out = append(out, j.PluginName+" "+filepath.ToSlash(rel))
	}
	sort.Strings(out)
	return out
}

// passesAfter waits until n more scan passes have completed.
func (h *harness) passesAfter(n int64) {
	h.T.Helper()
	start := h.Sentinel.Stats().ScanPasses.Load()
	testwait.Eventually(h.T, 10*time.Second, fmt.Sprintf("%d more scan passes", n), func() bool {
		return h.Sentinel.Stats().ScanPasses.Load() >= start+n
	})
}

func TestScanner_NewFilesGetVersionsAndJobsExactlyOnce(t *testing.T) {
	h := scanHarness(t)
	h.put("a.csv", "x,y\n1,2\n", 0) // fresh: hashed once two passes saw it unchanged
	h.put("notes.txt", "hello\n", time.Hour)
	h.put("deep/er/c.csv", "c\n", 3*24*time.Hour)
	h.put("old.csv", "o\n", 30*24*time.Hour)
	h.put("unrouted.bin", "\x00", time.Hour) // a version, no tag, no job
	h.put(".hidden.csv", "h\n", time.Hour)   // dot-files are skipped
	h.put(".cache/x.csv", "h\n", time.Hour)  // and dot-folders
	h.put("tmp/partial.csv", "p\n", time.Hour)
	h.put("backup.csv.bak", "b\n", time.Hour)

	want := []string{
		"csv_reader a.csv", "csv_reader deep/er/c.csv", "csv_reader old.csv",
		"everything a.csv", "everything deep/er/c.csv", "everything notes.txt", "everything old.csv",
	}
	testwait.Eventually(t, 30*time.Second, "jobs for the routed files", func() bool { return len(h.jobsByFile()) >= len(want) })
	h.passesAfter(3)
	if got := h.jobsByFile(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("jobs =\n%v\nwant\n%v", got, want)
	}
	st := h.Sentinel.Stats()
	if st.FileVersions.Load() != 5 || st.FilesHashed.Load() != 5 {
		t.Errorf("versions %d, files hashed %d; want 5 and 5 (ignored and dot-files untouched)",
			st.FileVersions.Load(), st.FilesHashed.Load())
	}
	// Priority by age: 100 within a day, 50 within a week, else 10.
	page, err := h.Store.JobsList(context.Background(), job.Filter{Plugin: "csv_reader"})
	if err != nil {
		t.Fatal(err)
	}
	prio := map[string]int64{}
	for _, j := range page.Jobs {
		prio[filepath.Base(j.FilePath)] = j.Priority
	}
	if prio["a.csv"] != 100 || prio["c.csv"] != 50 || prio["old.csv"] != 10 {
		t.Errorf("priorities = %v", prio)
	}
	// Nothing changes: further passes hash nothing and queue nothing.
	hashed := st.FilesHashed.Load()
	h.passesAfter(5)
	if st.FilesHashed.Load() != hashed || len(h.jobsByFile()) != len(want) {
		t.Errorf("unchanged files were hashed again (%d → %d) or queued again", hashed, st.FilesHashed.Load())
	}
}

func TestScanner_EditedFileGetsANewVersionTouchedFileDoesNot(t *testing.T) {
	h := scanHarness(t)
	h.put("a.csv", "1\n", time.Hour)
	h.put("b.csv", "2\n", time.Hour)
	h.put("c.csv", "3\n", time.Hour)
	testwait.Eventually(t, 30*time.Second, "first jobs", func() bool { return len(h.jobsByFile()) == 6 })
	h.passesAfter(2)
	st := h.Sentinel.Stats()
	hashed, versions := st.FilesHashed.Load(), st.FileVersions.Load()

	h.put("a.csv", "1 edited\n", 30*time.Minute) // new content
	h.put("b.csv", "2\n", 20*time.Minute)        // same content, new mtime
	testwait.Eventually(t, 30*time.Second, "edited file's jobs", func() bool { return len(h.jobsByFile()) == 8 })
	h.passesAfter(3)

	if got := st.FilesHashed.Load() - hashed; got != 2 {
		t.Errorf("hashed %d files after the edit, want 2 (the edited and the touched one; c.csv is unchanged)", got)
	}
	if got := st.FileVersions.Load() - versions; got != 1 {
		t.Errorf("%d new versions, want 1 (the touched file's content did not change)", got)
	}
	want := []string{"csv_reader a.csv", "csv_reader a.csv", "csv_reader b.csv", "csv_reader c.csv",
		"everything a.csv", "everything a.csv", "everything b.csv", "everything c.csv"}
	if got := h.jobsByFile(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("jobs = %v", got)
	}
}

func TestScanner_DeletedFilesAreMarkedMissingAndUnreadableRootsSkipped(t *testing.T) {
	h := scanHarness(t)
	ctx := context.Background()
	gone, err := h.Store.SourceRootAdd(ctx, filepath.Join(filepath.Dir(h.Root), "not-there"))
	if err != nil {
		t.Fatal(err)
	}
	h.put("keep.csv", "k\n", time.Hour)
	h.put("drop.csv", "d\n", time.Hour)
	testwait.Eventually(t, 30*time.Second, "jobs", func() bool { return len(h.jobsByFile()) == 4 })

	if err := os.Remove(filepath.Join(h.Root, "drop.csv")); err != nil {
		t.Fatal(err)
	}
	h.passesAfter(2)
	locs, err := h.Store.ScanLocations(ctx, h.RootID)
	if err != nil {
		t.Fatal(err)
	}
	if !locs["drop.csv"].Missing || locs["keep.csv"].Missing {
		t.Errorf("locations after the delete: %+v", locs)
	}
	if h.Sentinel.Stats().ScanErrors.Load() == 0 {
		t.Error("the missing source root was not counted as a scan error")
	}
	if l, _ := h.Store.ScanLocations(ctx, gone.ID); len(l) != 0 {
		t.Errorf("locations recorded under a missing root: %v", l)
	}

	// It comes back unchanged: seen again, not hashed again, no new job.
	hashed := h.Sentinel.Stats().FilesHashed.Load()
	h.putAt("drop.csv", "d\n", time.Unix(0, int64(locs["drop.csv"].MTime*1e9)))
	testwait.Eventually(t, 30*time.Second, "file seen again", func() bool {
		l, _ := h.Store.ScanLocations(ctx, h.RootID)
		return !l["drop.csv"].Missing
	})
	if h.Sentinel.Stats().FilesHashed.Load() != hashed || len(h.jobsByFile()) != 4 {
		t.Errorf("a file that came back unchanged was hashed (%d → %d) or queued again",
			hashed, h.Sentinel.Stats().FilesHashed.Load())
	}
}

func TestScanner_RestartHashesNothingUnchanged(t *testing.T) {
	h := scanHarness(t)
	for i := 0; i < 20; i++ {
		h.put(fmt.Sprintf("f%02d.csv", i), fmt.Sprintf("%d\n", i), time.Hour)
	}
	testwait.Eventually(t, 30*time.Second, "40 jobs", func() bool { return len(h.jobsByFile()) == 40 })
	h.Restart(nil)
	h.passesAfter(3)
	if n := h.Sentinel.Stats().FilesHashed.Load(); n != 0 {
		t.Errorf("after a restart %d unchanged files were hashed again", n)
	}
	h.Sentinel.InjectPanic("scanner")
	testwait.Eventually(t, 5*time.Second, "scanner restarted", func() bool { return h.Sentinel.Stats().ActorRestarts.Load() > 0 })
	h.passesAfter(3)
	if n := h.Sentinel.Stats().FilesHashed.Load(); n != 0 || len(h.jobsByFile()) != 40 {
		t.Errorf("after a scanner panic: %d files hashed, %d jobs", n, len(h.jobsByFile()))
	}
}

func TestScanner_ScannedFilesRunOnWorkers(t *testing.T) {
	h := scanHarness(t)
	h.Plugin("csv_reader")
	h.Plugin("everything")
	h.Worker(testworker.Options{})
	h.put("in/data.csv", "a\nb\nc\n", time.Hour)
	testwait.Eventually(t, 30*time.Second, "both jobs COMPLETED", func() bool { return h.Counts()[job.StatusCompleted] == 2 })
	page, err := h.Store.JobsList(context.Background(), job.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range page.Jobs {
		if j.Metrics["rows"] != 3 || j.FilePath != filepath.Join(h.Root, "in/data.csv") {
			t.Errorf("job %d: rows %d path %s", j.ID, j.Metrics["rows"], j.FilePath)
		}
	}
}

// Source roots in the database that lie outside --allowed-roots (added by
// an older version or another tool), directly, through a link or by a
// prefix that only looks alike, are skipped with one warning each, and
// nothing in them is recorded; links inside a root are not followed out of
// it. Roots inside, nested or through a link that stays inside, are walked.
func TestScanner_SkipsRootsOutsideTheAllowedRootsAndLinksOut(t *testing.T) {
	h := scanHarness(t)
	ctx := context.Background()
	allowed := filepath.Dir(h.Root)
	outside := t.TempDir()
	h.put("in.csv", "inside\n", time.Hour)
	for _, p := range []string{filepath.Join(outside, "stolen.csv"), filepath.Join(allowed+"2", "near.csv"),
		filepath.Join(allowed, "nested", "deeper", "n.csv"), filepath.Join(allowed, "real", "r.csv")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(p+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		filepath.Join(allowed, "linked-out"): outside,                              // a root that is a link out
		filepath.Join(allowed, "alias"):      filepath.Join(allowed, "real"),       // a root that is a link within
		filepath.Join(h.Root, "sneaky.csv"):  filepath.Join(outside, "stolen.csv"), // a file link out of a root
		filepath.Join(h.Root, "sneaky-dir"):  outside,                              // a folder link out of a root
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	roots := map[string]int64{}
	for _, p := range []string{outside, filepath.Join(allowed, "linked-out"), allowed + "2",
		filepath.Join(allowed, "nested"), filepath.Join(allowed, "alias")} {
		r, err := h.Store.SourceRootAdd(ctx, p) // as another tool would, unchecked
		if err != nil {
			t.Fatal(err)
		}
		roots[p] = r.ID
	}

	testwait.Eventually(t, 30*time.Second, "jobs for the allowed files", func() bool { return len(h.jobsByFile()) >= 6 })
	h.passesAfter(3)
	page, err := h.Store.JobsList(ctx, job.Filter{Plugin: "csv_reader", Limit: job.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range page.Jobs {
		got = append(got, j.FilePath)
	}
	sort.Strings(got)
	want := []string{filepath.Join(allowed, "alias", "r.csv"), filepath.Join(h.Root, "in.csv"),
		filepath.Join(allowed, "nested", "deeper", "n.csv")}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("jobs for\n%v\nwant\n%v", got, want)
	}
	for _, p := range []string{outside, filepath.Join(allowed, "linked-out"), allowed + "2"} {
		if l, _ := h.Store.ScanLocations(ctx, roots[p]); len(l) != 0 {
			t.Errorf("root %s outside the allowed roots: recorded %v", p, l)
		}
		if warned := h.Logs.With(`"level":"warn"`, "source root skipped", `"root":"`+p+`"`, "is outside --allowed-roots"); len(warned) != 1 {
			t.Errorf("root %s: %d warnings over several passes, want 1:\n%v", p, len(warned), warned)
		}
	}
	if l, _ := h.Store.ScanLocations(ctx, h.RootID); len(l) != 1 {
		t.Errorf("links out of the root were recorded: %v", l)
	}
}

// TestScanner_ManyFiles prints how long the scanner takes to record a
// thousand new files and to rescan them unchanged. The thousand are the
// figure's scale. The deadlines are for a machine at load 20 running the
// scan under the race detector (it took over a minute there); they are only
// spent when the scan never finishes, which still fails the test.
func TestScanner_ManyFiles(t *testing.T) {
	h := newHarness(t, nil) // scanner off while the files are written
	if _, err := h.Store.RoutingRuleAdd(context.Background(), "*.csv", "csv", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Store.PluginSubscribe(context.Background(), "csv_reader", []string{"csv"}); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := 0; i < n; i++ {
		h.put(fmt.Sprintf("d%02d/f%04d.csv", i%20, i), fmt.Sprintf("%d,%d\n", i, i*i), time.Hour)
	}
	h.Config.ScanInterval = time.Hour // a first pass right at start, over all n files, then no other
	h.Restart(nil)
	start := time.Now()
	testwait.Eventually(t, 4*time.Minute, "n versions", func() bool { return h.Sentinel.Stats().FileVersions.Load() == n })
	first := time.Since(start)
	testwait.Eventually(t, 2*time.Minute, "first pass done", func() bool { return h.Sentinel.Stats().ScanPasses.Load() >= 1 })
	h.Restart(nil)
	start = time.Now()
	testwait.Eventually(t, 2*time.Minute, "rescan done", func() bool { return h.Sentinel.Stats().ScanPasses.Load() >= 1 })
	t.Logf("scan of %d new files (hash, record, queue %d jobs): %s; rescan of the %d unchanged files: %s",
		n, n, first.Round(time.Millisecond), n, time.Since(start).Round(time.Millisecond))
	if got := len(h.jobsByFile()); got != n || h.Sentinel.Stats().FilesHashed.Load() != 0 {
		t.Errorf("%d jobs (want %d), %d files hashed on the rescan (want 0)", got, n, h.Sentinel.Stats().FilesHashed.Load())
	}
}
