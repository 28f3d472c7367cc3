package process_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db/postgres"
	"github.com/casparian/sentinel/db/postgres/pgtest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// The PostgreSQL harness: several Sentinels on one PostgreSQL database, and
// testworkers that fail over between them and log every job they run.

// Timings of the PostgreSQL tests. The worker timeout is longer than the
// SQLite tests' 1.5 s: eight workers, two Sentinels and the server share
// two cores here, and a worker dropped for a late heartbeat would have its
// jobs requeued under it.
const (
	pgWorkerTimeout   = 3 * time.Second
	pgSentinelTimeout = 1500 * time.Millisecond
	pgWorkerHeartbeat = 300 * time.Millisecond
)

// pgCluster is one test's PostgreSQL database and the processes on it.
type pgCluster struct {
	t      *testing.T
	dir    string
	url    string
	store  *postgres.DB
	rootID int64

	files map[int64]seededFile // file version id → expected stats

	mu    sync.Mutex
	procs []*proc
}

func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	url := pgtest.Database(t)
	dir := t.TempDir()
	c := &pgCluster{t: t, dir: dir, url: url, files: map[int64]seededFile{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	c.store = store
	root := filepath.Join(dir, "files")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sr, err := store.SourceRootAdd(ctx, root)
	if err != nil {
		t.Fatalf("add source root: %v", err)
	}
	c.rootID = sr.ID
	if _, err := store.PluginManifestActivate(ctx, plugin, "1.0.0", "# process test plugin "+plugin, "", ""); err != nil {
		t.Fatalf("activate %s: %v", plugin, err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		procs := append([]*proc(nil), c.procs...)
		c.mu.Unlock()
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("=== %s: %s\n--- stderr tail:\n%s\n--- stdout tail:\n%s",
					p.name, p.status(), p.stderr.tail(40), p.stdout.tail(5))
			}
		}
		store.Close()
	})
	return c
}

func (c *pgCluster) track(p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// pgSentinel is one Sentinel process of a pgCluster.
type pgSentinel struct {
	*proc
	endpoint string // its ROUTER
	http     string // host:port of its HTTP API
	id       string // its lease id, as /healthz names it
}

// health is /healthz's answer.
type health struct {
	code     int
	Status   string `json:"status"`
	Sentinel string `json:"sentinel"`
	Leader   bool   `json:"leader"`
	Error    string `json:"error"`
	Reason   string `json:"reason"`
}

func (h health) String() string {
	return fmt.Sprintf("%d %s leader=%v %s%s", h.code, h.Status, h.Leader, h.Error, h.Reason)
}

var healthClient = &http.Client{Timeout: 3 * time.Second}

// health asks the Sentinel's /healthz.
func (s *pgSentinel) health() (health, error) {
	resp, err := healthClient.Get("http://" + s.http + "/healthz")
	if err != nil {
		return health{}, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below: nothing lost
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return health{}, fmt.Errorf("healthz: %w", err)
	}
	h.code = resp.StatusCode
	return h, nil
}

// startSentinel starts a Sentinel on the cluster's database and waits until
// its /healthz answers 200 ok.
func (c *pgCluster) startSentinel(name string) *pgSentinel {
	c.t.Helper()
	s := &pgSentinel{
		endpoint: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(c.t)),
		http:     fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
	}
	p, err := startProc(name, sentinelBin,
		"--bind", s.endpoint,
		"--database", c.url,
		"--http", s.http,
		"--log-format", "json",
		"--log-level", "info",
		"--heartbeat-interval", heartbeatInterval.String(),
		"--worker-timeout", pgWorkerTimeout.String(),
		"--recovery-grace", recoveryGrace.String(),
		"--max-retries", "5",
		"--retry-backoff", retryBackoff.String(),
		"--retry-backoff-max", retryBackoffMax.String(),
		"--poll-interval", pollInterval.String(),
		"--scan-interval", "0",
		"--drain-timeout", "3s",
		"--shutdown-timeout", "10s",
		"--allowed-roots", c.dir,
	)
	if err != nil {
		c.t.Fatal(err)
	}
	c.track(p)
	s.proc = p
	testwait.Eventually(c.t, readyTimeout, name+" to answer /healthz 200 ok", func() (bool, string) {
		if p.exited() {
			c.t.Fatalf("%s %s before it started; stderr:\n%s", name, p.status(), p.stderr.tail(40))
		}
		h, err := s.health()
		if err != nil {
			return false, err.Error()
		}
		s.id = h.Sentinel
		return h.code == http.StatusOK && h.Status == "ok" && h.Sentinel != "", h.String()
	})
	return s
}

