package worker_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Failover between Sentinels. One database has one owner, so the two
// Sentinels here have a database each: what these tests check is the
// worker's side, that it moves to the next endpoint, identifies there,
// re-sends its receipts and lists its jobs. That the Sentinel it lands on
// adopts those jobs needs a database both Sentinels share.

func TestParseEndpoints(t *testing.T) {
	for in, want := range map[string][]string{
		"tcp://127.0.0.1:5555":                      {"tcp://127.0.0.1:5555"},
		"tcp://a:5555,tcp://b:5555":                 {"tcp://a:5555", "tcp://b:5555"},
		" tcp://a:5555 , ipc:///run/casparian.sock": {"tcp://a:5555", "ipc:///run/casparian.sock"},
		"tcp://[::1]:5555,tcp://a:5556":             {"tcp://[::1]:5555", "tcp://a:5556"},
	} {
		got, err := worker.ParseEndpoints(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseEndpoints(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                                       `entry 1 of "" is empty`,
		"tcp://a:5555,":                          `entry 2 of "tcp://a:5555," is empty`,
		"tcp://a:5555,,tcp://b:5555":             "entry 2",
		"tcp://a:5555, tcp://a:5555":             "tcp://a:5555 is listed twice",
		"tcp://a:5555,http://b:5555":             "http://b:5555: want a tcp:// or ipc:// endpoint",
		"inproc://x":                             "want a tcp:// or ipc:// endpoint",
		"a:5555":                                 "want a tcp:// or ipc:// endpoint",
		"tcp://a":                                "tcp://a: want tcp://host:port",
		"tcp://:5555":                            "want tcp://host:port",
		"tcp://a:":                               "want tcp://host:port",
		"ipc://":                                 "ipc://: want ipc://path",
		"tcp://a:5555;tcp://b:5555":              "want tcp://host:port",
		"tcp://a:5555,tcp://b:5555,tcp://a:5555": "tcp://a:5555 is listed twice",
	} {
		got, err := worker.ParseEndpoints(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEndpoints(%q) = %q, %v; want an error containing %q", in, got, err, want)
		}
	}
}

func TestNew_ChecksEndpointsAndKeys(t *testing.T) {
	sentinelPub, workerSec, err := transport.GenerateCurveKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	curve := transport.NewCurveClient(sentinelPub, workerSec)
	for name, tc := range map[string]struct {
		opts worker.Options
		want string
	}{
		"duplicate":         {worker.Options{Endpoint: "tcp://a:1,tcp://a:1"}, "endpoint: tcp://a:1 is listed twice"},
		"curve over ipc":    {worker.Options{Endpoint: "tcp://a:1,ipc:///x", Curve: curve}, "CURVE needs a tcp:// endpoint"},
		"keys without pair": {worker.Options{Endpoint: "tcp://a:1,tcp://b:1", SentinelKeys: []transport.CurveKey{sentinelPub, sentinelPub}}, "without Curve"},
		"keys miscounted": {worker.Options{Endpoint: "tcp://a:1,tcp://b:1,tcp://c:1", Curve: curve,
			SentinelKeys: []transport.CurveKey{sentinelPub, sentinelPub}}, "2 Sentinel keys for 3 endpoints"},
		"no watchdog": {worker.Options{Endpoint: "tcp://a:1,tcp://b:1", SentinelTimeout: -1}, "never fails over"},
	} {
		if _, err := worker.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error containing %q", name, err, tc.want)
		}
	}
	w, err := worker.New(worker.Options{Endpoint: "tcp://a:1,tcp://b:1", Curve: curve,
		SentinelKeys: []transport.CurveKey{sentinelPub, sentinelPub}})
	if err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Endpoint != "" || st.Failovers != 0 {
		t.Fatalf("stats before Run: %+v", st)
	}
}

// twoSentinels starts Sentinels A and B, each on its own port and database,
// and a worker given both endpoints, A first. The worker's input roots are
// both Sentinels' and its output folder B's.
func twoSentinels(t *testing.T, opts worker.Options) (a, b *sentinel, w *runningWorker) {
	t.Helper()
	a, b = newSentinel(t, nil), newSentinel(t, nil)
	opts.Endpoint = a.Endpoint + "," + b.Endpoint
	opts.InputRoots = []string{a.Root, b.Root}
	opts.OutputDir = b.out // the jobs run on B
	if opts.SentinelTimeout == 0 {
		opts.SentinelTimeout = time.Second
	}
	w = startWorker(t, a, opts)
	a.WaitWorkers(1)
	if st := w.Stats(); st.Endpoint != a.Endpoint || st.Failovers != 0 {
		t.Fatalf("worker on %q with %d failovers, want on A (%s)", st.Endpoint, st.Failovers, a.Endpoint)
	}
	return a, b, w
}

// waitFailover waits until w is on b and b has it registered, and returns
// how long that took from start.
func waitFailover(t *testing.T, w *runningWorker, b *sentinel, start time.Time) time.Duration {
	t.Helper()
	testwait.Eventually(t, within, "the worker moved to B", func() bool { return w.Stats().Endpoint == b.Endpoint })
	b.WaitWorkers(1)
	return time.Since(start)
}

// The worker is on A; A stops; within the watchdog's timeout and a dial it
// is on B, identified there, and runs a job enqueued on B.
func TestWorker_FailsOverToTheNextSentinel(t *testing.T) {
	a, b, w := twoSentinels(t, worker.Options{})
	identifies := w.Stats().Identifies
	start := time.Now()
	a.Stop()
	took := waitFailover(t, w, b, start)
	t.Logf("on B %s after A stopped", took)
	st := w.Stats()
	if st.Failovers != 1 || st.Identifies <= identifies || st.Reconnects < 1 {
		t.Fatalf("stats after the failover: %+v", st)
	}
	out := filepath.Join(w.outputDir, "b.db")
	b.Plugin("csv")
	b.Topic("csv", "output", "sqlite://"+out+"/orders", "append")
	id := b.EnqueueOverrides(b.sample("orders.csv"), "csv", "")
	j := b.WaitJob(id, job.StatusCompleted, job.StatusFailed)
	if j.Status != job.StatusCompleted || j.ClaimedBy != w.Identity() || j.Metrics["rows"] != 10 {
		t.Fatalf("job on B: %s by %q %q, metrics %v", j.Status, j.ClaimedBy, j.ErrorMessage, j.Metrics)
	}
	if !strings.Contains(w.logs.String(), "failed over to another Sentinel") {
		t.Fatalf("no failover in the worker's log:\n%s", w.logs.String())
	}
}

// Once on B, the worker stays there when A comes back: it moves only when
// the Sentinel it is on goes silent.
func TestWorker_StaysOnTheNextSentinelWhenTheFirstReturns(t *testing.T) {
	a, b, w := twoSentinels(t, worker.Options{})
	a.Restart(func() { waitFailover(t, w, b, time.Now()) })
	// A is back on its port. Several watchdog periods: a duration, not a
	// wait for a condition, since what is checked is that nothing happens.
	time.Sleep(3 * time.Second)
	if st := w.Stats(); st.Endpoint != b.Endpoint || st.Failovers != 1 {
		t.Fatalf("after A came back: on %q with %d failovers; want still on B (%s), one failover", st.Endpoint, st.Failovers, b.Endpoint)
	}
	if ws, err := a.Sentinel.Workers(time.Second); err != nil || len(ws) != 0 {
		t.Fatalf("A lists workers %v (%v); want none", ws, err)
	}
	b.Plugin("csv")
	b.Topic("csv", "output", "sqlite://"+filepath.Join(w.outputDir, "b.db")+"/orders", "append")
	id := b.EnqueueOverrides(b.sample("orders.csv"), "csv", "")
	if j := b.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("job on B: %s %q", j.Status, j.ErrorMessage)
	}
}

