package transport

// curveConn runs CurveZMQ on a TCP connection while zmq4, above it, speaks
// NULL security. zmq4's Security interface cannot carry CURVE: it writes
// each frame's header with the plaintext size before encrypting, while CURVE
// sends every frame as a MESSAGE command of another size. So the connection
// does it underneath: it performs the CURVE handshake on the wire, shows
// zmq4 a NULL greeting and a READY carrying the peer's decrypted metadata,
// swallows zmq4's own greeting and READY, and turns every later frame zmq4
// writes into a MESSAGE (and every MESSAGE read into a plain frame).

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	zmqtransport "github.com/go-zeromq/zmq4/transport"
	"golang.org/x/crypto/nacl/box"
)

// CurveServer holds a Router's CURVE identity and who may connect. Create
// it with NewCurveServer; SetAuthorized swaps the list while running.
type CurveServer struct {
	secret     [32]byte
	public     CurveKey
	authorized atomic.Pointer[AuthorizedKeys]

	mu    sync.Mutex
	bound map[string]CurveKey // ZeroMQ identity → the key that first claimed it
}

// maxBoundIdentities bounds the identity bindings; past it, bindings of
// identities with no open connection are dropped.
const maxBoundIdentities = 1 << 16

// NewCurveServer makes the server side of CurveZMQ with a long-term secret
// key and the client keys allowed in.
func NewCurveServer(secret CurveKey, authorized *AuthorizedKeys) *CurveServer {
	s := &CurveServer{secret: secret, public: CurvePublicKey(secret), bound: make(map[string]CurveKey)}
	s.authorized.Store(authorized)
	return s
}

// PublicKey is the key clients must be given (--sentinel-key).
func (s *CurveServer) PublicKey() CurveKey { return s.public }

// Authorized is the list in force.
func (s *CurveServer) Authorized() *AuthorizedKeys { return s.authorized.Load() }

