package transport

// CurveZMQ (ZeroMQ RFC 26) over ZMTP 3: the handshake commands and the
// MESSAGE boxes, as pure functions over bytes. curveconn.go runs them on a
// connection. The cryptography is NaCl's crypto_box (Curve25519,
// XSalsa20, Poly1305) and crypto_secretbox from golang.org/x/crypto; the
// layouts follow the RFC and libzmq byte for byte:
//
//	HELLO    "\x05HELLO" 1 0, 72 zero bytes, C' (32), nonce (8), box[64 zeros](C'→S) (80)   = 200 bytes
//	WELCOME  "\x07WELCOME", nonce (16), box[S' + cookie](S→C') (144)                      = 168 bytes
//	  cookie = nonce (16), secretbox[C' + s'](cookie key) (80)
//	INITIATE "\x08INITIATE", cookie (96), nonce (8), box[C + vouch nonce + vouch + metadata](C'→S')
//	  vouch  = box[C' + S](C→S') (80)
//	READY    "\x05READY", nonce (8), box[metadata](S'→C')
//	MESSAGE  "\x07MESSAGE", nonce (8), box[flags + body] (C'↔S')
//	ERROR    "\x05ERROR", reason length (1), reason
//
// Capitals are long-term public keys (C client, S server), primes the
// transient keys of one connection; short nonces are big-endian counters
// that must rise in each direction.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
)

// Reasons passed to RouterOptions.OnReject for CURVE refusals, beside the
// guard's own (RejectBadHandshake covers a malformed or undecryptable
// handshake: a wrong server key, a corrupt or replayed command).
const (
	// RejectUnauthorizedKey: the client proved a key that is not in the
	// authorized list.
	RejectUnauthorizedKey = "unauthorized_key"
	// RejectIdentityTaken: the peer claimed a ZeroMQ identity already bound
	// to another key.
	RejectIdentityTaken = "identity_taken"
	// RejectNotCurve: the peer spoke another security mechanism (NULL:
	// a plaintext worker) to a CURVE-only Router.
	RejectNotCurve = "not_curve"
)

const (
	curveHelloSize    = 200
	curveWelcomeSize  = 168
	curveCookieSize   = 96
	curveInitiateMin  = 257 // 9 + cookie + nonce + box of C, vouch nonce and vouch
	curveMessageMin   = 8 + 8 + box.Overhead + 1
	curveMessageExtra = 8 + 8 + box.Overhead + 1 // what a MESSAGE adds to the frame it carries

	// curveErrorUnauthorized is the status libzmq's ZAP handler sends for a
	// refused key; curveErrorIdentityTaken (ours) says the key is fine but
	// the identity belongs to another.
	curveErrorUnauthorized  = "400"
	curveErrorIdentityTaken = "409"

	msgFlagMore    = 0x01 // in a MESSAGE box's flags byte
	msgFlagCommand = 0x02
)

var (
	curveHelloPrefix    = []byte("CurveZMQHELLO---")
	curveWelcomePrefix  = []byte("WELCOME-")
	curveCookiePrefix   = []byte("COOKIE--")
	curveInitiatePrefix = []byte("CurveZMQINITIATE")
	curveVouchPrefix    = []byte("VOUCH---")
	curveReadyPrefix    = []byte("CurveZMQREADY---")
	curveClientMsg      = []byte("CurveZMQMESSAGEC")
	curveServerMsg      = []byte("CurveZMQMESSAGES")
)

// errCurve marks every failure of the CURVE protocol.
var errCurve = errors.New("curve")

func curveErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCurve}, args...)...)
}

// CurveError is why a CURVE handshake failed, with the peer's long-term key
// when it got that far (Key is the zero key otherwise).
type CurveError struct {
	Reason string // a Reject* reason
	Key    CurveKey
	HasKey bool
	Err    error
}

func (e *CurveError) Error() string {
	if e.HasKey {
		return fmt.Sprintf("curve handshake (key %s): %v", e.Key.Fingerprint(), e.Err)
	}
	return "curve handshake: " + e.Err.Error()
}

func (e *CurveError) Unwrap() error { return e.Err }

