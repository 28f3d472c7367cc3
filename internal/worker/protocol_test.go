package worker_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/transport"
)

// scripted is a bare ROUTER that plays the Sentinel's side of the protocol
// message by message, for the cases a well-behaved Sentinel never produces
// (a DISPATCH beyond the announced capacity, a duplicate DISPATCH, a
// malformed one) and for checking every byte the worker sends.
type scripted struct {
	t        *testing.T
	router   *transport.Router
	in       chan inbound
	receipts map[int64][]*transport.Conclude // every CONCLUDE seen, by job
	identity []byte
	input    string // the file every DISPATCH names
	inDir    string // folder of the inputs: the workers' --input-root
	outDir   string // the workers' --output-dir
}

type inbound struct {
	identity []byte
	msg      transport.Message
	payload  any
}

// harness is what startWorker needs to run a worker against s.
func (s *scripted) harness() *sentinel {
	return &sentinel{Env: &sentineltest.Env{Endpoint: s.router.Endpoint(), Root: s.inDir}, out: s.outDir}
}

func newScripted(t *testing.T) *scripted {
	t.Helper()
	return newScriptedAt(t, "tcp://127.0.0.1:0")
}

func newScriptedAt(t *testing.T, endpoint string) *scripted {
	t.Helper()
	r, err := transport.ListenRouter(endpoint, transport.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &scripted{t: t, router: r, in: make(chan inbound, 4096), receipts: map[int64][]*transport.Conclude{},
		input: filepath.Join(dir, "in", "input.txt"), outDir: filepath.Join(dir, "out")}
	s.inDir = filepath.Dir(s.input)
	if err := os.Mkdir(s.inDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.input, []byte("input\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Start(func(m transport.Inbound) {
		msg, err := transport.DecodeFrames(m.Frames, 0)
		if err != nil {
			t.Errorf("worker sent a malformed message: %v", err)
			return
		}
		p, err := transport.DecodePayload(msg.Opcode, msg.Payload)
		if err != nil {
			t.Errorf("worker sent a bad %s payload: %v", msg.Opcode, err)
			return
		}
		s.in <- inbound{identity: bytes.Clone(m.Identity), msg: msg, payload: p}
	})
	t.Cleanup(func() { r.Close() })
	return s
}

// next returns the next message with opcode op, skipping others (the
// periodic heartbeats). Every CONCLUDE, skipped or not, is recorded.
func (s *scripted) next(op transport.Opcode) inbound {
	s.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-s.in:
			if s.identity == nil {
				s.identity = m.identity
			}
			if c, ok := m.payload.(*transport.Conclude); ok {
				s.receipts[int64(m.msg.JobID)] = append(s.receipts[int64(m.msg.JobID)], c)
			}
			if m.msg.Opcode == op {
				return m
			}
		case <-deadline:
			s.t.Fatalf("no %s from the worker within %s", op, within)
		}
	}
}

func (s *scripted) send(op transport.Opcode, jobID int64, payload any) {
	s.t.Helper()
	frames, err := transport.Encode(op, uint64(jobID), payload)
	if err != nil {
		s.t.Fatal(err)
	}
	s.sendFrames(frames)
}

func (s *scripted) sendFrames(frames [][]byte) {
	s.t.Helper()
	if err := s.router.Send(s.identity, frames); err != nil {
		s.t.Fatal(err)
	}
}

func (s *scripted) dispatch(jobID int64, plugin, uri string) {
	s.t.Helper()
	s.send(transport.OpDispatch, jobID, &transport.Dispatch{
		PluginName: plugin, FilePath: s.input, FileVersionID: 100 + jobID, EnvHash: "system",
		Sinks: []transport.SinkConfig{{Topic: "output", URI: uri, Mode: transport.ModeAppend}},
	})
}

