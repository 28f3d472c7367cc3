package actors_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

func TestSentinel_MixedCapabilitiesCompleteEveryJobOnce(t *testing.T) {
	t.Parallel()
	// Exactly once holds while no worker is timed out: on a loaded machine
	// the harness's 1 s timeout removed workers (and requeued their jobs)
	// that were only slow, which is not what this test is about.
	h := newHarness(t, func(c *config.Config) { c.WorkerTimeout = 15 * time.Second })
	for _, p := range []string{"alpha", "beta", "gamma", "nobody_runs_me"} {
		h.Plugin(p)
	}
	plugins := []string{"alpha", "beta", "gamma"}
	want := map[int64]string{}
	for i := 0; i < 200; i++ {
		fv := h.File(fmt.Sprintf("f%03d.txt", i), strings.Repeat("line\n", i%7+1))
		p := plugins[i%3]
		want[h.Enqueue(fv, p, int64(i%5)*10)] = p
	}
	stuck := map[int64]bool{}
	fv := h.File("stuck.txt", "x\n")
	for i := 0; i < 10; i++ {
		stuck[h.Enqueue(fv, "nobody_runs_me", 1000)] = true
	}

	caps := map[string][]string{"A": {"alpha"}, "B": {"beta", "gamma"}, "C": {"alpha", "beta"}}
	workers := map[string]*testworker.Worker{}
	for name, c := range caps {
		workers[name] = h.Worker(testworker.Options{Capabilities: c, Slots: len(name) + len(c)})
	}

	testwait.Eventually(t, 20*time.Second, "200 jobs COMPLETED", func() bool { return h.Counts()[job.StatusCompleted] == 200 })

	seen := map[int64]int{}
	for name, w := range workers {
		for _, j := range w.Received() {
			seen[j.ID]++
			if !slices.Contains(caps[name], j.Dispatch.PluginName) {
				t.Errorf("worker %s got job %d for plugin %q it cannot run", name, j.ID, j.Dispatch.PluginName)
			}
		}
	}
	for id, plugin := range want {
		if seen[id] != 1 {
			t.Errorf("job %d (%s) dispatched %d times, want 1", id, plugin, seen[id])
		}
		j := h.Job(id)
		if j.Status != job.StatusCompleted || j.ResultSummary != "Success" || j.Metrics["rows"] < 1 {
			t.Errorf("job %d: status %s summary %q metrics %v", id, j.Status, j.ResultSummary, j.Metrics)
		}
	}
	for id := range stuck {
		if j := h.Job(id); j.Status != job.StatusQueued || seen[id] != 0 {
			t.Errorf("job %d for a plugin nobody runs: status %s, dispatched %d times", id, j.Status, seen[id])
		}
	}
	if c := h.Counts(); c[job.StatusRunning] != 0 || c[job.StatusFailed] != 0 {
		t.Errorf("counts %v: want none RUNNING or FAILED", c)
	}
}

func TestSentinel_DispatchesInPriorityOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	fv := h.File("a.txt", "a\n")
	prios := []int64{5, 100, 5, 50, 0, 100, 10}
	ids := make([]int64, len(prios))
	for i, p := range prios {
		ids[i] = h.Enqueue(fv, "p", p)
	}
	w := h.Worker(testworker.Options{Slots: 1, Run: testworker.Succeed})
	testwait.Eventually(t, 10*time.Second, "all COMPLETED", func() bool { return h.Counts()[job.StatusCompleted] == int64(len(ids)) })

	// Expected: priority descending, then id ascending.
	order := slices.Clone(ids)
	slices.SortStableFunc(order, func(a, b int64) int {
		pa, pb := prios[slices.Index(ids, a)], prios[slices.Index(ids, b)]
		if pa != pb {
			return int(pb - pa)
		}
		return int(a - b)
	})
	var got []int64
	for _, j := range w.Received() {
		got = append(got, j.ID)
	}
	if !slices.Equal(got, order) {
		t.Fatalf("dispatch order %v, want %v", got, order)
	}
}

