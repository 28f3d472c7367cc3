package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// recordingWriter keeps each Write it is given, as its own slice.
type recordingWriter struct {
	writes [][]byte
	err    error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// zmtpFrame is one frame as ZMTP puts it on the wire: flags, size, body.
func zmtpFrame(flags byte, body []byte) []byte {
	if len(body) > 255 {
		hdr := make([]byte, 9)
		hdr[0] = flags | zmtpFlagLong
		binary.BigEndian.PutUint64(hdr[1:], uint64(len(body)))
		return append(hdr, body...)
	}
	return append([]byte{flags, byte(len(body))}, body...)
}

// TestFrameWriter_WritesEachMessageWhole follows zmq4's writes on a
// connection: the greeting (here in two parts), the READY command as header
// then body, then messages whose frames come header and body apart. Each
// message must leave in one write, and nothing before its last frame is
// complete.
func TestFrameWriter_WritesEachMessageWhole(t *testing.T) {
	out := &recordingWriter{}
	w := &frameWriter{out: out, greeting: zmtpGreetingSize}
	greeting := bytes.Repeat([]byte{0xff}, zmtpGreetingSize)
	ready := zmtpFrame(0x04, []byte("\x05READY"))
	header := zmtpFrame(zmtpFlagMore, bytes.Repeat([]byte{4}, 16))
	long := zmtpFrame(0, bytes.Repeat([]byte("p"), 300))
	empty := zmtpFrame(0, nil)

	steps := []struct {
		write  []byte
		writes int // out's writes after this one
	}{
		{greeting[:10], 1}, // the greeting passes through as it comes
		{greeting[10:], 2},
		{ready[:2], 2}, // a command's header alone is held
		{ready[2:], 3}, // its body completes it: written
		{header[:2], 3},
		{header[2:], 3}, // a whole frame with MORE set is held
		{long[:5], 3},   // part of a long frame's header
		{long[5:9], 3},
		{long[9:], 4}, // the message's last frame: header and long body in one write
		{header, 4},
		{empty[:2], 5}, // a last frame with no body ends the message at its header
	}
	for i, s := range steps {
		n, err := w.Write(s.write)
		if err != nil || n != len(s.write) {
			t.Fatalf("step %d: Write = %d, %v; want %d, nil", i, n, err, len(s.write))
		}
		if len(out.writes) != s.writes {
			t.Fatalf("step %d: %d writes out, want %d", i, len(out.writes), s.writes)
		}
	}
	want := [][]byte{greeting[:10], greeting[10:], ready, append(append([]byte(nil), header...), long...),
		append(append([]byte(nil), header...), empty...)}
	for i := range want {
		if !bytes.Equal(out.writes[i], want[i]) {
			t.Errorf("write %d = %d bytes %q, want %d bytes %q", i, len(out.writes[i]), clip(out.writes[i]), len(want[i]), clip(want[i]))
		}
	}
	if len(w.held) != 0 || w.complete != 0 {
		t.Errorf("%d bytes still held after the last message", len(w.held))
	}
}

func clip(b []byte) []byte { return b[:min(len(b), 24)] }

// TestFrameWriter_AnySplitKeepsTheStream cuts random frame streams at
// random places: what comes out is the stream unchanged, and every write
// out is the greeting's or ends exactly where a message ends.
func TestFrameWriter_AnySplitKeepsTheStream(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 60 {
		var stream []byte
		ends := map[int]bool{} // offsets where a message ends
		greeting := bytes.Repeat([]byte{byte(round)}, zmtpGreetingSize)
		stream = append(stream, greeting...)
		for range 1 + r.IntN(20) {
			frames := 1 + r.IntN(3)
			for f := range frames {
				flags := byte(0)
				if f < frames-1 {
					flags = zmtpFlagMore
				}
				size := []int{0, 1, 16, 255, 256, 1000, 70 << 10}[r.IntN(7)]
				stream = append(stream, zmtpFrame(flags, bytes.Repeat([]byte{byte(f)}, size))...)
			}
			ends[len(stream)] = true
		}
		out := &recordingWriter{}
		w := &frameWriter{out: out, greeting: zmtpGreetingSize}
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(600))
			if _, err := w.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		got, at := []byte(nil), 0
		for _, wr := range out.writes {
			got = append(got, wr...)
			at += len(wr)
			if at > zmtpGreetingSize && !ends[at] {
				t.Fatalf("round %d: a write ends at byte %d, inside a message", round, at)
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("round %d: %d bytes out, want the %d bytes in unchanged", round, len(got), len(stream))
		}
		if cap(w.held) > maxHeldCapacity {
			t.Fatalf("round %d: keeps a %d-byte buffer between messages", round, cap(w.held))
		}
	}
}

// TestFrameWriter_ReturnsTheErrorOfItsWrite: a failed write out is the
// error of the Write that completed the message.
func TestFrameWriter_ReturnsTheErrorOfItsWrite(t *testing.T) {
	broken := errors.New("connection reset")
	out := &recordingWriter{err: broken}
	w := &frameWriter{out: out}
	msg := zmtpFrame(0, []byte("payload"))
	if _, err := w.Write(msg[:2]); err != nil {
		t.Fatalf("held header: %v", err)
	}
	if _, err := w.Write(msg[2:]); !errors.Is(err, broken) {
		t.Fatalf("Write completing the message = %v, want %v", err, broken)
	}
}

// readAll reads n bytes from c, failing the test after 10 s.
func readAll(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return buf
}

// TestWriteQueue_WritesWhatQueuedMeanwhileInOneWrite: while the writer is
// stuck in a write (net.Pipe: a write waits for its reader), Write returns at
// once, and what was queued meanwhile goes out in the next single write.
func TestWriteQueue_WritesWhatQueuedMeanwhileInOneWrite(t *testing.T) {
	ours, peer := net.Pipe()
	defer func() { _ = peer.Close() }()
	q := newWriteQueue(ours)
	defer q.close(time.Second)
	if _, err := q.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	// The writer now waits in its write of "first" until peer reads.
	for _, m := range []string{"two", "three", "four"} {
		if _, err := q.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(readAll(t, peer, 5)); got != "first" {
		t.Fatalf("first write %q", got)
	}
	// net.Pipe hands a write over in one piece only to a read big enough.
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := peer.Read(buf)
	if err != nil || string(buf[:n]) != "twothreefour" {
		t.Fatalf("next read = %q, %v; want the three queued messages in one write", buf[:n], err)
	}
}

// TestWriteQueue_CloseWritesWhatIsQueued: a receipt queued just before the
// connection closes still goes out.
func TestWriteQueue_CloseWritesWhatIsQueued(t *testing.T) {
	ours, peer := net.Pipe()
	defer func() { _ = peer.Close() }()
	q := newWriteQueue(ours)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(peer); got <- b }()
	for _, m := range []string{"a", "b", "c"} {
		if _, err := q.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	q.close(5 * time.Second)
	_ = ours.Close()
	if b := <-got; string(b) != "abc" {
		t.Fatalf("peer read %q, want %q", b, "abc")
	}
	if _, err := q.Write([]byte("late")); err == nil {
		t.Fatal("Write after close succeeded")
	}
}

// TestWriteQueue_WaitsWhenFullAndFailsAfterAWriteError: with maxQueued bytes
// waiting behind a stuck write, Write waits; when the write fails (the peer
// went away) the waiting Write and every later one return the error, and the
// connection is closed.
func TestWriteQueue_WaitsWhenFullAndFailsAfterAWriteError(t *testing.T) {
	ours, peer := net.Pipe()
	q := newWriteQueue(ours)
	defer q.close(time.Second)
	if _, err := q.Write([]byte("stuck")); err != nil { // the writer takes it and waits
		t.Fatal(err)
	}
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.queued) == 0 })
	if _, err := q.Write(make([]byte, maxQueued)); err != nil { // fills the queue
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { _, err := q.Write([]byte("one more")); blocked <- err }()
	select {
	case err := <-blocked:
		t.Fatalf("Write over maxQueued returned (%v) while the writer was stuck", err)
	case <-time.After(100 * time.Millisecond): // it waits, as it should
	}
	_ = peer.Close() // the stuck write fails
	select {
	case err := <-blocked:
		if err == nil {
			t.Fatal("the waiting Write succeeded after the write error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting Write never returned after the write error")
	}
	if _, err := q.Write([]byte("later")); err == nil {
		t.Fatal("a Write after the write error succeeded")
	}
	if _, err := ours.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection is still open after the write error")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFrameReader_PassesFramesAndRefusesAnOversizedOne: the greeting and
// frames up to the limit come through unchanged, read as zmq4 reads them
// (header, then body); a frame declaring more than the limit is refused at
// its header, before its body is read or allocated.
func TestFrameReader_PassesFramesAndRefusesAnOversizedOne(t *testing.T) {
	const limit = 1000
	greeting := bytes.Repeat([]byte{0xee}, zmtpGreetingSize)
	ok := [][]byte{zmtpFrame(0x04, []byte("\x05READY")), zmtpFrame(zmtpFlagMore, bytes.Repeat([]byte{4}, 16)),
		zmtpFrame(0, bytes.Repeat([]byte("b"), limit)), zmtpFrame(0, nil)}
	stream := append([]byte(nil), greeting...)
	for _, f := range ok {
		stream = append(stream, f...)
	}
	huge := []byte{zmtpFlagLong, 0, 0, 0, 0x40, 0, 0, 0, 0} // 256 GiB declared, no body follows
	stream = append(stream, huge...)

	f := &frameReader{r: bufio.NewReaderSize(bytes.NewReader(stream), 64), maxFrame: limit, greeting: zmtpGreetingSize}
	got := make([]byte, zmtpGreetingSize)
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, greeting) {
		t.Fatalf("greeting: %v", err)
	}
	for i, want := range ok {
		hlen := 2
		if want[0]&zmtpFlagLong != 0 {
			hlen = 9
		}
		hdr := make([]byte, hlen)
		if _, err := io.ReadFull(f, hdr); err != nil {
			t.Fatalf("frame %d header: %v", i, err)
		}
		body := make([]byte, len(want)-hlen)
		if _, err := io.ReadFull(f, body); err != nil {
			t.Fatalf("frame %d body: %v", i, err)
		}
		if !bytes.Equal(append(hdr, body...), want) {
			t.Fatalf("frame %d came through changed", i)
		}
	}
	n, err := f.Read(make([]byte, 2))
	if !errors.Is(err, errFrameTooLarge) || n != 0 {
		t.Fatalf("oversized frame: Read = %d, %v; want 0 and %v", n, err, errFrameTooLarge)
	}
}
