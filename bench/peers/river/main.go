// Command river (peer-bench) compares Casparian Sentinel with River
// (github.com/riverqueue/river, a Go job queue on PostgreSQL) on the same
// machine, on the same work: N no-op jobs queued before the clock starts,
// timed until the database says every one is completed.
//
// It starts a throwaway PostgreSQL cluster from Debian's postgresql package
// (initdb in a temporary folder, a free port of 127.0.0.1; stopped and
// removed at the end, on Ctrl-C too), then alternates, round after round:
//
//   - River: a new database, River's migrations, N jobs inserted with
//     InsertManyFast, then a River client with one queue of --river-workers
//     (MaxWorkers) and a worker that returns at once, timed from
//     Client.Start until N rows are in state completed.
//   - Ours: cmd/casparian-bench of the main module (built from --repo),
//     run as a child process with --jobs N --workers W --slots C on a
//     fresh SQLite file (or, with --ours-database postgres, a new database
//     on the same cluster); its figures are read from its output.
//
// For each run it prints jobs/s and CPU seconds per 1,000 jobs on the store
// side (River: PostgreSQL, every process of the cluster; ours: the Sentinel
// process, which holds SQLite, plus PostgreSQL when it ran there) and on the
// workers side (River: this process, which runs River's client, its fetching
// and completing as well as the workers; ours: the casparian-bench process,
// whose goroutines are the workers), and at the end each system's medians
// and the ratios ours/River. It is a separate module so that the main module
// never depends on River. It prints figures; it never passes or fails on
// them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	jobs, rounds     int
	riverWorkers     int
	riverConns       int
	riverCooldown    time.Duration
	workers, slots   int
	oursDatabase     string
	repo             string
	keep, syncCommit bool
	skip             string
	timeout          time.Duration
}