func TestSentinel_DispatchCarriesFileSinksAndArtifact(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("csv")
	if _, err := h.Store.TopicConfigAdd(context.Background(), "csv", "rows", "sqlite:///tmp/out.db/rows", "replace", `{"a":"int"}`); err != nil {
		t.Fatal(err)
	}
	fv := h.File("data.csv", "a\n1\n")
	id := h.Enqueue(fv, "csv", 0)
	w := h.Worker(testworker.Options{Capabilities: []string{"csv"}})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })

	d := w.Received()[0].Dispatch
	if d.FilePath != filepath.Join(h.Root, "data.csv") {
		t.Errorf("file_path %q", d.FilePath)
	}
	if d.SourceCode != "builtin:csv" || d.EnvHash != "system" || d.ArtifactHash != "art-csv" || d.FileVersionID != fv {
		t.Errorf("artifact fields: %+v", d)
	}
	topics := map[string]transport.SinkConfig{}
	for _, s := range d.Sinks {
		topics[s.Topic] = s
	}
	if s := topics["rows"]; s.URI != "sqlite:///tmp/out.db/rows" || s.Mode != "replace" || s.SchemaDef != `{"a":"int"}` {
		t.Errorf("configured sink: %+v", s)
	}
	if _, ok := topics["output"]; !ok {
		t.Errorf("no default output sink in %+v", d.Sinks)
	}
	if j := h.Job(id); j.Metrics["rows"] != 2 || len(j.Artifacts) != 1 {
		t.Errorf("receipt not kept: metrics %v artifacts %v", j.Metrics, j.Artifacts)
	}
}

func TestSentinel_JobWithoutManifestFailsWithReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	fv := h.File("a.txt", "a\n")
	id := h.Enqueue(fv, "undeployed", 0)
	h.Worker(testworker.Options{})
	testwait.Eventually(t, 10*time.Second, "job FAILED", func() bool { return h.Job(id).Status == job.StatusFailed })
	if msg := h.Job(id).ErrorMessage; !strings.Contains(msg, "undeployed") {
		t.Errorf("error_message %q does not name the plugin", msg)
	}
}

func TestSentinel_FailedReceiptIsTerminal(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	h.Worker(testworker.Options{Run: func(context.Context, testworker.Job) transport.Conclude {
		return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "bad header on line 3"}
	}})
	testwait.Eventually(t, 10*time.Second, "job FAILED", func() bool { return h.Job(id).Status == job.StatusFailed })
	j := h.Job(id)
	if j.ErrorMessage != "bad header on line 3" || j.RetryCount != 0 {
		t.Errorf("failed job: message %q retries %d", j.ErrorMessage, j.RetryCount)
	}
}

func TestSentinel_RejectedJobIsRequeuedThenFailsOverLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.MaxRetries = 3 })
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	reject := func(context.Context, testworker.Job) transport.Conclude {
		return transport.Conclude{Status: transport.StatusRejected}
	}
	w := h.Worker(testworker.Options{Run: reject})
	testwait.Eventually(t, 10*time.Second, "job FAILED", func() bool { return h.Job(id).Status == job.StatusFailed })
	j := h.Job(id)
	if len(w.Received()) != 4 || j.RetryCount != 3 || !strings.Contains(j.ErrorMessage, "gave up after 3 retries") {
		t.Errorf("dispatched %d times, retry_count %d, message %q", len(w.Received()), j.RetryCount, j.ErrorMessage)
	}
}

func TestSentinel_RejectedJobIsRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	var calls atomic.Int32
	w := h.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		if calls.Add(1) == 1 {
			return transport.Conclude{Status: transport.StatusRejected}
		}
		return testworker.Succeed(ctx, j)
	}})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.RetryCount != 1 || j.Attempt != 2 || len(w.Received()) != 2 {
		t.Errorf("retry_count %d attempt %d dispatches %d, want 1, 2, 2", j.RetryCount, j.Attempt, len(w.Received()))
	}
}

func TestSentinel_ConcludeFromNonOwnerChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	release := make(chan struct{})
	owner := h.Worker(testworker.Options{Capabilities: []string{"p"}, Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		<-release
		return testworker.Succeed(ctx, j)
	}})
	intruder := h.Worker(testworker.Options{Capabilities: []string{"other"}})
	testwait.Eventually(t, 10*time.Second, "job RUNNING at owner", func() bool { return len(owner.Received()) == 1 })

	before := h.Sentinel.Stats().StaleMessages.Load()
	if err := intruder.Send(transport.OpConclude, uint64(id), &transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "spoofed"}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "spoofed receipt counted", func() bool { return h.Sentinel.Stats().StaleMessages.Load() > before })
	if j := h.Job(id); j.Status != job.StatusRunning || j.ClaimedBy != owner.Identity() {
		t.Fatalf("after a spoofed CONCLUDE: status %s claimed_by %q", j.Status, j.ClaimedBy)
	}

	close(release)
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	// A late duplicate from the owner cannot turn COMPLETED into FAILED.
	stale := h.Sentinel.Stats().StaleMessages.Load()
	if err := owner.Send(transport.OpConclude, uint64(id), &transport.Conclude{Status: transport.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "duplicate counted", func() bool { return h.Sentinel.Stats().StaleMessages.Load() > stale })
	if j := h.Job(id); j.Status != job.StatusCompleted {
		t.Fatalf("duplicate receipt changed the job to %s", j.Status)
	}
}

