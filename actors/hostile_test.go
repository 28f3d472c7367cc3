package actors_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

func header(version, op byte, jobID uint64, n int) []byte {
	h := transport.AppendHeader(nil, transport.OpHeartbeat, jobID, n)
	h[0], h[1] = version, op
	return h
}

// TestHostile_MalformedFramesChangeNothing sends every kind of malformed
// message while a good worker runs jobs: the Sentinel keeps working, counts
// each one, and answers ERR where the peer can be told.
func TestHostile_MalformedFramesChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	fv := h.File("a.txt", "a\n")
	const n = 50
	for i := 0; i < n; i++ {
		h.Enqueue(fv, "p", 0)
	}
	good := h.Worker(testworker.Options{Slots: 2, Run: slowSucceed})

	bad, err := transport.DialDealer(context.Background(), h.Endpoint, transport.DealerOptions{Identity: []byte("mallory")})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	valid := header(4, byte(transport.OpHeartbeat), 0, 2)
	cases := []struct {
		name    string
		frames  [][]byte
		wantErr bool // an ERR reply is expected
	}{
		{"TooFewFrames", [][]byte{valid}, false},
		{"ShortHeader", [][]byte{valid[:7], []byte("{}")}, false},
		{"WrongVersion", [][]byte{header(3, byte(transport.OpHeartbeat), 0, 2), []byte("{}")}, true},
		{"UnknownOpcode", [][]byte{header(4, 42, 0, 2), []byte("{}")}, true},
		{"LengthMismatch", [][]byte{header(4, byte(transport.OpHeartbeat), 0, 99), []byte("{}")}, true},
		{"InvalidJSON", [][]byte{header(4, byte(transport.OpIdentify), 0, 5), []byte("{not")}, true},
		{"WrongFieldTypes", [][]byte{header(4, byte(transport.OpIdentify), 0, 20), []byte(`{"capabilities":"x"}`)}, true},
		{"BadReceiptStatus", [][]byte{header(4, byte(transport.OpConclude), 1, 17), []byte(`{"status":"MAYBE"}`)}, true},
	}
	replies := make(chan transport.Message, 64)
	go func() {
		for {
			msg, err := bad.Recv()
			if err != nil && err != transport.ErrReconnected {
				return
			}
			replies <- msg
		}
	}()
	for _, c := range cases {
		before := h.Sentinel.Stats().ProtocolErrors.Load()
		if err := bad.SendFrames(c.frames); err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
		testwait.Eventually(t, 10*time.Second, c.name+" counted", func() bool { return h.Sentinel.Stats().ProtocolErrors.Load() == before+1 })
		if c.wantErr {
			select {
			case msg := <-replies:
				if msg.Opcode != transport.OpErr {
					t.Errorf("%s: reply %s, want ERR", c.name, msg.Opcode)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("%s: no ERR reply", c.name)
			}
		}
	}

	testwait.Eventually(t, 20*time.Second, "good worker completes every job", func() bool { return h.Counts()[job.StatusCompleted] == n })
	if len(good.Received()) != n {
		t.Errorf("good worker got %d jobs, want %d", len(good.Received()), n)
	}
	if ws, _ := h.Sentinel.Workers(time.Second); len(ws) != 1 {
		t.Errorf("workers %v: garbage must not register anyone", ws)
	}
}

func TestHostile_BinaryIdentityWorks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.Plugin("p")
	id := h.Enqueue(h.File("a.txt", "a\n"), "p", 0)
	w := h.Worker(testworker.Options{Identity: string([]byte{0xff, 0xfe, 0x00, 0x01, 'x'})})
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return h.Job(id).Status == job.StatusCompleted })
	if j := h.Job(id); j.ClaimedBy != "0xfffe000178" || len(w.Received()) != 1 {
		t.Errorf("claimed_by %q, dispatches %d", j.ClaimedBy, len(w.Received()))
	}
}

// zmtpHello is a hand-written ZMTP 3.0 greeting and READY for a DEALER.
func zmtpHello() []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10] = 0xff, 0x7f, 3
	copy(g[12:], "NULL")
	body := []byte{5}
	body = append(body, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = append(body, 0, 0, 0, 6)
	body = append(body, "DEALER"...)
	g = append(g, 0x04, byte(len(body)))
	return append(g, body...)
}

// TestHostile_HostilePeersDoNotStopOthers runs a silent TCP peer, a peer that
// declares a 1 TiB frame and a worker that stops reading next to a good
// worker: the Sentinel stays up and the good worker completes its jobs.
func TestHostile_HostilePeersDoNotStopOthers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.MaxMessageSize = 1 << 20
		c.WorkerTimeout = 5 * time.Second // so the drop is the slow-peer guard's
	})
	// "big" jobs carry ~900 KiB of source each and only the stuck worker
	// runs them; "small" jobs are the good worker's.
	if _, err := h.Store.PluginManifestActivate(context.Background(), "big", "1", strings.Repeat("x", 900<<10), "", "art-big"); err != nil {
		t.Fatal(err)
	}
	h.Plugin("small")
	fv := h.File("a.txt", "a\n")
	const bigJobs, smallJobs = 64, 40
	var big []int64
	for i := 0; i < bigJobs; i++ {
		big = append(big, h.Enqueue(fv, "big", 0))
	}
	for i := 0; i < smallJobs; i++ {
		h.Enqueue(fv, "small", 0)
	}
	host := strings.TrimPrefix(h.Endpoint, "tcp://")

	silent, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	huge, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer huge.Close()
	frame := append(zmtpHello(), 0x02, 0, 0, 1, 0, 0, 0, 0, 0) // long frame, 1 TiB
	if _, err := huge.Write(frame); err != nil {
		t.Fatal(err)
	}

	// A worker that takes 64 big jobs (~56 MiB of DISPATCH) and never reads
	// its socket: its send buffer fills and it is dropped.
	h.rawPeer(t, "stuck", &transport.Identify{Capabilities: []string{"big"}, MaxConcurrentJobs: bigJobs})
	testwait.Eventually(t, 30*time.Second, "the stuck worker is dropped as a slow peer", func() bool {
		return h.Sentinel.Stats().SendFailures.Load() > 0
	})

	good := h.Worker(testworker.Options{Capabilities: []string{"small"}, Slots: 2, Run: testworker.Succeed})
	testwait.Eventually(t, 30*time.Second, "every small job COMPLETED", func() bool { return h.Counts()[job.StatusCompleted] == smallJobs })
	if h.Sentinel.Stats().ProtocolErrors.Load() == 0 {
		t.Error("the 1 TiB frame was not counted as a protocol error")
	}
	if len(good.Received()) != smallJobs {
		t.Errorf("good worker got %d jobs, want %d", len(good.Received()), smallJobs)
	}
	// The stuck worker's jobs go back to the queue once it times out.
	testwait.Eventually(t, 30*time.Second, "big jobs requeued", func() bool {
		for _, id := range big {
			if h.Job(id).Status != job.StatusQueued {
				return false
			}
		}
		return true
	})
}
