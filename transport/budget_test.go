package transport

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
)

// TestRouter_FloodingPeerIsThrottledAndCut: a peer over its inbound budget
// has the excess dropped and counted, and is disconnected once it stays
// over budget; a peer within its budget on the same Router loses nothing.
func TestRouter_FloodingPeerIsThrottledAndCut(t *testing.T) {
	var dropped, cut, calm atomic.Int64
	var cutReject atomic.Int64
	r, err := ListenRouter("tcp://127.0.0.1:0", RouterOptions{
		PeerRate: 1000, PeerBurst: 100, PeerOverBudget: 300 * time.Millisecond,
		OnDrop: func(reason string) {
			if reason == DropRate {
				dropped.Add(1)
			}
		},
		OnOverBudget: func(identity []byte, _ net.Addr, n int64) {
			if string(identity) == "flooder" && n > 0 {
				cut.Add(1)
			}
		},
		OnReject: func(reason string) {
			if reason == RejectOverBudget {
				cutReject.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Start(func(in Inbound) {
		if string(in.Identity) == "calm" {
			calm.Add(1)
		}
	})
	addr := strings.TrimPrefix(r.Endpoint(), "tcp://")

	calmConn, err := stormDial(addr, "calm", nil) // one message
	if err != nil {
		t.Fatal(err)
	}
	defer calmConn.Close()

	flood, err := stormDial(addr, "flooder", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	gone := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, flood); close(gone) }()
	hdr := AppendHeader(nil, OpHeartbeat, 0, 2)
	var batch []byte
	for range 500 {
		batch = append(batch, flagMore, byte(len(hdr)))
		batch = append(batch, hdr...)
		batch = append(batch, 0, 2, '{', '}')
	}
	go func() {
		// A write cut short by its deadline goes on where it stopped: a
		// frame split by a restart would be malformed, and the connection
		// closed for that instead of for its budget (seen under load).
		rest := batch
		for {
			_ = flood.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := flood.Write(rest)
			if rest = rest[n:]; len(rest) == 0 {
				rest = batch
			}
			if err != nil {
				select {
				case <-gone:
					return
				default:
				}
			}
		}
	}()
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the flooder was not disconnected")
	}
	if dropped.Load() == 0 || cut.Load() != 1 || cutReject.Load() != 1 {
		t.Fatalf("dropped %d, cut %d (OnReject %d): want drops and one cut", dropped.Load(), cut.Load(), cutReject.Load())
	}

	// The calm peer, within its budget, still gets every message through.
	const n = 50
	for range n {
		if _, err := calmConn.Write(batch[:len(batch)/500]); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Eventually(t, 10*time.Second, "every message of the calm peer", func() bool { return calm.Load() == 1+n })
	t.Logf("flooder: %d messages dropped before it was cut", dropped.Load())
}
