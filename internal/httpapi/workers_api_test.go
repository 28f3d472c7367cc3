package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// workerByID reads GET /api/v1/workers and returns the one worker.
func workerByID(t *testing.T, e *sentineltest.Env, id string) (api.Worker, bool) {
	t.Helper()
	var list api.WorkerList
	if code, body := call(t, "GET", e.URL+"/api/v1/workers", "", &list); code != 200 {
		t.Fatalf("GET /api/v1/workers: %d %s", code, body)
	}
	for _, w := range list.Workers {
		if w.ID == id {
			return w, true
		}
	}
	return api.Worker{}, false
}

// A drained worker gets no new DISPATCH while another worker gets them all,
// also after the dispatcher restarts; undrained, it gets jobs again. Real
// workers over real sockets.
func TestAPI_DrainedWorkerGetsNoNewJobs(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	fv := e.File("in/a.txt", "a\n")
	a := e.Worker(testworker.Options{Identity: "tw-drained", Capabilities: []string{"p"}, Slots: 2})
	b := e.Worker(testworker.Options{Identity: "tw-other", Capabilities: []string{"p"}, Slots: 2})
	e.WaitWorkers(2)

	var res api.WorkerActionResult
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-drained/drain", "", &res); code != 200 ||
		res.Worker != "tw-drained" || res.Action != "drain" || res.Draining == nil || !*res.Draining {
		t.Fatalf("drain: %d %s", code, body)
	}
	if w, ok := workerByID(t, e, "tw-drained"); !ok || !w.Draining {
		t.Errorf("the workers list does not show tw-drained draining: %+v", w)
	}
	if w, _ := workerByID(t, e, "tw-other"); w.Draining {
		t.Errorf("tw-other draining: %+v", w)
	}
	// A restarted dispatcher learns the drain again (CapacityRequest).
	restarts := e.Sentinel.Stats().ActorRestarts.Load()
	e.Sentinel.InjectPanic("dispatcher")
	testwait.Eventually(t, sentineltest.Within, "the dispatcher restarted", func() bool {
		return e.Sentinel.Stats().ActorRestarts.Load() > restarts
	})
	var ids []int64
	for range 6 {
		ids = append(ids, e.Enqueue(fv, "p", 0))
	}
	for _, id := range ids {
		if j := e.WaitJob(id, job.StatusCompleted); j.ClaimedBy != "tw-other" {
			t.Errorf("job %d ran on %s while tw-drained was draining", id, j.ClaimedBy)
		}
	}
	if n := len(a.Received()); n != 0 {
		t.Errorf("the drained worker received %d DISPATCHes", n)
	}

	// Undrained, and the other drained: the next jobs go to tw-drained.
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-drained/undrain", "{}", &res); code != 200 ||
		res.Draining == nil || *res.Draining {
		t.Fatalf("undrain: %d %s", code, body)
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-other/drain", "{}", nil); code != 200 {
		t.Fatalf("drain tw-other: %d %s", code, body)
	}
	before := len(b.Received())
	for range 2 {
		id := e.Enqueue(fv, "p", 0)
		if j := e.WaitJob(id, job.StatusCompleted); j.ClaimedBy != "tw-drained" {
			t.Errorf("job %d ran on %s after the undrain", id, j.ClaimedBy)
		}
	}
	if n := len(b.Received()); n != before {
		t.Errorf("tw-other, drained, received %d more DISPATCHes", n-before)
	}
}

// A disconnected worker is forgotten at once: its RUNNING job is requeued
// and completed by another worker, and the worker, told to IDENTIFY, comes
// back (still drained, since the drain holds by its key).
func TestAPI_DisconnectedWorkersJobCompletesElsewhere(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("slow")
	fv := e.File("in/a.txt", "a\n")
	stuck := e.Worker(testworker.Options{Identity: "tw-stuck", Capabilities: []string{"slow"}, Run: blockUntilAborted})
	e.WaitWorkers(1)
	id := e.Enqueue(fv, "slow", 0)
	if j := e.WaitJob(id, job.StatusRunning); j.ClaimedBy != "tw-stuck" {
		t.Fatalf("job %d RUNNING on %s", id, j.ClaimedBy)
	}
	// Drained first, so that the job does not go back to it when it
	// identifies again.
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-stuck/drain", "", nil); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	e.Worker(testworker.Options{Identity: "tw-rescuer", Capabilities: []string{"slow"}})
	e.WaitWorkers(2)
	if j := e.Job(id); j.Status != job.StatusRunning || j.ClaimedBy != "tw-stuck" {
		t.Fatalf("job %d before the disconnect: %s on %s", id, j.Status, j.ClaimedBy)
	}
	identifies := stuck.Identifies()

	var res api.WorkerActionResult
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-stuck/disconnect", "", &res); code != 200 ||
		!res.Disconnected || res.Draining != nil {
		t.Fatalf("disconnect: %d %s", code, body)
	}
	j := e.WaitJob(id, job.StatusCompleted)
	if j.ClaimedBy != "tw-rescuer" || j.Attempt != 2 {
		t.Errorf("job %d after the disconnect: %s on %s, attempt %d", id, j.Status, j.ClaimedBy, j.Attempt)
	}
	testwait.Eventually(t, sentineltest.Within, "tw-stuck identified again, still draining", func() (bool, string) {
		w, ok := workerByID(t, e, "tw-stuck")
		return ok && w.Draining && stuck.Identifies() > identifies && len(w.RunningJobs) == 0,
			fmt.Sprintf("listed %v: %+v; identifies %d", ok, w, stuck.Identifies())
	})
	if n := len(stuck.Received()); n != 1 {
		t.Errorf("tw-stuck received %d DISPATCHes, want 1", n)
	}
}

func TestAPI_WorkerActionsRefuseUnknownWorkersAndParameters(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Worker(testworker.Options{Identity: "tw-here"})
	e.WaitWorkers(1)
	for _, c := range []struct {
		path, body string
		code       int
		want       string
	}{
		{"/api/v1/workers/nobody/drain", "", http.StatusNotFound, "worker nobody is not connected"},
		{"/api/v1/workers/nobody/undrain", "", http.StatusNotFound, "worker nobody is not connected"},
		{"/api/v1/workers/nobody/disconnect", "{}", http.StatusNotFound, "worker nobody is not connected"},
		{"/api/v1/workers/tw-here/drain", `{"now": true}`, http.StatusBadRequest, "this endpoint takes no parameters"},
		{"/api/v1/workers/tw-here/disconnect", `[1]`, http.StatusBadRequest, "this endpoint takes no parameters"},
		{"/api/v1/workers/tw-here/pause", "", http.StatusNotFound, "no such endpoint"},
	} {
		code, body := call(t, "POST", e.URL+c.path, c.body, nil)
		if code != c.code || !strings.Contains(errorOf(t, body), c.want) {
			t.Errorf("POST %s %s: %d %s, want %d %q", c.path, c.body, code, body, c.code, c.want)
		}
	}
	// Nothing happened to tw-here; undraining a worker that is not
	// drained changes nothing.
	if code, body := call(t, "POST", e.URL+"/api/v1/workers/tw-here/undrain", "", nil); code != 200 {
		t.Errorf("undrain of a worker not drained: %d %s", code, body)
	}
	if w, ok := workerByID(t, e, "tw-here"); !ok || w.Draining {
		t.Errorf("tw-here: %+v %v", w, ok)
	}
	if code, _ := call(t, "GET", e.URL+"/api/v1/workers/tw-here/drain", "", nil); code != http.StatusMethodNotAllowed && code != http.StatusNotFound {
		t.Errorf("GET drain: %d", code)
	}
}
