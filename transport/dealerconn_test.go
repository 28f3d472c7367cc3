package transport_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/casparian/sentinel/transport"
)

// burstSizes are payload sizes of a burst: small ones that share a read of
// the plaintext DEALER's 16 KiB buffer, and larger ones that span several
// reads or bypass it.
var burstSizes = []int{0, 7, 100, 1000, 16 << 10, 40 << 10, 300 << 10}

// sendBurst sends n messages back to back, job i with a payload of
// burstSizes[i%len] bytes of byte(i), then reads the n echoes: each must come
// back whole and in order.
func sendBurst(t *testing.T, d *transport.Dealer, n int, budget time.Duration) {
	t.Helper()
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, burstSizes[i%len(burstSizes)]) }
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := d.SendFrames(transport.EncodeFrames(transport.OpHeartbeat, uint64(i+1), payload(i))); err != nil {
				sent <- fmt.Errorf("send %d: %w", i+1, err)
				return
			}
		}
		sent <- nil
	}()
	got := make(chan error, 1)
	go func() {
		for i := range n {
			msg, err := d.Recv()
			if err != nil {
				got <- fmt.Errorf("echo %d: %w", i+1, err)
				return
			}
			if msg.JobID != uint64(i+1) || !bytes.Equal(msg.Payload, payload(i)) {
				got <- fmt.Errorf("echo %d: job %d with %d bytes, want job %d with %d bytes",
					i+1, msg.JobID, len(msg.Payload), i+1, len(payload(i)))
				return
			}
		}
		got <- nil
	}()
	deadline := time.After(budget)
	for range 2 {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatal(err)
			}
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("the burst of %d messages did not come back within %v", n, budget)
		}
	}
}

// TestDealer_PlaintextBurstComesBackWhole: a plaintext DEALER reads through
// a buffer and gathers each message's frames into one write. A burst of
// messages of mixed sizes, sent without waiting, crosses our Router and
// comes back whole and in order.
func TestDealer_PlaintextBurstComesBackWhole(t *testing.T) {
	t.Parallel()
	r, _ := startEchoRouter(t, transport.RouterOptions{})
	d := dialDealer(t, r.Endpoint(), "burst")
	sendBurst(t, d, 350, 30*time.Second)
}

// TestDealer_PlaintextWithLibzmqRouter: the same burst through a libzmq
// ROUTER, which writes its frames as it likes (not as our guard's writer
// does), in two rounds on the one connection.
func TestDealer_PlaintextWithLibzmqRouter(t *testing.T) {
	needPyzmqCurve(t)
	script := `
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.RCVTIMEO, 40000)
s.setsockopt(zmq.LINGER, 0)
port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
for _ in range(int(sys.argv[1])):
    s.send_multipart(s.recv_multipart())
# LINGER 0 would drop an echo still queued when the script ends.
s.setsockopt(zmq.LINGER, 5000)
s.close()
ctx.term()
print("done", flush=True)
`
	const first, second = 140, 70
	router := startLibzmqRouter(t, script, fmt.Sprint(first+second))
	d := dialDealer(t, router.endpoint, "go-plain")
	sendBurst(t, d, first, 30*time.Second)
	sendBurst(t, d, second, 30*time.Second)
	router.waitDone(t)
}

// TestDealer_PlaintextRefusesAnOversizedFrame: a peer posing as the Sentinel
// completes the handshake and then declares a 1 GiB frame. The DEALER
// refuses it at its header and drops the connection; before, zmq4 allocated
// whatever a frame declared.
func TestDealer_PlaintextRefusesAnOversizedFrame(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 4) // zmq4 dials again after the refusal
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default: // zmq4 redialing after the test looked: not needed
				_ = c.Close()
			}
		}
	}()
	// DialDealer returns once the handshake is done: dial beside the
	// server's side below.
	dialed := make(chan *transport.Dealer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		d, err := transport.DialDealer(ctx, "tcp://"+ln.Addr().String(), transport.DealerOptions{Identity: []byte("go-plain")})
		if err != nil {
			t.Error(err)
		}
		dialed <- d
	}()
	t.Cleanup(func() {
		if d := <-dialed; d != nil {
			_ = d.Close()
		}
	})
	var c net.Conn
	select {
	case c = <-accepted:
		t.Cleanup(func() { _ = c.Close() })
	case <-time.After(10 * time.Second):
		t.Fatal("the DEALER did not connect")
	}
	if _, err := c.Write(append(zmtpGreeting(), zmtpReady("ROUTER", "")...)); err != nil {
		t.Fatal(err)
	}
	// Its greeting; its READY follows and is left unread.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 64)); err != nil {
		t.Fatalf("the DEALER's greeting: %v", err)
	}
	huge := binary.BigEndian.AppendUint64([]byte{0x02}, 1<<30) // LONG, 1 GiB, no body follows
	if _, err := c.Write(huge); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
}
