package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/db/postgres/pgtest"
	"github.com/casparian/sentinel/job"
)

// BenchmarkJobsBatch measures the dispatch loop's database work as the
// queue actor does it under load: each call to JobsBatch completes the jobs
// the previous call claimed (with a receipt) and claims the next 64, in one
// transaction. It reports jobs/s: claimed, assembled and completed. On
// PostgreSQL fsync is off in the test cluster, so the figure is the
// server's and the driver's work, not the disk's.
func BenchmarkJobsBatch(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			fx := be.open(b)
			fx.activate("p")
			fx.topic("p", "output", "parquet://out/p.parquet", "")
			benchLoop(b, []jobStore{fx.s}, fx.fv)
		})
	}
}

// BenchmarkPostgres_JobsBatchTwoSentinels runs the same loop from two
// pools (two Sentinels) on one database at once, claiming from one queue:
// SKIP LOCKED lets them proceed without waiting for each other.
func BenchmarkPostgres_JobsBatchTwoSentinels(b *testing.B) {
	url := pgtest.Database(b)
	var stores []jobStore
	var fv int64
	for i := 0; i < 2; i++ {
		d, err := Open(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(d.Close)
		d.SetSentinelID(fmt.Sprintf("s%d", i))
		if i == 0 {
			fx := seedWith(b, d)
			fx.activate("p")
			fx.topic("p", "output", "parquet://out/p.parquet", "")
			fv = fx.fv
		}
		stores = append(stores, d)
	}
	benchLoop(b, stores, fv)
}

// benchLoop fills the queue with b.N batches of 64 jobs and drains it from
// every store at once, each running the conclude-and-claim loop.
func benchLoop(b *testing.B, stores []jobStore, fv int64) {
	const batch = 64
	ctx := context.Background()
	if err := stores[0].JobsEnqueueBulk(ctx, fv, "p", 0, b.N*batch); err != nil {
		b.Fatal(err)
	}
	metrics := map[string]int64{"rows": 1000, "size_bytes": 65536}
	artifacts := []map[string]string{{"topic": "output", "uri": "parquet://out/p.parquet"}}
	now := time.Now()
	done := make([]int, len(stores))
	errs := make([]error, len(stores))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cs []job.Conclusion
			worker := fmt.Sprintf("w%d", i)
			for {
				res, err := s.JobsBatch(ctx, now, cs, []job.ClaimRequest{{Worker: worker, Plugins: []string{"p"}, Limit: batch}})
				if err != nil {
					errs[i] = err
					return
				}
				for _, o := range res.Outcomes {
					if o != job.OutcomeCompleted {
						errs[i] = fmt.Errorf("outcome %v", o)
						return
					}
				}
				done[i] += len(res.Outcomes)
				if len(res.Claims) == 0 {
					return
				}
				cs = cs[:0]
				for _, c := range res.Claims {
					cs = append(cs, job.Conclusion{Ref: c.Ref, Kind: job.ConcludeComplete, Metrics: metrics, Artifacts: artifacts})
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	total := 0
	for i := range stores {
		if errs[i] != nil {
			b.Fatal(errs[i])
		}
		total += done[i]
	}
	if total != b.N*batch {
		b.Fatalf("completed %d jobs, want %d", total, b.N*batch)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "jobs/s")
}
