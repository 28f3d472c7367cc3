package sink

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/parquet-go/parquet-go"
)

var testSchema = Schema{
	{Name: "id", Type: Int64},
	{Name: "name", Type: String},
	{Name: "score", Type: Float64},
	{Name: "ok", Type: Bool},
	{Name: "_job_id", Type: Int64, Required: true},
}

func testRows(job int64, n int) [][]any {
	rows := make([][]any, n)
	for i := range rows {
		var score any = float64(i) / 2
		if i%3 == 0 {
			score = nil
		}
		rows[i] = []any{int64(i), fmt.Sprintf("row %d, \"quoted\"", i), score, i%2 == 0, job}
	}
	return rows
}

// write runs one job's worth of output through a sink: open, write, finish,
// commit. The URIs are absolute and the output folder is "/": these tests
// are about writing (TestParse_ConfinesToTheOutputDir and
// TestSink_LinkPlantedBeforeCommitIsRefused about where).
func write(t testing.TB, uri, mode string, job int64, rows [][]any) error {
	t.Helper()
	target, err := Parse(uri, "/")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Spec{Target: target, Mode: mode, JobID: job}, testSchema)
	if err != nil {
		return err
	}
	if err := s.Write(rows); err != nil {
		s.Abort()
		return err
	}
	if err := s.Finish(); err != nil {
		s.Abort()
		return err
	}
	if err := s.Commit(); err != nil {
		s.Abort()
		return err
	}
	return nil
}

// readBack returns the rows of a target as strings, whatever its kind, and
// the job ids they carry.
func readBack(t *testing.T, uri string) (rows []string, jobs []int64) {
	t.Helper()
	target, err := Parse(uri, "/")
	if err != nil {
		t.Fatal(err)
	}
	switch target.Kind {
	case KindSQLite:
		db, err := sql.Open("sqlite", target.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		r, err := db.Query(`SELECT id, name, score, ok, _job_id FROM "` + target.Table + `" ORDER BY rowid`)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for r.Next() {
			var id, job int64
			var name string
			var score sql.NullFloat64
			var ok bool
			if err := r.Scan(&id, &name, &score, &ok, &job); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, fmt.Sprint(id, name, score.Valid, score.Float64, ok))
			jobs = append(jobs, job)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
	case KindParquet:
		f, err := os.Open(target.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		names := []string{}
		for _, fl := range pf.Schema().Fields() {
			names = append(names, fl.Name())
		}
		if !slices.Equal(names, testSchema.Names()) {
			t.Fatalf("parquet columns %v, want %v (in emitted order)", names, testSchema.Names())
		}
		r := parquet.NewReader(pf)
		defer r.Close()
		buf := make([]parquet.Row, 64)
		for {
			n, err := r.ReadRows(buf)
			for _, row := range buf[:n] {
				score := row[2]
				rows = append(rows, fmt.Sprint(row[0].Int64(), string(row[1].ByteArray()), !score.IsNull(), score.Double(), row[3].Boolean()))
				jobs = append(jobs, row[4].Int64())
			}
			if err != nil {
				break
			}
		}
	default:
		b, err := os.ReadFile(target.Path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if target.Kind == KindCSV {
			if lines[0] != "id,name,score,ok,_job_id" {
				t.Fatalf("csv header %q", lines[0])
			}
			lines = lines[1:]
		}
		for _, l := range lines {
			rows = append(rows, l)
			field := l[strings.LastIndexByte(l, ',')+1:]
			if target.Kind != KindCSV {
				field = l[strings.LastIndex(l, `"_job_id":`)+len(`"_job_id":`):]
			}
			var job int64
			if _, err := fmt.Sscan(field, &job); err != nil {
				t.Fatalf("no job id at the end of row %q: %v", l, err)
			}
			jobs = append(jobs, job)
		}
	}
	return rows, jobs
}

func count(jobs []int64, job int64) int {
	n := 0
	for _, j := range jobs {
		if j == job {
			n++
		}
	}
	return n
}

// targets returns one URI of each kind in dir.
func targets(dir string) map[string]string {
	return map[string]string{
		"SQLite":  "sqlite://" + filepath.Join(dir, "out.db") + "/rows",
		"Parquet": "parquet://" + filepath.Join(dir, "out.parquet"),
		"CSV":     "file://" + filepath.Join(dir, "out.csv"),
		"JSONL":   "file://" + filepath.Join(dir, "out.jsonl"),
	}
}

// leftovers lists files in dir other than the targets themselves.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestSink_Modes(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			uri := targets(dir)[kind]

			// append to nothing creates the target.
			if err := write(t, uri, ModeAppend, 1, testRows(1, 5)); err != nil {
				t.Fatal(err)
			}
			// append adds.
			if err := write(t, uri, "", 2, testRows(2, 3)); err != nil {
				t.Fatal(err)
			}
			rows, jobs := readBack(t, uri)
			if len(rows) != 8 || count(jobs, 1) != 5 || count(jobs, 2) != 3 {
				t.Fatalf("after two appends: %d rows, jobs %v", len(rows), jobs)
			}
			want, _ := readBackRows(t, kind, testRows(1, 5), testRows(2, 3))
			if want != nil && !slices.Equal(rows, want) {
				t.Fatalf("rows read back:\n%q\nwant\n%q", rows, want)
			}
			// error refuses a non-empty target, at open and at commit.
			err := write(t, uri, ModeError, 3, testRows(3, 2))
			if !errors.Is(err, ErrTargetNotEmpty) {
				t.Fatalf("mode error on a full target: %v, want ErrTargetNotEmpty", err)
			}
			// replace swaps the content.
			if err := write(t, uri, ModeReplace, 4, testRows(4, 4)); err != nil {
				t.Fatal(err)
			}
			rows, jobs = readBack(t, uri)
			if len(rows) != 4 || count(jobs, 4) != 4 {
				t.Fatalf("after replace: %d rows, jobs %v", len(rows), jobs)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("staging files left behind: %v", l)
			}
		})
	}
}