func main() {
	var o options
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: go run . [flags]   (in bench/peers/river)

Compares Casparian Sentinel with River on this machine: a throwaway
PostgreSQL cluster, then --rounds rounds of a River run and a Sentinel run
(cmd/casparian-bench of the main module), each on a fresh database with
--jobs no-op jobs queued before the clock starts, timed until every job is
completed in the database. Prints jobs/s and CPU seconds per 1,000 jobs of
the store (River: PostgreSQL; ours: the Sentinel with its SQLite, plus
PostgreSQL with --ours-database postgres) and of the workers (River: this
process, River's client included; ours: casparian-bench's worker process),
then the medians and the ratios ours/River.

Flags:
`)
		flag.PrintDefaults()
	}
	flag.IntVar(&o.jobs, "jobs", 100000, "N: no-op jobs per run, queued before the clock starts")
	flag.IntVar(&o.rounds, "rounds", 3, "R: rounds, each a River run then a Sentinel run")
	flag.IntVar(&o.riverWorkers, "river-workers", 2000, "River's MaxWorkers for its one queue (River's own examples use 100)")
	flag.IntVar(&o.riverConns, "river-conns", 0, "River's pgx pool size (0: pgxpool's default, max(4, CPUs))")
	flag.DurationVar(&o.riverCooldown, "river-fetch-cooldown", 0, "River's FetchCooldown, the least time between two fetches of jobs "+
		"(0: River's default, 100ms; at most MaxWorkers jobs are fetched at a time, so the default caps River near MaxWorkers×10 jobs/s)")
	flag.IntVar(&o.workers, "workers", 8, "W: casparian-bench's workers (each a DEALER connection to the Sentinel)")
	flag.IntVar(&o.slots, "slots", 64, "C: slots (max_concurrent_jobs) per casparian-bench worker")
	flag.StringVar(&o.oursDatabase, "ours-database", "sqlite", "the Sentinel's database: sqlite (a new file each run) or postgres (a new database on the same cluster)")
	flag.StringVar(&o.repo, "repo", "", "the main module's folder, where casparian-bench is built (default: the nearest folder above holding it, ../../..)")
	flag.BoolVar(&o.keep, "keep", false, "keep the cluster's folder (data and log) after the run; it is stopped either way")
	flag.BoolVar(&o.syncCommit, "sync-commit", false, "run PostgreSQL with synchronous_commit=on (default off, which matches the Sentinel's SQLite with WAL "+
		"and synchronous=NORMAL: a crash may lose the last commits, never corrupt; fsync stays on either way)")
	flag.StringVar(&o.skip, "skip", "", "river or ours: run only the other system (no ratios then)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a run after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "peer-bench: unexpected argument %q (see --help)\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer-bench:", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	var errs []error
	if o.jobs < 1 {
		errs = append(errs, fmt.Errorf("--jobs %d: want 1 or more", o.jobs))
	}
	if o.rounds < 1 {
		errs = append(errs, fmt.Errorf("--rounds %d: want 1 or more", o.rounds))
	}
	if o.riverWorkers < 1 {
		errs = append(errs, fmt.Errorf("--river-workers %d: want 1 or more", o.riverWorkers))
	}
	if o.riverCooldown < 0 {
		errs = append(errs, fmt.Errorf("--river-fetch-cooldown %s: want 0 (River's default) or more", o.riverCooldown))
	}
	if o.riverConns < 0 {
		errs = append(errs, fmt.Errorf("--river-conns %d: want 0 (the default) or more", o.riverConns))
	}
	if o.workers < 1 || o.slots < 1 {
		errs = append(errs, fmt.Errorf("--workers %d --slots %d: want 1 or more of each", o.workers, o.slots))
	}
	if o.oursDatabase != "sqlite" && o.oursDatabase != "postgres" {
		errs = append(errs, fmt.Errorf("--ours-database %q: want sqlite or postgres", o.oursDatabase))
	}
	if o.skip != "" && o.skip != "river" && o.skip != "ours" {
		errs = append(errs, fmt.Errorf("--skip %q: want river or ours", o.skip))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want more than 0", o.timeout))
	}
	return errors.Join(errs...)
}

// result is one run's figures.
type result struct {
	system  string // "river" or "ours"
	jobs    int
	elapsed time.Duration
	rate    float64       // jobs/s; from jobs and elapsed when 0
	store   time.Duration // CPU of the store side over the run
	workers time.Duration // CPU of the workers side over the run
	note    string
	load    string // load average when the run ended
}

func (r result) jobsPerSec() float64 {
	if r.rate > 0 {
		return r.rate
	}
	return float64(r.jobs) / r.elapsed.Seconds()
}

// perK is CPU seconds per 1,000 jobs.
func (r result) perK(d time.Duration) float64 { return d.Seconds() * 1000 / float64(r.jobs) }

func (r result) line(round int) string {
	return fmt.Sprintf("round %d %-5s: %d jobs in %.2fs = %.0f jobs/s | CPU s per 1,000 jobs: store %.3f, workers %.3f, total %.3f | %s | load %s",
		round, r.system, r.jobs, r.elapsed.Seconds(), r.jobsPerSec(),
		r.perK(r.store), r.perK(r.workers), r.perK(r.store+r.workers), r.note, r.load)
}

func run(ctx context.Context, o options) (err error) {
	if err := o.check(); err != nil {
		return err
	}
	var b ours
	dir, err := os.MkdirTemp("", "peer-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }() // the binaries; a leftover costs disk only
	if o.skip != "ours" {
		repo, err := findRepo(o.repo)
		if err != nil {
			return err
		}
		fmt.Printf("building casparian-bench and casparian-sentinel in %s\n", repo)
		if b, err = buildOurs(ctx, repo, dir); err != nil {
			return stopped(ctx, err)
		}
	}
	c, err := startCluster(o.syncCommit, o.keep)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := c.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	sc := "off"
	if o.syncCommit {
		sc = "on"
	}
	fmt.Printf("machine: %d CPUs, load average %s; PostgreSQL %s on 127.0.0.1:%d (synchronous_commit=%s); N=%d, %d round(s)\n",
		runtime.NumCPU(), loadAverage(), pgVersion(c), c.port, sc, o.jobs, o.rounds)

	var runs []result
	for round := 1; round <= o.rounds; round++ {
		if o.skip != "river" {
			r, err := runRiver(ctx, c, o, round)
			if err != nil {
				return stopped(ctx, err)
			}
			r.load = loadAverage()
			fmt.Println(r.line(round))
			runs = append(runs, r)
		}
		if o.skip != "ours" {
			r, err := runOurs(ctx, b, c, o, dir, round)
			if err != nil {
				return stopped(ctx, err)
			}
			r.load = loadAverage()
			fmt.Println(r.line(round))
			runs = append(runs, r)
		}
	}
	fmt.Println()
	fmt.Print(summary(runs, o))
	return nil
}

// stopped names an interruption as such rather than as the error it
// caused.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted (%v); the cluster, if started, is stopped and removed", err)
	}
	return err
}

// pgVersion is the cluster's major version, from the bin folder.
func pgVersion(c *cluster) string {
	v := strings.TrimPrefix(c.bin, "/usr/lib/postgresql/")
	if v, _, ok := strings.Cut(v, "/"); ok {
		return v
	}
	return "(" + c.bin + ")"
}

// median of the figures; the mean of the middle two for an even count.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medians of one system's runs: jobs/s and CPU s per 1,000 jobs.
type medians struct {
	runs                        int
	rate, store, workers, total float64
}

func mediansOf(runs []result, system string) medians {
	var rate, store, workers, total []float64
	for _, r := range runs {
		if r.system != system {
			continue
		}
		rate = append(rate, r.jobsPerSec())
		store = append(store, r.perK(r.store))
		workers = append(workers, r.perK(r.workers))
		total = append(total, r.perK(r.store+r.workers))
	}
	return medians{len(rate), median(rate), median(store), median(workers), median(total)}
}

// summary is the closing table: each system's medians, and the ratios
// ours/River when both ran.
func summary(runs []result, o options) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "summary: medians over the rounds, N=%d; CPU seconds per 1,000 jobs\n", o.jobs)
	river := mediansOf(runs, "river")
	us := mediansOf(runs, "ours")
	type row struct {
		name string
		m    medians
	}
	var rows []row
	if river.runs > 0 {
		rows = append(rows, row{"River (" + riverSettings(o) + ")", river})
	}
	if us.runs > 0 {
		rows = append(rows, row{fmt.Sprintf("Sentinel (W=%d C=%d, %s)", o.workers, o.slots, o.oursDatabase), us})
	}
	width := len("system")
	for _, r := range rows {
		width = max(width, len(r.name))
	}
	fmt.Fprintf(&sb, "%-*s %5s %10s %8s %8s %8s\n", width, "system", "runs", "jobs/s", "store", "workers", "total")
	for _, r := range rows {
		fmt.Fprintf(&sb, "%-*s %5d %10.0f %8.3f %8.3f %8.3f\n", width, r.name, r.m.runs, r.m.rate, r.m.store, r.m.workers, r.m.total)
	}
	if river.runs > 0 && us.runs > 0 {
		ratio := func(a, b float64) string {
			if b == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		fmt.Fprintf(&sb, "ours/River: throughput %s×; CPU per job: store %s×, workers %s×, total %s×\n",
			ratio(us.rate, river.rate), ratio(us.store, river.store), ratio(us.workers, river.workers), ratio(us.total, river.total))
	}
	fmt.Fprintf(&sb, "load average now %s (the machine may be shared: compare within a run's rounds)\n", loadAverage())
	return sb.String()
}
