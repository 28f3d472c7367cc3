package transport

// The guard sits between zmq4 and the TCP sockets of the ROUTER. zmq4 v0.17.0
// trusts its peers: it allocates whatever frame size a peer declares, runs
// each new connection's handshake synchronously in its accept loop with no
// deadline, panics (killing the process) on a READY command with a truncated
// property or an unknown or missing Socket-Type, and writes to every peer
// under one mutex, so a peer that stops reading stalls all sends. zmq4 lets a
// program register its own transport; the guard is one, and its connections
// check the byte stream on the way in and buffer it on the way out.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	zmqtransport "github.com/go-zeromq/zmq4/transport"
)

// Reasons passed to RouterOptions.OnReject when the guard drops a connection.
// They are stable, so they can be used as metric labels.
const (
	// RejectFrameTooLarge: a frame header declared more than the frame limit.
	RejectFrameTooLarge = "frame_too_large"
	// RejectHandshakeTimeout: no complete greeting and READY within the
	// handshake timeout.
	RejectHandshakeTimeout = "handshake_timeout"
	// RejectBadHandshake: the greeting or READY was malformed, used another
	// security mechanism or a socket type a ROUTER cannot talk to, or the
	// peer hung up during the handshake.
	RejectBadHandshake = "bad_handshake"
	// RejectSlowPeer: the peer let its send buffer fill; it is treated as
	// dead and may reconnect.
	RejectSlowPeer = "slow_peer"
)

// DefaultHandshakeTimeout bounds the greeting and READY of a new connection.
// Real peers on a LAN need milliseconds.
const DefaultHandshakeTimeout = 3 * time.Second

// DefaultSendBuffer is the smallest per-peer send buffer; the Router raises it
// to two frames of its largest payload so one big message never counts as a
// stalled peer.
const DefaultSendBuffer = 8 << 20

const (
	guardScheme = "casparian-tcp"

	greetingSize = 64
	flagMore     = 0x01
	flagLong     = 0x02
	flagCommand  = 0x04

	// readBufferSize also bounds the READY command the guard inspects before
	// zmq4 sees it; real ones carry two short properties.
	readBufferSize = 16 << 10
	// flushThreshold starts a write before a big message is complete.
	flushThreshold = 64 << 10
	// keepBufferCap: a drained send buffer up to this size is reused; larger
	// ones go back to the garbage collector so idle peers hold little memory.
	keepBufferCap = 256 << 10
)

// serverGreeting is byte for byte the greeting zmq4 sends for a NULL-security
// socket (as-server 0, version 3.0). The guard sends it on zmq4's behalf as
// soon as a peer connects: libzmq sends only its 10-byte signature until it
// sees ours, and the guard needs the peer's whole greeting and READY before
// zmq4's accept loop may touch the connection.
var serverGreeting = func() [greetingSize]byte {
	var g [greetingSize]byte
	g[0], g[9], g[10] = 0xFF, 0x7F, 3
	copy(g[12:32], "NULL")
	return g
}()

var (
	errFrameTooLarge  = errors.New("frame too large")
	errSlowPeer       = errors.New("peer does not read: send buffer full")
	errBadHandshake   = errors.New("malformed ZMTP handshake")
	errGreetingDiffer = errors.New("zmq4's greeting differs from the one the guard sent for it")
)

// netError marks the guard's errors as permanent network errors: zmq4 drops a
// connection from its socket only on io.EOF or a net.Error that is not a
// timeout, and would otherwise keep routing messages to a closed one.
type netError struct{ error }

func (netError) Timeout() bool   { return false }
func (netError) Temporary() bool { return false }
func (e netError) Unwrap() error { return e.error }

func guardErr(err error) error { return netError{err} }

// guardConfig is what one guarded listener enforces.
type guardConfig struct {
	maxFrame         uint64 // largest frame body a peer may declare
	handshakeTimeout time.Duration
	sendBuffer       int // bytes queued for one peer before it counts as dead
	onReject         func(reason string)
	peers            *peerConns // shared with the Router, which sends through it
	// curve, when set, makes every connection speak CurveZMQ (curveconn.go)
	// underneath the guard; onCurveRefusal hears why a handshake failed.
	curve          *CurveServer
	onCurveRefusal func(remote net.Addr, err *CurveError)
}

