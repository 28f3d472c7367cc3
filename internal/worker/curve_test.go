package worker_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// TestWorker_CurveRunsJobsOnlyForAuthorizedKeys runs the worker against a
// Sentinel with CURVE on: with an authorized key it completes a job and the
// Sentinel lists it with its key; with a key the Sentinel does not list, or
// with the wrong key for the Sentinel, it gets no job, and its log says why.
func TestWorker_CurveRunsJobsOnlyForAuthorizedKeys(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	sentinelPub, _ := curveKeyPair(t, filepath.Join(keys, "sentinel"))
	workerPub, workerSec := curveKeyPair(t, filepath.Join(keys, "worker"))
	_, strangerSec := curveKeyPair(t, filepath.Join(keys, "stranger"))
	h := newSentinel(t, func(c *config.Config) {
		c.CurveSecretKey = filepath.Join(keys, "sentinel.key")
		c.AuthorizedWorkers = filepath.Join(keys, "worker.pub")
	})
	h.Plugin("csv")
	h.Topic("csv", "output", "sqlite://"+filepath.Join(h.out, "out.db")+"/orders", "append")

	w := startWorker(t, h, worker.Options{Identity: "curve-worker",
		Curve: transport.NewCurveClient(sentinelPub, workerSec)})
	id := h.EnqueueOverrides(h.sample("orders.csv"), "csv", "")
	if j := h.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted || j.Metrics["rows"] != 10 {
		t.Fatalf("job over CURVE: %s %q, metrics %v", j.Status, j.ErrorMessage, j.Metrics)
	}
	infos, err := h.Sentinel.WorkersInfo(t.Context())
	if err != nil || len(infos) != 1 || infos[0].KeyFingerprint != workerPub.Fingerprint() {
		t.Fatalf("workers %+v, %v; want curve-worker with key %s", infos, err, workerPub.Fingerprint())
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}

	// Neither a key the Sentinel does not list, nor an authorized key
	// offered to the wrong Sentinel key, gets through.
	stranger := startWorker(t, h, worker.Options{Identity: "stranger",
		Curve: transport.NewCurveClient(sentinelPub, strangerSec)})
	misled := startWorker(t, h, worker.Options{Identity: "misled",
		Curve: transport.NewCurveClient(workerPub, workerSec)})
	id = h.EnqueueOverrides(h.File("more.csv", "a,b\n1,2\n"), "csv", "")
	testwait.Eventually(t, within, "the workers' logs say why they are not connected", func() bool {
		return strings.Contains(stranger.logs.String(), "is it in its --authorized-workers?") &&
			strings.Contains(misled.logs.String(), "is --sentinel-key its public key?")
	})
	if j := h.Job(id); j.Status != job.StatusQueued || j.ClaimedBy != "" {
		t.Fatalf("job %d: %s by %q; want QUEUED and never claimed", id, j.Status, j.ClaimedBy)
	}
	for _, rw := range []*runningWorker{stranger, misled} {
		if st := rw.Stats(); st.Identifies != 0 || st.JobsStarted != 0 {
			t.Fatalf("%s got through: %+v", rw.Identity(), st)
		}
	}
}