// readBackRows renders rows the way readBack does for the typed kinds.
func readBackRows(t *testing.T, kind string, sets ...[][]any) ([]string, error) {
	if kind != "SQLite" && kind != "Parquet" {
		return nil, nil
	}
	var out []string
	for _, rows := range sets {
		for _, r := range rows {
			score, ok := r[2].(float64)
			out = append(out, fmt.Sprint(r[0], r[1], ok, score, r[3]))
		}
	}
	return out, nil
}

func TestSink_ModeErrorOnEmptyTargetWrites(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			uri := targets(t.TempDir())[kind]
			if err := write(t, uri, ModeError, 1, testRows(1, 2)); err != nil {
				t.Fatalf("mode error with no target: %v", err)
			}
			if rows, _ := readBack(t, uri); len(rows) != 2 {
				t.Fatalf("%d rows, want 2", len(rows))
			}
		})
	}
}

// A commit that checks mode error must see a target filled after Open: the
// check at Open is only a shortcut.
func TestSink_ModeErrorRecheckedAtCommit(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			uri := targets(t.TempDir())[kind]
			target, _ := Parse(uri, "/")
			late, err := Open(Spec{Target: target, Mode: ModeError, JobID: 2}, testSchema)
			if err != nil {
				t.Fatal(err)
			}
			if err := write(t, uri, ModeAppend, 1, testRows(1, 2)); err != nil {
				t.Fatal(err)
			}
			if err := late.Write(testRows(2, 2)); err != nil {
				t.Fatal(err)
			}
			if err := late.Finish(); err != nil {
				t.Fatal(err)
			}
			if err := late.Commit(); !errors.Is(err, ErrTargetNotEmpty) {
				t.Fatalf("commit: %v, want ErrTargetNotEmpty", err)
			}
			late.Abort()
			if _, jobs := readBack(t, uri); count(jobs, 2) != 0 {
				t.Fatalf("rejected job's rows reached the target: %v", jobs)
			}
		})
	}
}

func TestSink_AbortLeavesTargetUntouched(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			uri := targets(dir)[kind]
			if err := write(t, uri, ModeAppend, 1, testRows(1, 3)); err != nil {
				t.Fatal(err)
			}
			target := mustParse(t, uri)
			before, err := os.ReadFile(target.Path)
			if err != nil {
				t.Fatal(err)
			}
			for _, finish := range []bool{false, true} {
				s, err := Open(Spec{Target: target, Mode: ModeReplace, JobID: 9}, testSchema)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Write(testRows(9, 50)); err != nil {
					t.Fatal(err)
				}
				if finish {
					if err := s.Finish(); err != nil {
						t.Fatal(err)
					}
				}
				s.Abort()
				s.Abort() // idempotent
			}
			after, _ := os.ReadFile(target.Path)
			if !slices.Equal(before, after) {
				t.Fatal("target changed by an aborted sink")
			}
			if _, jobs := readBack(t, uri); len(jobs) != 3 || count(jobs, 9) != 0 {
				t.Fatalf("after abort: jobs %v", jobs)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("staging files left behind: %v", l)
			}
		})
	}
}

