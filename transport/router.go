package transport

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
)

// ErrSendQueueFull is returned by Router.Send when the outbound queue is full:
// the writer is stuck behind a peer that does not read.
var ErrSendQueueFull = errors.New("send queue full")

// ErrClosed is returned by Router.Send after Close.
var ErrClosed = errors.New("router closed")

// Inbound is one multipart message received by the ROUTER: the peer's
// identity and the frames that follow it. Identity must not be modified: zmq4
// shares it between all messages of one connection.
type Inbound struct {
	Identity []byte
	Frames   [][]byte
}

// RouterOptions tunes a Router. Zero values mean the defaults.
type RouterOptions struct {
	// QueueSize bounds the outbound queue (messages). Default 65536.
	QueueSize int
	// Logger receives zmq4's own log lines. Default: discarded.
	Logger *log.Logger

	// The fields below configure the guard (guard.go) that a tcp:// ROUTER
	// listens through.

	// MaxPayload is the largest payload a peer may send; a frame declaring
	// more (plus 1 KiB of slack) closes the connection before zmq4 allocates
	// it. Default DefaultMaxPayload.
	MaxPayload int
	// HandshakeTimeout bounds a new connection's ZMTP greeting and READY.
	// Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// SendBuffer bounds the bytes queued for one peer; a peer that lets it
	// fill is disconnected. Default DefaultSendBuffer, or two frames of
	// MaxPayload if that is more.
	SendBuffer int
	// OnReject is called with a Reject* reason whenever the guard drops a
	// misbehaving connection. It runs on connection goroutines, so it must
	// be quick and safe for concurrent use. Default: nothing.
	OnReject func(reason string)
	// Curve, when set, makes every connection speak CurveZMQ: only keys it
	// authorizes get in, and an identity stays with the key that first
	// claimed it. Needs a guarded tcp:// endpoint. Default nil: plaintext.
	Curve *CurveServer
	// OnCurveRefusal is called for every failed CURVE handshake, with the
	// peer's address and why (the key when it proved one); OnReject is
	// called too. Same rules as OnReject.
	OnCurveRefusal func(remote net.Addr, err *CurveError)
	// PeerRate is the inbound budget of one connection, in messages per
	// second: messages over it are dropped before any actor sees them.
	// Default DefaultPeerRate; negative means no budget. It needs a
	// guarded tcp:// endpoint.
	PeerRate float64
	// PeerBurst is how many messages a connection may send at once.
	// Default DefaultPeerBurst, scaled with PeerRate.
	PeerBurst int
	// PeerOverBudget is how long a connection may keep exceeding its
	// budget (without the bucket refilling to half) before it is
	// disconnected. Default DefaultPeerOverBudget.
	PeerOverBudget time.Duration
	// OnDrop is called with a Drop* reason for every inbound message
	// dropped. It runs on the Router's reader goroutine: keep it quick.
	OnDrop func(reason string)
	// OnOverBudget is called once for a connection closed for exceeding
	// its budget, with its identity, address and the messages dropped;
	// OnReject is called too, with RejectOverBudget. Reader goroutine.
	OnOverBudget func(identity []byte, remote net.Addr, dropped int64)
	// Unguarded listens on zmq4's own tcp transport. Only for benchmarks and
	// comparisons: any peer can then crash or stall the process.
	Unguarded bool
}

// Router owns a ZeroMQ ROUTER socket. One goroutine reads and one writes, so
// the socket is never used from an actor's Receive, where protoactor may
// switch goroutines between batches.
type Router struct {
	sock     zmq4.Socket
	endpoint string
	out      chan outbound
	done     chan struct{}
	wg       sync.WaitGroup

	closeOnce sync.Once
	mu        sync.RWMutex // guards closed against Send racing Close
	closed    bool

	// lastSeen records, per identity, when the reader last got anything
	// from it (ZMTP PINGs included). Liveness is judged here, at the socket,
	// so a backlog in the actors' mailboxes never makes a busy worker look
	// dead.
	lastSeen sync.Map // string(identity) → *atomic.Int64 (unix nanoseconds)
	tracked  atomic.Int64

	// peers finds a guarded connection by identity, for sending without
	// zmq4's ROUTER; nil when the endpoint is not guarded.
	peers *peerConns

	limits       budgetLimits
	onDrop       func(reason string)
	onOverBudget func(identity []byte, remote net.Addr, dropped int64)
}