func TestWorker_ProtocolWithScriptedSentinel(t *testing.T) {
	t.Parallel()
	s := newScripted(t)
	g := newGate("gate", 5)
	out := filepath.Join(s.outDir, "out.jsonl")
	uri := "file://" + out
	w := startWorker(t, s.harness(), worker.Options{
		Plugins: []plugin.Plugin{g}, Concurrency: 2, HeartbeatInterval: 50 * time.Millisecond, Version: "test",
	})

	// IDENTIFY: plugins, identity, slots.
	hello := s.next(transport.OpIdentify).payload.(*transport.Identify)
	if !slices.Equal(hello.Capabilities, []string{"gate"}) || hello.WorkerID != w.Identity() ||
		hello.MaxConcurrentJobs != 2 || hello.Version != "casparian-worker/test" {
		t.Fatalf("IDENTIFY %+v", hello)
	}
	if string(s.identity) != w.Identity() {
		t.Fatalf("ZeroMQ identity %q, worker_id %q", s.identity, w.Identity())
	}

	// Two jobs fill both slots; a third is REJECTED at once.
	s.dispatch(1, "gate", uri)
	s.dispatch(2, "gate", uri)
	g.waitStarted(t, 2)
	s.dispatch(3, "gate", uri)
	conclude := func() inbound { return s.next(transport.OpConclude) }
	if m := conclude(); m.msg.JobID != 3 || m.payload.(*transport.Conclude).Status != transport.StatusRejected ||
		!strings.Contains(m.payload.(*transport.Conclude).ErrorMessage, "at capacity (2 of 2") {
		t.Fatalf("third job: %d %+v", m.msg.JobID, m.payload)
	}

	// Heartbeats keep coming while jobs run, listing them; a HEARTBEAT
	// probe is answered.
	for range 3 {
		hb := s.next(transport.OpHeartbeat).payload.(*transport.Heartbeat)
		if hb.Status != transport.HeartbeatBusy || hb.ActiveJobCount != 2 || !slices.Equal(hb.ActiveJobIDs, []int64{1, 2}) ||
			hb.CurrentJobID == nil || *hb.CurrentJobID != 1 {
			t.Fatalf("heartbeat while running: %+v", hb)
		}
	}
	s.send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive})
	s.next(transport.OpHeartbeat)

	// "unknown worker" makes it identify again (nothing to re-send yet: a
	// REJECTED receipt is not kept); PREPARE_ENV is answered.
	s.send(transport.OpErr, 0, &transport.Err{Message: transport.UnknownWorkerMessage})
	if again := s.next(transport.OpIdentify).payload.(*transport.Identify); !slices.Equal(again.Capabilities, []string{"gate"}) {
		t.Fatalf("re-IDENTIFY %+v", again)
	}
	env := worker.EnvHash("lock\n")
	s.send(transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: env, LockfileContent: "lock\n"})
	if ready := s.next(transport.OpEnvReady).payload.(*transport.EnvReady); ready.EnvHash != env || ready.Cached {
		t.Fatalf("ENV_READY %+v", ready)
	}

	// A duplicate DISPATCH of a running job is ignored; ABORT cancels one.
	s.dispatch(2, "gate", uri)
	s.send(transport.OpAbort, 1, nil)
	if m := conclude(); m.msg.JobID != 1 || m.payload.(*transport.Conclude).Status != transport.StatusAborted ||
		m.payload.(*transport.Conclude).ErrorMessage != "aborted by the Sentinel" {
		t.Fatalf("aborted job: %d %+v", m.msg.JobID, m.payload)
	}
	s.send(transport.OpAbort, 99, nil) // unknown job: ignored

	// A DISPATCH the worker cannot decode still gets its one receipt.
	bad := transport.EncodeFrames(transport.OpDispatch, 7, []byte(`{"plugin_name": "gate", "sinks": [{"topic": "output", "uri": "x", "mode": "sideways"}]}`))
	s.sendFrames(bad)
	if m := conclude(); m.msg.JobID != 7 || m.payload.(*transport.Conclude).Status != transport.StatusFailed {
		t.Fatalf("malformed dispatch: %d %+v", m.msg.JobID, m.payload)
	}

	// A plugin this worker does not have fails the job, saying so.
	s.dispatch(8, "nope", uri)
	if m := conclude(); m.msg.JobID != 8 || m.payload.(*transport.Conclude).Status != transport.StatusFailed ||
		m.payload.(*transport.Conclude).ErrorMessage != `plugin "nope" is not available on this worker (it runs: gate)` {
		t.Fatalf("unknown plugin: %d %+v", m.msg.JobID, m.payload)
	}

	// Job 2 finishes; its rows are written once, with lineage.
	g.release()
	m := conclude()
	r := m.payload.(*transport.Conclude)
	if m.msg.JobID != 2 || r.Status != transport.StatusSuccess || r.Metrics["rows"] != 5 ||
		fmt.Sprint(placed(r.Artifacts)) != fmt.Sprint([]map[string]string{{"topic": "output", "uri": uri}}) ||
		r.Artifacts[0]["rows"] != "5" || r.Artifacts[0]["schema"] != "n:int64,label:string" || len(r.Artifacts[0]["content_hash"]) != 64 {
		t.Fatalf("job 2: %d %+v", m.msg.JobID, r)
	}
	idle := s.next(transport.OpHeartbeat).payload.(*transport.Heartbeat)
	for idle.ActiveJobCount != 0 { // a heartbeat may have been on its way
		idle = s.next(transport.OpHeartbeat).payload.(*transport.Heartbeat)
	}
	if idle.Status != transport.HeartbeatIdle || len(idle.ActiveJobIDs) != 0 || idle.CurrentJobID != nil {
		t.Fatalf("idle heartbeat %+v", idle)
	}

	// So far every job had exactly one receipt.
	for _, id := range []int64{1, 2, 3, 7, 8} {
		if len(s.receipts[id]) != 1 {
			t.Errorf("job %d got %d receipts, want exactly 1", id, len(s.receipts[id]))
		}
	}
	if len(s.receipts) != 5 {
		t.Errorf("receipts for jobs %v, want 1, 2, 3, 7, 8", s.receipts)
	}
	if st := w.Stats(); st.JobsRejected != 1 || st.JobsAborted != 1 || st.JobsSucceeded != 1 || st.JobsStarted != 3 || st.JobsFailed != 1 {
		t.Errorf("stats %+v", st)
	}

	// An "unknown worker" ERR means the Sentinel restarted and may have
	// missed what was sent meanwhile: the worker identifies and sends its
	// recent receipts again, all but the REJECTED one, unchanged.
	s.send(transport.OpErr, 0, &transport.Err{Message: transport.UnknownWorkerMessage})
	s.next(transport.OpIdentify)
	for range 4 {
		s.next(transport.OpConclude)
	}
	for _, id := range []int64{1, 2, 7, 8} {
		if r := s.receipts[id]; len(r) != 2 || fmt.Sprint(*r[0]) != fmt.Sprint(*r[1]) {
			t.Errorf("job %d: receipts %v, want the first one sent again", id, r)
		}
	}
	if w.Stats().ReceiptsReplayed != 4 {
		t.Errorf("stats %+v", w.Stats())
	}

	// Stop: the drain re-identifies with no capabilities; after Run returns
	// nothing more arrives.
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	draining := s.next(transport.OpIdentify).payload.(*transport.Identify)
	if len(draining.Capabilities) != 0 {
		t.Fatalf("draining IDENTIFY %+v", draining)
	}
	for drained := false; !drained; {
		select {
		case m := <-s.in:
			if m.msg.Opcode != transport.OpHeartbeat {
				t.Errorf("after the drain: %s for job %d", m.msg.Opcode, m.msg.JobID)
			}
		default:
			drained = true
		}
	}
}