// startWorker starts a testworker with the given endpoints (the first is
// where it connects first), failing over after pgSentinelTimeout and
// logging its jobs, each of which takes delay more, and waits until it has
// connected.
func (c *pgCluster) startWorker(id string, slots int, delay time.Duration, endpoints ...string) *proc {
	c.t.Helper()
	p, err := startProc("worker "+id, workerBin,
		"--endpoint", strings.Join(endpoints, ","),
		"--identity", id,
		"--capabilities", "*",
		"--slots", strconv.Itoa(slots),
		"--job-delay", delay.String(),
		"--heartbeat", pgWorkerHeartbeat.String(),
		"--sentinel-timeout", pgSentinelTimeout.String(),
		"--job-log",
	)
	if err != nil {
		c.t.Fatal(err)
	}
	c.track(p)
	want := fmt.Sprintf("worker %s connected to %s", id, endpoints[0])
	testwait.Eventually(c.t, readyTimeout, want, func() (bool, string) {
		if p.exited() {
			c.t.Fatalf("worker %s %s before it connected; stderr:\n%s", id, p.status(), p.stderr.tail(20))
		}
		return strings.Contains(p.stdout.String(), want), p.stdout.tail(2)
	})
	return p
}

// enqueue writes files files and queues perFile jobs on each, in one
// statement per file; it returns the number of jobs.
func (c *pgCluster) enqueue(files, perFile int) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range files {
		var b strings.Builder
		for r := 0; r <= i%17; r++ {
			fmt.Fprintf(&b, "row %d of file %d\n", r, i)
		}
		rel := fmt.Sprintf("input-%04d.txt", i)
		data := []byte(b.String())
		if err := os.WriteFile(filepath.Join(c.dir, "files", rel), data, 0o644); err != nil {
			c.t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		fv, err := c.store.FileVersionAdd(ctx, c.rootID, rel, hex.EncodeToString(sum[:]), int64(len(data)), time.Now(), []string{"txt"})
		if err != nil {
			c.t.Fatalf("add file version %s: %v", rel, err)
		}
		c.files[fv] = seededFile{size: int64(len(data)), lines: int64(i%17 + 1)}
		if err := c.store.JobsEnqueueBulk(ctx, fv, plugin, 0, perFile); err != nil {
			c.t.Fatalf("enqueue: %v", err)
		}
	}
	return files * perFile
}

// counts returns the jobs by status; the error is the database's (the
// server may be down on purpose).
func (c *pgCluster) counts() (map[job.Status]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.store.JobsCountByStatus(ctx)
}

// waitCompleted waits until n jobs are COMPLETED.
func (c *pgCluster) waitCompleted(within time.Duration, n int64) {
	c.t.Helper()
	testwait.Eventually(c.t, within, fmt.Sprintf("%d jobs COMPLETED", n), func() (bool, string) {
		got, err := c.counts()
		if err != nil {
			return false, err.Error()
		}
		return got[job.StatusCompleted] >= n, fmtCounts(got)
	})
}

// pgRow is a job's row as the test checks it.
type pgRow struct {
	id, fileVersion        int64
	status                 string
	attempt, retries       int64
	claimedBy, sentinelID  string
	metrics                map[string]int64
	hasSummary, hasMetrics bool
	endTime                time.Time // when the Sentinel concluded it (its clock, UTC)
}