// peerConns finds a peer's guarded connection by its ZeroMQ identity, so the
// Router can write a message straight into it. zmq4's ROUTER instead looks
// for the identity by comparing it with every connection's, and starts a
// goroutine, on every send: with a thousand workers connected, most of the
// cost of a heartbeat.
type peerConns struct {
	mu sync.RWMutex
	m  map[string]*guardConn
	// last holds, for each identity a worker stands for (Router.Track),
	// when its last closed connection last spoke (unix nanoseconds, 0 if
	// never), until Router.Forget: the last word of a worker that hung up
	// still counts when its silence is judged.
	last map[string]int64
	// open counts the listener's connections, from accept to close,
	// handshaking ones included.
	open atomic.Int64
}

// connected reports whether identity has an open connection.
func (p *peerConns) connected(identity string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.m[identity] != nil
}

func (p *peerConns) get(identity []byte) *guardConn {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.m[string(identity)]
}

// set makes c the connection of identity; a reconnect with the same identity
// takes over from the old connection, as it does in zmq4.
func (p *peerConns) set(identity string, c *guardConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[identity] = c
}

// remove forgets c, unless identity has moved on to a newer connection. A
// tracked identity keeps when c last spoke.
func (p *peerConns) remove(identity string, c *guardConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[identity] == c {
		delete(p.m, identity)
		if last, ok := p.last[identity]; ok {
			p.last[identity] = max(last, c.seen.Load())
		}
	}
}

// track keeps identity's last word after its connection closes.
func (p *peerConns) track(identity string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.last[identity]; !ok {
		p.last[identity] = 0
	}
}

// forget drops what track kept.
func (p *peerConns) forget(identity string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.last, identity)
}

// lastSeen is when identity last spoke (unix nanoseconds): on its open
// connection, else on its last one if it is tracked; 0 if unknown.
func (p *peerConns) lastSeen(identity string) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if c := p.m[identity]; c != nil {
		if t := c.seen.Load(); t != 0 {
			return t
		}
	}
	return p.last[identity]
}

func (c *guardConfig) reject(reason string) {
	if reason != "" && c.onReject != nil {
		c.onReject(reason)
	}
}

// guardConfigKey carries the config from ListenRouter to guardTransport.Listen:
// zmq4 passes the socket's context to Listen, and a transport is registered
// once per process while every Router has its own limits.
type guardConfigKey struct{}

var registerGuard = sync.OnceValue(func() error {
	return zmq4.RegisterTransport(guardScheme, guardTransport{})
})

// guardEndpoint returns the context to create the ROUTER with and the endpoint
// it must listen on. tcp:// endpoints go through the guard; others (and every
// endpoint when opts.Unguarded) are left to zmq4.
// The connections of a guarded endpoint are found through the returned
// peerConns (nil when the endpoint is not guarded).
func guardEndpoint(endpoint string, opts RouterOptions) (context.Context, string, *peerConns, error) {
	ctx := context.Background()
	rest, isTCP := strings.CutPrefix(endpoint, "tcp://")
	if opts.Curve != nil && (opts.Unguarded || !isTCP) {
		return nil, "", nil, fmt.Errorf("bind %s: CURVE needs a guarded tcp:// endpoint", endpoint)
	}
	if opts.Unguarded || !isTCP {
		return ctx, endpoint, nil, nil
	}
	if err := registerGuard(); err != nil {
		return nil, "", nil, fmt.Errorf("register guard transport: %w", err)
	}
	cfg := newGuardConfig(opts)
	return context.WithValue(ctx, guardConfigKey{}, cfg), guardScheme + "://" + rest, cfg.peers, nil
}