// SetAuthorized replaces the authorized keys for new connections (on
// SIGHUP). Identities bound to a key that is no longer listed are released.
// Open connections are kept: a removed key cannot reconnect.
func (s *CurveServer) SetAuthorized(a *AuthorizedKeys) {
	s.authorized.Store(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, k := range s.bound {
		if _, ok := a.Contains(k); !ok {
			delete(s.bound, id)
		}
	}
}

// bind ties identity to key for the life of the process and reports
// whether identity was free or already the key's. A worker keeps its
// identity across reconnects; another key can never take it over, not even
// while the worker is away and its jobs wait for it.
func (s *CurveServer) bind(identity string, key CurveKey, connected func(string) bool) bool {
	if identity == "" {
		return true // zmq4 makes up a fresh identity
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.bound[identity]; ok {
		return k == key
	}
	if len(s.bound) >= maxBoundIdentities {
		for id := range s.bound {
			if !connected(id) {
				delete(s.bound, id)
			}
		}
		if len(s.bound) >= maxBoundIdentities {
			return false
		}
	}
	s.bound[identity] = key
	return true
}

// CurveClient is what a DEALER needs to connect over CURVE: the Sentinel's
// public key and its own key pair.
type CurveClient struct {
	ServerKey CurveKey
	Public    CurveKey
	Secret    CurveKey
}

// NewCurveClient derives the public key from the secret one.
func NewCurveClient(serverKey, secret CurveKey) *CurveClient {
	return &CurveClient{ServerKey: serverKey, Public: CurvePublicKey(secret), Secret: secret}
}

// curveGreeting is a ZMTP 3.0 greeting for the CURVE mechanism.
func curveGreeting(asServer bool) []byte {
	g := make([]byte, greetingSize)
	g[0], g[9], g[10] = 0xFF, 0x7F, 3
	copy(g[12:32], "CURVE")
	if asServer {
		g[32] = 1
	}
	return g
}

// checkCurveGreeting checks a peer's greeting: ZMTP 3 and CURVE.
func checkCurveGreeting(g []byte) error {
	if g[0] != 0xFF || g[9]&1 != 1 || g[10] < 3 {
		return curveErrorf("not a ZMTP 3 greeting")
	}
	mech := string(trimZeros(g[12:32]))
	if mech != "CURVE" {
		return &CurveError{Reason: RejectNotCurve, Err: curveErrorf("peer speaks %q security, CURVE is required", printable(mech))}
	}
	// The as-server flag is not checked against the role: libzmq sends 0
	// on both sides.
	if g[32] > 1 {
		return curveErrorf("greeting has an as-server flag of %d", g[32])
	}
	return nil
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

func printable(s string) string {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7E {
			return "?"
		}
	}
	return s
}

// nullGreeting is the greeting zmq4 expects from a NULL peer.
func nullGreeting() []byte {
	g := make([]byte, greetingSize)
	g[0], g[9], g[10] = 0xFF, 0x7F, 3
	copy(g[12:32], "NULL")
	return g
}

// readCommand reads one ZMTP command frame of at most limit bytes.
func readCommand(r *bufio.Reader, limit uint64) ([]byte, error) {
	flags, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if flags&^(flagLong) != flagCommand {
		return nil, curveErrorf("handshake frame is not a command (flags %#x)", flags)
	}
	size, err := readFrameSize(r, flags)
	if err != nil {
		return nil, err
	}
	if size > limit {
		return nil, curveErrorf("handshake command of %d bytes", size)
	}
	body := make([]byte, size)
	_, err = io.ReadFull(r, body)
	return body, err
}

func readFrameSize(r *bufio.Reader, flags byte) (uint64, error) {
	if flags&flagLong == 0 {
		b, err := r.ReadByte()
		return uint64(b), err
	}
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(h[:]), nil
}

// appendCommand frames body as a ZMTP command.
func appendCommand(dst, body []byte) []byte {
	if len(body) > 255 {
		dst = append(dst, flagCommand|flagLong)
		dst = binary.BigEndian.AppendUint64(dst, uint64(len(body)))
	} else {
		dst = append(dst, flagCommand, byte(len(body)))
	}
	return append(dst, body...)
}

// handshakeLimit bounds a handshake command; INITIATE with its metadata is
// a few hundred bytes.
const handshakeLimit = readBufferSize

// serverHandshake runs the server side of the handshake on rw (reading
// through br) and returns the session. An unauthorized key, or an identity
// bound to another key, is refused with an ERROR command, as libzmq's ZAP
// does, before READY: the client learns it was refused. connected reports
// whether an identity has an open connection (for bind).
func (s *CurveServer) serverHandshake(rw io.Writer, br *bufio.Reader, connected func(string) bool) (*curveSession, error) {
	// The greeting goes in two steps, as libzmq sends it: signature and
	// major version, then the rest once the peer's have arrived. A
	// plaintext libzmq peer then sends its whole greeting, mechanism
	// included, before it sees ours and hangs up, so the refusal can say
	// what it spoke.
	greeting := curveGreeting(true)
	if _, err := rw.Write(greeting[:11]); err != nil {
		return nil, err
	}
	g := make([]byte, greetingSize)
	if _, err := io.ReadFull(br, g[:11]); err != nil {
		return nil, err
	}
	if g[0] != 0xFF || g[9]&1 != 1 || g[10] < 3 {
		return nil, curveErrorf("not a ZMTP 3 greeting")
	}
	if _, err := rw.Write(greeting[11:]); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(br, g[11:]); err != nil {
		return nil, err
	}
	if err := checkCurveGreeting(g); err != nil {
		return nil, err
	}
	cmd, err := readCommand(br, handshakeLimit)
	if err != nil {
		return nil, err
	}
	clientTransient, helloNonce, err := curveOpenHello(cmd, &s.secret)
	if err != nil {
		return nil, err
	}
	tPub, tSec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	cookieKey := keyOf(randomBytes(32))
	if _, err := rw.Write(appendCommand(nil, curveWelcome(clientTransient, &s.secret, tPub, tSec, cookieKey))); err != nil {
		return nil, err
	}
	if cmd, err = readCommand(br, handshakeLimit); err != nil {
		return nil, err
	}
	client, metadata, initNonce, err := curveOpenInitiate(cmd, cookieKey, clientTransient, tSec)
	if err != nil {
		return nil, err
	}
	if initNonce <= helloNonce {
		return nil, curveErrorf("INITIATE nonce %d not above HELLO's %d", initNonce, helloNonce)
	}
	if _, ok := s.Authorized().Contains(client); !ok {
		_, _ = rw.Write(appendCommand(nil, curveErrorCommand(curveErrorUnauthorized)))
		return nil, &CurveError{Reason: RejectUnauthorizedKey, Key: client, HasKey: true,
			Err: curveErrorf("key %s is not an authorized worker key", client.Fingerprint())}
	}
	identity, ok := readReady(append([]byte("\x05READY"), metadata...))
	if !ok {
		return nil, &CurveError{Reason: RejectBadHandshake, Key: client, HasKey: true,
			Err: curveErrorf("INITIATE metadata is malformed or names a socket type a ROUTER cannot talk to")}
	}
	if !s.bind(identity, client, connected) {
		_, _ = rw.Write(appendCommand(nil, curveErrorCommand(curveErrorIdentityTaken)))
		return nil, &CurveError{Reason: RejectIdentityTaken, Key: client, HasKey: true,
			Err: curveErrorf("identity %q is bound to another key", printable(identity))}
	}
	sess := &curveSession{sendPrefix: curveServerMsg, recvPrefix: curveClientMsg, sendNonce: 1,
		recvNonce: initNonce, peer: client, metadata: metadata}
	box.Precompute(&sess.shared, clientTransient, tSec)
	ready := curveReady(&sess.shared, sess.sendNonce, curveMetadata([2]string{"Socket-Type", "ROUTER"}))
	sess.sendNonce++
	if _, err := rw.Write(appendCommand(nil, ready)); err != nil {
		return nil, err
	}
	return sess, nil
}

// clientHandshake runs the client side on rw; metadata is what the server
// gets (Socket-Type and Identity).
func (c *CurveClient) clientHandshake(rw io.Writer, br *bufio.Reader, metadata []byte) (*curveSession, error) {
	if _, err := rw.Write(curveGreeting(false)); err != nil {
		return nil, err
	}
	g := make([]byte, greetingSize)
	if _, err := io.ReadFull(br, g); err != nil {
		return nil, fmt.Errorf("curve: read the server's greeting: %w", err)
	}
	if err := checkCurveGreeting(g); err != nil {
		return nil, err
	}
	tPub, tSec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	server := (*[32]byte)(&c.ServerKey)
	if _, err := rw.Write(appendCommand(nil, curveHello(server, tPub, tSec, 1))); err != nil {
		return nil, err
	}
	cmd, err := readCommand(br, handshakeLimit)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, curveErrorf("the server closed the connection after HELLO: is --sentinel-key its public key?")
		}
		return nil, err
	}
	serverTransient, cookie, err := curveOpenWelcome(cmd, server, tSec)
	if err != nil {
		return nil, err
	}
	initiate := curveInitiate(cookie, server, serverTransient, (*[32]byte)(&c.Public), (*[32]byte)(&c.Secret), tPub, tSec, 2, metadata)
	if _, err := rw.Write(appendCommand(nil, initiate)); err != nil {
		return nil, err
	}
	if cmd, err = readCommand(br, handshakeLimit); err != nil {
		return nil, err
	}
	if reason, ok := curveErrorReason(cmd); ok {
		if reason == curveErrorIdentityTaken {
			return nil, curveErrorf("the server refused this client (ERROR %q): its identity is bound to another key", reason)
		}
		return nil, curveErrorf("the server refused this client's key %s (ERROR %q): is it in its --authorized-workers?", c.Public.Fingerprint(), reason)
	}
	sess := &curveSession{sendPrefix: curveClientMsg, recvPrefix: curveServerMsg, sendNonce: 3, peer: c.ServerKey}
	box.Precompute(&sess.shared, serverTransient, tSec)
	props, nonce, err := curveOpenReady(cmd, &sess.shared)
	if err != nil {
		return nil, err
	}
	sess.recvNonce, sess.metadata = nonce, props
	return sess, nil
}