// rows reads every job's row.
func (c *pgCluster) rows() []pgRow {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		c.t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }() // read only
	rs, err := conn.Query(ctx, `SELECT id, file_version_id, status::text, COALESCE(attempt, 0), COALESCE(retry_count, 0),
		COALESCE(claimed_by, ''), COALESCE(sentinel_id, ''), COALESCE(metrics_json, ''), result_summary IS NOT NULL AND result_summary <> '',
		COALESCE(end_time, 'epoch')
		FROM cf_processing_queue ORDER BY id`)
	if err != nil {
		c.t.Fatalf("read jobs: %v", err)
	}
	defer rs.Close()
	var out []pgRow
	for rs.Next() {
		var r pgRow
		var metrics string
		if err := rs.Scan(&r.id, &r.fileVersion, &r.status, &r.attempt, &r.retries, &r.claimedBy, &r.sentinelID, &metrics, &r.hasSummary, &r.endTime); err != nil {
			c.t.Fatalf("read jobs: %v", err)
		}
		if metrics != "" {
			r.hasMetrics = json.Unmarshal([]byte(metrics), &r.metrics) == nil
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		c.t.Fatalf("read jobs: %v", err)
	}
	return out
}

// checkCompletedOnce checks that there are n jobs and each is COMPLETED on
// its last claim (attempt = retry_count + 1: a job claimed or completed
// twice would break it), with the receipt of its own file, and that its
// claim was made through one of sentinels. It returns the rows by id.
func (c *pgCluster) checkCompletedOnce(n int, sentinels ...*pgSentinel) map[int64]pgRow {
	c.t.Helper()
	rows := c.rows()
	if len(rows) != n {
		c.t.Errorf("%d rows in the queue, want %d", len(rows), n)
	}
	ids := map[string]bool{}
	for _, s := range sentinels {
		ids[s.id] = true
	}
	byID := make(map[int64]pgRow, len(rows))
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			c.t.Errorf(format, args...)
		}
	}
	for _, r := range rows {
		byID[r.id] = r
		f := c.files[r.fileVersion]
		switch {
		case r.status != string(job.StatusCompleted):
			report("job %d is %s (attempt %d, retry_count %d, claimed by %q), want COMPLETED", r.id, r.status, r.attempt, r.retries, r.claimedBy)
		case r.attempt != r.retries+1:
			report("job %d COMPLETED with attempt %d and retry_count %d, want attempt = retry_count + 1", r.id, r.attempt, r.retries)
		case !r.hasSummary || !r.hasMetrics || r.metrics["size_bytes"] != f.size || r.metrics["rows"] != f.lines:
			report("job %d COMPLETED with metrics %v (summary %v), want size_bytes=%d rows=%d", r.id, r.metrics, r.hasSummary, f.size, f.lines)
		case r.claimedBy == "":
			report("job %d COMPLETED with no claimed_by", r.id)
		case !ids[r.sentinelID]:
			report("job %d COMPLETED with sentinel_id %q, none of the Sentinels %v", r.id, r.sentinelID, ids)
		}
	}
	if bad > 10 {
		c.t.Errorf("… and %d more bad rows", bad-10)
	}
	return byID
}

// jobRun is one run of a job on a worker, from the worker's job log.
type jobRun struct {
	worker   string
	job      int64
	endpoint string // the Sentinel the DISPATCH came from
	start    time.Time
	end      time.Time // zero: the run had not ended
	status   string
}