func newGuardConfig(opts RouterOptions) guardConfig {
	maxPayload := opts.MaxPayload
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	// Slack for the frames around the payload: the 16-byte header, a
	// forwarded identity (at most 255 bytes) and READY/PING commands.
	maxFrame := max(maxPayload, 64<<10) + 1<<10
	cfg := guardConfig{
		maxFrame:         uint64(maxFrame),
		handshakeTimeout: opts.HandshakeTimeout,
		sendBuffer:       opts.SendBuffer,
		onReject:         opts.OnReject,
		peers:            &peerConns{m: make(map[string]*guardConn), last: make(map[string]int64)},
		curve:            opts.Curve,
		onCurveRefusal:   opts.OnCurveRefusal,
	}
	if cfg.handshakeTimeout <= 0 {
		cfg.handshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.sendBuffer <= 0 {
		cfg.sendBuffer = max(DefaultSendBuffer, 2*maxFrame)
	}
	return cfg
}

// guardTransport is the zmq4 transport behind guardScheme: plain TCP whose
// listener hands out guarded connections.
type guardTransport struct{}

func (guardTransport) Dial(ctx context.Context, d zmqtransport.Dialer, addr string) (net.Conn, error) {
	return d.DialContext(ctx, "tcp", addr)
}

func (guardTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	cfg, ok := ctx.Value(guardConfigKey{}).(guardConfig)
	if !ok {
		cfg = newGuardConfig(RouterOptions{})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return newGuardListener(ln, cfg), nil
}

func (guardTransport) Addr(ep string) (string, error) {
	return zmqtransport.New("tcp").Addr(ep)
}

// guardListener accepts TCP connections in its own goroutine and runs each
// handshake in a goroutine per connection. Accept returns only connections
// whose greeting and READY have fully arrived and been checked, so zmq4's
// synchronous handshake never waits on the network and a silent or slow peer
// cannot hold up the peers behind it.
type guardListener struct {
	net.Listener
	cfg   guardConfig
	ready chan *guardConn
	done  chan struct{}
	wg    sync.WaitGroup // the accept loop and the handshakes

	closeOnce sync.Once
	mu        sync.Mutex
	closed    bool
	conns     map[*guardConn]struct{} // every open connection, closed with the listener
}

func newGuardListener(ln net.Listener, cfg guardConfig) *guardListener {
	l := &guardListener{
		Listener: ln,
		cfg:      cfg,
		ready:    make(chan *guardConn),
		done:     make(chan struct{}),
		conns:    make(map[*guardConn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection that completed its handshake bytes.
func (l *guardListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes every connection the listener made,
// including those still in their handshake, and waits for its goroutines.
func (l *guardListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		conns := l.conns
		l.conns = nil
		l.mu.Unlock()
		for c := range conns {
			_ = c.Close()
		}
		l.wg.Wait()
	})
	return err
}

func (l *guardListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off rather than
			// spin, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		conn := raw
		if l.cfg.curve != nil {
			// The CURVE handshake runs on the first read, in the
			// connection's own handshake goroutine, under its deadline.
			conn = newCurveServerConn(raw, l.cfg.curve, l.cfg.maxFrame, l.cfg.peers.connected)
		}
		c := newGuardConn(conn, &l.cfg, l.untrack)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(c)
	}
}

func (l *guardListener) handshake(c *guardConn) {
	defer l.wg.Done()
	if reason, err := c.awaitHandshake(l.cfg.handshakeTimeout); err != nil {
		c.shut(err, reason)
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *guardListener) untrack(c *guardConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// guardConn is one accepted connection as zmq4 sees it. Reads pass through a
// frame scanner that refuses oversized frames before zmq4 reads their size;
// writes go to a bounded buffer that one goroutine drains, so zmq4's ROUTER,
// which writes to all peers under one mutex, never waits on a slow peer, and
// the many small writes zmq4 makes per message become one system call.
type guardConn struct {
	net.Conn // the TCP connection: addresses and deadlines pass through
	cfg      *guardConfig
	untrack  func(*guardConn)
	br       *bufio.Reader // nil once reading failed
	// prefix is what zmq4 reads before br: the greeting and a READY
	// rewritten to carry the identity the guard gave the peer.
	prefix  []byte
	readErr error // the error every Read returns after the first failure

	// seen is when the Router last got a message from this connection
	// (unix nanoseconds; 0 if never); budget is its inbound allowance.
	// Both are kept by the Router's reader goroutine (router.go).
	seen   atomic.Int64
	budget tokenBucket
	// pausedUntil (unix nanoseconds) holds reads back while the connection
	// is over its budget (budget.go); set by the Router, read by Read.
	pausedUntil atomic.Int64

	// in follows the inbound stream. zmq4 reads from one goroutine at a time
	// (the accept loop during Open, then the socket's reader), handed over
	// with a go statement, so in needs no lock.
	in frameScanner

	// identity is the peer's ZeroMQ identity from its READY, as zmq4 will
	// know it; "" when zmq4 makes one up (the peer sent none).
	identity string

	mu       sync.Mutex
	swallow  []byte       // what remains of zmq4's greeting, already sent
	out      frameScanner // follows the outbound stream to flush whole messages
	commands int          // commands zmq4 has written; its READY is the first
	held     []byte       // direct messages waiting for zmq4 to finish a command
	pending  []byte       // bytes not yet taken by the writer
	spare    []byte       // a drained buffer kept for reuse
	inflight int          // bytes the writer is writing now
	err      error        // why the connection closed; nil while open

	wake       chan struct{} // capacity 1: there is something to flush
	done       chan struct{} // closed when the connection is shut
	writerDone chan struct{}
}

func newGuardConn(raw net.Conn, cfg *guardConfig, untrack func(*guardConn)) *guardConn {
	c := &guardConn{
		Conn:       raw,
		cfg:        cfg,
		untrack:    untrack,
		br:         bufio.NewReaderSize(raw, readBufferSize),
		in:         frameScanner{greeting: greetingSize, limit: cfg.maxFrame},
		swallow:    serverGreeting[:],
		pending:    append([]byte(nil), serverGreeting[:]...),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.wake <- struct{}{} // send the greeting now
	cfg.peers.open.Add(1)
	go c.writeLoop()
	return c
}

// awaitHandshake waits, under a deadline, until the peer's greeting and first
// command have arrived, and makes every check zmq4's Open makes on them (and
// a few stricter ones). zmq4 neither closes a connection whose Open failed
// nor recovers from Open's panics, so Open must never fail. It only peeks:
// zmq4 reads the same bytes afterwards.
func (c *guardConn) awaitHandshake(timeout time.Duration) (reason string, err error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	g, err := c.br.Peek(greetingSize + 2)
	if err != nil {
		return c.handshakeFailure(err)
	}
	// zmq4 accepts version 3.0 and above (libzmq 4.3 says 3.1), an
	// as-server byte of 0 or 1 only, and the mechanism it uses itself.
	if g[0] != 0xFF || g[9] != 0x7F || g[10] < 3 || g[32] > 1 || string(bytes.TrimRight(g[12:32], "\x00")) != "NULL" {
		return RejectBadHandshake, guardErr(fmt.Errorf("%w: greeting", errBadHandshake))
	}
	flags := g[greetingSize]
	if flags&flagCommand == 0 || flags&flagMore != 0 {
		return RejectBadHandshake, guardErr(fmt.Errorf("%w: first frame is not a command", errBadHandshake))
	}
	hdrSize := 2
	if flags&flagLong != 0 {
		hdrSize = 9
	}
	h, err := c.br.Peek(greetingSize + hdrSize)
	if err != nil {
		return c.handshakeFailure(err)
	}
	size := uint64(h[greetingSize+1])
	if hdrSize == 9 {
		size = binary.BigEndian.Uint64(h[greetingSize+1:])
	}
	if size > uint64(c.br.Size()-greetingSize-hdrSize) {
		return RejectBadHandshake, guardErr(fmt.Errorf("%w: first command of %d bytes", errBadHandshake, size))
	}
	b, err := c.br.Peek(greetingSize + hdrSize + int(size))
	if err != nil {
		return c.handshakeFailure(err)
	}
	identity, ok := readReady(b[greetingSize+hdrSize:])
	if !ok {
		return RejectBadHandshake, guardErr(fmt.Errorf("%w: READY command", errBadHandshake))
	}
	if identity == "" {
		// zmq4 would make an identity up where the guard cannot see it.
		// Naming the peer here instead (a random UUID, as zmq4 does) keeps
		// every connection findable by identity: for direct sends, for its
		// liveness record, which then goes with the connection, and for
		// its inbound budget. zmq4 reads the READY with the Identity added.
		identity = newIdentity()
		body := append(bytes.Clone(b[greetingSize+hdrSize:]), curveMetadata([2]string{"Identity", identity})...)
		c.prefix = appendCommand(bytes.Clone(b[:greetingSize]), body)
		if _, err := c.br.Discard(len(b)); err != nil {
			return c.handshakeFailure(err)
		}
	}
	// Under mu: a listener closing meanwhile reads it in shut.
	c.mu.Lock()
	c.identity = identity
	c.mu.Unlock()
	_ = c.Conn.SetReadDeadline(time.Time{})
	return "", nil
}

// handshakeFailure sorts a handshake error into a reject reason. A CURVE
// failure is also reported, with the key when the peer proved one.
func (c *guardConn) handshakeFailure(err error) (string, error) {
	if c.cfg.curve == nil {
		return handshakeFailure(err)
	}
	reason, gerr := handshakeFailure(err)
	var ce *CurveError
	if !errors.As(err, &ce) {
		ce = &CurveError{Reason: reason, Err: err}
	}
	c.curveRefused(ce)
	return ce.Reason, gerr
}

func (c *guardConn) curveRefused(err *CurveError) {
	if c.cfg.onCurveRefusal != nil {
		c.cfg.onCurveRefusal(c.RemoteAddr(), err)
	}
}

func handshakeFailure(err error) (string, error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return RejectHandshakeTimeout, guardErr(fmt.Errorf("handshake: %w", err))
	}
	return RejectBadHandshake, guardErr(fmt.Errorf("handshake: %w", err))
}

// readReady reports whether cmd is a READY command that zmq4 can take from a
// peer of its ROUTER, and returns the identity zmq4 will file the peer under
// ("" when the peer sent none and zmq4 makes one up). zmq4 panics in its
// accept goroutine, taking the whole process down, on a truncated property
// and on a Socket-Type it does not know (a missing one counts as ""). zmq4
// title-cases property names into a map, so every name that could land on
// its "Socket-Type" key is checked: non-ASCII names, which title-casing could
// fold onto it, are refused.
func readReady(cmd []byte) (identity string, ok bool) {
	if len(cmd) < 6 || cmd[0] != 5 || string(cmd[1:6]) != "READY" {
		return "", false
	}
	props := cmd[6:]
	typed := false
	for len(props) > 0 {
		nameLen := int(props[0])
		if nameLen == 0 || len(props) < 1+nameLen+4 {
			return "", false
		}
		name := string(props[1 : 1+nameLen])
		valueLen := binary.BigEndian.Uint32(props[1+nameLen:])
		props = props[1+nameLen+4:]
		if uint64(valueLen) > uint64(len(props)) || !validPropertyName(name) {
			return "", false
		}
		value := string(props[:valueLen])
		props = props[valueLen:]
		if name == "Identity" || name == "identity" { // zmq4's key "Identity"; the last one wins there too
			identity = value
		}
		if strings.EqualFold(name, "Socket-Type") {
			switch value {
			case "DEALER", "REQ", "ROUTER": // what zmq4 lets talk to a ROUTER
			default:
				return "", false
			}
			typed = typed || name == "Socket-Type"
		}
	}
	return identity, typed
}

// validPropertyName applies ZMTP 3.0's grammar: letters, digits, "-_.+".
func validPropertyName(name string) bool {
	for _, r := range []byte(name) {
		ok := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.IndexByte("-_.+", r) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// Read passes bytes to zmq4 after the scanner has seen them, so a frame size
// over the limit is refused before zmq4 has all the bytes of it.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.readErr != nil {
		return 0, c.readErr
	}
	var n int
	var err error
	if len(c.prefix) > 0 {
		n = copy(p, c.prefix)
		c.prefix = c.prefix[n:]
	} else {
		c.pause()
		n, err = c.br.Read(p)
	}
	if n > 0 {
		if serr := c.in.scan(p[:n]); serr != nil {
			err := guardErr(serr)
			c.shut(err, RejectFrameTooLarge)
			_ = c.readFailed(err) // hands err back as it is: a guard error already
			return 0, err
		}
	}
	if err != nil {
		err = c.readFailed(err)
	}
	return n, err
}

// pause waits while the Router has the connection paused, or until it
// closes.
func (c *guardConn) pause() {
	until := c.pausedUntil.Load()
	if until == 0 {
		return
	}
	d := time.Until(time.Unix(0, until))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.done:
	}
}

// readFailed ends the inbound side for good: zmq4 reads no more after an
// error, so the read buffers go back to the collector now. zmq4 may keep a
// pointer to a departed connection for a while (its connection lists are
// slices whose spare capacity still holds removed entries), and must then
// hold only a small husk. Every error is handed to zmq4 as a permanent
// net.Error: zmq4 forgets a connection only on io.EOF or such an error, and
// io.ReadFull in zmq4 turns a bare io.EOF in mid-frame into
// io.ErrUnexpectedEOF, which would leave the connection in its lists
// forever.
func (c *guardConn) readFailed(err error) error {
	var ne netError
	if !errors.As(err, &ne) {
		err = guardErr(err)
	}
	c.readErr = err
	c.br, c.prefix = nil, nil
	if cc, ok := c.Conn.(*curveConn); ok {
		cc.releaseReader()
	}
	c.shut(err, "")
	return err
}

// Write queues p and returns at once. If the peer has let the send buffer
// fill, the connection is closed instead: blocking here would block zmq4's
// writes to every other peer.
func (c *guardConn) Write(p []byte) (int, error) {
	n := len(p)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if len(c.swallow) > 0 {
		k := min(len(p), len(c.swallow))
		if !bytes.Equal(p[:k], c.swallow[:k]) {
			c.mu.Unlock()
			err := guardErr(errGreetingDiffer)
			c.shut(err, "")
			return 0, err
		}
		c.swallow, p = c.swallow[k:], p[k:]
		if len(p) == 0 {
			c.mu.Unlock()
			return n, nil
		}
	}
	// An empty buffer takes any write, so a single large message is never
	// mistaken for a stalled peer.
	queued := len(c.pending) + c.inflight
	if queued > 0 && queued+len(p) > c.cfg.sendBuffer {
		c.mu.Unlock()
		err := guardErr(errSlowPeer)
		c.shut(err, RejectSlowPeer)
		return 0, err
	}
	c.pending = append(c.pending, p...)
	_ = c.out.scan(p) // no limit on our own frames
	register, identity := false, c.identity
	if c.out.atMessageEnd() {
		if c.commands == 0 && c.out.frames > 0 {
			// zmq4's READY is out: from now on messages may go straight
			// into this connection.
			c.commands = 1
			register = identity != ""
		}
		if len(c.held) > 0 {
			c.pending = append(c.pending, c.held...)
			c.held = c.held[:0]
		}
	}
	// zmq4 writes each frame as header then body; waking the writer only at
	// the end of a message makes one system call of it.
	flush := c.out.atMessageEnd() || len(c.pending) >= flushThreshold
	c.mu.Unlock()
	if register {
		c.cfg.peers.set(identity, c)
	}
	if flush {
		select {
		case c.wake <- struct{}{}:
		default: // the writer already has a wake-up pending
		}
	}
	return n, nil
}

// sendMessage writes one ZMTP message of frames straight into the send
// buffer, in one piece. zmq4 writes to this connection too (its handshake,
// header and body apart; its ROUTER answers no PINGs, but another version
// might): a message that arrives while zmq4 is midway through a frame waits
// for the end of it.
func (c *guardConn) sendMessage(frames [][]byte) error {
	return c.send(frames, 0)
}

// pingCommand is a ZMTP 3.1 PING command body: the name, a TTL of 0 and no
// context. A TTL would make libzmq close the connection when the next PING
// is late; with 0 the peer keeps whatever timeout it has of its own.
var pingCommand = []byte{4, 'P', 'I', 'N', 'G', 0, 0}

// sendPing writes a PING command frame. Under CURVE the curveConn below
// seals it as a MESSAGE with the command flag, as ZMTP 3.1 wants.
func (c *guardConn) sendPing() error {
	return c.send([][]byte{pingCommand}, flagCommand)
}

// send writes frames as one message, each frame with the extra flags
// (flagCommand for a command, which is a single frame).
func (c *guardConn) send(frames [][]byte, extra byte) error {
	size := 0
	for _, f := range frames {
		size += 9 + len(f)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	queued := len(c.pending) + len(c.held) + c.inflight
	if queued > 0 && queued+size > c.cfg.sendBuffer {
		c.mu.Unlock()
		err := guardErr(errSlowPeer)
		c.shut(err, RejectSlowPeer)
		return err
	}
	dst := &c.pending
	if !c.out.atMessageEnd() {
		dst = &c.held
	}
	for i, f := range frames {
		flags := extra
		if i < len(frames)-1 {
			flags |= flagMore
		}
		if len(f) > 255 {
			*dst = append(*dst, flags|flagLong)
			*dst = binary.BigEndian.AppendUint64(*dst, uint64(len(f)))
		} else {
			*dst = append(*dst, flags, byte(len(f)))
		}
		*dst = append(*dst, f...)
	}
	flush := dst == &c.pending
	c.mu.Unlock()
	if flush {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (c *guardConn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		// Nothing more is written: let the buffers go (see readFailed).
		c.mu.Lock()
		c.pending, c.spare, c.held = nil, nil, nil
		c.mu.Unlock()
	}()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		buf := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.inflight = len(buf)
		c.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		c.inflight = 0
		if cap(buf) <= keepBufferCap {
			c.spare = buf[:0]
		}
		c.mu.Unlock()
		if err != nil {
			// The reader sees the closed socket and zmq4 drops the peer.
			c.shut(err, "")
			return
		}
	}
}

// Close closes the connection and waits for its writer goroutine. Queued
// bytes are dropped. Close may be called more than once.
func (c *guardConn) Close() error {
	c.shut(net.ErrClosed, "")
	<-c.writerDone
	return nil
}

// shut closes the connection once, records why, and reports a rejection. It
// does not wait for the writer, so the writer may call it.
func (c *guardConn) shut(err error, reason string) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	identity := c.identity
	c.mu.Unlock()
	_ = c.Conn.Close()
	c.cfg.peers.open.Add(-1)
	c.untrack(c)
	if identity != "" {
		c.cfg.peers.remove(identity, c)
	}
	c.cfg.reject(reason)
}

// frameScanner follows ZMTP 3.0 framing through a byte stream as it passes,
// keeping only counters and the header being assembled: it never holds
// payload bytes. A frame is a flags byte (0x01 more, 0x02 long, 0x04
// command), a 1-byte size or, when long, an 8-byte big-endian size, then the
// body.
type frameScanner struct {
	greeting int     // greeting bytes still to pass
	hdr      [9]byte // the frame header being assembled
	hdrLen   int
	body     uint64 // body bytes of the current frame still to pass
	more     bool   // the last complete header had the MORE flag
	limit    uint64 // largest frame body allowed; 0 means no limit
	frames   int    // frame headers seen
}

// scan consumes p and returns an error as soon as a header declares a body
// over the limit.
func (s *frameScanner) scan(p []byte) error {
	for len(p) > 0 {
		switch {
		case s.greeting > 0:
			n := min(len(p), s.greeting)
			s.greeting -= n
			p = p[n:]
		case s.body > 0:
			n := min(uint64(len(p)), s.body)
			s.body -= n
			p = p[n:]
		default:
			s.hdr[s.hdrLen] = p[0]
			s.hdrLen++
			p = p[1:]
			need := 2
			if s.hdr[0]&flagLong != 0 {
				need = 9
			}
			if s.hdrLen < need {
				continue
			}
			size := uint64(s.hdr[1])
			if need == 9 {
				size = binary.BigEndian.Uint64(s.hdr[1:9])
			}
			s.hdrLen = 0
			if s.limit > 0 && size > s.limit {
				return fmt.Errorf("%w: %d bytes declared, limit %d", errFrameTooLarge, size, s.limit)
			}
			s.body = size
			s.more = s.hdr[0]&flagMore != 0
			s.frames++
		}
	}
	return nil
}

// atMessageEnd reports whether the stream stands between two messages.
func (s *frameScanner) atMessageEnd() bool {
	return s.greeting == 0 && s.hdrLen == 0 && s.body == 0 && !s.more
}

// newIdentity is a random (version 4) UUID in its text form, the kind of
// identity zmq4 gives a peer that names none.
func newIdentity() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // never fails (crypto/rand)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
