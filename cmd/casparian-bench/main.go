// Command casparian-bench measures the Sentinel end to end: it builds the
// real casparian-sentinel binary, runs it as a child process on a fresh
// SQLite file (or, with --database postgres://…, a fresh PostgreSQL database)
// with N QUEUED jobs, connects W no-op workers with C slots each over TCP
// loopback, and prints jobs/s (until every row is COMPLETED in the
// database), dispatch latency percentiles, the Sentinel's CPU seconds per
// 1,000 jobs and its peak RSS; on PostgreSQL also the server's CPU seconds
// per 1,000 jobs; last the workers' CPU seconds per 1,000 jobs: this
// process's own getrusage(RUSAGE_SELF) over the run, since the workers are
// its goroutines (its polling for the end, a small share, is counted with
// them). With --sentinels 2 it runs two Sentinels on the one database and
// splits the workers between them. With --restart it then kills the
// Sentinel (SIGKILL) and times a new one from process start to the first
// DISPATCH. With --curve the workers connect over CurveZMQ, with keys made
// for the run. It prints figures; it never passes or fails on time.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/casparian/sentinel/db/backend"
	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

type options struct {
	workers, slots, jobs, preload, idle int
	completedBacklog                    int
	holdHalf, restart, curve, flood     bool
	counters                            bool
	stormPeers, stormRate, stormRounds  int
	stormChurn                          time.Duration
	stormProfile                        string
	idleFor, idleWarmup                 time.Duration
	sentinelBin, dir, database          string
	sentinels                           int
	timeout                             time.Duration
	extraFlags                          string
}

// version is set by release builds: -ldflags "-X main.version=..."; --version
// prints it with the build information.
var version string

func main() {
	var o options
	flag.IntVar(&o.workers, "workers", 8, "W: workers doing the jobs")
	flag.IntVar(&o.slots, "slots", 4, "C: slots (max_concurrent_jobs) per worker")
	flag.IntVar(&o.jobs, "jobs", 100000, "N: jobs to complete and time")
	flag.IntVar(&o.preload, "preload", 0, "extra QUEUED jobs already in the queue (lower priority, never run), to measure a deep queue")
	flag.IntVar(&o.completedBacklog, "completed-backlog", 0, "COMPLETED jobs that ended 48h ago, seeded before the run: "+
		"with --sentinel-flags \"--retain-completed 24h\" the Sentinel prunes them while dispatch is measured")
	flag.IntVar(&o.idle, "idle-workers", 0, "extra connected workers that heartbeat but can run nothing")
	flag.DurationVar(&o.idleFor, "idle-measure", 0, "when > 0: measure the Sentinel's CPU with only the idle workers for this long, then exit")
	flag.DurationVar(&o.idleWarmup, "idle-warmup", 10*time.Second, "before --idle-measure, let the Sentinel register the workers and settle (two default heartbeat intervals)")
	flag.BoolVar(&o.holdHalf, "half-load", false, "after the full-load run, run again with workers holding each job so throughput is about half, and report latency there")
	flag.BoolVar(&o.restart, "restart", false, "finally, SIGKILL the Sentinel and time a new one from process start to the first DISPATCH (the preloaded queue stays)")
	flag.BoolVar(&o.flood, "flood", false, "after the full-load run, run again with one extra peer flooding HEARTBEATs as fast as it can (reconnecting when cut), and report the share of throughput kept")
	flag.IntVar(&o.stormPeers, "storm", 0, "when > 0: instead of jobs, connect this many peers that identify as workers, churn connect/IDENTIFY/close "+
		"for --storm-churn, let them all leave, and report the Sentinel's live heap after GC and RSS before, during and after")
	flag.DurationVar(&o.stormChurn, "storm-churn", 10*time.Second, "with --storm: how long peers connect, identify and hang up as fast as they can")
	flag.IntVar(&o.stormRate, "storm-rate", 0, "with --storm: churn cycles per second at most (0 = as fast as they go)")
	flag.IntVar(&o.stormRounds, "storm-rounds", 2, "with --storm: storms in a row; memory a departed peer leaves behind grows with each round")
	flag.StringVar(&o.stormProfile, "storm-profile", "", "with --storm: write the Sentinel's heap profile, taken after every peer left, to this file")
	flag.BoolVar(&o.counters, "counters", false, "also print, per 1,000 jobs, the workers' and the (first) Sentinel's system calls and context switches, "+
		"and its claim rounds and conclude batches (turns its HTTP server on; read before and after each measurement)")
	flag.StringVar(&o.sentinelBin, "sentinel-bin", "", "casparian-sentinel binary (default: go build it)")
	flag.StringVar(&o.database, "database", "", "a postgres://user@host:port/db URL: run on a new database casparian_bench_<pid> made there "+
		"(the user needs CREATEDB) and dropped at the end (default: a new SQLite file in --dir)")
	flag.IntVar(&o.sentinels, "sentinels", 1, "Sentinels on the one database, the workers split between them (more than one: PostgreSQL only)")
	flag.StringVar(&o.dir, "dir", "", "working folder (default: a temp folder, removed afterwards)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.StringVar(&o.extraFlags, "sentinel-flags", "", "extra flags for the Sentinel, space-separated")
	flag.BoolVar(&o.curve, "curve", false, "connect the workers over CURVE: keys are made in the working folder, "+
		"the Sentinel runs with --curve-secret-key and --authorized-workers (default: plaintext)")
	showVersion := flag.Bool("version", false, "print the version and build information, then exit")
	flag.Parse()
	if *showVersion {
		buildinfo.Print(os.Stdout, "casparian-bench", version)
		return
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "casparian-bench:", err)
		os.Exit(1)
	}
}

