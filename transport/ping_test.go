package transport_test

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/transport"
)

// TestRouter_PingIsACommandFrameAndItsPongCountsAsLife: a raw ZMTP peer gets
// the PING as one command frame (ZMTP 3.1: "\x04PING", a TTL of 0, no
// context), and the PONG it sends back moves LastSeen although the
// application never sees it.
func TestRouter_PingIsACommandFrameAndItsPongCountsAsLife(t *testing.T) {
	r, got := startEchoRouter(t, transport.RouterOptions{})
	c := dialZMTP(t, r.Endpoint(), "raw-ping")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	in := bufio.NewReader(c)
	if _, err := io.ReadFull(in, make([]byte, 64)); err != nil {
		t.Fatalf("server greeting: %v", err)
	}
	if flags, body := readRawFrame(t, in); flags != 0x04 || !strings.HasPrefix(string(body), "\x05READY") {
		t.Fatalf("first frame %#x %q, want the server's READY", flags, body)
	}
	// One message, so the router has a liveness record and the peer is
	// registered for direct sends by the time it comes back.
	if _, err := c.Write(zmtpMessage(validFrames(t, 1, nil)...)); err != nil {
		t.Fatal(err)
	}
	waitFrom(t, got, "raw-ping")
	readRawFrame(t, in) // the echo: header
	readRawFrame(t, in) // and payload
	before := r.LastSeen([]byte("raw-ping"))

	if err := r.Ping([]byte("raw-ping")); err != nil {
		t.Fatal(err)
	}
	flags, body := readRawFrame(t, in)
	if flags != 0x04 || string(body) != "\x04PING\x00\x00" {
		t.Fatalf("got frame %#x %q, want the PING command %q", flags, body, "\x04PING\x00\x00")
	}
	time.Sleep(10 * time.Millisecond) // so the PONG's time differs from the message's
	if _, err := c.Write(zmtpFrame(0x04, []byte("\x04PONG"))); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "last-seen stamped anew", func() bool { return r.LastSeen([]byte("raw-ping")).After(before) })
	select {
	case m := <-got:
		t.Fatalf("the PONG reached the application: %q", m.Frames)
	case <-time.After(50 * time.Millisecond):
	}

	// Pinging an identity that is not connected is a no-op.
	if err := r.Ping([]byte("nobody")); err != nil {
		t.Fatalf("ping of an unknown identity: %v", err)
	}
}

func readRawFrame(t *testing.T, in *bufio.Reader) (byte, []byte) {
	t.Helper()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(in, hdr); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if hdr[0]&0x02 != 0 {
		t.Fatalf("unexpected long frame")
	}
	body := make([]byte, hdr[1])
	if _, err := io.ReadFull(in, body); err != nil {
		t.Fatalf("read frame body: %v", err)
	}
	return hdr[0], body
}

// TestRouter_PingIsHarmlessToZmq4Dealers: our own DEALER (zmq4, which does
// not answer PING) takes PINGs, plaintext and over CURVE, without losing the
// connection or a message: Dealer.Recv skips them.
func TestRouter_PingIsHarmlessToZmq4Dealers(t *testing.T) {
	t.Run("Plaintext", func(t *testing.T) {
		r, got := startEchoRouter(t, transport.RouterOptions{})
		d := dialDealer(t, r.Endpoint(), "go-dealer")
		pingAround(t, r, got, d, "go-dealer")
	})
	t.Run("Curve", func(t *testing.T) {
		k := newCurveKeys(t)
		r, got, _ := startCurveRouter(t, k, nil, nil)
		d, err := dialCurveDealer(t, r.Endpoint(), "go-curve", k.client(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		pingAround(t, r, got, d, "go-curve")
	})
}

func pingAround(t *testing.T, r *echoRouter, got <-chan transport.Inbound, d *transport.Dealer, identity string) {
	t.Helper()
	roundTrip(t, d, 1, []byte("before"))
	waitFrom(t, got, identity)
	for i := 0; i < 5; i++ {
		if err := r.Ping([]byte(identity)); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(2); i < 10; i++ {
		roundTrip(t, d, i, []byte("after"))
		if i%2 == 0 {
			_ = r.Ping([]byte(identity))
		}
	}
}

// TestRouter_LibzmqAnswersPingWhileItsThreadSleeps: a pyzmq DEALER that
// sends no heartbeats of its own (ZMQ_HEARTBEAT_IVL 0) and whose Python
// thread sleeps, never calling zmq, still answers our PINGs: libzmq's I/O
// thread sends the PONG, though the guard greets with ZMTP 3.0, and LastSeen
// moves. Plaintext and CURVE.
func TestRouter_LibzmqAnswersPingWhileItsThreadSleeps(t *testing.T) {
	needPyzmqCurve(t)
	script := `
import sys, time, zmq
endpoint, identity = sys.argv[1], sys.argv[2].encode()
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.IDENTITY, identity)
s.setsockopt(zmq.HEARTBEAT_IVL, 0)
s.setsockopt(zmq.LINGER, 0)
if len(sys.argv) > 3:
    server_pub, client_pub, client_sec = sys.argv[3:6]
    s.curve_serverkey = server_pub.encode()
    s.curve_publickey = client_pub.encode()
    s.curve_secretkey = client_sec.encode()
s.connect(endpoint)
header = bytes([4, 4, 0, 0]) + (1).to_bytes(8, "big") + (0).to_bytes(4, "big")
s.send_multipart([header, b""])
time.sleep(float(sys.stdin.readline()))  # the Python thread is busy: no zmq call
s.close()
ctx.term()
print("ok")
`
	run := func(t *testing.T, r *echoRouter, got <-chan transport.Inbound, identity string, extra ...string) {
		r.Echo(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, append([]string{"-c", script, r.Endpoint(), identity}, extra...)...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = stdin.Close()
			if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != "ok" {
				t.Errorf("pyzmq dealer: %v\n%s", err, out.String())
			}
		}()
		if _, err := io.WriteString(stdin, "2\n"); err != nil {
			t.Fatal(err)
		}
		waitFrom(t, got, identity)
		for i := 0; i < 3; i++ {
			time.Sleep(100 * time.Millisecond) // PONG and message apart in time
			before := r.LastSeen([]byte(identity))
			if err := r.Ping([]byte(identity)); err != nil {
				t.Fatal(err)
			}
			testwait.Eventually(t, 2*time.Second, "last-seen stamped anew", func() bool { return r.LastSeen([]byte(identity)).After(before) })
		}
		select {
		case m := <-got:
			t.Fatalf("a PONG reached the application: %q", m.Frames)
		default:
		}
	}
	t.Run("Plaintext", func(t *testing.T) {
		r, got := startEchoRouter(t, transport.RouterOptions{})
		run(t, r, got, "py-pong")
	})
	t.Run("Curve", func(t *testing.T) {
		k := newCurveKeys(t)
		r, got, _ := startCurveRouter(t, k, nil, nil)
		run(t, r, got, "py-pong-curve", k.serverPub.String(), k.clientPub.String(), k.clientSec.String())
	})
}
