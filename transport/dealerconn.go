package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	zmqtransport "github.com/go-zeromq/zmq4/transport"
)

// plainScheme is the zmq4 transport a plaintext DEALER dials tcp://
// endpoints through: TCP whose reads go through a buffer and a frame-size
// check (frameReader), and whose writes leave whole messages, several at a
// time under load (frameWriter, writeQueue).
//
// zmq4 reads every frame with two unbuffered reads (its header, then its
// body), so a two-frame message costs a worker four read system calls.
// Through the buffer one read takes in whatever the Sentinel has sent, often
// many messages. Once a connection is wrapped, zmq4 can no longer write a
// message with one writev (net.Buffers does that only for the net package's
// own connections) and writes each header and body on its own, so the
// wrapper gathers them and writes each message whole (frameWriter).
const plainScheme = "casparian-dealer-tcp"

// dealerReadBuffer is the read buffer of a plaintext DEALER connection. A
// larger frame is read straight into its own slice, as without a buffer.
const dealerReadBuffer = 16 << 10

var registerPlain = sync.OnceValue(func() error {
	return zmq4.RegisterTransport(plainScheme, plainTransport{})
})

// plainTransport dials TCP and wraps the connection in a dealerConn.
type plainTransport struct{}

// plainMaxFrameKey carries a DEALER's frame limit from DialDealer to
// plainTransport.Dial through the socket's context.
type plainMaxFrameKey struct{}