// Against a Sentinel that is not there yet, Run waits; cancelling it then
// returns nil at once.
func TestWorker_StopBeforeTheSentinelIsReachable(t *testing.T) {
	t.Parallel()
	w := startWorker(t, &sentinel{Env: &sentineltest.Env{Endpoint: "tcp://127.0.0.1:1"}}, worker.Options{})
	start := time.Now()
	if err := w.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %s", d)
	}
}

// zmq4 redials a lost connection, but gives up for good when the new
// connection's ZMTP handshake fails. Here the Sentinel's port is held for a
// moment by something that accepts TCP and hangs up at once; the worker
// must still come back once a real Sentinel listens there again, and it
// does because it replaces a connection over which nothing arrives.
func TestWorker_ReconnectsAfterAFailedHandshake(t *testing.T) {
	t.Parallel()
	a := newScripted(t)
	endpoint := a.router.Endpoint()
	w := startWorker(t, &sentinel{Env: &sentineltest.Env{Endpoint: endpoint}}, worker.Options{SentinelTimeout: 500 * time.Millisecond})
	a.next(transport.OpIdentify)
	a.router.Close()

	addr := strings.TrimPrefix(endpoint, "tcp://")
	var l net.Listener
	testwait.Eventually(t, within, "port free again", func() bool {
		var err error
		l, err = net.Listen("tcp", addr)
		return err == nil
	})
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	testwait.Eventually(t, within, "the worker dialled the impostor", func() bool { return accepted.Load() > 0 })
	l.Close()

	var b *scripted
	testwait.Eventually(t, within, "Sentinel listening again", func() bool {
		r, err := transport.ListenRouter(endpoint, transport.RouterOptions{})
		if err != nil {
			return false
		}
		r.Close()
		b = newScriptedAt(t, endpoint)
		return true
	})
	hello := b.next(transport.OpIdentify).payload.(*transport.Identify)
	if hello.WorkerID != w.Identity() {
		t.Fatalf("IDENTIFY from %q, want %q", hello.WorkerID, w.Identity())
	}
	if w.Stats().Reconnects < 1 {
		t.Fatalf("stats %+v", w.Stats())
	}
}

