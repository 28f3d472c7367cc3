package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/db/postgres/pgtest"
	"github.com/casparian/sentinel/internal/testbin"
)

// TestMain starts a throwaway PostgreSQL for TestRun_Postgres (skipped
// without one, unless CI is set), and removes the Sentinel binary that
// sentinelBinary built.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casparian-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := pgtest.Main(m)
	_ = os.RemoveAll(dir) // a leftover temp folder costs disk space, not a result
	os.Exit(code)
}

// The Sentinel binary the tests run, built once per test binary: run
// builds one per call without --sentinel-bin, the same `go build` each
// time, and a link is seconds of CPU. internal/testbin keeps the linked
// binary in the build cache, so the other packages' tests and the next run
// share it. TestRun_IdleMeasure leaves sentinelBin empty, so run's own
// build stays tested.
var (
	binDir      string
	sentinelBld sync.Once
	sentinelBin string
	sentinelErr error
)

// sentinelBinary builds cmd/casparian-sentinel, once, and returns its path.
func sentinelBinary(t *testing.T) string {
	t.Helper()
	sentinelBld.Do(func() {
		sentinelBin, sentinelErr = testbin.Build(binDir, "casparian-sentinel", "github.com/casparian/sentinel/cmd/casparian-sentinel")
	})
	if sentinelErr != nil {
		t.Fatal(sentinelErr)
	}
	return sentinelBin
}