// Both Sentinels are bare ROUTERs here, so every byte the worker sends to B
// is seen. The worker holds two jobs from A when A goes away: one concludes
// in the gap, its receipt written to the dead connection; the other is
// still running. On B, after the IDENTIFY, come the first job's receipt and
// then a heartbeat listing the second; its receipt follows when it ends.
// With real Sentinels on two databases B could only ignore both (it holds
// neither job: it counts the receipt stale and aborts the listed job); a
// database both share is what lets B adopt them.
func TestWorker_ReceiptFromTheSwitchIsResentToTheNextSentinel(t *testing.T) {
	a, b := newScripted(t), newScripted(t)
	done, held := newGate("done", 1), newGate("held", 1)
	w := startWorker(t, a.harness(), worker.Options{
		Endpoint:        a.router.Endpoint() + "," + b.router.Endpoint(),
		Plugins:         []plugin.Plugin{done, held},
		SentinelTimeout: 2 * time.Second,
	})
	a.next(transport.OpIdentify)
	// A bare ROUTER says nothing unless told: every message it sends keeps
	// the worker's watchdog off until A goes away.
	a.dispatch(1, "done", "file://"+filepath.Join(a.outDir, "done.jsonl"))
	a.dispatch(2, "held", "file://"+filepath.Join(a.outDir, "held.jsonl"))
	done.waitStarted(t, 1)
	held.waitStarted(t, 1)
	a.send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive})

	a.router.Close()
	done.release()
	testwait.Eventually(t, within, "job 1 concluded in the gap", func() bool { return w.Stats().JobsSucceeded == 1 })

	hello := b.next(transport.OpIdentify)
	if p := hello.payload.(*transport.Identify); p.WorkerID != w.Identity() {
		t.Fatalf("IDENTIFY on B from %q, want %q", p.WorkerID, w.Identity())
	}
	m := b.next(transport.OpConclude)
	if r := m.payload.(*transport.Conclude); m.msg.JobID != 1 || r.Status != transport.StatusSuccess {
		t.Fatalf("first CONCLUDE on B: job %d %+v, want job 1's SUCCESS", m.msg.JobID, r)
	}
	beat := b.next(transport.OpHeartbeat).payload.(*transport.Heartbeat)
	if !slices.Contains(beat.ActiveJobIDs, 2) {
		t.Fatalf("first heartbeat on B lists %v, want job 2", beat.ActiveJobIDs)
	}
	held.release()
	for {
		m := b.next(transport.OpConclude)
		if m.msg.JobID == 2 {
			if r := m.payload.(*transport.Conclude); r.Status != transport.StatusSuccess {
				t.Fatalf("job 2's CONCLUDE on B: %+v", r)
			}
			break
		}
	}
	if st := w.Stats(); st.Endpoint != b.router.Endpoint() || st.Failovers < 1 || st.ReceiptsReplayed < 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// The first endpoint is unreachable from the start: after a dial window the