func run(o options, out io.Writer) error {
	if err := o.check(); err != nil {
		return err
	}
	if o.sentinels == 0 {
		o.sentinels = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "casparian-bench-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(d) }() // a leftover temp folder costs disk, not figures
		dir = d
	}
	bin := o.sentinelBin
	if bin == "" {
		bin = filepath.Join(dir, "casparian-sentinel")
		build := exec.Command("go", "build", "-o", bin, "github.com/casparian/sentinel/cmd/casparian-sentinel")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build sentinel: %w", err)
		}
	}

	root, err := filepath.Abs(dir) // --dir may be relative; a source root is not
	if err != nil {
		return err
	}
	database := filepath.Join(root, "bench.db")
	if o.database != "" {
		if database, err = createDatabase(ctx, o.database); err != nil {
			return err
		}
		defer dropDatabase(o.database)
	}
	sentinel := sentinelArgs{bin: bin, database: database, root: root, extra: strings.Fields(o.extraFlags)}
	security := "plaintext"
	if o.curve {
		if err := sentinel.makeCurveKeys(filepath.Join(dir, "keys")); err != nil {
			return err
		}
		security = "curve"
	}
	if o.stormPeers > 0 {
		return storm(ctx, out, sentinel, o)
	}
	t0 := time.Now()
	if err := seed(ctx, database, root, o); err != nil {
		return err
	}
	server, err := findServer(ctx, database)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "machine: %d CPUs; W=%d C=%d N=%d preload=%d idle-workers=%d security=%s database=%s sentinels=%d (seeded in %.1fs)\n",
		numCPU(), o.workers, o.slots, o.jobs, o.preload, o.idle, security, server.kind(), o.sentinels, time.Since(t0).Seconds())

	if sentinel.endpoint, err = freeEndpoint(); err != nil {
		return err
	}
	if o.flood || o.counters {
		// The dropped messages and the database rounds are read from /metrics.
		ep, err := freeEndpoint()
		if err != nil {
			return err
		}
		sentinel.http = strings.TrimPrefix(ep, "tcp://")
		sentinel.extra = append(sentinel.extra, "--http", sentinel.http)
	}
	sent, err := startSentinel(ctx, sentinel)
	if err != nil {
		return err
	}
	// The workers close first (the defers below run before this one), so
	// none redials into a Sentinel that is shutting down. measureRestart
	// replaces sent.
	defer func() { sent.stop() }()
	// More Sentinels (--sentinels) on the same database, each on its own
	// endpoint; the workers are dealt out among them in turn.
	r := &rig{sents: []*sentinelProc{sent}, args: []sentinelArgs{sentinel}, database: database, server: server}
	for range o.sentinels - 1 {
		more := sentinel
		if more.endpoint, err = freeEndpoint(); err != nil {
			return err
		}
		s, err := startSentinel(ctx, more)
		if err != nil {
			return err
		}
		defer s.stop()
		r.sents = append(r.sents, s)
		r.args = append(r.args, more)
	}

	var idlers []*benchWorker
	for i := 0; i < o.idle; i++ {
		w, err := dialWorker(ctx, sentinel, fmt.Sprintf("idle-%04d", i), []string{"nothing-to-run"}, 1)
		if err != nil {
			return err
		}
		idlers = append(idlers, w)
	}
	defer closeAll(idlers)
	if o.idleFor > 0 {
		time.Sleep(o.idleWarmup) // registering a thousand workers is not the idle cost
		before := sent.cpu()
		time.Sleep(o.idleFor) // measuring a steady state over a fixed window
		used := sent.cpu() - before
		fmt.Fprintf(out, "idle: %d workers connected for %s (after %s to settle) cost %.3f CPU s = %.2f%% of one core; peak RSS %.1f MB\n",
			o.idle, o.idleFor, o.idleWarmup, used.Seconds(), 100*used.Seconds()/o.idleFor.Seconds(), sent.peakRSSMB())
		return nil
	}

	// One pool of workers serves every phase: a worker that disconnects
	// keeps its slots in the Sentinel's view until --worker-timeout, which
	// would stall the next phase.
	defer func() { closeAll(r.pool) }()
	for i := 0; i < o.workers; i++ {
		// Idle until a phase starts the clock and gives them the plugin.
		w, err := dialWorker(ctx, r.args[i%len(r.args)], fmt.Sprintf("bench-%d", i), nil, 0)
		if err != nil {
			return err
		}
		r.pool = append(r.pool, w)
	}
	pool := r.pool

	full, err := measure(ctx, out, "full load", r, o, 0)
	if err != nil {
		return err
	}
	if err := printCounts(ctx, out, database); err != nil {
		return err
	}
	if o.completedBacklog > 0 {
		n, err := countStatus(ctx, database, job.StatusCompleted)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "completed backlog: %d seeded (ended 48h ago); %d of them left after the run\n",
			o.completedBacklog, n-int64(o.jobs))
	}
	if o.flood {
		if err := measureFlood(ctx, out, r, sentinel, o, full); err != nil {
			return err
		}
	}
	if o.holdHalf {
		// At full load a slot turns over every W×C/max seconds (dispatch
		// latency plus the worker's turnaround). Holding each job for one
		// such turn makes a slot's cycle at most twice as long, so the
		// workers deliver about half the maximum (a little more, as the
		// latency drops with the load); the achieved share is printed.
		hold := time.Duration(float64(o.workers*o.slots) / full * float64(time.Second))
		// Pause the workers while the jobs are written, so the clock
		// starts with all of them queued.
		if err := identifyAll(pool, nil, 0); err != nil {
			return err
		}
		if err := seedMore(ctx, database, o.jobs/4); err != nil {
			return err
		}
		ho := o
		ho.jobs = o.jobs / 4
		half, err := measure(ctx, out, fmt.Sprintf("half load (hold %s)", hold.Round(time.Microsecond)), r, ho, hold)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "half load ran at %.0f %% of the full-load rate\n", 100*half/full)
	}
	if o.restart {
		sent, err = measureRestart(ctx, out, sentinel, sent, pool)
		return err
	}
	return nil
}

