// Package transport speaks Casparian wire protocol v4 (docs/PROTOCOL.md).
//
// This file is the codec: pure functions over bytes that pack and unpack the
// 16-byte header, check frames, and map opcodes to their JSON payloads. It
// never touches a socket, so every rule of the protocol can be tested and
// fuzzed without ZeroMQ.
package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ProtocolVersion is the only header version this codec reads or writes.
// Peers speaking anything else are rejected rather than guessed at.
const ProtocolVersion = 4

// HeaderSize is the length of the packed header (Python struct "!BBHQI").
const HeaderSize = 16

// DefaultMaxPayload is the payload limit used when a caller passes no limit.
// It bounds the memory one message can make the decoder spend; real payloads
// (plugin source plus a lockfile) are far smaller.
const DefaultMaxPayload = 16 << 20

// Opcode names the kind of a message (docs/PROTOCOL.md §3).
type Opcode uint8

// The opcodes of protocol v4. The numbers are the wire contract and must
// never be renumbered.
const (
	OpUnknown    Opcode = 0
	OpIdentify   Opcode = 1
	OpDispatch   Opcode = 2
	OpAbort      Opcode = 3
	OpHeartbeat  Opcode = 4
	OpConclude   Opcode = 5
	OpErr        Opcode = 6
	OpReload     Opcode = 7
	OpPrepareEnv Opcode = 8
	OpEnvReady   Opcode = 9
	OpDeploy     Opcode = 10
	OpAck        Opcode = 11
)

var opcodeNames = [...]string{
	OpUnknown:    "UNKNOWN",
	OpIdentify:   "IDENTIFY",
	OpDispatch:   "DISPATCH",
	OpAbort:      "ABORT",
	OpHeartbeat:  "HEARTBEAT",
	OpConclude:   "CONCLUDE",
	OpErr:        "ERR",
	OpReload:     "RELOAD",
	OpPrepareEnv: "PREPARE_ENV",
	OpEnvReady:   "ENV_READY",
	OpDeploy:     "DEPLOY",
	OpAck:        "ACK",
}

// String returns the protocol name of o, as used in logs and metric labels.
// Out-of-range values print their number so a bad frame can still be logged.
func (o Opcode) String() string {
	if int(o) < len(opcodeNames) {
		return opcodeNames[o]
	}
	return "OPCODE(" + strconv.Itoa(int(o)) + ")"
}

// Valid reports whether o is an opcode a peer may act on. UNKNOWN (0) is a
// placeholder in the protocol and is never valid on the wire.
func (o Opcode) Valid() bool {
	return o >= OpIdentify && o <= OpAck
}

// Sentinel errors returned (wrapped with detail) by the decoder, so callers
// can tell kinds of bad input apart with errors.Is and count them.
var (
	// ErrTooFewFrames means the message lacked the header or payload frame.
	ErrTooFewFrames = errors.New("too few frames")
	// ErrShortHeader means the header frame was shorter than HeaderSize.
	ErrShortHeader = errors.New("short header")
	// ErrVersion means the header carried a version other than ProtocolVersion.
	ErrVersion = errors.New("bad protocol version")
	// ErrOpcode means the opcode was UNKNOWN or out of range.
	ErrOpcode = errors.New("bad opcode")
	// ErrLengthMismatch means payload_len disagreed with the payload frame.
	ErrLengthMismatch = errors.New("payload length mismatch")
	// ErrTooLarge means the payload exceeded the configured limit.
	ErrTooLarge = errors.New("payload too large")
	// ErrPayload means the JSON payload was malformed or failed validation.
	ErrPayload = errors.New("bad payload")
)

// ErrorKind returns a short snake_case label for err, for use as a metric
// label: one of "too_few_frames", "short_header", "bad_version",
// "bad_opcode", "length_mismatch", "too_large", "bad_payload" or "other".
// A nil error returns "".
func ErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTooFewFrames):
		return "too_few_frames"
	case errors.Is(err, ErrShortHeader):
		return "short_header"
	case errors.Is(err, ErrVersion):
		return "bad_version"
	case errors.Is(err, ErrOpcode):
		return "bad_opcode"
	case errors.Is(err, ErrLengthMismatch):
		return "length_mismatch"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrPayload):
		return "bad_payload"
	default:
		return "other"
	}
}