// curveConn is a handshaken (or, on the server, about to handshake) CURVE
// connection that zmq4 sees as NULL. Reads come from one goroutine at a
// time and writes from another; the two share nothing after the handshake
// but the session's key, which neither changes.
type curveConn struct {
	net.Conn // the TCP connection: addresses, deadlines, Close
	br       *bufio.Reader
	maxFrame uint64 // largest plaintext frame body a peer may send

	// server is set on the accepting side, whose handshake runs on the
	// first Read (under the deadline the guard sets).
	server    *CurveServer
	connected func(identity string) bool
	sess      *curveSession
	hsErr     error
	released  bool // releaseReader ran: Read fails

	// Inbound, reader goroutine only.
	in    []byte // plaintext for zmq4 not yet read
	inBuf []byte // reused backing array of in
	raw   []byte // reused buffer for one MESSAGE

	// Outbound.
	wmu      sync.Mutex
	skip     int  // bytes of zmq4's greeting still to swallow
	skipCmd  bool // zmq4's READY still to swallow
	pending  []byte
	out      []byte
	scratch  []byte
	writeErr error
}

func newCurveServerConn(raw net.Conn, s *CurveServer, maxFrame uint64, connected func(string) bool) *curveConn {
	return &curveConn{Conn: raw, br: bufio.NewReaderSize(raw, readBufferSize), maxFrame: maxFrame,
		server: s, connected: connected, skip: greetingSize, skipCmd: true}
}

