package actors_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// blockingRun returns a RunFunc that holds every job until release is closed.
func blockingRun(release <-chan struct{}) testworker.RunFunc {
	return func(ctx context.Context, j testworker.Job) transport.Conclude {
		select {
		case <-release:
			return testworker.Succeed(ctx, j)
		case <-ctx.Done():
			return transport.Conclude{Status: transport.StatusAborted}
		}
	}
}

func TestRecovery_RestartKeepsJobsOfWorkersThatComeBack(t *testing.T) {
	t.Parallel()
	// The grace only has to outlast the worker's reconnect, and the worker
	// timeout the longest heartbeat gap; both are generous so that a loaded
	// machine cannot turn the adoption into a requeue.
	h := newHarness(t, func(c *config.Config) {
		c.RecoveryGrace = 15 * time.Second
		c.WorkerTimeout = 10 * time.Second
	})
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	w := h.Worker(testworker.Options{Run: blockingRun(release), HeartbeatInterval: 50 * time.Millisecond})
	// RUNNING in the database is not enough: the claim commits before the
	// DISPATCH is written, and a restart in between loses the DISPATCH; the
	// new Sentinel then rightly requeues the job the worker never reports.
	testwait.Eventually(t, 5*time.Second, "job RUNNING on the worker", func() bool {
		return h.Job(id).Status == job.StatusRunning && len(w.Received()) == 1
	})

	h.Restart(nil)
	// Released only once the new Sentinel has adopted the job: this test
	// worker (unlike ours) does not re-send an IDENTIFY or a receipt that
	// it wrote while it had no connection, so counting its IDENTIFYs is not
	// enough.
	testwait.Eventually(t, 5*time.Second, "the new Sentinel adopted the job", func() bool {
		ws, err := h.Sentinel.WorkersInfo(context.Background())
		return err == nil && len(ws) == 1 && ws[0].Ready && slices.Equal(ws[0].Running, []int64{id})
	})
	close(release)
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.Attempt != 1 || j.RetryCount != 0 || len(w.Received()) != 1 {
		t.Errorf("job was not kept by its worker: attempt %d retries %d dispatches %d", j.Attempt, j.RetryCount, len(w.Received()))
	}
}

func TestRecovery_JobsOfWorkersThatNeverComeBackAreRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	gone := h.Worker(testworker.Options{Run: blockingRun(make(chan struct{}))})
	testwait.Eventually(t, 5*time.Second, "job RUNNING", func() bool { return h.Job(id).Status == job.StatusRunning })
	gone.Close()

	h.Restart(nil)
	rescuer := h.Worker(testworker.Options{Run: testworker.Succeed})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED after the recovery grace", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.ClaimedBy != rescuer.Identity() || j.RetryCount != 1 {
		t.Errorf("claimed_by %q retry_count %d", j.ClaimedBy, j.RetryCount)
	}
}

func TestRecovery_ReceiptBeforeReidentifyStillCounts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	first := h.Worker(testworker.Options{Identity: "early", Run: blockingRun(make(chan struct{}))})
	testwait.Eventually(t, 5*time.Second, "job RUNNING", func() bool { return h.Job(id).Status == job.StatusRunning })
	first.Close()
	h.Restart(nil)

	// The same worker, reconnected, sends its CONCLUDE before any IDENTIFY:
	// it is applied to the claim the worker holds, and the worker is told to
	// identify.
	d := h.rawPeer(t, "early", nil)
	if err := d.Send(transport.OpConclude, uint64(id), &transport.Conclude{Status: transport.StatusSuccess}); err != nil {
		t.Fatal(err)
	}
	msg, err := d.Recv()
	if err != nil || msg.Opcode != transport.OpErr {
		t.Fatalf("want ERR unknown worker, got %s %v", msg.Opcode, err)
	}
	testwait.Eventually(t, 5*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.Attempt != 1 || j.ClaimedBy != "early" {
		t.Errorf("attempt %d claimed_by %q", j.Attempt, j.ClaimedBy)
	}
}

func TestRecovery_JobTimeoutAbortsAndRequeues(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.JobTimeout = 300 * time.Millisecond })
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	var calls atomic.Int32
	w := h.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if calls.Add(1) == 1 {
			<-ctx.Done() // hangs until the ABORT arrives
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		}
		return testworker.Succeed(ctx, j)
	}})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED on the second attempt", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.RetryCount != 1 || j.Attempt != 2 || len(w.Received()) != 2 {
		t.Errorf("retry_count %d attempt %d dispatches %d", j.RetryCount, j.Attempt, len(w.Received()))
	}
}