// jobRuns parses the job log of a worker process (see
// cmd/casparian-testworker): every start, paired with the next end of the
// same job.
func jobRuns(worker string, p *proc) ([]jobRun, error) {
	var runs []jobRun
	open := map[int64][]int{} // job → indexes of its runs not ended yet, oldest first
	for _, line := range p.stdout.lines() {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "job" {
			continue
		}
		id, err1 := strconv.ParseInt(f[2], 10, 64)
		ns, err2 := strconv.ParseInt(f[4], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: bad job log line %q", worker, line)
		}
		at := time.Unix(0, ns)
		switch {
		case f[1] == "start":
			open[id] = append(open[id], len(runs))
			runs = append(runs, jobRun{worker: worker, job: id, endpoint: f[3], start: at})
		case f[1] == "end" && len(f) == 6:
			if len(open[id]) == 0 {
				return nil, fmt.Errorf("%s: job %d ended without a start: %q", worker, id, line)
			}
			i := open[id][0]
			open[id] = open[id][1:]
			runs[i].end, runs[i].status = at, f[5]
		default:
			return nil, fmt.Errorf("%s: bad job log line %q", worker, line)
		}
	}
	return runs, nil
}

// overlaps returns, for every job, the pairs of its runs that overlapped in
// time, leaving out those whose later run started at or after allowedAfter
// (a lease expired by then: the leader may requeue a job under a worker
// it could not know was alive); a zero allowedAfter excuses none.
func overlaps(runs []jobRun, allowedAfter time.Time) []string {
	byJob := map[int64][]jobRun{}
	for _, r := range runs {
		byJob[r.job] = append(byJob[r.job], r)
	}
	var out []string
	for id, rs := range byJob {
		if len(rs) < 2 {
			continue
		}
		sort.Slice(rs, func(i, j int) bool { return rs[i].start.Before(rs[j].start) })
		for i := 1; i < len(rs); i++ {
			for _, prev := range rs[:i] {
				ended := prev.end
				if ended.IsZero() {
					ended = time.Unix(1<<40, 0) // still running
				}
				if rs[i].start.Before(ended) && (allowedAfter.IsZero() || rs[i].start.Before(allowedAfter)) {
					out = append(out, fmt.Sprintf("job %d ran on %s via %s [%s, %s] and on %s via %s from %s",
						id, prev.worker, prev.endpoint, prev.start.Format(time.StampMicro), prev.end.Format(time.StampMicro),
						rs[i].worker, rs[i].endpoint, rs[i].start.Format(time.StampMicro)))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// leaseExpiry is when Sentinel id's lease expires (or expired), by the
// server's clock.
func (c *pgCluster) leaseExpiry(id string) time.Time {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		c.t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }() // read only
	var at time.Time
	if err := conn.QueryRow(ctx, `SELECT expires_at FROM sentinel_lease WHERE id = $1`, id).Scan(&at); err != nil {
		c.t.Fatalf("lease of %s: %v", id, err)
	}
	return at
}

// The overlap check finds two runs of one job at once, on one worker or
// two, and excuses only a later run that began once the lease had expired.
func TestPGHarness_OverlapsFindsConcurrentRuns(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1000+int64(s), 0) }
	runs := []jobRun{
		{worker: "w1", job: 1, start: at(0), end: at(2)},
		{worker: "w2", job: 1, start: at(2), end: at(3)}, // after: fine
		{worker: "w1", job: 2, start: at(0), end: at(5)},
		{worker: "w2", job: 2, start: at(4), end: at(6)}, // overlaps
		{worker: "w1", job: 3, start: at(0)},             // never ended
		{worker: "w1", job: 3, start: at(7), end: at(8)}, // overlaps
		{worker: "w1", job: 4, start: at(0), end: at(20)},
		{worker: "w2", job: 4, start: at(10), end: at(11)}, // excused below
	}
	if got := overlaps(runs, time.Time{}); len(got) != 3 {
		t.Errorf("overlaps without excuse = %d, want 3:\n%s", len(got), first(got, 10))
	}
	if got := overlaps(runs, at(9)); len(got) != 2 {
		t.Errorf("overlaps excusing runs from 9 s = %d, want 2:\n%s", len(got), first(got, 10))
	}
}