func (plainTransport) Dial(ctx context.Context, d zmqtransport.Dialer, addr string) (net.Conn, error) {
	maxFrame, ok := ctx.Value(plainMaxFrameKey{}).(uint64)
	if !ok {
		return nil, errors.New("plain transport: dialed without a frame limit")
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newDealerConn(c, maxFrame), nil
}

func (plainTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	return nil, errors.New("plain transport: a Router listens through the guard")
}

func (plainTransport) Addr(ep string) (string, error) {
	return zmqtransport.New("tcp").Addr(ep)
}

// dealerConn is a plaintext DEALER's connection: reads go through r, writes
// through w and then q; the rest is the connection's own. zmq4 reads a
// connection from one goroutine only, so r needs no lock. mu orders the
// writes into w; q has its own lock, taken inside mu.
type dealerConn struct {
	net.Conn
	r frameReader

	mu        sync.Mutex
	w         frameWriter
	q         *writeQueue
	closeOnce sync.Once
	closeErr  error
}

func newDealerConn(c net.Conn, maxFrame uint64) *dealerConn {
	q := newWriteQueue(c)
	return &dealerConn{
		Conn: c,
		r:    frameReader{r: bufio.NewReaderSize(c, dealerReadBuffer), maxFrame: maxFrame, greeting: zmtpGreetingSize},
		q:    q,
		w:    frameWriter{out: q, greeting: zmtpGreetingSize},
	}
}

func (c *dealerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *dealerConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// Close writes what is queued (for at most closeFlush) and closes the
// connection. zmq4 may close a connection more than once.
func (c *dealerConn) Close() error {
	c.closeOnce.Do(func() {
		c.q.close(closeFlush)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// closeFlush bounds how long closing a connection waits for its queued
// messages to be written: a peer that stopped reading must not hold up a
// reconnect or a worker's shutdown.
const closeFlush = 250 * time.Millisecond

// maxQueued is how many bytes may wait in a writeQueue before Write waits
// for the writer; a single larger message is always taken.
const maxQueued = 1 << 20

// writeQueue takes whole messages from frameWriter and writes them to the
// connection from a goroutine of its own, so a message goes out together
// with whatever was queued while the previous write ran: a worker answering
// a burst of DISPATCHes writes its receipts in a few system calls, and the
// goroutine that sends does not wait for the kernel. Write waits only when
// maxQueued bytes are queued (a peer that stopped reading), as it waited for
// a full socket buffer before.
//
// The writer goroutine runs only while there is something to write, so a
// connection zmq4 drops without closing it leaves no goroutine behind.
//
// A failed write closes the connection, which zmq4 sees as a lost peer; it
// is the error of every later Write.
type writeQueue struct {
	conn net.Conn

	mu      sync.Mutex
	cond    *sync.Cond // broadcast when the writer took queued, wrote, or stopped
	queued  []byte
	spare   []byte // the buffer of the last write, for reuse
	writing bool   // the writer goroutine runs
	err     error
	closed  bool
}

func newWriteQueue(conn net.Conn) *writeQueue {
	q := &writeQueue{conn: conn}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *writeQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.err == nil && !q.closed && len(q.queued) > 0 && len(q.queued)+len(p) > maxQueued {
		q.cond.Wait()
	}
	if q.err != nil {
		return 0, q.err
	}
	if q.closed {
		return 0, net.ErrClosed
	}
	q.queued = append(q.queued, p...)
	if !q.writing {
		q.writing = true
		go q.run()
	}
	return len(p), nil
}

// run writes what is queued until nothing is, then ends.
func (q *writeQueue) run() {
	q.mu.Lock()
	var err error
	for len(q.queued) > 0 && err == nil {
		buf := q.queued
		q.queued, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		_, err = q.conn.Write(buf)
		q.mu.Lock()
		if cap(buf) <= maxHeldCapacity {
			q.spare = buf[:0]
		}
		if err != nil && q.err == nil {
			q.err = err
		}
		q.cond.Broadcast()
	}
	q.writing = false
	q.cond.Broadcast()
	q.mu.Unlock()
	if err != nil {
		_ = q.conn.Close() // the reader sees it and zmq4 reconnects
	}
}

// close refuses further writes and waits for the writer to write what is
// queued, which may take at most flush.
func (q *writeQueue) close(flush time.Duration) {
	_ = q.conn.SetWriteDeadline(time.Now().Add(flush))
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
	for q.writing {
		q.cond.Wait()
	}
}

// frameReader reads a ZMTP stream through r and refuses a frame whose
// declared size is over maxFrame before zmq4 sees its header: zmq4
// allocates a frame's declared size before reading it, so a peer could
// otherwise make the worker allocate any amount (the guard does the same
// for the Sentinel, and the CURVE connection for CURVE DEALERs). The error
// ends the connection; zmq4 reconnects.
type frameReader struct {
	r        *bufio.Reader
	maxFrame uint64
	greeting int    // bytes of the greeting still to pass
	left     uint64 // bytes of the current frame, header included, still to pass
}

func (f *frameReader) Read(p []byte) (int, error) {
	if f.greeting > 0 {
		n, err := f.r.Read(p[:min(len(p), f.greeting)])
		f.greeting -= n
		return n, err
	}
	if f.left == 0 {
		hdr, err := f.r.Peek(2)
		if err != nil {
			return 0, err
		}
		size, hlen := uint64(hdr[1]), uint64(2)
		if hdr[0]&zmtpFlagLong != 0 {
			if hdr, err = f.r.Peek(9); err != nil {
				return 0, err
			}
			size, hlen = binary.BigEndian.Uint64(hdr[1:9]), 9
		}
		if size > f.maxFrame {
			return 0, fmt.Errorf("%w: the peer declared %d bytes, limit %d", errFrameTooLarge, size, f.maxFrame)
		}
		f.left = hlen + size
	}
	n, err := f.r.Read(p[:min(uint64(len(p)), f.left)])
	f.left -= uint64(n)
	return n, err
}

// zmtpGreetingSize is the length of the ZMTP 3 greeting, the one part of
// the stream that is not frames.
const zmtpGreetingSize = 64

// frameWriter passes the greeting through, then holds ZMTP frames until
// one ends a message (its MORE flag clear; every command frame does) and
// writes everything held in one call. A write of part of a frame is held
// too: zmq4 writes a frame's header and body separately.
//
// An error of the underlying write is returned by the Write that completed
// the message; the bytes of earlier Writes were accepted without error.
// zmq4 treats any write error as the end of the connection.
type frameWriter struct {
	out      io.Writer
	greeting int    // bytes of the greeting still to pass through
	held     []byte // frames not yet written
	complete int    // held[:complete] are whole frames
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.greeting > 0 {
		k := min(len(p), w.greeting)
		if _, err := w.out.Write(p[:k]); err != nil {
			return 0, err
		}
		w.greeting -= k
		p = p[k:]
	}
	w.held = append(w.held, p...)
	for {
		size, ok := nextFrame(w.held[w.complete:])
		if !ok {
			return n, nil
		}
		more := w.held[w.complete]&zmtpFlagMore != 0
		w.complete += size
		if more {
			continue
		}
		_, err := w.out.Write(w.held[:w.complete])
		rest := copy(w.held, w.held[w.complete:])
		w.held, w.complete = w.held[:rest], 0
		if cap(w.held) > maxHeldCapacity {
			w.held = append([]byte(nil), w.held...) // let one large message's buffer go
		}
		if err != nil {
			return n, err
		}
	}
}

// maxHeldCapacity is the largest buffer a frameWriter keeps between
// messages.
const maxHeldCapacity = 64 << 10

// ZMTP frame flags (RFC 23/ZMTP, section "Framing").
const (
	zmtpFlagMore = 0x01
	zmtpFlagLong = 0x02
)

// nextFrame returns the length of the whole frame at the start of b,
// header included, and false while b holds only part of it.
func nextFrame(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	hdr, size := 2, uint64(b[1])
	if b[0]&zmtpFlagLong != 0 {
		if len(b) < 9 {
			return 0, false
		}
		hdr, size = 9, binary.BigEndian.Uint64(b[1:9])
	}
	if uint64(len(b)-hdr) < size {
		return 0, false
	}
	return hdr + int(size), true
}