// TestRecovery_AbortTheSentinelDidNotAskForIsRetried: a worker that stops a
// job on its own (shutting down, or obeying an ABORT meant for an earlier
// claim of the same job id) reports ABORTED; that is no verdict on the job,
// so it is retried, and only running out of retries fails it.
func TestRecovery_AbortTheSentinelDidNotAskForIsRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.MaxRetries = 2 })
	h.Plugin("p")
	retried := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	var calls atomic.Int32
	h.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if j.ID == retried && calls.Add(1) == 1 {
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "worker is shutting down"}
		}
		if j.ID != retried {
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "always aborts"}
		}
		return testworker.Succeed(ctx, j)
	}})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED on the second attempt", func() bool { return h.Job(retried).Status == job.StatusCompleted })
	if j := h.Job(retried); j.RetryCount != 1 || j.Attempt != 2 {
		t.Errorf("retry_count %d attempt %d, want 1 and 2", j.RetryCount, j.Attempt)
	}

	hopeless := h.Enqueue(h.File("b.txt", "b\n"), "p", 0)
	testwait.Eventually(t, 20*time.Second, "always-aborted job FAILED", func() bool { return h.Job(hopeless).Status == job.StatusFailed })
	if j := h.Job(hopeless); j.RetryCount != 2 || !strings.Contains(j.ErrorMessage, "aborted by the worker: always aborts (gave up after 2 retries)") {
		t.Errorf("retry_count %d, message %q", j.RetryCount, j.ErrorMessage)
	}
}

func TestRecovery_UnconfirmedAbortIsRequeuedAfterGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.JobTimeout = 200 * time.Millisecond
		c.AbortGrace = 300 * time.Millisecond
		c.MaxRetries = 1
	})
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	// A worker that ignores ABORT entirely: its jobs' work lasts until the
	// test ends, and never looks at ctx.
	testEnds := make(chan struct{})
	h.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		<-testEnds
		return testworker.Succeed(ctx, j)
	}, Slots: 4})
	t.Cleanup(func() { close(testEnds) }) // before the worker's Close, which waits for its jobs
	testwait.Eventually(t, 10*time.Second, "job FAILED after its retry", func() bool { return h.Job(id).Status == job.StatusFailed })
	if j := h.Job(id); j.RetryCount != 1 || j.ErrorMessage == "" {
		t.Errorf("retry_count %d message %q", j.RetryCount, j.ErrorMessage)
	}
}

// A worker that sends its heartbeats from another goroutine than the one
// that reads DISPATCHes can report, for a while, without a job it was just
// sent: that is not a lost job. Here a raw peer leaves the job out of its
// reports for 600 ms after the DISPATCH (six heartbeat intervals of the
// harness), as a worker starved on a loaded machine did, and then runs it.
func TestRecovery_JobReportedLateIsNotRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)

	slow := h.rawPeer(t, "slow", &transport.Identify{Capabilities: []string{"p"}})
	dispatched := make(chan uint64, 1)
	go func() {
		for {
			msg, err := slow.Recv()
			if err != nil && err != transport.ErrReconnected {
				return
			}
			if msg.Opcode == transport.OpDispatch {
				dispatched <- msg.JobID
				return
			}
		}
	}()
	var jobID uint64
	select {
	case jobID = <-dispatched:
	case <-time.After(10 * time.Second):
		t.Fatal("no DISPATCH")
	}
	// Reports without the job, every 50 ms for 600 ms; then with it.
	until := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(until) {
		if err := slow.Send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatIdle, ActiveJobIDs: []int64{}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the pace of the reports, not a wait for an outcome
	}
	if err := slow.Send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatBusy, ActiveJobCount: 1,
		ActiveJobIDs: []int64{int64(jobID)}}); err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(transport.OpConclude, jobID, &transport.Conclude{Status: transport.StatusSuccess}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "job COMPLETED by the slow worker", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.ClaimedBy != "slow" || j.RetryCount != 0 {
		t.Errorf("claimed_by %q retry_count %d; want the slow worker's first attempt", j.ClaimedBy, j.RetryCount)
	}
}

func TestRecovery_JobTheWorkerStopsReportingIsRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)

	// A raw peer that takes the DISPATCH, forgets it, and keeps answering
	// heartbeats with an empty active_job_ids.
	forgetful := h.rawPeer(t, "forgetful", &transport.Identify{Capabilities: []string{"p"}})
	go func() {
		for {
			msg, err := forgetful.Recv()
			if err != nil && err != transport.ErrReconnected {
				return
			}
			if msg.Opcode == transport.OpHeartbeat {
				_ = forgetful.Send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatIdle, ActiveJobIDs: []int64{}})
			}
		}
	}()
	testwait.Eventually(t, 5*time.Second, "job RUNNING at the forgetful worker", func() bool {
		return h.Job(id).ClaimedBy == "forgetful"
	})
	// More free slots than the forgetful peer, so the retry goes to it.
	h.Worker(testworker.Options{Capabilities: []string{"p"}, Run: testworker.Succeed, Slots: 4})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED elsewhere", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.ClaimedBy == "forgetful" || j.RetryCount != 1 {
		t.Errorf("claimed_by %q retry_count %d", j.ClaimedBy, j.RetryCount)
	}
}
