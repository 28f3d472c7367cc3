package actors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// BenchmarkSentinel_EndToEnd runs b.N jobs through an in-process Sentinel
// with 8 workers × 4 and × 64 slots over TCP loopback and reports jobs/s
// until every row is COMPLETED. cmd/casparian-bench measures the same against
// the real binary; this one exists so the path can be profiled with
// -cpuprofile.
func BenchmarkSentinel_EndToEnd(b *testing.B) {
	for _, slots := range []int{4, 64} {
		b.Run(fmt.Sprintf("8x%d", slots), func(b *testing.B) { benchEndToEnd(b, slots) })
	}
}

func benchEndToEnd(b *testing.B, slots int) {
	h := newHarness(b, nil)
	h.Plugin("noop")
	fv := h.File("a.txt", "a\n")
	if err := h.Store.JobsEnqueueBulk(context.Background(), fv, "noop", 0, b.N); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < 8; i++ {
		h.Worker(testworker.Options{Slots: slots, Run: testworker.Succeed})
	}
	// Poll the in-memory counter (cheap), then confirm in SQLite once.
	for h.Sentinel.Stats().JobsCompleted.Load() < int64(b.N) {
		time.Sleep(5 * time.Millisecond) // polling a counter, not synchronising
	}
	if n := h.Counts()[job.StatusCompleted]; n != int64(b.N) {
		b.Fatalf("%d rows COMPLETED, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
	// How the work was batched: claim transactions (each with the
	// conclusions written beside it) per job, and their mean duration.
	claims := h.Sentinel.Stats().ClaimTime.Snapshot()
	if claims.Count > 0 {
		b.ReportMetric(float64(b.N)/float64(claims.Count), "jobs/claim-tx")
		b.ReportMetric(claims.Sum/float64(claims.Count)*1000, "ms/claim-tx")
	}
}