// maxTracked bounds lastSeen against a peer that reconnects under ever new
// identities; past it, new identities are simply not tracked.
const maxTracked = 1 << 16

type outbound struct {
	identity []byte
	frames   [][]byte
	ping     bool // a ZMTP PING command instead of frames
}

// ListenRouter binds a ROUTER socket on endpoint (tcp://host:port; port 0
// picks a free one). Call Start to begin moving messages.
func ListenRouter(endpoint string, opts RouterOptions) (*Router, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 65536
	}
	if opts.Logger == nil {
		opts.Logger = log.New(discard{}, "", 0)
	}
	ctx, listenAt, peers, err := guardEndpoint(endpoint, opts)
	if err != nil {
		return nil, err
	}
	sock := zmq4.NewRouter(ctx, zmq4.WithLogger(opts.Logger))
	if err := sock.Listen(listenAt); err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("bind %s: %w", endpoint, err)
	}
	r := &Router{
		sock:     sock,
		endpoint: resolvedEndpoint(endpoint, sock.Addr()),
		out:      make(chan outbound, opts.QueueSize),
		done:     make(chan struct{}),
		peers:    peers,
	}
	if peers != nil {
		r.limits, r.onDrop, r.onOverBudget = newBudgetLimits(opts), opts.OnDrop, opts.OnOverBudget
	}
	return r, nil
}

// PeerKey returns the CURVE public key of the peer connected with identity,
// and false when it is not connected over CURVE.
func (r *Router) PeerKey(identity []byte) (CurveKey, bool) {
	if r.peers == nil {
		return CurveKey{}, false
	}
	c := r.peers.get(identity)
	if c == nil {
		return CurveKey{}, false
	}
	cc, ok := c.Conn.(*curveConn)
	if !ok {
		return CurveKey{}, false
	}
	return cc.PeerKey()
}

// Connections is the number of open connections on a guarded endpoint,
// handshaking ones included (0 elsewhere).
func (r *Router) Connections() int {
	if r.peers == nil {
		return 0
	}
	return int(r.peers.open.Load())
}

// Endpoint is the bound endpoint with the real port, for example
// tcp://127.0.0.1:40123 when the configured port was 0.
func (r *Router) Endpoint() string { return r.endpoint }

// Start runs the reader and writer goroutines. deliver is called from the
// reader goroutine for every application message, in arrival order; it must
// not block for long (hand the message to an actor and return).
func (r *Router) Start(deliver func(Inbound)) {
	r.wg.Add(2)
	go r.readLoop(deliver)
	go r.writeLoop()
}

func (r *Router) readLoop(deliver func(Inbound)) {
	defer r.wg.Done()
	for {
		msg, err := r.sock.Recv()
		if err != nil {
			select {
			case <-r.done:
				return
			default:
			}
			// zmq4 only returns errors here when the socket is closing.
			if errors.Is(err, context.Canceled) {
				return
			}
			continue
		}
		if len(msg.Frames) == 0 {
			continue
		}
		if c := r.touch(msg.Frames[0]); c != nil && !r.admit(c, c.seen.Load()) {
			continue
		}
		// libzmq peers with ZMQ_HEARTBEAT_IVL send ZMTP PINGs that zmq4 hands
		// over as command messages; they prove life but are not protocol
		// messages.
		if msg.Type == zmq4.CmdMsg {
			continue
		}
		deliver(Inbound{Identity: msg.Frames[0], Frames: msg.Frames[1:]})
	}
}

// touch records that identity was heard from now. On a guarded endpoint the
// record lives in the connection and goes with it, and touch returns the
// connection; elsewhere it lives in lastSeen.
func (r *Router) touch(identity []byte) *guardConn {
	now := time.Now().UnixNano()
	if r.peers != nil {
		c := r.peers.get(identity)
		if c != nil {
			c.seen.Store(now)
		}
		return c
	}
	if v, ok := r.lastSeen.Load(string(identity)); ok {
		v.(*atomic.Int64).Store(now)
		return nil
	}
	if r.tracked.Load() >= maxTracked {
		return nil
	}
	seen := new(atomic.Int64)
	seen.Store(now)
	if _, loaded := r.lastSeen.LoadOrStore(string(identity), seen); !loaded {
		r.tracked.Add(1)
	}
	return nil
}

