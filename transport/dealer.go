package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"github.com/go-zeromq/zmq4"
)

// ErrReconnected is returned by Dealer.Recv once after the connection to the
// Sentinel was lost and re-established: the peer may have restarted and
// forgotten us, so the caller should IDENTIFY again.
var ErrReconnected = errors.New("reconnected")

// Dealer is a worker-side DEALER socket speaking protocol v4. Send and Recv
// may be used from two different goroutines; each must stay on its own one.
type Dealer struct {
	sock       zmq4.Socket
	maxPayload int
}

// DealerOptions tunes a Dealer. Zero values mean the defaults.
type DealerOptions struct {
	// Identity is the ZMQ identity; empty lets the ROUTER choose one.
	Identity []byte
	// Timeout bounds a send; without it a reconnect inside a send can freeze the socket for minutes. Default 5s.
	Timeout time.Duration
	// MaxPayload bounds accepted payloads. Default DefaultMaxPayload.
	MaxPayload int
	// Curve, when set, connects over CurveZMQ with these keys; tcp://
	// endpoints only. Default nil: plaintext (NULL security).
	Curve *CurveClient
	// HandshakeTimeout bounds one CURVE handshake. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// DialDealer connects to endpoint and keeps reconnecting forever while the
// Sentinel is away (zmq4 needs both automatic reconnect and unlimited dial
// retries for that). The first dial blocks until the Sentinel is reachable or
// ctx ends; ctx does not bound the socket's life.
func DialDealer(ctx context.Context, endpoint string, opts DealerOptions) (*Dealer, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	zopts := []zmq4.Option{
		zmq4.WithAutomaticReconnect(true),
		zmq4.WithDialerMaxRetries(-1),
		zmq4.WithDialerRetry(250 * time.Millisecond),
		zmq4.WithTimeout(opts.Timeout),
		zmq4.WithLogger(log.New(io.Discard, "", 0)),
	}
	if len(opts.Identity) > 0 {
		zopts = append(zopts, zmq4.WithID(zmq4.SocketIdentity(opts.Identity)))
	}
	// The socket lives until Close, not until ctx ends: ctx only bounds
	// the first dial, which with unlimited retries waits for the Sentinel.
	sockCtx, dialAt := context.Background(), endpoint
	maxPayload := opts.MaxPayload
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	// As the guard bounds what a worker sends, plus the same slack.
	maxFrame := uint64(max(maxPayload, 64<<10) + 1<<10)
	var curve *curveDial
	if opts.Curve != nil {
		rest, ok := strings.CutPrefix(endpoint, "tcp://")
		if !ok {
			return nil, fmt.Errorf("dial %s: CURVE needs a tcp:// endpoint", endpoint)
		}
		if err := registerCurve(); err != nil {
			return nil, fmt.Errorf("register curve transport: %w", err)
		}
		if opts.HandshakeTimeout <= 0 {
			opts.HandshakeTimeout = DefaultHandshakeTimeout
		}
		props := [][2]string{{"Socket-Type", "DEALER"}}
		if len(opts.Identity) > 0 {
			props = append(props, [2]string{"Identity", string(opts.Identity)})
		}
		curve = &curveDial{client: opts.Curve, metadata: curveMetadata(props...), timeout: opts.HandshakeTimeout, maxFrame: maxFrame}
		sockCtx, dialAt = context.WithValue(sockCtx, curveDialKey{}, curve), curveScheme+"://"+rest
	}
	if rest, ok := strings.CutPrefix(endpoint, "tcp://"); ok && opts.Curve == nil {
		if err := registerPlain(); err != nil {
			return nil, fmt.Errorf("register plain transport: %w", err)
		}
		sockCtx, dialAt = context.WithValue(sockCtx, plainMaxFrameKey{}, maxFrame), plainScheme+"://"+rest
	}
	sock := zmq4.NewDealer(sockCtx, zopts...)
	dialed := make(chan error, 1)
	go func() { dialed <- sock.Dial(dialAt) }()
	select {
	case err := <-dialed:
		if err != nil {
			_ = sock.Close()
			return nil, fmt.Errorf("dial %s: %w", endpoint, err)
		}
	case <-ctx.Done():
		// zmq4's handshake has no deadline and Close does not interrupt
		// it, so the dialing goroutine is left to finish on its own rather
		// than hanging the caller on a peer that never answers.
		_ = sock.Close()
		if curve != nil {
			if last := curve.lastErr.Load(); last != nil {
				return nil, fmt.Errorf("dial %s: %w (last attempt: %v)", endpoint, ctx.Err(), *last)
			}
		}
		return nil, fmt.Errorf("dial %s: %w", endpoint, ctx.Err())
	}
	return &Dealer{sock: sock, maxPayload: opts.MaxPayload}, nil
}

// Send encodes v as the payload of op and sends it as one multipart message.
func (d *Dealer) Send(op Opcode, jobID uint64, v any) error {
	frames, err := Encode(op, jobID, v)
	if err != nil {
		return err
	}
	return d.SendFrames(frames)
}

// SendFrames sends raw frames; tests use it to send malformed messages.
func (d *Dealer) SendFrames(frames [][]byte) error {
	return d.sock.SendMulti(zmq4.NewMsgFrom(frames...))
}

// Recv waits for the next message. It returns ErrReconnected once after a
// reconnect, and context.Canceled after Close.
func (d *Dealer) Recv() (Message, error) {
	for {
		msg, err := d.sock.Recv()
		if errors.Is(err, io.EOF) {
			return Message{}, ErrReconnected
		}
		if err != nil {
			return Message{}, err
		}
		if msg.Type == zmq4.CmdMsg {
			continue
		}
		return DecodeFrames(msg.Frames, d.maxPayload)
	}
}

// Close closes the socket; a pending Recv returns promptly.
func (d *Dealer) Close() error { return d.sock.Close() }
