package backends

import (
	"context"
	"fmt"
	"testing"

	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// An operator drains a worker holding a job, then disconnects it: the
// drained worker gets no new job while another does, and the job it held
// is requeued and completed by the other worker; the worker identifies
// again, with nothing, still drained. On both databases.
func TestBackends_DrainThenDisconnectMovesTheJobElsewhere(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, start start) {
		e := start(t, nil)
		e.Plugin("stats")
		ctx := context.Background()
		held := e.Worker(testworker.Options{Identity: "tw-held", Slots: 2, Run: func(ctx context.Context, _ testworker.Job) transport.Conclude {
			<-ctx.Done()
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "closed"}
		}})
		e.WaitWorkers(1)
		fvs := files(e, 4)
		stuck := e.Enqueue(fvs[0], "stats", 0)
		if j := e.WaitJob(stuck, job.StatusRunning); j.ClaimedBy != "tw-held" {
			t.Fatalf("job %d RUNNING on %q", stuck, j.ClaimedBy)
		}
		if err := e.Sentinel.DrainWorker(ctx, "tw-held", true); err != nil {
			t.Fatal(err)
		}
		other := e.Worker(testworker.Options{Identity: "tw-other", Slots: 2})
		for _, fv := range fvs[1:] {
			if j := e.WaitJob(e.Enqueue(fv, "stats", 0), job.StatusCompleted); j.ClaimedBy != other.Identity() {
				t.Errorf("job %d ran on %q while tw-held was drained", j.ID, j.ClaimedBy)
			}
		}
		n := held.Identifies()
		if err := e.Sentinel.DisconnectWorker(ctx, "tw-held"); err != nil {
			t.Fatal(err)
		}
		if j := e.WaitJob(stuck, job.StatusCompleted); j.ClaimedBy != other.Identity() || j.Attempt != 2 {
			t.Errorf("job %d after the disconnect: on %q, attempt %d", stuck, j.ClaimedBy, j.Attempt)
		}
		testwait.Eventually(t, sentineltest.Within, "tw-held back, drained, holding nothing", func() (bool, string) {
			ws, err := e.Sentinel.WorkersInfo(ctx)
			for _, w := range ws {
				if w.ID == "tw-held" {
					return held.Identifies() > n && w.Draining && len(w.Running) == 0, fmt.Sprintf("%+v", w)
				}
			}
			return false, fmt.Sprint(ws, err)
		})
		if got := len(held.Received()); got != 1 {
			t.Errorf("tw-held received %d DISPATCHes, want 1", got)
		}
	})
}