func mustParse(t *testing.T, uri string) Target {
	t.Helper()
	target, err := Parse(uri, "/")
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// Concurrent appends to one target must all land: the read-merge-rename of
// files is serialized.
func TestSink_ConcurrentAppendsKeepEveryRow(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			uri := targets(t.TempDir())[kind]
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for job := int64(1); job <= 6; job++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- write(t, uri, ModeAppend, job, testRows(job, 20))
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			_, jobs := readBack(t, uri)
			for job := int64(1); job <= 6; job++ {
				if count(jobs, job) != 20 {
					t.Fatalf("job %d has %d rows, want 20 (all: %d)", job, count(jobs, job), len(jobs))
				}
			}
		})
	}
}

func TestSink_AppendWithOtherColumnsFails(t *testing.T) {
	other := Schema{{Name: "id", Type: Int64}, {Name: "extra", Type: String}, {Name: "_job_id", Type: Int64, Required: true}}
	for kind := range targets("/") {
		if kind == "JSONL" {
			continue // JSONL has no fixed columns
		}
		t.Run(kind, func(t *testing.T) {
			uri := targets(t.TempDir())[kind]
			if err := write(t, uri, ModeAppend, 1, testRows(1, 2)); err != nil {
				t.Fatal(err)
			}
			target := mustParse(t, uri)
			s, err := Open(Spec{Target: target, Mode: ModeAppend, JobID: 2}, other)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Abort()
			if err := s.Write([][]any{{int64(1), "x", int64(2)}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Finish(); err != nil {
				t.Fatal(err)
			}
			err = s.Commit()
			if err == nil || !strings.Contains(err.Error(), "replace") {
				t.Fatalf("append with other columns: %v, want an error suggesting replace", err)
			}
			// replace may change the columns.
			s2, err := Open(Spec{Target: target, Mode: ModeReplace, JobID: 3}, other)
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.Write([][]any{{int64(1), "x", int64(3)}}); err != nil {
				t.Fatal(err)
			}
			if err := s2.Finish(); err != nil {
				t.Fatal(err)
			}
			if err := s2.Commit(); err != nil {
				t.Fatalf("replace with other columns: %v", err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	base := t.TempDir()
	cases := []struct {
		uri   string
		want  Target
		error string
	}{
		{uri: "sqlite://" + base + "/data/out.db/rows", want: Target{Kind: KindSQLite, Path: base + "/data/out.db", Table: "rows"}},
		{uri: "sqlite://rel/out.db/t_1", want: Target{Kind: KindSQLite, Path: filepath.Join(base, "rel/out.db"), Table: "t_1"}},
		{uri: "parquet://output/csv.parquet", want: Target{Kind: KindParquet, Path: filepath.Join(base, "output/csv.parquet")}},
		{uri: "parquet://" + base + "/abs/x.parquet", want: Target{Kind: KindParquet, Path: base + "/abs/x.parquet"}},
		{uri: "file://" + base + "/abs/my%20file.csv", want: Target{Kind: KindCSV, Path: base + "/abs/my file.csv"}},
		{uri: "file://" + base + "/abs/x.JSONL", want: Target{Kind: KindJSONL, Path: base + "/abs/x.JSONL"}},
		{uri: "file://" + base + "/abs/x.ndjson", want: Target{Kind: KindJSONL, Path: base + "/abs/x.ndjson"}},
		{uri: "parquet://output/../in/./x.parquet", want: Target{Kind: KindParquet, Path: base + "/in/x.parquet"}},
		{uri: "sqlite:///data/out.db", error: "table"},
		{uri: "sqlite:///data/out.db/bad-name", error: "table"},
		{uri: "file:///abs/x.txt", error: ".csv or .jsonl"},
		{uri: "s3://bucket/x.parquet", error: "unknown scheme"},
		{uri: "/no/scheme.csv", error: "scheme://"},
		{uri: "parquet://../escape.parquet", error: "is outside --output-dir"},
		{uri: "parquet://", error: "empty path"},
	}
	for _, c := range cases {
		got, err := Parse(c.uri, base)
		if c.error != "" {
			if err == nil || !strings.Contains(err.Error(), c.error) {
				t.Errorf("Parse(%q) error %v, want one containing %q", c.uri, err, c.error)
			}
			continue
		}
		c.want.Root = base
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.uri, got, err, c.want)
		}
	}
}

// TestParse_ConfinesToTheOutputDir: every way out of the output folder is
// refused with a reason naming the sink and the folder, before anything is
// created; the ways that stay inside are allowed.
func TestParse_ConfinesToTheOutputDir(t *testing.T) {
	top := t.TempDir()
	out := filepath.Join(top, "out")
	outside := filepath.Join(top, "outside")
	for _, d := range []string{out, outside, filepath.Join(out, "real")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A folder inside the output dir that links out of it, one that links
	// within it, and a file link out.
	if err := os.Symlink(outside, filepath.Join(out, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(out, "real"), filepath.Join(out, "inner")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim.csv"), []byte("a\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "victim.csv"), filepath.Join(out, "victim.csv")); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{
		"dot-dot relative":            "parquet://../outside/x.parquet",
		"dot-dot inside the path":     "sqlite://real/../../outside/x.db/t",
		"absolute outside":            "parquet://" + outside + "/x.parquet",
		"absolute dot-dot":            "file://" + out + "/../outside/x.csv",
		"prefix trick":                "parquet://" + out + "2/x.parquet",
		"linked folder out":           "parquet://escape/x.parquet",
		"linked folder out, new tail": "sqlite://escape/new/deeper/x.db/t",
		"linked file out":             "file://victim.csv",
		"dot-dot after missing":       "parquet://missing/../../outside/x.parquet",
		"link after missing and dots": "parquet://missing/../escape/x.parquet",
	}
	for name, uri := range refused {
		t.Run("Refused"+strings.ReplaceAll(name, " ", ""), func(t *testing.T) {
			_, err := Parse(uri, out)
			if err == nil || !strings.Contains(err.Error(), "sink "+uri) || !strings.Contains(err.Error(), "is outside --output-dir ("+out+")") {
				t.Fatalf("Parse(%q) = %v; want refused as outside --output-dir", uri, err)
			}
		})
	}
	allowed := map[string]string{
		"nested relative": "parquet://a/b/c.parquet",
		"absolute inside": "sqlite://" + out + "/a/x.db/t",
		"link within":     "file://inner/x.csv",
		"climb and back":  "parquet://real/../y.parquet",
	}
	for name, uri := range allowed {
		t.Run("Allowed"+strings.ReplaceAll(name, " ", ""), func(t *testing.T) {
			target, err := Parse(uri, out)
			if err != nil || !strings.HasPrefix(target.Path, out+string(filepath.Separator)) {
				t.Fatalf("Parse(%q) = %+v, %v; want a target under %s", uri, target, err, out)
			}
		})
	}
	entries, err := os.ReadDir(outside)
	if err != nil || len(entries) != 1 {
		t.Errorf("the outside folder holds %v (%v); want only victim.csv", entries, err)
	}
}

// TestSink_LinkPlantedBeforeCommitIsRefused: a folder of the output dir
// swapped for a link to elsewhere while the job ran is caught when the
// sink opens or commits, and nothing lands outside.
func TestSink_LinkPlantedBeforeCommitIsRefused(t *testing.T) {
	for kind, uri := range map[string]string{
		"SQLite":  "sqlite://sub/out.db/rows",
		"Parquet": "parquet://sub/out.parquet",
		"CSV":     "file://sub/out.csv",
	} {
		t.Run(kind, func(t *testing.T) {
			top := t.TempDir()
			out, outside := filepath.Join(top, "out"), filepath.Join(top, "outside")
			for _, d := range []string{filepath.Join(out, "sub"), outside} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			target, err := Parse(uri, out)
			if err != nil {
				t.Fatal(err)
			}
			plant := func() {
				t.Helper()
				if err := os.Rename(filepath.Join(out, "sub"), filepath.Join(out, "moved")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(outside, filepath.Join(out, "sub")); err != nil {
					t.Fatal(err)
				}
			}

			// Planted after Parse, before Open: nothing is staged.
			plant()
			if _, err := Open(Spec{Target: target, Mode: ModeAppend, JobID: 1}, testSchema); err == nil ||
				!strings.Contains(err.Error(), "is outside --output-dir") {
				t.Fatalf("Open through a planted link: %v", err)
			}
			if err := os.Remove(filepath.Join(out, "sub")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(out, "moved"), filepath.Join(out, "sub")); err != nil {
				t.Fatal(err)
			}

			// Planted after the rows are staged, before the commit.
			s, err := Open(Spec{Target: target, Mode: ModeAppend, JobID: 2}, testSchema)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Write(testRows(2, 3)); err != nil {
				t.Fatal(err)
			}
			if err := s.Finish(); err != nil {
				t.Fatal(err)
			}
			plant()
			if err := s.Commit(); err == nil || !strings.Contains(err.Error(), "is outside --output-dir") {
				t.Fatalf("Commit through a planted link: %v", err)
			}
			s.Abort()
			if entries, err := os.ReadDir(outside); err != nil || len(entries) != 0 {
				t.Errorf("written outside the output dir: %v (%v)", entries, err)
			}
		})
	}
}

func TestSink_SQLiteTypesAndLineageNotNull(t *testing.T) {
	dir := t.TempDir()
	uri := "sqlite://" + filepath.Join(dir, "t.db") + "/typed"
	if err := write(t, uri, ModeAppend, 7, testRows(7, 2)); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := db.Query(`SELECT name, type, "notnull" FROM pragma_table_info('typed')`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for r.Next() {
		var name, typ string
		var notNull bool
		if err := r.Scan(&name, &typ, &notNull); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(name, " ", typ, " ", notNull))
	}
	want := []string{"id INTEGER false", "name TEXT false", "score REAL false", "ok BOOLEAN false", "_job_id INTEGER true"}
	if !slices.Equal(got, want) {
		t.Fatalf("columns %q, want %q", got, want)
	}
}

// Outputs larger than one row group survive an append merge, and a re-run
// of one job among them.
func TestSink_ParquetAppendAcrossRowGroups(t *testing.T) {
	uri := "parquet://" + filepath.Join(t.TempDir(), "big.parquet")
	const n = parquetRowGroupRows + 1000
	for job := int64(1); job <= 2; job++ {
		if err := write(t, uri, ModeAppend, job, testRows(job, n)); err != nil {
			t.Fatal(err)
		}
	}
	_, jobs := readBack(t, uri)
	if count(jobs, 1) != n || count(jobs, 2) != n {
		t.Fatalf("rows per job %d and %d, want %d each", count(jobs, 1), count(jobs, 2), n)
	}
	// Job 1 again: its rows span row groups of their own and one shared
	// with job 2, whose statistics alone cannot say which rows go.
	if err := write(t, uri, ModeAppend, 1, testRows(1, n)); err != nil {
		t.Fatal(err)
	}
	if _, jobs = readBack(t, uri); count(jobs, 1) != n || count(jobs, 2) != n {
		t.Fatalf("after job 1 ran again: rows per job %d and %d, want %d each", count(jobs, 1), count(jobs, 2), n)
	}
}

// A job that runs again (its receipt lost, say) must not leave its rows
// twice: the second commit replaces the rows carrying its _job_id, in every
// mode, and leaves other jobs' rows alone.
func TestSink_SameJobTwiceLeavesOneCopy(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			uri := targets(dir)[kind]
			for _, step := range []struct {
				job  int64
				rows int
			}{{1, 5}, {2, 3}, {1, 4}, {2, 3}} {
				if err := write(t, uri, ModeAppend, step.job, testRows(step.job, step.rows)); err != nil {
					t.Fatal(err)
				}
			}
			rows, jobs := readBack(t, uri)
			if len(rows) != 7 || count(jobs, 1) != 4 || count(jobs, 2) != 3 {
				t.Fatalf("after re-runs: %d rows, jobs %v; want job 1's last 4 and job 2's 3", len(rows), jobs)
			}
			if want, _ := readBackRows(t, kind, testRows(1, 4), testRows(2, 3)); want != nil && !slices.Equal(rows, want) {
				t.Fatalf("rows read back:\n%q\nwant\n%q", rows, want)
			}

			// Error mode: a target holding only the job's own rows is the
			// job's to replace; another job's rows still refuse it.
			uri = targets(t.TempDir())[kind]
			for range 2 {
				if err := write(t, uri, ModeError, 7, testRows(7, 3)); err != nil {
					t.Fatalf("error mode, same job again: %v", err)
				}
			}
			if rows, jobs := readBack(t, uri); len(rows) != 3 || count(jobs, 7) != 3 {
				t.Fatalf("error mode run twice: %d rows, jobs %v", len(rows), jobs)
			}
			if err := write(t, uri, ModeError, 8, testRows(8, 1)); !errors.Is(err, ErrTargetNotEmpty) {
				t.Fatalf("error mode after another job: %v, want ErrTargetNotEmpty", err)
			}

			// Replace mode replaces everything anyway.
			for range 2 {
				if err := write(t, uri, ModeReplace, 9, testRows(9, 2)); err != nil {
					t.Fatal(err)
				}
			}
			if rows, jobs := readBack(t, uri); len(rows) != 2 || count(jobs, 9) != 2 {
				t.Fatalf("replace run twice: %d rows, jobs %v", len(rows), jobs)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("staging files left behind: %v", l)
			}
		})
	}
}

// Attempts of different jobs, and two attempts of one job, promoting into
// one append target at once: every job's rows end up there exactly once.
func TestSink_ConcurrentAttemptsKeepOneCopyOfEachJob(t *testing.T) {
	for kind := range targets("/") {
		t.Run(kind, func(t *testing.T) {
			uri := targets(t.TempDir())[kind]
			var wg sync.WaitGroup
			errs := make(chan error, 12)
			for job := int64(1); job <= 6; job++ {
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- write(t, uri, ModeAppend, job, testRows(job, 20))
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			_, jobs := readBack(t, uri)
			for job := int64(1); job <= 6; job++ {
				if count(jobs, job) != 20 {
					t.Fatalf("job %d has %d rows, want 20 (all: %d)", job, count(jobs, job), len(jobs))
				}
			}
		})
	}
}

// Lines written by other tools are kept as they are: without a _job_id,
// with another job's id that contains this one's digits, or with a space
// after the colon; the job's own line goes even when it is the last one and
// lacks its newline.
func TestSink_JSONLReRunKeepsForeignLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	old := `{"other":"tool"}` + "\n" +
		`{"id":1,"_job_id":41}` + "\n" +
		"\n" +
		`not json 4` + "\n" +
		`{"id":2, "_job_id": 4}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := write(t, "file://"+path, ModeAppend, 4, testRows(4, 1)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"other":"tool"}` + "\n" + `{"id":1,"_job_id":41}` + "\n\n" + `not json 4` + "\n" +
		`{"id":0,"name":"row 0, \"quoted\"","score":null,"ok":true,"_job_id":4}` + "\n"
	if string(b) != want {
		t.Fatalf("target:\n%s\nwant\n%s", b, want)
	}
}

// An append target is indexed by job, so the promotion's delete of a job's
// earlier rows looks them up instead of scanning every row other jobs
// appended; a table made before the index existed gets it at its next
// promotion.
func TestSink_SQLiteAppendTargetIndexedByJob(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE older (id INTEGER, name TEXT, score REAL, ok BOOLEAN, _job_id INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"fresh", "older"} {
		if err := write(t, "sqlite://"+path+"/"+table, ModeAppend, 3, testRows(3, 2)); err != nil {
			t.Fatal(err)
		}
		// A connection of its own: EXPLAIN does not notice an index that
		// another connection added after this one read the schema.
		fresh, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer fresh.Close()
		var plan strings.Builder
		rows, err := fresh.Query(`EXPLAIN QUERY PLAN DELETE FROM "` + table + `" WHERE _job_id = 3`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(detail + "\n")
		}
		rows.Close()
		if !strings.Contains(plan.String(), "INDEX") {
			t.Errorf("%s: deleting a job's rows scans the table:\n%s", table, plan.String())
		}
	}
}

// BenchmarkSink_SQLiteAppendPromotion is the cost of promoting one job's 100
// rows into an append target that already holds 200,000 rows of other jobs.
func BenchmarkSink_SQLiteAppendPromotion(b *testing.B) {
	dir := b.TempDir()
	uri := "sqlite://" + filepath.Join(dir, "t.db") + "/big"
	for job := int64(1); job <= 100; job++ {
		if err := write(b, uri, ModeAppend, job, testRows(job, 2000)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if err := write(b, uri, ModeAppend, int64(1000+i), testRows(int64(1000+i), 100)); err != nil {
			b.Fatal(err)
		}
	}
}