// worker tries the next and works there.
func TestWorker_StartsOnTheNextSentinelWhenTheFirstIsDown(t *testing.T) {
	b := newSentinel(t, nil)
	w := startWorker(t, b, worker.Options{Endpoint: "tcp://127.0.0.1:1," + b.Endpoint, SentinelTimeout: time.Second})
	b.WaitWorkers(1)
	if st := w.Stats(); st.Endpoint != b.Endpoint || st.Failovers != 0 {
		t.Fatalf("stats: %+v; want on %s, no failover (it never was on another)", st, b.Endpoint)
	}
	b.Plugin("csv")
	b.Topic("csv", "output", "sqlite://"+filepath.Join(b.out, "b.db")+"/orders", "append")
	id := b.EnqueueOverrides(b.sample("orders.csv"), "csv", "")
	if j := b.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("job on B: %s %q", j.Status, j.ErrorMessage)
	}
}

// Under CURVE with a key per Sentinel: the worker reaches B with B's key
// after A stops.
func TestWorker_FailsOverWithASentinelKeyPerEndpoint(t *testing.T) {
	keys := t.TempDir()
	aPub, _ := curveKeyPair(t, filepath.Join(keys, "a"))
	bPub, _ := curveKeyPair(t, filepath.Join(keys, "b"))
	_, workerSec := curveKeyPair(t, filepath.Join(keys, "worker"))
	curveFor := func(name string) func(*config.Config) {
		return func(c *config.Config) {
			c.CurveSecretKey = filepath.Join(keys, name+".key")
			c.AuthorizedWorkers = filepath.Join(keys, "worker.pub")
		}
	}
	a, b := newSentinel(t, curveFor("a")), newSentinel(t, curveFor("b"))
	w := startWorker(t, b, worker.Options{
		Endpoint:        a.Endpoint + "," + b.Endpoint,
		Curve:           transport.NewCurveClient(aPub, workerSec),
		SentinelKeys:    []transport.CurveKey{aPub, bPub},
		SentinelTimeout: time.Second,
	})
	a.WaitWorkers(1)
	start := time.Now()
	a.Stop()
	t.Logf("on B %s after A stopped", waitFailover(t, w, b, start))
	b.Plugin("csv")
	b.Topic("csv", "output", "sqlite://"+filepath.Join(b.out, "b.db")+"/orders", "append")
	id := b.EnqueueOverrides(b.sample("orders.csv"), "csv", "")
	if j := b.WaitJob(id, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("job on B over CURVE: %s %q", j.Status, j.ErrorMessage)
	}
}