// TestRun_PrintsEveryFigure runs the benchmark briefly against the real
// Sentinel binary, so that the command keeps working; it checks that every
// figure is printed and never judges the numbers.
func TestRun_PrintsEveryFigure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	var out bytes.Buffer
	err := run(options{
		workers: 2, slots: 2, jobs: 300, preload: 1000, idle: 20,
		holdHalf: true, restart: true,
		dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 2 * time.Minute,
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	figures := `\d+ jobs in [\d.]+s = \d+ jobs/s \| dispatch latency p50 \S+ p90 \S+ p99 \S+ \| sentinel CPU [\d.]+ s per 1,000 jobs \| peak RSS [\d.]+ MB .* \| workers CPU [\d.]+ s per 1,000 jobs\n`
	for _, want := range []string{
		`machine: \d+ CPUs; W=2 C=2 N=300 preload=1000 idle-workers=20 security=plaintext`,
		`full load: ` + figures,
		`half load \(hold \S+\): ` + figures,
		`half load ran at \d+ % of the full-load rate`,
		`restart: first DISPATCH \S+ after starting a new Sentinel \(SIGKILL before; \d+ jobs QUEUED\)`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRun_CompletedBacklog seeds old COMPLETED jobs beside the run's and
// lets the Sentinel prune them (--retain-completed) while it dispatches: the
// run ends although the COMPLETED count shrinks meanwhile, and says how many
// of the backlog are left.
func TestRun_CompletedBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	var out bytes.Buffer
	err := run(options{workers: 2, slots: 2, jobs: 300, completedBacklog: 2000, extraFlags: "--retain-completed 24h",
		dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 2 * time.Minute}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if want := `completed backlog: 2000 seeded \(ended 48h ago\); \d+ of them left after the run`; !regexp.MustCompile(want).Match(out.Bytes()) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}

// TestRun_Postgres runs the benchmark briefly on PostgreSQL, with one
// Sentinel and with two on the same database: the figures are printed (the
// server's CPU too, the server being on this host) and every job
// completed exactly once.
func TestRun_Postgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("Sentinels%d", n), func(t *testing.T) {
			var out bytes.Buffer
			err := run(options{workers: 4, slots: 2, jobs: 300, database: pgtest.Database(t), sentinels: n,
				dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 2 * time.Minute}, &out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			t.Logf("\n%s", out.String())
			cpu := `sentinel CPU [\d.]+ s per 1,000 jobs \| peak RSS [\d.]+ MB`
			if n == 2 {
				cpu = `sentinel CPU [\d.]+ s \([\d.]+ \+ [\d.]+\) per 1,000 jobs \| peak RSS [\d.]+ \+ [\d.]+ MB`
			}
			for _, want := range []string{
				fmt.Sprintf(`machine: \d+ CPUs; W=4 C=2 N=300 preload=0 idle-workers=0 security=plaintext database=postgres sentinels=%d`, n),
				`full load: 300 jobs in [\d.]+s = \d+ jobs/s \| dispatch latency p50 \S+ p90 \S+ p99 \S+ \| ` + cpu +
					` \| first receipt after \S+ \| worker reconnects \d+ \| postgres CPU [\d.]+ s per 1,000 jobs \| workers CPU [\d.]+ s per 1,000 jobs\n`,
				`jobs in the database: 300 COMPLETED, 0 QUEUED, 0 RUNNING, 0 FAILED`,
			} {
				if !regexp.MustCompile(want).Match(out.Bytes()) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestRun_RefusesTwoSentinelsOnSQLite: a SQLite file serves one Sentinel.
func TestRun_RefusesTwoSentinelsOnSQLite(t *testing.T) {
	t.Parallel()
	err := run(options{workers: 1, slots: 1, jobs: 1, sentinels: 2, dir: t.TempDir(), timeout: time.Minute}, &bytes.Buffer{})
	if err == nil || !regexp.MustCompile(`--sentinels 2 needs --database postgres://`).MatchString(err.Error()) {
		t.Errorf("run with two Sentinels on SQLite = %v", err)
	}
}

// TestRun_Curve runs the benchmark briefly with --curve: the workers, the
// idle ones and the pool reconnecting after the restart, all go through
// the CURVE handshake.
func TestRun_Curve(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	var out bytes.Buffer
	err := run(options{workers: 2, slots: 2, jobs: 200, idle: 3, restart: true, curve: true,
		dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 2 * time.Minute}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		`machine: \d+ CPUs; W=2 C=2 N=200 preload=0 idle-workers=3 security=curve`,
		`full load: 200 jobs in [\d.]+s = \d+ jobs/s .* sentinel CPU [\d.]+ s per 1,000 jobs`,
		`restart: first DISPATCH \S+ after starting a new Sentinel`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRun_IdleMeasure checks the idle-workers mode. It is the one test
// that lets run build the Sentinel itself (no sentinelBin), so that path
// stays tested; its deadline leaves a loaded machine time for the link.
func TestRun_IdleMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	var out bytes.Buffer
	err := run(options{workers: 1, slots: 1, jobs: 1, idle: 50, idleFor: time.Second, idleWarmup: 100 * time.Millisecond,
		dir: t.TempDir(), timeout: 2 * time.Minute}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := `idle: 50 workers connected for 1s \(after 100ms to settle\) cost [\d.]+ CPU s = [\d.]+% of one core; peak RSS [\d.]+ MB`
	if !regexp.MustCompile(want).Match(out.Bytes()) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}

// TestRun_FloodingPeerKeepsThroughput is issue #15's flood test with real
// processes: the Sentinel binary, eight workers completing jobs, and one
// more peer writing HEARTBEATs as fast as TCP takes them (reconnecting when
// cut). Throughput with the flooder must stay at 80 % or more of the run
// without it; the flooder's excess is dropped and counted, and the
// Sentinel disconnects it.
//
// The share is a ratio of two wall-clock rates measured one after the
// other, so anything else on the machine that runs during the second and
// not the first lowers it. A run whose share falls under the floor is
// therefore measured again, up to floodAttempts runs in all: the flooder
// taking the throughput fails every run, another package's burst of CPU
// rarely more than one. Every other check holds for every run. It is the
// package's one test not marked parallel, so it runs before the others
// start rather than beside them.
func TestRun_FloodingPeerKeepsThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	const floodAttempts = 3
	var shares []int
	for attempt := 1; attempt <= floodAttempts; attempt++ {
		share := floodShare(t)
		if share >= 30 {
			return
		}
		shares = append(shares, share)
		t.Logf("run %d of %d: throughput with the flooder %d %% of the run without it", attempt, floodAttempts, share)
	}
	// The figure itself (80 % or more on a quiet machine: README,
	// Performance) is the benchmark's to print; a test shares the two
	// cores with other packages' tests. The floor still fails without
	// the budget, where the run with a flooder does not finish at all.
	t.Errorf("throughput with the flooder %v %% of the run without it in %d runs, want at least 30 %% in one (80 %% on a quiet machine)", shares, floodAttempts)
}

// floodShare runs the flood benchmark once, checks what does not depend on
// the machine's load, and returns the throughput share it printed.
func floodShare(t *testing.T) int {
	t.Helper()
	var out bytes.Buffer
	// The deadline is for the whole run, a seeding and two measurements of
	// 5,000 jobs: some 15 s alone at load 15, up to 3 min beside the
	// suite's other packages on a loaded machine.
	err := run(options{workers: 8, slots: 4, jobs: 5000, flood: true,
		dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 6 * time.Minute}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	m := regexp.MustCompile(`flood: (\d+) HEARTBEATs sent .*, (\d+) dropped by the Sentinel, first disconnected after \S+, (\d+) disconnects in all; throughput (\d+) % of the run without it`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no flood figure, or the flooder was never disconnected:\n%s", out.String())
	}
	if dropped, _ := strconv.Atoi(m[2]); dropped == 0 {
		t.Errorf("the Sentinel counted no dropped message")
	}
	share, _ := strconv.Atoi(m[4])
	return share
}

// TestRun_StormLeavesNoMemory is issue #15's connection storm against the
// real binary: 5,000 peers connected and identified at once, more
// connecting, identifying and hanging up at 930 a second, then all gone;
// twice. The Sentinel's live heap after GC (read through --pprof) must come
// back: the second storm may keep next to nothing more than the first (what
// a departed peer leaves behind would grow with it), and the first only the
// one-off cost of its peak (protoactor's process registry shards, goroutine
// descriptors, slice capacity in zmq4 and protoactor: about 25 MB here).
func TestRun_StormLeavesNoMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Sentinel")
	}
	t.Parallel()
	var out bytes.Buffer
	err := run(options{stormPeers: 5000, stormRate: 930, stormChurn: 5 * time.Second, stormRounds: 2,
		dir: t.TempDir(), sentinelBin: sentinelBinary(t), timeout: 4 * time.Minute}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	m := regexp.MustCompile(`storm: live heap after GC ([\d.]+) MB at start, ([\d.]+) MB after round 1, ([\d.]+) MB after round 2`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no storm figure:\n%s", out.String())
	}
	start, first, second := parseMB(t, m[1]), parseMB(t, m[2]), parseMB(t, m[3])
	// 2.5–6 MB on a quiet machine, up to 8.4 MB beside the parallel suite
	// (peaks of goroutines and GC timing). A stopped worker actor kept per
	// departed peer, the leak this guards against, is about 3 KB each: 29 MB
	// for the 9,650 identities of a round.
	if second-first > 15 {
		t.Errorf("the second storm kept %.1f MB more than the first: something is kept per departed peer", second-first)
	}
	if first-start > 40 {
		t.Errorf("live heap %.1f MB after the first storm, %.1f MB at the start: more than the peak's one-off cost", first, start)
	}
	g := regexp.MustCompile(`goroutines (\d+) → \d+ → (\d+)`).FindAllStringSubmatch(out.String(), -1)
	for _, r := range g {
		before, _ := strconv.Atoi(r[1])
		after, _ := strconv.Atoi(r[2])
		if after > before+10 {
			t.Errorf("goroutines %d before a storm, %d after it", before, after)
		}
	}
}

func parseMB(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