// Header is the decoded 16-byte message header. The reserved u16 is not kept:
// it is written as zero and ignored on read, as the protocol requires.
type Header struct {
	Version    uint8
	Opcode     Opcode
	JobID      uint64
	PayloadLen uint32
}

// AppendHeader appends the packed header for a message to dst and returns the
// extended slice, so callers can build a frame without an extra allocation.
// It panics if payloadLen does not fit the u32 field: that is a programming
// error, and truncating it would produce a frame every peer rejects.
func AppendHeader(dst []byte, op Opcode, jobID uint64, payloadLen int) []byte {
	if payloadLen < 0 || uint64(payloadLen) > math.MaxUint32 {
		panic(fmt.Sprintf("transport: payload length %d out of range", payloadLen))
	}
	dst = append(dst, ProtocolVersion, byte(op), 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, jobID)
	return binary.BigEndian.AppendUint32(dst, uint32(payloadLen))
}

// ParseHeader unpacks the first HeaderSize bytes of b; longer frames are
// allowed and the rest is ignored. It rejects a wrong version (ErrVersion) and
// an invalid opcode (ErrOpcode). On those two errors the returned Header still
// holds the fields as read, so the caller can log them or address an ERR reply
// to the job.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("parse header: %d bytes, want %d: %w", len(b), HeaderSize, ErrShortHeader)
	}
	h := Header{
		Version:    b[0],
		Opcode:     Opcode(b[1]),
		JobID:      binary.BigEndian.Uint64(b[4:12]),
		PayloadLen: binary.BigEndian.Uint32(b[12:16]),
	}
	if h.Version != ProtocolVersion {
		return h, fmt.Errorf("parse header: version %d, want %d: %w", h.Version, ProtocolVersion, ErrVersion)
	}
	if !h.Opcode.Valid() {
		return h, fmt.Errorf("parse header: opcode %s: %w", h.Opcode, ErrOpcode)
	}
	return h, nil
}

// Message is one decoded message as a DEALER sent it. The ROUTER identity is
// not part of it: identities belong to the socket layer.
type Message struct {
	Opcode  Opcode
	JobID   uint64
	Payload []byte
}

// DecodeFrames checks the frames that follow the identity, [header, payload,
// extra...], and returns the message. Extra trailing frames are ignored, as
// the protocol allows. The payload size is checked against maxPayload before
// payload_len, so an oversized message is always reported as ErrTooLarge;
// maxPayload <= 0 means DefaultMaxPayload. The JSON is not parsed here (see
// DecodePayload), so a caller can route or reject by opcode first.
//
// Message.Payload aliases frames[1]. When the header parsed but a later check
// failed, the returned Message still carries Opcode and JobID for the reply.
func DecodeFrames(frames [][]byte, maxPayload int) (Message, error) {
	if len(frames) < 2 {
		return Message{}, fmt.Errorf("decode frames: got %d, want header and payload: %w", len(frames), ErrTooFewFrames)
	}
	h, err := ParseHeader(frames[0])
	if err != nil {
		return Message{Opcode: h.Opcode, JobID: h.JobID}, err
	}
	msg := Message{Opcode: h.Opcode, JobID: h.JobID}
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	payload := frames[1]
	if len(payload) > maxPayload {
		return msg, fmt.Errorf("decode frames: %s payload of %d bytes exceeds %d: %w", h.Opcode, len(payload), maxPayload, ErrTooLarge)
	}
	if uint64(len(payload)) != uint64(h.PayloadLen) {
		return msg, fmt.Errorf("decode frames: %s header says %d bytes, frame has %d: %w", h.Opcode, h.PayloadLen, len(payload), ErrLengthMismatch)
	}
	msg.Payload = payload
	return msg, nil
}