// check refuses the combinations the bench cannot run.
func (o options) check() error {
	if o.database != "" && !backend.IsPostgres(o.database) {
		return fmt.Errorf("--database takes a postgres:// URL (SQLite is the default: a new file in --dir)")
	}
	if o.sentinels < 0 {
		return fmt.Errorf("--sentinels %d: want 1 or more", o.sentinels)
	}
	if o.sentinels > 1 {
		if o.database == "" {
			return fmt.Errorf("--sentinels %d needs --database postgres://…: a SQLite file serves one Sentinel", o.sentinels)
		}
		if o.restart || o.flood || o.stormPeers > 0 || o.idleFor > 0 {
			return fmt.Errorf("--sentinels %d: --restart, --flood, --storm and --idle-measure measure one Sentinel", o.sentinels)
		}
	}
	return nil
}

// measureRestart kills the Sentinel, queues a few more jobs and times a new
// Sentinel on the same database and endpoint: from starting the process to
// the first DISPATCH that one of the pool's workers, reconnecting on its own,
// receives. It returns the Sentinel now running (the killed one if none
// started), for the caller to stop.
func measureRestart(ctx context.Context, out io.Writer, args sentinelArgs, old *sentinelProc, pool []*benchWorker) (*sentinelProc, error) {
	old.kill()
	if err := seedMore(ctx, args.database, 100); err != nil {
		return old, err
	}
	queued, err := countStatus(ctx, args.database, job.StatusQueued)
	if err != nil {
		return old, err
	}
	ph := &phase{done: &atomic.Int64{}, lat: &latencies{}}
	for _, w := range pool {
		w.phase.Store(ph)
	}
	start := time.Now()
	sent, err := startSentinel(ctx, args)
	if err != nil {
		return old, err
	}
	for ph.done.Load() == 0 {
		if ctx.Err() != nil {
			return sent, errors.New("restart: no DISPATCH before the timeout")
		}
		time.Sleep(time.Millisecond) // polling a counter, not synchronising
	}
	fmt.Fprintf(out, "restart: first DISPATCH %s after starting a new Sentinel (SIGKILL before; %d jobs QUEUED)\n",
		time.Since(start).Round(time.Millisecond), queued)
	return sent, nil
}

