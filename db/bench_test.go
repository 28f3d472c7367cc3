package db

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// TestJobsClaim_StatementsUseIndexes guards the claim path against a table
// scan and against sorting: with a deep queue or a large history of finished
// jobs, either would make every claim slower than the jobs it hands out. A
// scan of a partial index of QUEUED rows in claim order is fine: the LIMIT
// ends it.
func TestJobsClaim_StatementsUseIndexes(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	args := func(n int) []any {
		a := []any{"w", "w", "t", "t", int64(0)}
		for range n {
			a = append(a, "p")
		}
		return append(a, 1)
	}
	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"Normalise", normaliseNullsSQL, nil},
		{"ClaimAny", claimSQL(0, 0, true), args(0)},
		{"ClaimOne", claimSQL(1, 0, true), args(1)},
		{"ClaimThree", claimSQL(3, 0, true), args(3)},
		{"ClaimOneUnpaused", claimSQL(1, 0, false), args(1)},
		{"NextRunAt", nextRunSQL, []any{int64(0)}},
	} {
		plan := queryPlan(t, db, tc.name, tc.sql, tc.args...)
		for _, line := range plan {
			if strings.HasPrefix(line, "SCAN cf_processing_queue") &&
				!strings.Contains(line, "USING INDEX ix_cf_queue_nulls") &&
				!strings.Contains(line, "USING INDEX ix_cf_queue_claimable_any") {
				t.Errorf("%s scans the queue: %q", tc.name, plan)
			}
			if strings.Contains(line, "TEMP B-TREE") {
				t.Errorf("%s sorts: %q", tc.name, plan)
			}
		}
	}
}

// BenchmarkJobsClaimConclude measures the dispatch loop's database work:
// claim 64 jobs at a time for one worker and complete them in one batch.
// It reports jobs/s (claimed, assembled and completed).
func BenchmarkJobsClaimConclude(b *testing.B) {
	const batch = 64
	db := openTest(b)
	ctx := context.Background()
	s := seedBasics(b, db, "p")
	if _, err := db.TopicConfigAdd(ctx, "p", "output", "parquet://out/p.parquet", "", ""); err != nil {
		b.Fatal(err)
	}
	// A finished history makes the table realistic; the queue holds what the
	// benchmark will claim.
	fill := func(n int) {
		b.Helper()
		err := db.writeTx(ctx, func(tx *sql.Tx) error {
			st, err := tx.PrepareContext(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count) VALUES (?, 'p', 'QUEUED', ?, 0)`)
			if err != nil {
				return err
			}
			defer st.Close()
			for i := range n {
				if _, err := st.ExecContext(ctx, s.fv, i%100); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	fill(b.N * batch)

	metrics := map[string]int64{"rows": 1000, "size_bytes": 65536}
	artifacts := []map[string]string{{"topic": "output", "uri": "parquet://out/p.parquet"}}
	now := time.Now()
	b.ResetTimer()
	start := time.Now()
	jobs := 0
	for range b.N {
		claims, failures, err := db.JobsClaim(ctx, now, []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: batch}})
		if err != nil || len(failures) > 0 {
			b.Fatal(err, failures)
		}
		cs := make([]job.Conclusion, len(claims))
		for i, c := range claims {
			cs[i] = job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Metrics: metrics, Artifacts: artifacts}
		}
		out, err := db.JobsConclude(ctx, now, cs)
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range out {
			if o != job.OutcomeCompleted {
				b.Fatalf("outcome %v", o)
			}
		}
		jobs += len(claims)
	}
	b.StopTimer()
	if jobs != b.N*batch {
		b.Fatalf("completed %d jobs, want %d", jobs, b.N*batch)
	}
	b.ReportMetric(float64(jobs)/time.Since(start).Seconds(), "jobs/s")
}

// BenchmarkJobsBatch_Steady measures the Sentinel's steady state: each
// JobsBatch completes the jobs the previous one claimed and claims as many
// again, in one transaction, for batches of 8, 64 and 256 jobs. It reports
// jobs/s and the process's CPU microseconds per job (user + system, the
// checkpointer included), which varies less than the rate on a shared
// machine.
func BenchmarkJobsBatch_Steady(b *testing.B) {
	for _, lineage := range []bool{false, true} {
		for _, batch := range []int{8, 64, 256} {
			name := fmt.Sprint(batch)
			if lineage {
				name += "/lineage"
			}
			b.Run(name, func(b *testing.B) { benchSteady(b, batch, lineage) })
		}
	}
}

func benchSteady(b *testing.B, batch int, lineage bool) {
	db := openTest(b)
	db.SetLineage(lineage)
	ctx := context.Background()
	s := seedBasics(b, db, "p")
	if _, err := db.TopicConfigAdd(ctx, "p", "output", "parquet://out/p.parquet", "", ""); err != nil {
		b.Fatal(err)
	}
	n := (b.N + 1) * batch
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count) VALUES (?, 'p', 'QUEUED', 0, 0)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for range n {
			if _, err := st.ExecContext(ctx, s.fv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	metrics := map[string]int64{"rows": 1000, "size_bytes": 65536}
	artifacts := []map[string]string{{"topic": "output", "uri": "parquet://out/p.parquet"}}
	now := time.Now()
	req := []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: batch}}
	res, err := db.JobsBatch(ctx, now, nil, req)
	if err != nil {
		b.Fatal(err)
	}
	sinksHash := SinksHash(res.Claims[0].Dispatch.Sinks)
	b.ResetTimer()
	cpu0 := cpuNow()
	start := time.Now()
	for range b.N {
		cs := make([]job.Conclusion, len(res.Claims))
		for i, c := range res.Claims {
			// The hashes the worker actor takes from the DISPATCH
			// (lineage, issue #20).
			cs[i] = job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Metrics: metrics, Artifacts: artifacts,
				ArtifactHash: c.Dispatch.ArtifactHash, SinksHash: sinksHash}
		}
		res, err = db.JobsBatch(ctx, now, cs, req)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Claims) != batch {
			b.Fatalf("claimed %d", len(res.Claims))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "jobs/s")
	b.ReportMetric(float64((cpuNow()-cpu0).Microseconds())/float64(b.N*batch), "cpu-µs/job")
}

// cpuNow is the CPU time this process has used.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