func shortNonce(prefix []byte, n uint64) *[24]byte {
	var nonce [24]byte
	copy(nonce[:], prefix)
	binary.BigEndian.PutUint64(nonce[16:], n)
	return &nonce
}

func longNonce(prefix []byte, random []byte) *[24]byte {
	var nonce [24]byte
	copy(nonce[:], prefix)
	copy(nonce[8:], random)
	return &nonce
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return b
}

func keyOf(b []byte) *[32]byte {
	var k [32]byte
	copy(k[:], b)
	return &k
}

// curveHello builds a client's HELLO.
func curveHello(server, transientPublic, transientSecret *[32]byte, nonce uint64) []byte {
	out := make([]byte, 0, curveHelloSize)
	out = append(out, "\x05HELLO\x01\x00"...)
	out = append(out, make([]byte, 72)...)
	out = append(out, transientPublic[:]...)
	out = binary.BigEndian.AppendUint64(out, nonce)
	return box.Seal(out, make([]byte, 64), shortNonce(curveHelloPrefix, nonce), server, transientSecret)
}

// curveOpenHello checks a HELLO and returns the client's transient key and
// the HELLO's nonce. It fails for a HELLO sealed to another server key.
func curveOpenHello(cmd []byte, serverSecret *[32]byte) (clientTransient *[32]byte, nonce uint64, err error) {
	if !bytes.HasPrefix(cmd, []byte("\x05HELLO")) {
		return nil, 0, curveErrorf("want HELLO")
	}
	if len(cmd) != curveHelloSize || cmd[6] != 1 || cmd[7] != 0 {
		return nil, 0, curveErrorf("malformed HELLO (%d bytes, version %d.%d)", len(cmd), cmd[min(6, len(cmd)-1)], cmd[min(7, len(cmd)-1)])
	}
	clientTransient = keyOf(cmd[80:112])
	nonce = binary.BigEndian.Uint64(cmd[112:120])
	if _, ok := box.Open(nil, cmd[120:200], shortNonce(curveHelloPrefix, nonce), clientTransient, serverSecret); !ok {
		return nil, 0, curveErrorf("HELLO does not open: sealed to another server key, or corrupt")
	}
	return clientTransient, nonce, nil
}

// curveWelcome builds the server's WELCOME. The cookie holds the client's
// transient key and the server's transient secret under a key only this
// connection knows.
func curveWelcome(clientTransient, serverSecret, transientPublic, transientSecret, cookieKey *[32]byte) []byte {
	cookieNonce := randomBytes(16)
	plain := make([]byte, 0, 64)
	plain = append(plain, clientTransient[:]...)
	plain = append(plain, transientSecret[:]...)
	cookie := append([]byte(nil), cookieNonce...)
	cookie = secretbox.Seal(cookie, plain, longNonce(curveCookiePrefix, cookieNonce), cookieKey)

	welcomeNonce := randomBytes(16)
	body := make([]byte, 0, 32+curveCookieSize)
	body = append(body, transientPublic[:]...)
	body = append(body, cookie...)
	out := make([]byte, 0, curveWelcomeSize)
	out = append(out, "\x07WELCOME"...)
	out = append(out, welcomeNonce...)
	return box.Seal(out, body, longNonce(curveWelcomePrefix, welcomeNonce), clientTransient, serverSecret)
}

// curveOpenWelcome returns the server's transient key and the cookie.
func curveOpenWelcome(cmd []byte, server, transientSecret *[32]byte) (serverTransient *[32]byte, cookie []byte, err error) {
	if !bytes.HasPrefix(cmd, []byte("\x07WELCOME")) {
		return nil, nil, curveErrorf("want WELCOME, got %s", commandName(cmd))
	}
	if len(cmd) != curveWelcomeSize {
		return nil, nil, curveErrorf("malformed WELCOME (%d bytes)", len(cmd))
	}
	plain, ok := box.Open(nil, cmd[24:], longNonce(curveWelcomePrefix, cmd[8:24]), server, transientSecret)
	if !ok {
		return nil, nil, curveErrorf("WELCOME does not open: the server does not hold the expected key, or corrupt")
	}
	return keyOf(plain[:32]), plain[32:], nil
}