// countStatus counts the rows with one status.
func countStatus(ctx context.Context, database string, status job.Status) (int64, error) {
	store, done, err := openStore(ctx, database)
	if err != nil {
		return 0, err
	}
	defer done() // only read: Close loses nothing
	return store.JobsCountWithStatus(ctx, status)
}

// printCounts prints how many jobs the database holds in each status a
// run leaves, so that a lost or doubled job shows.
func printCounts(ctx context.Context, out io.Writer, database string) error {
	store, closeStore, err := openStore(ctx, database)
	if err != nil {
		return err
	}
	defer closeStore() // only read
	n := map[job.Status]int64{}
	for _, st := range []job.Status{job.StatusCompleted, job.StatusQueued, job.StatusRunning, job.StatusFailed} {
		if n[st], err = store.JobsCountWithStatus(ctx, st); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "jobs in the database: %d COMPLETED, %d QUEUED, %d RUNNING, %d FAILED\n",
		n[job.StatusCompleted], n[job.StatusQueued], n[job.StatusRunning], n[job.StatusFailed])
	return nil
}

// rig is what a measurement runs on: the Sentinels (one, or more with
// --sentinels), the workers dealt out among them and the database.
type rig struct {
	sents    []*sentinelProc
	args     []sentinelArgs // how each of sents was started
	pool     []*benchWorker
	database string  // the Sentinels' --database
	server   *server // where the database's own CPU is read
}