// EncodeFrames returns the two frames [header, payload] of a message. An
// empty payload still gets its zero-length frame: peers expect exactly two.
func EncodeFrames(op Opcode, jobID uint64, payload []byte) [][]byte {
	if payload == nil {
		payload = []byte{}
	}
	return [][]byte{AppendHeader(make([]byte, 0, HeaderSize), op, jobID, len(payload)), payload}
}

// validator is implemented by the payload structs. Encode calls it too, so
// this side never sends what the other side's decoder would refuse.
type validator interface {
	validate() error
}

// Encode marshals v (one of the payload structs, or nil for an empty payload)
// and returns the two frames of the message. It refuses an invalid opcode or
// a payload that fails validation (ErrPayload). It does not check that v is
// the struct that belongs to op.
func Encode(op Opcode, jobID uint64, v any) ([][]byte, error) {
	if !op.Valid() {
		return nil, fmt.Errorf("encode: opcode %s: %w", op, ErrOpcode)
	}
	if v == nil {
		return EncodeFrames(op, jobID, nil), nil
	}
	if val, ok := v.(validator); ok {
		if err := val.validate(); err != nil {
			return nil, fmt.Errorf("encode %s: %w", op, err)
		}
	}
	var payload []byte
	switch d := v.(type) {
	case *Dispatch: // every job's messages: without encoding/json's detour
		payload = d.appendJSON(make([]byte, 0, 256+len(d.SourceCode)))
	case *Conclude:
		payload = d.appendJSON(make([]byte, 0, 128))
	default:
		var err error
		if payload, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("encode %s: %w", op, err)
		}
	}
	if uint64(len(payload)) > math.MaxUint32 {
		return nil, fmt.Errorf("encode %s: %d bytes: %w", op, len(payload), ErrTooLarge)
	}
	return EncodeFrames(op, jobID, payload), nil
}

// newPayload returns a pointer to the empty payload struct for op, or nil for
// opcodes whose payload is ignored (ABORT, RELOAD) or that are invalid.
func newPayload(op Opcode) validator {
	switch op {
	case OpIdentify:
		return &Identify{}
	case OpDispatch:
		return &Dispatch{}
	case OpHeartbeat:
		return &Heartbeat{}
	case OpConclude:
		return &Conclude{}
	case OpErr:
		return &Err{}
	case OpPrepareEnv:
		return &PrepareEnv{}
	case OpEnvReady:
		return &EnvReady{}
	case OpDeploy:
		return &Deploy{}
	case OpAck:
		return &Ack{}
	}
	return nil
}

// DecodePayload parses the JSON payload of a message with opcode op into its
// struct and validates it, returning a pointer (*Identify for IDENTIFY,
// *Dispatch for DISPATCH, and so on). ABORT and RELOAD return (nil, nil):
// their payload carries nothing and is ignored. A zero-length HEARTBEAT
// payload decodes as &Heartbeat{} because minimal peers send one; any other
// empty payload is ErrPayload. All payload errors wrap ErrPayload.
func DecodePayload(op Opcode, payload []byte) (any, error) {
	if !op.Valid() {
		return nil, fmt.Errorf("decode payload: opcode %s: %w", op, ErrOpcode)
	}
	if op == OpAbort || op == OpReload {
		return nil, nil
	}
	v := newPayload(op)
	if len(payload) == 0 {
		if op == OpHeartbeat {
			return v, nil
		}
		return nil, fmt.Errorf("decode %s: empty payload: %w", op, ErrPayload)
	}
	// json.Unmarshal accepts a top-level null as "no change", which would let
	// a null payload pass as an empty object. The protocol says objects only.
	if t := bytes.TrimLeft(payload, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("decode %s: payload is not a JSON object: %w", op, ErrPayload)
	}
	if op == OpConclude {
		if c, ok := decodeConclude(payload); ok {
			v = c
		} else if err := json.Unmarshal(payload, v); err != nil {
			return nil, fmt.Errorf("decode %s: %w: %w", op, ErrPayload, err)
		}
	} else if err := json.Unmarshal(payload, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w: %w", op, ErrPayload, err)
	}
	if err := v.validate(); err != nil {
		return nil, fmt.Errorf("decode %s: %w", op, err)
	}
	return v, nil
}
