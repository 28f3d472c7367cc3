package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRouter_SendsStraightIntoGuardedConnections checks the Router's direct
// path end to end: once a peer's READY names an identity and zmq4's READY is
// out, sends to it skip zmq4's ROUTER, and every frame, short or long,
// arrives whole and in order. The peer is a hand-written ZMTP client that
// also sends PINGs (zmq4's ROUTER passes them up and never answers).
func TestRouter_SendsStraightIntoGuardedConnections(t *testing.T) {
	r, err := ListenRouter("tcp://127.0.0.1:0", RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Start(func(in Inbound) { _ = r.Send(in.Identity, in.Frames) }) // echo

	conn, err := net.Dial("tcp", strings.TrimPrefix(r.Endpoint(), "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	greeting := make([]byte, 64)
	greeting[0], greeting[9], greeting[10] = 0xFF, 0x7F, 3
	copy(greeting[12:], "NULL")
	ready := append([]byte{5}, "READY"...)
	for _, p := range [][2]string{{"Socket-Type", "DEALER"}, {"Identity", "raw-1"}} {
		ready = append(ready, byte(len(p[0])))
		ready = append(ready, p[0]...)
		ready = binary.BigEndian.AppendUint32(ready, uint32(len(p[1])))
		ready = append(ready, p[1]...)
	}
	if _, err := conn.Write(append(greeting, frame(0x04, ready)...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	in := bufio.NewReader(conn)
	if _, err := io.ReadFull(in, make([]byte, 64)); err != nil {
		t.Fatalf("server greeting: %v", err)
	}
	if flags, body := readFrame(t, in); flags&0x04 == 0 || !strings.HasPrefix(string(body), "\x05READY") {
		t.Fatalf("first frame from the server: flags %#x %q, want its READY", flags, body)
	}

	const n = 300
	ping := frame(0x04, append([]byte{4}, "PING\x00\x00"...))
	go func() {
		for i := range n {
			payload := strings.Repeat(fmt.Sprint(i%10), 1+i%400) // short and long frames
			msg := append(frame(0x01, AppendHeader(nil, OpHeartbeat, uint64(i), len(payload))), frame(0, []byte(payload))...)
			if _, err := conn.Write(append(msg, ping...)); err != nil {
				return
			}
		}
	}()
	msgs := 0
	defer func() {
		if t.Failed() {
			t.Logf("read %d messages of %d", msgs, n)
		}
	}()
	for msgs < n {
		flags, body := readFrame(t, in)
		if flags&0x04 != 0 {
			t.Fatalf("unexpected command %q", body)
		}
		if flags&0x01 == 0 {
			t.Fatalf("message %d: header frame without MORE", msgs)
		}
		h, err := ParseHeader(body)
		if err != nil || h.JobID != uint64(msgs) {
			t.Fatalf("message %d: header %+v, %v", msgs, h, err)
		}
		flags, payload := readFrame(t, in)
		want := strings.Repeat(fmt.Sprint(msgs%10), 1+msgs%400)
		if flags&0x01 != 0 || string(payload) != want {
			t.Fatalf("message %d: payload %d bytes (flags %#x), want %d", msgs, len(payload), flags, len(want))
		}
		msgs++
	}
	if r.peers.get([]byte("raw-1")) == nil {
		t.Error("the peer was never registered for direct sends")
	}
}

func frame(flags byte, body []byte) []byte {
	if len(body) > 255 {
		return append(binary.BigEndian.AppendUint64([]byte{flags | 0x02}, uint64(len(body))), body...)
	}
	return append([]byte{flags, byte(len(body))}, body...)
}

func readFrame(t *testing.T, in *bufio.Reader) (byte, []byte) {
	t.Helper()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(in, hdr); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	size := uint64(hdr[1])
	if hdr[0]&0x02 != 0 {
		long := make([]byte, 7)
		if _, err := io.ReadFull(in, long); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		size = binary.BigEndian.Uint64(append(hdr[1:2:2], long...))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(in, body); err != nil {
		t.Fatalf("read frame body: %v", err)
	}
	return hdr[0], body
}

// TestGuardConn_DirectMessageWaitsForZmq4sFrame: a message sent directly
// while zmq4 is between the header and the body of a frame of its own is
// held until that frame is complete, so the two never interleave.
func TestGuardConn_DirectMessageWaitsForZmq4sFrame(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	cfg := newGuardConfig(RouterOptions{})
	c := newGuardConn(server, &cfg, func(*guardConn) {})
	defer c.Close()
	go func() {
		_, _ = c.Write(serverGreeting[:]) // zmq4's greeting, swallowed
		ready := append([]byte{5}, "READY"...)
		_, _ = c.Write([]byte{0x04, byte(len(ready))})
		_ = c.sendMessage([][]byte{[]byte("head"), []byte("body")}) // arrives mid-frame
		_, _ = c.Write(ready)
	}()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	in := bufio.NewReader(client)
	if _, err := io.ReadFull(in, make([]byte, len(serverGreeting))); err != nil {
		t.Fatal(err)
	}
	if flags, body := readFrame(t, in); flags != 0x04 || string(body) != "\x05READY" {
		t.Fatalf("first frame: %#x %q, want zmq4's READY whole", flags, body)
	}
	if flags, body := readFrame(t, in); flags != 0x01 || string(body) != "head" {
		t.Fatalf("second frame: %#x %q", flags, body)
	}
	if flags, body := readFrame(t, in); flags != 0 || string(body) != "body" {
		t.Fatalf("third frame: %#x %q", flags, body)
	}
}