// measure runs o.workers workers until o.jobs receipts are written as
// COMPLETED, and prints the figures. It returns jobs/s.
// phaseWritten reports whether every job of a phase is COMPLETED in the
// database, and how many are not yet.
func phaseWritten(ctx context.Context, s store, o options, completedTarget int64) (bool, int64, error) {
	if o.completedBacklog == 0 {
		n, err := s.JobsCountWithStatus(ctx, job.StatusCompleted)
		return n >= completedTarget, completedTarget - n, err
	}
	queued, err := s.JobsCountWithStatus(ctx, job.StatusQueued)
	if err != nil {
		return false, 0, err
	}
	running, err := s.JobsCountWithStatus(ctx, job.StatusRunning)
	left := queued - int64(o.preload) + running
	return left == 0, left, err
}

func measure(ctx context.Context, out io.Writer, label string, r *rig, o options, hold time.Duration) (float64, error) {
	pool := r.pool
	store, closeStore, err := openStore(ctx, r.database)
	if err != nil {
		return 0, err
	}
	defer closeStore() // only read: Close loses nothing
	// Counting one status reads only its rows: cheap even beside a million
	// QUEUED ones.
	completed, err := store.JobsCountWithStatus(ctx, job.StatusCompleted)
	if err != nil {
		return 0, err
	}
	target := completed + int64(o.jobs)

	ph := &phase{hold: hold, done: &atomic.Int64{}, lat: &latencies{}}
	// Read before the Sentinel's CPU: scraping /metrics costs it some.
	var counters0, workers0 counters
	if o.counters {
		counters0, workers0 = readCounters(ctx, r.sents[0], r.args[0].http), readProcCounters(os.Getpid())
	}
	cpu0 := cpuOf(r.sents)
	pgCPU0 := r.server.cpu()
	self0 := selfCPU()
	start := time.Now()
	for _, w := range pool {
		w.phase.Store(ph)
	}
	if err := identifyAll(pool, []string{"noop"}, o.slots); err != nil {
		return 0, err
	}
	done, lat := ph.done, ph.lat

	first := time.Time{}
	for {
		if first.IsZero() && done.Load() > 0 {
			first = time.Now()
		}
		if done.Load() >= int64(o.jobs) {
			break
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s: timed out with %d of %d receipts", label, done.Load(), o.jobs)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, not synchronising
	}
	// The clock stops when the database says every row is COMPLETED, not
	// when the last receipt was sent. With a completed backlog being pruned
	// the COMPLETED count shrinks meanwhile: then the run's rows are all
	// written once none is QUEUED (beyond the parked ones) or RUNNING.
	for {
		ok, n, err := phaseWritten(ctx, store, o, target)
		if err != nil {
			return 0, err
		}
		if ok {
			break
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s: receipts sent but %d rows not COMPLETED yet", label, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	self := selfCPU() - self0
	cpu := cpuOf(r.sents)
	pgCPU := r.server.cpu()
	for i := range cpu {
		cpu[i] -= cpu0[i]
	}
	rate := float64(o.jobs) / elapsed.Seconds()
	p := lat.percentiles(50, 90, 99)
	fmt.Fprintf(out, "%s: %d jobs in %.2fs = %.0f jobs/s | dispatch latency p50 %s p90 %s p99 %s | sentinel CPU %s per 1,000 jobs | peak RSS %s MB | first receipt after %s | worker reconnects %d%s | workers CPU %.3f s per 1,000 jobs\n",
		label, o.jobs, elapsed.Seconds(), rate, p[0], p[1], p[2],
		perThousand(cpu, o.jobs), peakRSS(r.sents), first.Sub(start).Round(time.Millisecond), reconnects.Load(),
		r.server.figure(pgCPU0, pgCPU, o.jobs), self.Seconds()*1000/float64(o.jobs))
	if o.counters {
		workers1, counters1 := readProcCounters(os.Getpid()), readCounters(ctx, r.sents[0], r.args[0].http)
		printCounters(out, counters0, counters1, workers0, workers1, o.jobs, r.args[0].http != "")
	}
	return rate, nil
}

// selfCPU is the bench process's user+system CPU time so far
// (getrusage(RUSAGE_SELF), every thread). Over a measurement that is the
// workers' cost: they are goroutines of this process. It also holds the
// bench's own polling (a counter every 5 ms, then the database's COMPLETED
// count until it is reached), a small share.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perThousand formats CPU seconds per 1,000 jobs: the Sentinels' sum, and
// with more than one each one's share, "0.210 s (0.105 + 0.105)".
func perThousand(cpu []time.Duration, jobs int) string {
	var sum time.Duration
	each := make([]string, len(cpu))
	for i, c := range cpu {
		sum += c
		each[i] = fmt.Sprintf("%.3f", c.Seconds()*1000/float64(jobs))
	}
	s := fmt.Sprintf("%.3f s", sum.Seconds()*1000/float64(jobs))
	if len(cpu) > 1 {
		s += " (" + strings.Join(each, " + ") + ")"
	}
	return s
}

// peakRSS formats the Sentinels' peak RSS in MB, "41.2" or "41.2 + 40.8".
func peakRSS(sents []*sentinelProc) string {
	each := make([]string, len(sents))
	for i, s := range sents {
		each[i] = fmt.Sprintf("%.1f", s.peakRSSMB())
	}
	return strings.Join(each, " + ")
}

func cpuOf(sents []*sentinelProc) []time.Duration {
	out := make([]time.Duration, len(sents))
	for i, s := range sents {
		out[i] = s.cpu()
	}
	return out
}

func seed(ctx context.Context, database, dir string, o options) error {
	store, done, err := openStore(ctx, database)
	if err != nil {
		return err
	}
	// Every write has committed by the time Close runs.
	defer done()
	root, err := store.SourceRootAdd(ctx, dir)
	if err != nil {
		return err
	}
	fv, err := store.FileVersionAdd(ctx, root.ID, "bench.db", "bench", 1, time.Now(), nil)
	if err != nil {
		return err
	}
	for _, p := range []string{"noop", "parked"} {
		if _, err := store.PluginManifestActivate(ctx, p, "1", "builtin:"+p, "", ""); err != nil {
			return err
		}
	}
	if o.preload > 0 {
		// Parked jobs are ordinary QUEUED rows that no worker can run:
		// they make the table and its indexes deep.
		if err := store.JobsEnqueueBulk(ctx, fv, "parked", 0, o.preload); err != nil {
			return err
		}
	}
	if o.completedBacklog > 0 {
		if err := store.JobsFinishedBulk(ctx, fv, "noop", job.StatusCompleted, time.Now().Add(-48*time.Hour), o.completedBacklog); err != nil {
			return err
		}
	}
	return store.JobsEnqueueBulk(ctx, fv, "noop", 10, o.jobs)
}

func seedMore(ctx context.Context, database string, n int) error {
	store, done, err := openStore(ctx, database)
	if err != nil {
		return err
	}
	defer done() // every write has committed by then
	return store.JobsEnqueueBulk(ctx, 1, "noop", 10, n)
}

// benchWorker is a no-op worker: it concludes every DISPATCH with SUCCESS
// (after the phase's hold, if set) and records how long each slot waited for
// its next job.
type benchWorker struct {
	id     string
	d      *transport.Dealer
	sendMu sync.Mutex
	phase  atomic.Pointer[phase]
	hello  atomic.Pointer[transport.Identify] // what the worker last identified as

	mu    sync.Mutex
	freed []time.Time         // when each free slot became free, oldest first
	held  map[uint64]struct{} // jobs received and not yet concluded
	wg    sync.WaitGroup
}

// reconnects counts the workers' reconnections; a message in flight during
// one is lost, and only heartbeat reconciliation recovers its job.
var reconnects atomic.Int64

// phase is one measurement: how long workers hold each job, and where they
// count receipts and record latencies.
type phase struct {
	hold time.Duration
	done *atomic.Int64
	lat  *latencies
}

func dialWorker(ctx context.Context, s sentinelArgs, id string, caps []string, slots int) (*benchWorker, error) {
	d, err := transport.DialDealer(ctx, s.endpoint, transport.DealerOptions{Identity: []byte(id), Curve: s.curve})
	if err != nil {
		return nil, err
	}
	w := &benchWorker{id: id, d: d, held: map[uint64]struct{}{}}
	w.phase.Store(&phase{done: &atomic.Int64{}, lat: &latencies{}})
	if err := w.identify(caps, slots); err != nil {
		return nil, err
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

// identify (re-)announces the worker; no plugins and no slots pause it.
// Every slot counts as free from now: the latency of the next DISPATCHes is
// measured from here, oldest free slot first.
func (w *benchWorker) identify(caps []string, slots int) error {
	hello := &transport.Identify{Capabilities: append([]string{}, caps...), WorkerID: w.id, MaxConcurrentJobs: slots}
	w.hello.Store(hello)
	now := time.Now()
	w.mu.Lock()
	w.freed = w.freed[:0]
	for range slots {
		w.freed = append(w.freed, now)
	}
	w.mu.Unlock()
	return w.send(transport.OpIdentify, 0, hello)
}

func identifyAll(pool []*benchWorker, caps []string, slots int) error {
	for _, w := range pool {
		if err := w.identify(caps, slots); err != nil {
			return err
		}
	}
	return nil
}

func (w *benchWorker) send(op transport.Opcode, job uint64, v any) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.d.Send(op, job, v)
}

func (w *benchWorker) loop() {
	defer w.wg.Done()
	for {
		msg, err := w.d.Recv()
		if errors.Is(err, transport.ErrReconnected) || isUnknownWorker(msg, err) {
			if err != nil {
				reconnects.Add(1)
			}
			_ = w.send(transport.OpIdentify, 0, w.hello.Load())
			continue
		}
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		switch msg.Opcode {
		case transport.OpHeartbeat:
			// The held jobs, so that the Sentinel can reconcile what a lost
			// message left behind. Sent under the lock, as receipts are, so
			// that a job's receipt never goes out between the list being
			// taken and sent (the Sentinel would ABORT a finished job).
			w.mu.Lock()
			ids := make([]int64, 0, len(w.held))
			for id := range w.held {
				ids = append(ids, int64(id))
			}
			_ = w.send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive,
				ActiveJobCount: len(ids), ActiveJobIDs: ids})
			w.mu.Unlock()
		case transport.OpDispatch:
			now := time.Now()
			ph := w.phase.Load()
			w.mu.Lock()
			if len(w.freed) > 0 {
				ph.lat.add(now.Sub(w.freed[0]))
				w.freed = w.freed[1:]
			}
			w.held[msg.JobID] = struct{}{}
			w.mu.Unlock()
			if ph.hold > 0 {
				job := msg.JobID
				time.AfterFunc(ph.hold, func() { w.conclude(ph, job) })
				continue
			}
			w.conclude(ph, msg.JobID)
		}
	}
}

func (w *benchWorker) conclude(ph *phase, job uint64) {
	w.mu.Lock()
	w.freed = append(w.freed, time.Now())
	delete(w.held, job)
	err := w.send(transport.OpConclude, job, &transport.Conclude{Status: transport.StatusSuccess})
	w.mu.Unlock()
	if err == nil {
		ph.done.Add(1)
	}
}

// isUnknownWorker reports the Sentinel's ERR asking to IDENTIFY again.
func isUnknownWorker(msg transport.Message, err error) bool {
	if err != nil || msg.Opcode != transport.OpErr {
		return false
	}
	v, err := transport.DecodePayload(msg.Opcode, msg.Payload)
	e, ok := v.(*transport.Err)
	return err == nil && ok && strings.Contains(e.Message, "unknown worker")
}

func closeAll(ws []*benchWorker) {
	for _, w := range ws {
		_ = w.d.Close()
		w.wg.Wait()
	}
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) percentiles(ps ...float64) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]time.Duration, len(ps))
	if len(l.d) == 0 {
		return out
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	for i, p := range ps {
		idx := int(p / 100 * float64(len(s)-1))
		out[i] = s[idx].Round(time.Microsecond)
	}
	return out
}