func TestSentinel_PicksUpJobsInsertedByAnotherProcess(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.PollInterval = 250 * time.Millisecond })
	h.Plugin("p")
	fv := h.File("a.txt", "a\n")
	w := h.Worker(testworker.Options{Run: testworker.Succeed})
	testwait.Eventually(t, 5*time.Second, "worker registered", func() bool {
		ws, _ := h.Sentinel.Workers(time.Second)
		return len(ws) == 1
	})

	// A second connection stands for the original Python tools writing the
	// queue table directly.
	other, err := db.Open(context.Background(), h.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	start := time.Now()
	id, err := other.JobEnqueue(context.Background(), job.Submission{FileVersionID: fv, Plugin: "p"})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "external job dispatched", func() bool { return len(w.Received()) == 1 })
	if took := time.Since(start); took > time.Second {
		t.Errorf("external job took %s to dispatch, want < 1s", took)
	}
	testwait.Eventually(t, 5*time.Second, "external job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
}

func TestSentinel_UnknownWorkerIsToldToIdentify(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := h.rawPeer(t, "stranger", nil)
	if err := d.Send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatIdle}); err != nil {
		t.Fatal(err)
	}
	msg, err := d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	p, err := transport.DecodePayload(msg.Opcode, msg.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := p.(*transport.Err); !ok || e.Message != transport.UnknownWorkerMessage {
		t.Fatalf("got %s %+v, want ERR %q", msg.Opcode, p, transport.UnknownWorkerMessage)
	}
}

func TestSentinel_LostWorkerJobsAreRequeuedAndCompletedElsewhere(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	hang := make(chan struct{})
	defer close(hang)
	doomed := h.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		<-ctx.Done()
		return transport.Conclude{Status: transport.StatusAborted}
	}})
	testwait.Eventually(t, 5*time.Second, "job dispatched to the doomed worker", func() bool { return len(doomed.Received()) == 1 })
	doomed.Close() // vanishes without a receipt, like kill -9

	rescuer := h.Worker(testworker.Options{Run: testworker.Succeed})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED by the rescuer", func() bool { return h.Job(id).Status == job.StatusCompleted })
	j := h.Job(id)
	if j.ClaimedBy != rescuer.Identity() || j.RetryCount != 1 || j.Attempt != 2 {
		t.Errorf("claimed_by %q retry_count %d attempt %d", j.ClaimedBy, j.RetryCount, j.Attempt)
	}
}

// TestSentinel_EmptyPluginSetsWakeUpWhenJobsArrive: workers whose plugins
// had nothing to claim are left out of later claims, but only until the
// queue changes: a job queued for them afterwards still reaches them, and
// the busy workers beside them never wait.
func TestSentinel_EmptyPluginSetsWakeUpWhenJobsArrive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("busy")
	h.Plugin("rare")
	var idle []*testworker.Worker
	for range 20 {
		idle = append(idle, h.Worker(testworker.Options{Capabilities: []string{"rare"}}))
	}
	h.Worker(testworker.Options{Capabilities: []string{"busy"}, Slots: 2})
	fv := h.File("a.txt", "a\n")
	var busy []int64
	for range 40 {
		busy = append(busy, h.Enqueue(fv, "busy", 0))
	}
	testwait.Eventually(t, 10*time.Second, "busy jobs COMPLETED", func() bool {
		return h.Counts()[job.StatusCompleted] == int64(len(busy))
	})
	rare := h.Enqueue(fv, "rare", 0)
	testwait.Eventually(t, 10*time.Second, "the rare job COMPLETED", func() bool { return h.Job(rare).Status == job.StatusCompleted })
	got := 0
	for _, w := range idle {
		got += len(w.Received())
	}
	if got != 1 {
		t.Errorf("idle workers received %d dispatches, want 1", got)
	}
}
