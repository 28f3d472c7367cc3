package main

import (
	"math"
	"strings"
	"testing"
)

// The output of casparian-bench this command reads, as it prints it on
// SQLite and on PostgreSQL.
const (
	sqliteOut = `machine: 2 CPUs; W=8 C=64 N=20000 preload=0 idle-workers=0 security=plaintext database=sqlite sentinels=1 (seeded in 0.3s)
full load: 20000 jobs in 2.00s = 10000 jobs/s | dispatch latency p50 2ms p90 4ms p99 8ms | sentinel CPU 0.100 s per 1,000 jobs | peak RSS 40.1 MB | first receipt after 3ms | worker reconnects 0 | workers CPU 0.050 s per 1,000 jobs
jobs in the database: 20000 COMPLETED, 0 QUEUED, 0 RUNNING, 0 FAILED
`
	postgresOut = `full load: 20000 jobs in 4.00s = 5000 jobs/s | dispatch latency p50 2ms p90 4ms p99 8ms | sentinel CPU 0.100 s per 1,000 jobs | peak RSS 40.1 MB | first receipt after 3ms | worker reconnects 0 | postgres CPU 0.200 s per 1,000 jobs | workers CPU 0.050 s per 1,000 jobs
jobs in the database: 20000 COMPLETED, 0 QUEUED, 0 RUNNING, 0 FAILED
`
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestParseOurs(t *testing.T) {
	for _, tc := range []struct {
		name, out           string
		rate, store, worker float64
	}{
		{"sqlite", sqliteOut, 10000, 0.100, 0.050},
		{"postgres", postgresOut, 5000, 0.300, 0.050},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseOurs(tc.out, 20000)
			if err != nil {
				t.Fatal(err)
			}
			if r.jobsPerSec() != tc.rate || !near(r.perK(r.store), tc.store) || !near(r.perK(r.workers), tc.worker) {
				t.Errorf("parsed %.0f jobs/s, store %.3f, workers %.3f; want %.0f, %.3f, %.3f",
					r.jobsPerSec(), r.perK(r.store), r.perK(r.workers), tc.rate, tc.store, tc.worker)
			}
		})
	}
}

func TestParseOurs_Refuses(t *testing.T) {
	for _, tc := range []struct{ name, out, want string }{
		{"no line", "machine: 2 CPUs\n", `no "full load:" line`},
		{"old build", strings.Replace(sqliteOut, " | workers CPU 0.050 s per 1,000 jobs", "", 1), "no workers CPU figure"},
		{"a job left", strings.Replace(sqliteOut, "0 QUEUED", "1 QUEUED", 1), "1 QUEUED"},
		{"server elsewhere", strings.Replace(postgresOut, "postgres CPU 0.200 s per 1,000 jobs", "postgres CPU unknown: server not on this host", 1),
			"could not read PostgreSQL's CPU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseOurs(tc.out, 20000)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseOurs = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	ok := options{jobs: 1, rounds: 1, riverWorkers: 1, workers: 1, slots: 1, oursDatabase: "sqlite", timeout: 1}
	if err := ok.check(); err != nil {
		t.Fatalf("check of valid options: %v", err)
	}
	bad := ok
	bad.oursDatabase = "mysql"
	bad.skip = "both"
	err := bad.check()
	if err == nil || !strings.Contains(err.Error(), "--ours-database") || !strings.Contains(err.Error(), "--skip") {
		t.Errorf("check = %v, want both mistakes named", err)
	}
}

func TestSummary(t *testing.T) {
	o := options{jobs: 1000, riverWorkers: 2000, workers: 8, slots: 64, oursDatabase: "sqlite"}
	runs := []result{
		{system: "river", jobs: 1000, rate: 1000, store: 100e6, workers: 100e6},
		{system: "ours", jobs: 1000, rate: 2000, store: 50e6, workers: 100e6},
		{system: "ours", jobs: 1000, rate: 4000, store: 50e6, workers: 100e6},
	}
	// Compared word by word: the column widths are the table's business.
	got := strings.Join(strings.Fields(summary(runs, o)), " ")
	for _, want := range []string{
		"River (MaxWorkers=2000) 1 1000 0.100 0.100 0.200",
		"Sentinel (W=8 C=64, sqlite) 2 3000 0.050 0.100 0.150",
		"ours/River: throughput 3.00×; CPU per job: store 0.50×, workers 1.00×, total 0.75×",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}