// A receipt sent while the Sentinel is away is lost by zmq4 without an
// error. It stays pending however long the outage lasts, far longer than
// replayWindow here, and follows the IDENTIFY once the Sentinel is back; it
// used to be re-sent only within replayWindow of being queued.
func TestWorker_ReceiptLostInAnOutageIsResentAfterIt(t *testing.T) {
	defer worker.SetReplayWindow(20 * time.Millisecond)()
	a := newScripted(t)
	endpoint := a.router.Endpoint()
	g := newGate("gate", 1)
	w := startWorker(t, a.harness(), worker.Options{Plugins: []plugin.Plugin{g}, HeartbeatInterval: 20 * time.Millisecond})
	a.next(transport.OpIdentify)
	a.dispatch(1, "gate", "file://"+filepath.Join(a.outDir, "out.jsonl"))
	g.waitStarted(t, 1)

	a.router.Close() // the connection drops just before the receipt goes
	g.release()
	testwait.Eventually(t, within, "job concluded while the Sentinel is away", func() bool { return w.Stats().JobsSucceeded == 1 })
	// The outage itself, ten replay windows long: a duration, not a wait
	// for a condition.
	time.Sleep(200 * time.Millisecond)

	var b *scripted
	testwait.Eventually(t, within, "Sentinel listening again", func() bool {
		r, err := transport.ListenRouter(endpoint, transport.RouterOptions{})
		if err != nil {
			return false
		}
		r.Close()
		b = newScriptedAt(t, endpoint)
		return true
	})
	b.inDir, b.input, b.outDir = a.inDir, a.input, a.outDir
	b.next(transport.OpIdentify)
	m := b.next(transport.OpConclude)
	if r := m.payload.(*transport.Conclude); m.msg.JobID != 1 || r.Status != transport.StatusSuccess {
		t.Fatalf("after the outage: CONCLUDE for job %d %+v, want job 1's SUCCESS", m.msg.JobID, r)
	}
}

// The Sentinel requeues a job that two heartbeats in a row leave out, so a
// heartbeat must never leave out a job whose receipt has not been written
// yet: once a heartbeat has listed a job, every later heartbeat lists it
// until its CONCLUDE has arrived.
func TestWorker_HeartbeatsKeepAJobUntilItsReceiptIsSent(t *testing.T) {
	t.Parallel()
	s := newScripted(t)
	const jobs = 300
	g := newGate("gate", 1)
	g.started = make(chan int64, jobs) // nobody reads it here
	g.release()                        // every run returns at once
	uri := "file://" + filepath.Join(s.outDir, "out.jsonl")
	startWorker(t, s.harness(), worker.Options{Plugins: []plugin.Plugin{g}, Concurrency: 4, HeartbeatInterval: time.Millisecond})
	s.next(transport.OpIdentify)

	listed := map[int64]bool{}    // listed by a heartbeat, no receipt yet
	concluded := map[int64]bool{} // receipt arrived
	next, inFlight := int64(1), 0
	deadline := time.After(2 * within)
	for len(concluded) < jobs {
		for inFlight < 4 && next <= jobs {
			s.dispatch(next, "gate", uri)
			// Probes too: each answer is a heartbeat written at once.
			s.send(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive})
			next++
			inFlight++
		}
		var m inbound
		select {
		case m = <-s.in:
		case <-deadline:
			t.Fatalf("%d of %d jobs concluded", len(concluded), jobs)
		}
		switch p := m.payload.(type) {
		case *transport.Heartbeat:
			for id := range listed {
				if !slices.Contains(p.ActiveJobIDs, id) {
					t.Fatalf("a heartbeat left out job %d before its receipt arrived: %+v", id, p)
				}
			}
			for _, id := range p.ActiveJobIDs {
				if !concluded[id] {
					listed[id] = true
				}
			}
		case *transport.Conclude:
			id := int64(m.msg.JobID)
			if p.Status != transport.StatusSuccess || concluded[id] {
				t.Fatalf("job %d: receipt %+v (already concluded: %v)", id, p, concluded[id])
			}
			concluded[id] = true
			delete(listed, id)
			inFlight--
		}
	}
}