// sentinelArgs is how the Sentinel child is started, and how workers reach
// it.
type sentinelArgs struct {
	bin, endpoint, database string
	root                    string                 // the seeded source root: the working folder
	http                    string                 // the operator HTTP server (--flood reads /metrics); "" off
	extra                   []string               // --sentinel-flags, and the CURVE flags
	curve                   *transport.CurveClient // the workers' keys; nil: plaintext
}

// makeCurveKeys writes a key pair for the Sentinel and one that every
// worker shares (only the Sentinel's cost is measured, and a key per
// connection changes nothing there), and starts the Sentinel with CURVE on.
func (s *sentinelArgs) makeCurveKeys(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pair := func(name string) (pub, sec transport.CurveKey, secPath, pubPath string, err error) {
		if pub, sec, err = transport.GenerateCurveKeyPair(); err != nil {
			return
		}
		secPath, pubPath, err = transport.WriteCurveKeyPair(filepath.Join(dir, name), pub, sec)
		return
	}
	sentinelPub, _, sentinelKey, _, err := pair("sentinel")
	if err != nil {
		return err
	}
	_, workerSec, _, workerPub, err := pair("workers")
	if err != nil {
		return err
	}
	s.extra = append(s.extra, "--curve-secret-key", sentinelKey, "--authorized-workers", workerPub)
	s.curve = transport.NewCurveClient(sentinelPub, workerSec)
	return nil
}