// curveInitiate builds the client's INITIATE: its long-term key, vouched
// for by a box from that key to the server's transient key, and its
// metadata.
func curveInitiate(cookie []byte, server, serverTransient, public, secret, transientPublic, transientSecret *[32]byte, nonce uint64, metadata []byte) []byte {
	vouchNonce := randomBytes(16)
	vouchPlain := make([]byte, 0, 64)
	vouchPlain = append(vouchPlain, transientPublic[:]...)
	vouchPlain = append(vouchPlain, server[:]...)
	plain := make([]byte, 0, 128+len(metadata))
	plain = append(plain, public[:]...)
	plain = append(plain, vouchNonce...)
	plain = box.Seal(plain, vouchPlain, longNonce(curveVouchPrefix, vouchNonce), serverTransient, secret)
	plain = append(plain, metadata...)

	out := make([]byte, 0, 9+curveCookieSize+8+len(plain)+box.Overhead)
	out = append(out, "\x08INITIATE"...)
	out = append(out, cookie...)
	out = binary.BigEndian.AppendUint64(out, nonce)
	return box.Seal(out, plain, shortNonce(curveInitiatePrefix, nonce), serverTransient, transientSecret)
}

// curveOpenInitiate checks the cookie, the box and the vouch of an INITIATE
// and returns the client's long-term key, its metadata and the nonce.
func curveOpenInitiate(cmd []byte, cookieKey, clientTransient, transientSecret *[32]byte) (client CurveKey, metadata []byte, nonce uint64, err error) {
	if !bytes.HasPrefix(cmd, []byte("\x08INITIATE")) {
		return client, nil, 0, curveErrorf("want INITIATE, got %s", commandName(cmd))
	}
	if len(cmd) < curveInitiateMin {
		return client, nil, 0, curveErrorf("malformed INITIATE (%d bytes)", len(cmd))
	}
	cookie, ok := secretbox.Open(nil, cmd[25:105], longNonce(curveCookiePrefix, cmd[9:25]), cookieKey)
	if !ok || !bytes.Equal(cookie[:32], clientTransient[:]) || !bytes.Equal(cookie[32:], transientSecret[:]) {
		return client, nil, 0, curveErrorf("INITIATE cookie is not this connection's")
	}
	nonce = binary.BigEndian.Uint64(cmd[105:113])
	plain, ok := box.Open(nil, cmd[113:], shortNonce(curveInitiatePrefix, nonce), clientTransient, transientSecret)
	if !ok {
		return client, nil, 0, curveErrorf("INITIATE does not open")
	}
	copy(client[:], plain[:32])
	vouch, ok := box.Open(nil, plain[48:128], longNonce(curveVouchPrefix, plain[32:48]), (*[32]byte)(&client), transientSecret)
	if !ok {
		return client, nil, 0, curveErrorf("INITIATE vouch does not open: the client does not hold the key it names")
	}
	if !bytes.Equal(vouch[:32], clientTransient[:]) {
		return client, nil, 0, curveErrorf("INITIATE vouch is for another connection")
	}
	return client, plain[128:], nonce, nil
}

// curveReady builds a READY carrying metadata.
func curveReady(shared *[32]byte, nonce uint64, metadata []byte) []byte {
	out := make([]byte, 0, 14+len(metadata)+box.Overhead)
	out = append(out, "\x05READY"...)
	out = binary.BigEndian.AppendUint64(out, nonce)
	return box.SealAfterPrecomputation(out, metadata, shortNonce(curveReadyPrefix, nonce), shared)
}

// curveOpenReady returns the metadata and nonce of a READY.
func curveOpenReady(cmd []byte, shared *[32]byte) (metadata []byte, nonce uint64, err error) {
	if !bytes.HasPrefix(cmd, []byte("\x05READY")) {
		return nil, 0, curveErrorf("want READY, got %s", commandName(cmd))
	}
	if len(cmd) < 14+box.Overhead {
		return nil, 0, curveErrorf("malformed READY (%d bytes)", len(cmd))
	}
	nonce = binary.BigEndian.Uint64(cmd[6:14])
	metadata, ok := box.OpenAfterPrecomputation(nil, cmd[14:], shortNonce(curveReadyPrefix, nonce), shared)
	if !ok {
		return nil, 0, curveErrorf("READY does not open")
	}
	return metadata, nonce, nil
}