// dialCurve runs the client handshake on raw and returns the connection
// zmq4 will use.
func dialCurve(raw net.Conn, c *CurveClient, metadata []byte, maxFrame uint64) (*curveConn, error) {
	cc := &curveConn{Conn: raw, br: bufio.NewReaderSize(raw, readBufferSize), maxFrame: maxFrame,
		skip: greetingSize, skipCmd: true}
	sess, err := c.clientHandshake(raw, cc.br, metadata)
	if err != nil {
		return nil, err
	}
	cc.sess = sess
	cc.in = cc.nullHandshake(sess.metadata)
	return cc, nil
}

// nullHandshake is what zmq4 reads first: a NULL greeting and a READY
// carrying the peer's metadata.
func (c *curveConn) nullHandshake(metadata []byte) []byte {
	out := nullGreeting()
	return appendCommand(out, append([]byte("\x05READY"), metadata...))
}

// PeerKey is the peer's long-term public key, once the handshake is done.
func (c *curveConn) PeerKey() (CurveKey, bool) {
	if c.sess == nil {
		return CurveKey{}, false
	}
	return c.sess.peer, true
}

// Read hands zmq4 plaintext ZMTP: first the NULL handshake, then one frame
// per MESSAGE.
func (c *curveConn) Read(p []byte) (int, error) {
	if c.released {
		return 0, net.ErrClosed
	}
	if c.sess == nil {
		if c.hsErr != nil {
			return 0, c.hsErr
		}
		sess, err := c.server.serverHandshake(c.Conn, c.br, c.connected)
		if err != nil {
			c.hsErr = err
			return 0, err
		}
		c.sess = sess
		c.in = c.nullHandshake(sess.metadata)
	}
	for len(c.in) == 0 {
		if err := c.readMessage(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

// releaseReader drops the inbound buffers once the reader is done with the
// connection (guardConn.readFailed).
func (c *curveConn) releaseReader() {
	c.br, c.in, c.inBuf, c.raw = nil, nil, nil, nil
	c.released = true
}

// Close closes the connection and drops the outbound buffers. The socket
// closes first: a Write blocked on a peer that does not read holds wmu.
func (c *curveConn) Close() error {
	err := c.Conn.Close()
	c.wmu.Lock()
	if c.writeErr == nil {
		c.writeErr = net.ErrClosed
	}
	c.pending, c.out, c.scratch = nil, nil, nil
	c.wmu.Unlock()
	return err
}

// readMessage reads one MESSAGE from the wire into c.in as a ZMTP frame.
func (c *curveConn) readMessage() error {
	// A big message's buffers go back to the garbage collector, so that
	// idle peers hold little memory.
	if cap(c.raw) > keepBufferCap {
		c.raw, c.inBuf = nil, nil
	}
	flags, err := c.br.ReadByte()
	if err != nil {
		return err
	}
	if flags&^(flagLong|flagCommand) != 0 {
		return curveErrorf("MESSAGE frame with flags %#x", flags)
	}
	size, err := readFrameSize(c.br, flags)
	if err != nil {
		return err
	}
	if size > c.maxFrame+curveMessageExtra {
		return fmt.Errorf("%w: %d bytes declared, limit %d", errFrameTooLarge, size, c.maxFrame+curveMessageExtra)
	}
	if uint64(cap(c.raw)) < size {
		c.raw = make([]byte, size)
	}
	c.raw = c.raw[:size]
	if _, err := io.ReadFull(c.br, c.raw); err != nil {
		return err
	}
	// The frame header goes in front of the plaintext: open into the
	// buffer 9 bytes in, then write the header just before the body.
	buf := c.inBuf[:0]
	if cap(buf) < 9+int(size) {
		buf = make([]byte, 0, 9+int(size))
	}
	plain, err := c.sess.openMessage(buf[:9], c.raw)
	if err != nil {
		return err
	}
	c.inBuf = plain[:0]
	msgFlags, body := plain[9], plain[10:]
	var frameFlags byte
	if msgFlags&msgFlagMore != 0 {
		frameFlags |= flagMore
	}
	if msgFlags&msgFlagCommand != 0 {
		frameFlags |= flagCommand
	}
	if len(body) > 255 {
		plain[1] = frameFlags | flagLong
		binary.BigEndian.PutUint64(plain[2:10], uint64(len(body)))
		c.in = plain[1:]
	} else {
		plain[8], plain[9] = frameFlags, byte(len(body))
		c.in = plain[8:]
	}
	return nil
}

// Write takes zmq4's plaintext stream and sends each frame as a MESSAGE,
// all the MESSAGEs of one call in one write.
func (c *curveConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	n := len(p)
	if c.skip > 0 {
		k := min(c.skip, len(p))
		c.skip -= k
		p = p[k:]
	}
	data := p
	if len(c.pending) > 0 {
		c.pending = append(c.pending, p...)
		data = c.pending
	}
	c.out = c.out[:0]
	for len(data) >= 2 {
		flags := data[0]
		hdr, size := 2, uint64(data[1])
		if flags&flagLong != 0 {
			if len(data) < 9 {
				break
			}
			hdr, size = 9, binary.BigEndian.Uint64(data[1:9])
		}
		if uint64(len(data)-hdr) < size {
			break
		}
		body := data[hdr : hdr+int(size)]
		data = data[hdr+int(size):]
		if c.skipCmd && flags&flagCommand != 0 {
			c.skipCmd = false // zmq4's READY: the handshake already told the peer
			continue
		}
		var msgFlags byte
		if flags&flagMore != 0 {
			msgFlags |= msgFlagMore
		}
		if flags&flagCommand != 0 {
			msgFlags |= msgFlagCommand
		}
		c.out, c.scratch = c.sess.sealMessage(c.out, msgFlags, body, c.scratch)
	}
	// Keep an incomplete frame for the next call. data is a suffix of
	// pending or of p; append moves it to the front of pending either way.
	c.pending = append(c.pending[:0], data...)
	if len(c.out) > 0 {
		if _, err := c.Conn.Write(c.out); err != nil {
			c.writeErr = err
			return 0, err
		}
		if cap(c.out) > keepBufferCap {
			c.out = nil
		}
	}
	return n, nil
}

// curveScheme is the zmq4 transport a CURVE DEALER dials through.
const curveScheme = "casparian-curve"

// curveDialKey carries a DEALER's CURVE settings from DialDealer to
// curveTransport.Dial through the socket's context: zmq4 registers a
// transport once per process, and each socket has its own keys.
type curveDialKey struct{}

// curveDial is what one DEALER's dials need.
type curveDial struct {
	client   *CurveClient
	metadata []byte
	timeout  time.Duration
	maxFrame uint64                // largest frame the server may send, checked before decrypting
	lastErr  atomic.Pointer[error] // the last failed handshake, for DialDealer's error
}

var registerCurve = sync.OnceValue(func() error {
	return zmq4.RegisterTransport(curveScheme, curveTransport{})
})

// curveTransport dials TCP and runs the CURVE handshake before zmq4 sees
// the connection, so a refused handshake is a failed dial that zmq4 retries
// like any other.
type curveTransport struct{}

func (curveTransport) Dial(ctx context.Context, d zmqtransport.Dialer, addr string) (net.Conn, error) {
	cfg, ok := ctx.Value(curveDialKey{}).(*curveDial)
	if !ok {
		return nil, errors.New("curve transport: dialed without keys")
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(cfg.timeout))
	conn, err := dialCurve(raw, cfg.client, cfg.metadata, cfg.maxFrame)
	if err != nil {
		_ = raw.Close()
		cfg.lastErr.Store(&err)
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	if err := ctx.Err(); err != nil {
		// The socket closed while the handshake ran: zmq4 would still
		// adopt the connection and never close it.
		_ = raw.Close()
		return nil, err
	}
	cfg.lastErr.Store(nil)
	return conn, nil
}

func (curveTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	return nil, errors.New("curve transport: a Router listens through the guard")
}

func (curveTransport) Addr(ep string) (string, error) {
	return zmqtransport.New("tcp").Addr(ep)
}