// sentinelProc is the Sentinel child process.
type sentinelProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startSentinel(ctx context.Context, a sentinelArgs) (*sentinelProc, error) {
	// The seeded source root (seed) is allowed, so the Sentinel does not
	// warn about it at every scan.
	args := []string{"--bind", a.endpoint, "--database", a.database, "--log-format", "json", "--log-level", "warn",
		"--allowed-roots", a.root}
	args = append(args, a.extra...)
	cmd := exec.Command(a.bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sentinelProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(os.Stderr, "sentinel:", sc.Text())
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	if a.curve != nil {
		if err := s.waitCurve(ctx, a); err != nil {
			s.stop()
			return nil, err
		}
		return s, nil
	}
	// The ROUTER is bound once a TCP connect succeeds.
	host := strings.TrimPrefix(a.endpoint, "tcp://")
	for {
		c, err := net.DialTimeout("tcp", host, 100*time.Millisecond)
		if err == nil {
			_ = c.Close() // a probe: the connect was the answer
			return s, nil
		}
		select {
		case <-s.done:
			return nil, errors.New("sentinel exited at start")
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCurve waits until a CURVE handshake with the Sentinel succeeds. A
// bare TCP connect, as in plaintext, would be a refused handshake that the
// Sentinel logs.
func (s *sentinelProc) waitCurve(ctx context.Context, a sentinelArgs) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	d, err := transport.DialDealer(ctx, a.endpoint, transport.DealerOptions{Identity: []byte("bench-probe"), Curve: a.curve})
	select {
	case <-s.done:
		return errors.New("sentinel exited at start")
	default:
	}
	if err != nil {
		return err
	}
	return d.Close()
}

func (s *sentinelProc) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// kill ends the Sentinel with SIGKILL, as a crash would.
func (s *sentinelProc) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// cpu is the child's user+system CPU time from /proc/<pid>/stat.
func (s *sentinelProc) cpu() time.Duration {
	st, err := readStat(s.cmd.Process.Pid)
	if err != nil {
		return 0
	}
	return st.cpu
}

// peakRSSMB is VmHWM from /proc/<pid>/status.
func (s *sentinelProc) peakRSSMB() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func freeEndpoint() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }() // held only to learn a free port
	return "tcp://" + l.Addr().String(), nil
}

func numCPU() int {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(raw), "processor\t:")
}
