package transport_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/casparian/sentinel/transport"
)

// FuzzDecode feeds arbitrary frames to the decoder. It must never panic,
// every error must carry one of the codec's kinds, and whatever decodes must
// re-encode into a message that decodes again to the same JSON.
//
// The inputs are the header frame, the payload frame, how many frames to
// send (0..3, the third being an extra frame that must be ignored), and
// fixLen, which rewrites payload_len to match the payload. Without fixLen
// almost every mutated payload would stop at the length check and the JSON
// decoders would go unexplored.
func FuzzDecode(f *testing.F) {
	for op := transport.OpIdentify; op <= transport.OpAck; op++ {
		frames, err := transport.Encode(op, uint64(op)*1000, samplePayloads()[op])
		if err != nil {
			f.Fatal(err)
		}
		h, p := frames[0], frames[1]
		f.Add(h, p, uint8(2), false)            // as sent
		f.Add(h, p, uint8(3), false)            // with an extra frame
		f.Add(h, p, uint8(1), false)            // payload frame lost
		f.Add(h[:len(h)/2], p, uint8(2), false) // truncated header
		if len(p) > 0 {
			f.Add(h, p[:len(p)/2], uint8(2), false) // truncated payload, stale length
			f.Add(h, p[:len(p)/2], uint8(2), true)  // truncated payload, fixed length
		}
	}
	hb := transport.EncodeFrames(transport.OpHeartbeat, 0, nil)
	f.Add(hb[0], hb[1], uint8(2), false) // minimal peer's empty heartbeat
	f.Add(hb[0], []byte(`null`), uint8(2), true)
	f.Add(hb[0], []byte(`{"status":"IDLE","active_job_ids":null,"x":[{}]}`), uint8(2), true)

	f.Fuzz(func(t *testing.T, header, payload []byte, nframes uint8, fixLen bool) {
		header = bytes.Clone(header)
		if fixLen && len(header) >= transport.HeaderSize {
			binary.BigEndian.PutUint32(header[12:16], uint32(len(payload)))
		}
		frames := [][]byte{header, payload, []byte("extra")}[:nframes%4]

		msg, err := transport.DecodeFrames(frames, 0)
		if err != nil {
			if transport.ErrorKind(err) == "other" {
				t.Fatalf("DecodeFrames error without a kind: %v", err)
			}
			return
		}
		v, err := transport.DecodePayload(msg.Opcode, msg.Payload)
		if err != nil {
			if k := transport.ErrorKind(err); k != "bad_payload" {
				t.Fatalf("DecodePayload error of kind %q: %v", k, err)
			}
			return
		}
		if v == nil {
			if msg.Opcode != transport.OpAbort && msg.Opcode != transport.OpReload {
				t.Fatalf("%v decoded to nil", msg.Opcode)
			}
			return
		}

		first := reencode(t, msg.Opcode, msg.JobID, v)
		again, err := transport.DecodePayload(msg.Opcode, first)
		if err != nil {
			t.Fatalf("re-encoded %v does not decode: %v\n%s", msg.Opcode, err, first)
		}
		if second := reencode(t, msg.Opcode, msg.JobID, again); !bytes.Equal(first, second) {
			t.Fatalf("encoding is not stable:\n%s\n%s", first, second)
		}
	})
}

// reencode encodes v and decodes the frames again, returning the payload.
func reencode(t *testing.T, op transport.Opcode, jobID uint64, v any) []byte {
	t.Helper()
	frames, err := transport.Encode(op, jobID, v)
	if err != nil {
		t.Fatalf("Encode(%v, %#v): %v", op, v, err)
	}
	// Re-encoding may grow the payload (invalid UTF-8 becomes U+FFFD), so
	// the default limit does not apply here.
	msg, err := transport.DecodeFrames(frames, math.MaxInt)
	if err != nil {
		t.Fatalf("DecodeFrames of re-encoded %v: %v", op, err)
	}
	if msg.Opcode != op || msg.JobID != jobID {
		t.Fatalf("re-encoded header %v/%d, want %v/%d", msg.Opcode, msg.JobID, op, jobID)
	}
	return msg.Payload
}
