package actors_test

import (
	"context"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// TestQueue_ReceiptsShareTheRefillingClaimsCommit: under load, a burst of
// receipts and the claim that refills the slots they freed are written in
// one transaction. Without holding the receipts for the claim, about half of
// all transactions carry receipts alone (the claim arrives just after the
// queue actor started writing them).
func TestQueue_ReceiptsShareTheRefillingClaimsCommit(t *testing.T) {
	const jobs = 3000
	h := newHarness(t, nil)
	h.Plugin("noop")
	fv := h.File("a.txt", "a\n")
	if err := h.Store.JobsEnqueueBulk(context.Background(), fv, "noop", 0, jobs); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		h.Worker(testworker.Options{Slots: 4, Run: testworker.Succeed})
	}
	// The counter moves once a batch's transaction committed; it is far
	// cheaper to poll than counting 3000 rows under the race detector.
	testwait.Eventually(t, 60*time.Second, "every job COMPLETED", func() bool {
		return h.Sentinel.Stats().JobsCompleted.Load() == jobs
	})
	if n := h.Counts()[job.StatusCompleted]; n != jobs {
		t.Fatalf("%d jobs COMPLETED in the database, want %d", n, jobs)
	}
	claims := h.Sentinel.Stats().ClaimTime.Snapshot().Count
	alone := h.Sentinel.Stats().ConcludeTime.Snapshot().Count
	t.Logf("%d jobs: %d transactions with a claim, %d with receipts alone", jobs, claims, alone)
	if alone*10 > claims+alone {
		t.Errorf("%d of %d transactions wrote receipts alone; want under 10%%", alone, claims+alone)
	}
}