// curveErrorCommand builds an ERROR command.
func curveErrorCommand(reason string) []byte {
	reason = reason[:min(len(reason), 255)]
	return append([]byte{5, 'E', 'R', 'R', 'O', 'R', byte(len(reason))}, reason...)
}

// curveErrorReason returns the reason of an ERROR command, and false for
// anything else.
func curveErrorReason(cmd []byte) (string, bool) {
	if !bytes.HasPrefix(cmd, []byte("\x05ERROR")) || len(cmd) < 7 || int(cmd[6]) != len(cmd)-7 {
		return "", false
	}
	return string(cmd[7:]), true
}

// commandName names a command for an error message without echoing a
// peer's bytes at length.
func commandName(cmd []byte) string {
	if len(cmd) == 0 || int(cmd[0]) >= len(cmd) || cmd[0] > 16 {
		return "a malformed command"
	}
	name := cmd[1 : 1+cmd[0]]
	for _, c := range name {
		if c < 'A' || c > 'Z' {
			return "a malformed command"
		}
	}
	return string(name)
}

// curveMetadata encodes ZMTP properties (name length, name, 4-byte value
// length, value), in the order given.
func curveMetadata(props ...[2]string) []byte {
	var out []byte
	for _, p := range props {
		out = append(out, byte(len(p[0])))
		out = append(out, p[0]...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(p[1])))
		out = append(out, p[1]...)
	}
	return out
}

// curveSession is the state of an established CURVE connection: the key
// both sides derived and the two nonce counters.
type curveSession struct {
	shared     [32]byte
	sendPrefix []byte
	recvPrefix []byte
	sendNonce  uint64 // the next nonce to send
	recvNonce  uint64 // the last nonce received; the next must be larger
	peer       CurveKey
	metadata   []byte // the peer's properties
}

// sealMessage appends to dst a MESSAGE command carrying one frame with the
// given flags (msgFlagMore, msgFlagCommand), as a ZMTP frame.
func (s *curveSession) sealMessage(dst []byte, flags byte, body, scratch []byte) ([]byte, []byte) {
	size := 8 + 8 + box.Overhead + 1 + len(body)
	if size > 255 {
		dst = append(dst, flagLong)
		dst = binary.BigEndian.AppendUint64(dst, uint64(size))
	} else {
		dst = append(dst, 0, byte(size))
	}
	nonce := s.sendNonce
	s.sendNonce++
	dst = append(dst, "\x07MESSAGE"...)
	dst = binary.BigEndian.AppendUint64(dst, nonce)
	scratch = append(append(scratch[:0], flags), body...)
	return box.SealAfterPrecomputation(dst, scratch, shortNonce(s.sendPrefix, nonce), &s.shared), scratch
}

// openMessage opens a MESSAGE command into dst (the flags byte, then the
// frame's body). The nonce must be above every nonce seen before, so a
// replayed or reordered MESSAGE fails.
func (s *curveSession) openMessage(dst, cmd []byte) ([]byte, error) {
	if !bytes.HasPrefix(cmd, []byte("\x07MESSAGE")) {
		if reason, ok := curveErrorReason(cmd); ok {
			return nil, curveErrorf("peer sent ERROR %q", reason)
		}
		return nil, curveErrorf("want MESSAGE, got %s", commandName(cmd))
	}
	if len(cmd) < curveMessageMin {
		return nil, curveErrorf("malformed MESSAGE (%d bytes)", len(cmd))
	}
	nonce := binary.BigEndian.Uint64(cmd[8:16])
	if nonce <= s.recvNonce {
		return nil, curveErrorf("MESSAGE nonce %d not above %d: replayed or reordered", nonce, s.recvNonce)
	}
	out, ok := box.OpenAfterPrecomputation(dst, cmd[16:], shortNonce(s.recvPrefix, nonce), &s.shared)
	if !ok {
		return nil, curveErrorf("MESSAGE does not open")
	}
	s.recvNonce = nonce
	return out, nil
}