// LastSeen is when anything last arrived from identity (zero if never, or
// not tracked). On a guarded endpoint the record lives with the connection,
// and outlives it only for identities given to Track.
func (r *Router) LastSeen(identity []byte) time.Time {
	var t int64
	if r.peers != nil {
		t = r.peers.lastSeen(string(identity))
	} else if v, ok := r.lastSeen.Load(string(identity)); ok {
		t = v.(*atomic.Int64).Load()
	}
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(0, t)
}

// Track keeps identity's liveness record until Forget, whatever else
// happens: beyond the bound on the number of identities recorded, and on a
// guarded endpoint after the connection closes. The Sentinel tracks the
// identities its workers stand for, so that LastSeen alone decides their
// silence, including the last word of a worker that hung up.
func (r *Router) Track(identity []byte) {
	if r.peers != nil {
		r.peers.track(string(identity))
		return
	}
	if _, loaded := r.lastSeen.LoadOrStore(string(identity), new(atomic.Int64)); !loaded {
		r.tracked.Add(1)
	}
}

// Forget drops identity's liveness record once its worker is gone (on a
// guarded endpoint the open connection keeps its own until it closes).
func (r *Router) Forget(identity []byte) {
	if r.peers != nil {
		r.peers.forget(string(identity))
	}
	if _, loaded := r.lastSeen.LoadAndDelete(string(identity)); loaded {
		r.tracked.Add(-1)
	}
}

func (r *Router) writeLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case m := <-r.out:
			if m.ping {
				if r.peers != nil {
					if c := r.peers.get(m.identity); c != nil {
						_ = c.sendPing() // a failed write closes the connection
					}
				}
				continue
			}
			if r.peers != nil {
				if c := r.peers.get(m.identity); c != nil && c.sendMessage(m.frames) == nil {
					continue
				}
			}
			frames := make([][]byte, 0, 1+len(m.frames))
			frames = append(frames, m.identity)
			frames = append(frames, m.frames...)
			// A departed identity is dropped silently by zmq4; liveness is
			// the actors' business (heartbeats), not the writer's.
			_ = r.sock.Send(zmq4.NewMsgFrom(frames...))
		}
	}
}

// Send queues frames for the peer with identity. It never blocks: when the
// queue is full it returns ErrSendQueueFull.
func (r *Router) Send(identity []byte, frames [][]byte) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	select {
	case r.out <- outbound{identity: identity, frames: frames}:
		return nil
	default:
		return ErrSendQueueFull
	}
}

// Ping queues a ZMTP 3.1 PING command for the peer with identity. libzmq
// answers PONG on its own I/O thread, even while the peer's application
// thread is busy, and the PONG, like anything read from the peer, moves
// LastSeen: this keeps peers alive that never speak the HEARTBEAT opcode (the
// original Casparian workers). zmq4 peers do not answer; they hand the PING
// up as a command message, which Dealer.Recv skips. A peer that is gone
// takes no PING and so never looks alive.
//
// Ping needs a guarded endpoint (tcp://): zmq4's ROUTER has no way to send a
// command, so elsewhere (ipc://, Unguarded) it does nothing. Like Send it
// never blocks: a full queue returns ErrSendQueueFull.
func (r *Router) Ping(identity []byte) error {
	if r.peers == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	select {
	case r.out <- outbound{identity: identity, ping: true}:
		return nil
	default:
		return ErrSendQueueFull
	}
}

// Close stops both goroutines and closes the socket. Messages still queued
// are dropped. Close is safe to call more than once.
func (r *Router) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.done)
		err = r.sock.Close() // unblocks Recv
		if errors.Is(err, net.ErrClosed) {
			err = nil // a peer's connection was already gone
		}
		r.wg.Wait()
	})
	return err
}

func resolvedEndpoint(endpoint string, addr net.Addr) string {
	if addr == nil || !strings.HasPrefix(endpoint, "tcp://") {
		return endpoint
	}
	return "tcp://" + addr.String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// UnknownWorkerMessage is the ERR text the Sentinel sends to an identity it
// does not know (for example after a restart); workers re-identify on it.
const UnknownWorkerMessage = "unknown worker, send IDENTIFY"
