package transport_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/casparian/sentinel/transport"
)

func ptr[T any](v T) *T { return &v }

// samplePayloads holds one fully populated payload per opcode that has one,
// so that round trips exercise every field, optional ones included.
func samplePayloads() map[transport.Opcode]any {
	return map[transport.Opcode]any{
		transport.OpIdentify: &transport.Identify{
			Capabilities:      []string{"csv_parser", "*"},
			WorkerID:          "w-1700000000000000000",
			MaxConcurrentJobs: 4,
			Version:           "1.2.3",
		},
		transport.OpDispatch: &transport.Dispatch{
			PluginName: "csv_parser",
			FilePath:   "/data/in/a.csv",
			Sinks: []transport.SinkConfig{
				{Topic: "output", URI: "parquet:///data/out", Mode: transport.ModeAppend},
				{Topic: "errors", URI: "sqlite:///data/e.db", Mode: transport.ModeReplace, SchemaDef: `{"a":"int"}`},
			},
			FileVersionID: 42,
			EnvHash:       "system",
			SourceCode:    "def run(): pass\n",
			ArtifactHash:  "ab12",
		},
		transport.OpHeartbeat: &transport.Heartbeat{
			Status:         transport.HeartbeatBusy,
			CurrentJobID:   ptr(int64(7)),
			ActiveJobCount: 2,
			ActiveJobIDs:   []int64{7, 9},
		},
		transport.OpConclude: &transport.Conclude{
			Status:       transport.StatusFailed,
			Metrics:      map[string]int64{"rows": 10, "size_bytes": 1 << 40},
			Artifacts:    []map[string]string{{"topic": "output", "uri": "parquet:///x"}},
			ErrorMessage: "boom",
		},
		transport.OpErr: &transport.Err{Message: "unknown worker, send IDENTIFY", Traceback: "tb"},
		transport.OpPrepareEnv: &transport.PrepareEnv{
			EnvHash: "e3b0", LockfileContent: "[[package]]\n", PythonVersion: "3.12",
		},
		transport.OpEnvReady: &transport.EnvReady{EnvHash: "e3b0", InterpreterPath: "/venv/bin/python", Cached: true},
		transport.OpDeploy: &transport.Deploy{
			PluginName: "csv_parser", Version: "2.0.0", SourceCode: "src", LockfileContent: "",
			EnvHash: "e3b0", ArtifactHash: "ab12", Signature: "5151", PublisherName: "Ada",
			PublisherEmail: "ada@example.com", AzureOID: "oid-1", SystemRequirements: []string{"libpq"},
		},
		transport.OpAck: &transport.Ack{Success: true, Message: "Deployed csv_parser v2.0.0", PluginID: ptr(int64(3))},
	}
}

func TestOpcode_String(t *testing.T) {
	want := []string{"UNKNOWN", "IDENTIFY", "DISPATCH", "ABORT", "HEARTBEAT", "CONCLUDE",
		"ERR", "RELOAD", "PREPARE_ENV", "ENV_READY", "DEPLOY", "ACK"}
	for i, w := range want {
		if got := transport.Opcode(i).String(); got != w {
			t.Errorf("Opcode(%d).String() = %q, want %q", i, got, w)
		}
	}
	if got := transport.Opcode(42).String(); got != "OPCODE(42)" {
		t.Errorf("Opcode(42).String() = %q", got)
	}
}

func TestOpcode_ValidOnlyForOneThroughEleven(t *testing.T) {
	for i := 0; i < 256; i++ {
		if got, want := transport.Opcode(i).Valid(), i >= 1 && i <= 11; got != want {
			t.Errorf("Opcode(%d).Valid() = %v, want %v", i, got, want)
		}
	}
}

func TestHeader_RoundTripsEveryOpcode(t *testing.T) {
	for op := transport.Opcode(0); op <= transport.OpAck; op++ {
		t.Run(op.String(), func(t *testing.T) {
			jobID := uint64(op)<<40 | 0xBEEF
			b := transport.AppendHeader(nil, op, jobID, int(op)*1000)
			if len(b) != transport.HeaderSize {
				t.Fatalf("header is %d bytes", len(b))
			}
			h, err := transport.ParseHeader(b)
			want := transport.Header{Version: transport.ProtocolVersion, Opcode: op, JobID: jobID, PayloadLen: uint32(op) * 1000}
			if op == transport.OpUnknown {
				// UNKNOWN packs like any opcode but is never accepted.
				if !errors.Is(err, transport.ErrOpcode) {
					t.Fatalf("ParseHeader(UNKNOWN) err = %v, want ErrOpcode", err)
				}
			} else if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if h != want {
				t.Fatalf("ParseHeader = %+v, want %+v", h, want)
			}
		})
	}
}

func TestAppendHeader_IsBigEndianBBHQI(t *testing.T) {
	// Python: struct.pack("!BBHQI", 4, 5, 0, 0x0102030405060708, 0x0A0B0C0D)
	want := []byte{
		0x04,       // version
		0x05,       // opcode CONCLUDE
		0x00, 0x00, // reserved
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // job_id
		0x0A, 0x0B, 0x0C, 0x0D, // payload_len
	}
	got := transport.AppendHeader(nil, transport.OpConclude, 0x0102030405060708, 0x0A0B0C0D)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendHeader = % x\nwant          % x", got, want)
	}
	h, err := transport.ParseHeader(want)
	if err != nil {
		t.Fatal(err)
	}
	if h.JobID != 0x0102030405060708 || h.PayloadLen != 0x0A0B0C0D || h.Opcode != transport.OpConclude {
		t.Fatalf("ParseHeader = %+v", h)
	}
}

func TestAppendHeader_AppendsToDst(t *testing.T) {
	got := transport.AppendHeader([]byte("id"), transport.OpAck, 1, 2)
	if len(got) != 2+transport.HeaderSize || string(got[:2]) != "id" {
		t.Fatalf("AppendHeader did not append: % x", got)
	}
}

func TestAppendHeader_PanicsOnNegativeLength(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	transport.AppendHeader(nil, transport.OpAck, 1, -1)
}

func TestParseHeader_IgnoresReservedBytes(t *testing.T) {
	b := transport.AppendHeader(nil, transport.OpDispatch, 9, 3)
	b[2], b[3] = 0xFF, 0x7E
	h, err := transport.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Opcode != transport.OpDispatch || h.JobID != 9 || h.PayloadLen != 3 {
		t.Fatalf("ParseHeader = %+v", h)
	}
}

func TestParseHeader_AcceptsLongerFrame(t *testing.T) {
	b := transport.AppendHeader(nil, transport.OpHeartbeat, 5, 0)
	b = append(b, "trailing junk"...)
	h, err := transport.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.JobID != 5 || h.PayloadLen != 0 {
		t.Fatalf("ParseHeader = %+v", h)
	}
}

func TestParseHeader_RejectsShortHeader(t *testing.T) {
	full := transport.AppendHeader(nil, transport.OpHeartbeat, 5, 0)
	for n := 0; n < transport.HeaderSize; n++ {
		if _, err := transport.ParseHeader(full[:n]); !errors.Is(err, transport.ErrShortHeader) {
			t.Errorf("%d bytes: err = %v, want ErrShortHeader", n, err)
		}
	}
}

func TestParseHeader_RejectsWrongVersion(t *testing.T) {
	for _, v := range []byte{0, 3, 5, 0xFF} {
		b := transport.AppendHeader(nil, transport.OpHeartbeat, 77, 0)
		b[0] = v
		h, err := transport.ParseHeader(b)
		if !errors.Is(err, transport.ErrVersion) {
			t.Fatalf("version %d: err = %v, want ErrVersion", v, err)
		}
		if h.Version != v || h.JobID != 77 {
			t.Fatalf("version %d: header not returned for logging: %+v", v, h)
		}
	}
}

func TestParseHeader_RejectsInvalidOpcode(t *testing.T) {
	for _, op := range []transport.Opcode{transport.OpUnknown, 12, 200, 255} {
		b := transport.AppendHeader(nil, op, 1, 0)
		if _, err := transport.ParseHeader(b); !errors.Is(err, transport.ErrOpcode) {
			t.Errorf("opcode %d: err = %v, want ErrOpcode", op, err)
		}
	}
}

func TestEncode_RoundTripsEveryPayload(t *testing.T) {
	for op := transport.OpIdentify; op <= transport.OpAck; op++ {
		t.Run(op.String(), func(t *testing.T) {
			v := samplePayloads()[op] // nil for ABORT and RELOAD
			frames, err := transport.Encode(op, 1234, v)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(frames) != 2 {
				t.Fatalf("Encode returned %d frames", len(frames))
			}
			msg, err := transport.DecodeFrames(frames, 0)
			if err != nil {
				t.Fatalf("DecodeFrames: %v", err)
			}
			if msg.Opcode != op || msg.JobID != 1234 {
				t.Fatalf("DecodeFrames = %v/%d", msg.Opcode, msg.JobID)
			}
			got, err := transport.DecodePayload(msg.Opcode, msg.Payload)
			if err != nil {
				t.Fatalf("DecodePayload: %v (payload %s)", err, msg.Payload)
			}
			if v == nil {
				if got != nil || len(msg.Payload) != 0 {
					t.Fatalf("got %#v with payload %q, want nil and empty", got, msg.Payload)
				}
				return
			}
			if !reflect.DeepEqual(got, v) {
				t.Fatalf("round trip\n got %#v\nwant %#v", got, v)
			}
		})
	}
}

func TestEncode_RejectsInvalidOpcode(t *testing.T) {
	for _, op := range []transport.Opcode{transport.OpUnknown, 12} {
		if _, err := transport.Encode(op, 0, nil); !errors.Is(err, transport.ErrOpcode) {
			t.Errorf("Encode(%v) err = %v, want ErrOpcode", op, err)
		}
	}
}

func TestEncode_RejectsWhatDecodeWouldRefuse(t *testing.T) {
	tests := []struct {
		name string
		op   transport.Opcode
		v    any
	}{
		{"ConcludeBadStatus", transport.OpConclude, transport.Conclude{Status: "DONE"}},
		{"DeployNoVersion", transport.OpDeploy, &transport.Deploy{PluginName: "p"}},
		{"IdentifyEmptyCapability", transport.OpIdentify, &transport.Identify{Capabilities: []string{""}}},
		{"DispatchBadSinkMode", transport.OpDispatch, &transport.Dispatch{Sinks: []transport.SinkConfig{{Topic: "output", Mode: "upsert"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := transport.Encode(tt.op, 0, tt.v); !errors.Is(err, transport.ErrPayload) {
				t.Fatalf("err = %v, want ErrPayload", err)
			}
		})
	}
}

func TestEncode_KeepsRequiredFieldsAndOmitsEmptyOptionals(t *testing.T) {
	tests := []struct {
		name    string
		op      transport.Opcode
		v       any
		want    []string
		notWant []string
	}{
		{"Identify", transport.OpIdentify, &transport.Identify{},
			[]string{`"capabilities":[]`},
			[]string{"worker_id", "max_concurrent_jobs", "version"}},
		{"Dispatch", transport.OpDispatch, &transport.Dispatch{PluginName: "p"},
			[]string{`"sinks":[]`, `"file_path":""`, `"file_version_id":0`, `"env_hash":""`, `"source_code":""`},
			[]string{"artifact_hash"}},
		{"SinkDefaultsToAppend", transport.OpDispatch, &transport.Dispatch{Sinks: []transport.SinkConfig{{Topic: "output", URI: "u"}}},
			[]string{`"mode":"append"`},
			[]string{"schema_def"}},
		{"Heartbeat", transport.OpHeartbeat, &transport.Heartbeat{Status: transport.HeartbeatIdle},
			[]string{`"active_job_ids":[]`, `"active_job_count":0`, `"status":"IDLE"`},
			[]string{"current_job_id"}},
		{"Conclude", transport.OpConclude, &transport.Conclude{Status: transport.StatusSuccess},
			[]string{`"metrics":{}`, `"artifacts":[]`},
			[]string{"error_message"}},
		{"Err", transport.OpErr, &transport.Err{Message: "m"},
			[]string{`"message":"m"`},
			[]string{"traceback"}},
		{"PrepareEnv", transport.OpPrepareEnv, &transport.PrepareEnv{EnvHash: "h"},
			[]string{`"lockfile_content":""`},
			[]string{"python_version"}},
		{"EnvReady", transport.OpEnvReady, &transport.EnvReady{},
			[]string{`"cached":false`, `"interpreter_path":""`},
			nil},
		{"Deploy", transport.OpDeploy, &transport.Deploy{PluginName: "p", Version: "1"},
			[]string{`"lockfile_content":""`, `"signature":""`, `"publisher_name":""`, `"artifact_hash":""`},
			[]string{"publisher_email", "azure_oid", "system_requirements"}},
		{"Ack", transport.OpAck, transport.Ack{Message: "no"},
			[]string{`"success":false`},
			[]string{"plugin_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames, err := transport.Encode(tt.op, 0, tt.v)
			if err != nil {
				t.Fatal(err)
			}
			text := string(frames[1])
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("%s lacks %s", text, w)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(text, `"`+nw+`"`) {
					t.Errorf("%s has empty optional %q", text, nw)
				}
			}
		})
	}
}

func TestEncodeFrames_KeepsEmptyPayloadFrame(t *testing.T) {
	for _, payload := range [][]byte{nil, {}} {
		frames := transport.EncodeFrames(transport.OpAbort, 8, payload)
		if len(frames) != 2 || frames[1] == nil || len(frames[1]) != 0 {
			t.Fatalf("EncodeFrames(%#v) = %#v, want header and empty frame", payload, frames)
		}
		h, err := transport.ParseHeader(frames[0])
		if err != nil || h.PayloadLen != 0 || h.JobID != 8 {
			t.Fatalf("header %+v, %v", h, err)
		}
	}
}

func TestDecodeFrames_IgnoresExtraFrames(t *testing.T) {
	frames := transport.EncodeFrames(transport.OpErr, 3, []byte(`{"message":"x"}`))
	frames = append(frames, []byte("extra"), nil)
	msg, err := transport.DecodeFrames(frames, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Payload) != `{"message":"x"}` || msg.Opcode != transport.OpErr || msg.JobID != 3 {
		t.Fatalf("DecodeFrames = %+v", msg)
	}
}

func TestDecodeFrames_RejectsMalformedFrames(t *testing.T) {
	good := transport.EncodeFrames(transport.OpHeartbeat, 11, []byte(`{}`))
	withHeader := func(mut func(h []byte)) [][]byte {
		h := bytes.Clone(good[0])
		mut(h)
		return [][]byte{h, good[1]}
	}
	tests := []struct {
		name   string
		frames [][]byte
		max    int
		want   error
		jobID  uint64 // job id still reported for the ERR reply
	}{
		{"NoFrames", nil, 0, transport.ErrTooFewFrames, 0},
		{"HeaderOnly", good[:1], 0, transport.ErrTooFewFrames, 0},
		{"ShortHeader", [][]byte{good[0][:15], good[1]}, 0, transport.ErrShortHeader, 0},
		{"WrongVersion", withHeader(func(h []byte) { h[0] = 3 }), 0, transport.ErrVersion, 11},
		{"UnknownOpcode", withHeader(func(h []byte) { h[1] = 0 }), 0, transport.ErrOpcode, 11},
		{"OpcodeOutOfRange", withHeader(func(h []byte) { h[1] = 12 }), 0, transport.ErrOpcode, 11},
		{"LengthTooShort", withHeader(func(h []byte) { h[15] = 1 }), 0, transport.ErrLengthMismatch, 11},
		{"LengthTooLong", withHeader(func(h []byte) { h[12] = 0xFF }), 0, transport.ErrLengthMismatch, 11},
		{"OverLimit", good, 1, transport.ErrTooLarge, 11},
		// The size limit is checked first, whatever payload_len claims.
		{"OverLimitAndMismatch", withHeader(func(h []byte) { h[15] = 0 }), 1, transport.ErrTooLarge, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := transport.DecodeFrames(tt.frames, tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if msg.JobID != tt.jobID || msg.Payload != nil {
				t.Fatalf("msg = %+v, want job %d and no payload", msg, tt.jobID)
			}
		})
	}
}

func TestDecodeFrames_DefaultLimitWhenNonPositive(t *testing.T) {
	big := make([]byte, transport.DefaultMaxPayload+1)
	frames := transport.EncodeFrames(transport.OpDeploy, 0, big)
	for _, limit := range []int{0, -1} {
		if _, err := transport.DecodeFrames(frames, limit); !errors.Is(err, transport.ErrTooLarge) {
			t.Errorf("limit %d: err = %v, want ErrTooLarge", limit, err)
		}
	}
	frames = transport.EncodeFrames(transport.OpDeploy, 0, big[:transport.DefaultMaxPayload])
	if _, err := transport.DecodeFrames(frames, 0); err != nil {
		t.Errorf("payload at the limit: %v", err)
	}
}

func TestDecodePayload_NullAndOmittedOptionalsAgree(t *testing.T) {
	tests := []struct {
		op              transport.Opcode
		omitted, nulled string
	}{
		{transport.OpIdentify,
			`{"capabilities":["a"]}`,
			`{"capabilities":["a"],"worker_id":null,"max_concurrent_jobs":null,"version":null}`},
		{transport.OpDispatch,
			`{"plugin_name":"p","file_path":"/f","sinks":[{"topic":"output","uri":"u"}],"file_version_id":1,"env_hash":"system","source_code":"s"}`,
			`{"plugin_name":"p","file_path":"/f","sinks":[{"topic":"output","uri":"u","mode":null,"schema_def":null}],"file_version_id":1,"env_hash":"system","source_code":"s","artifact_hash":null}`},
		{transport.OpHeartbeat,
			`{"status":"IDLE"}`,
			`{"status":"IDLE","current_job_id":null,"active_job_count":null,"active_job_ids":null}`},
		{transport.OpConclude,
			`{"status":"SUCCESS","metrics":{},"artifacts":[]}`,
			`{"status":"SUCCESS","metrics":{},"artifacts":[],"error_message":null}`},
		{transport.OpErr, `{"message":"m"}`, `{"message":"m","traceback":null}`},
		{transport.OpPrepareEnv, `{"env_hash":"h","lockfile_content":"l"}`, `{"env_hash":"h","lockfile_content":"l","python_version":null}`},
		{transport.OpEnvReady, `{"env_hash":"h","interpreter_path":"p"}`, `{"env_hash":"h","interpreter_path":"p","cached":null}`},
		{transport.OpDeploy,
			`{"plugin_name":"p","version":"1"}`,
			`{"plugin_name":"p","version":"1","publisher_email":null,"azure_oid":null,"system_requirements":null}`},
		{transport.OpAck, `{"success":true,"message":"ok"}`, `{"success":true,"message":"ok","plugin_id":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.op.String(), func(t *testing.T) {
			a, err := transport.DecodePayload(tt.op, []byte(tt.omitted))
			if err != nil {
				t.Fatalf("omitted: %v", err)
			}
			b, err := transport.DecodePayload(tt.op, []byte(tt.nulled))
			if err != nil {
				t.Fatalf("null: %v", err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("omitted %#v\n   null %#v", a, b)
			}
		})
	}
}

func TestDecodePayload_DefaultsSinkModeToAppend(t *testing.T) {
	v, err := transport.DecodePayload(transport.OpDispatch,
		[]byte(`{"sinks":[{"topic":"output","uri":"u"},{"topic":"b","uri":"u","mode":null},{"topic":"c","uri":"u","mode":"replace"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := v.(*transport.Dispatch).Sinks
	for i, want := range []string{"append", "append", "replace"} {
		if got[i].Mode != want {
			t.Errorf("sinks[%d].Mode = %q, want %q", i, got[i].Mode, want)
		}
	}
}

func TestDecodePayload_IgnoresUnknownFields(t *testing.T) {
	v, err := transport.DecodePayload(transport.OpConclude,
		[]byte(`{"status":"SUCCESS","metrics":{"rows":3},"artifacts":[],"future":{"nested":[1,2,{"x":null}]},"other":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &transport.Conclude{Status: "SUCCESS", Metrics: map[string]int64{"rows": 3}, Artifacts: []map[string]string{}}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("got %#v, want %#v", v, want)
	}
}

func TestDecodePayload_AcceptsPythonPeerJSON(t *testing.T) {
	// As json.dumps writes it: spaces after separators, None as null.
	payload := `{"capabilities": ["csv_parser"], "worker_id": null}`
	v, err := transport.DecodePayload(transport.OpIdentify, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	id := v.(*transport.Identify)
	if !reflect.DeepEqual(id.Capabilities, []string{"csv_parser"}) || id.Slots() != 1 {
		t.Fatalf("got %#v, slots %d", id, id.Slots())
	}
}

func TestDecodePayload_RejectsWrongTypes(t *testing.T) {
	tests := []struct {
		op      transport.Opcode
		payload string
	}{
		{transport.OpIdentify, `{"capabilities":"x"}`},
		{transport.OpIdentify, `{"capabilities":[1]}`},
		{transport.OpIdentify, `{"capabilities":[],"max_concurrent_jobs":"4"}`},
		{transport.OpHeartbeat, `{"status":5}`},
		{transport.OpHeartbeat, `{"active_job_ids":[1.5]}`},
		{transport.OpConclude, `{"status":"SUCCESS","metrics":{"rows":"3"}}`},
		{transport.OpConclude, `{"status":"SUCCESS","artifacts":{"topic":"x"}}`},
		{transport.OpDispatch, `{"sinks":{"topic":"output"}}`},
		{transport.OpDispatch, `{"file_version_id":"1"}`},
		{transport.OpEnvReady, `{"cached":"yes"}`},
		{transport.OpAck, `{"success":1}`},
		{transport.OpErr, `{"message":["m"]}`},
		{transport.OpDeploy, `{"plugin_name":"p","version":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.op.String(), func(t *testing.T) {
			if _, err := transport.DecodePayload(tt.op, []byte(tt.payload)); !errors.Is(err, transport.ErrPayload) {
				t.Fatalf("%s: err = %v, want ErrPayload", tt.payload, err)
			}
		})
	}
}

func TestDecodePayload_RejectsNonObject(t *testing.T) {
	for _, payload := range []string{`null`, ` null`, `[]`, `"x"`, `5`, `true`, ` `, `{`, `{"message":"m"} trailing`, "\xff"} {
		if _, err := transport.DecodePayload(transport.OpErr, []byte(payload)); !errors.Is(err, transport.ErrPayload) {
			t.Errorf("%q: err = %v, want ErrPayload", payload, err)
		}
	}
}

func TestDecodePayload_EmptyPayload(t *testing.T) {
	for op := transport.OpIdentify; op <= transport.OpAck; op++ {
		t.Run(op.String(), func(t *testing.T) {
			v, err := transport.DecodePayload(op, nil)
			switch op {
			case transport.OpAbort, transport.OpReload:
				if v != nil || err != nil {
					t.Fatalf("got %#v, %v; want nil, nil", v, err)
				}
			case transport.OpHeartbeat:
				if err != nil || !reflect.DeepEqual(v, &transport.Heartbeat{}) {
					t.Fatalf("got %#v, %v; want &Heartbeat{}", v, err)
				}
			default:
				if !errors.Is(err, transport.ErrPayload) {
					t.Fatalf("err = %v, want ErrPayload", err)
				}
			}
		})
	}
}

func TestDecodePayload_IgnoresAbortAndReloadPayload(t *testing.T) {
	for _, op := range []transport.Opcode{transport.OpAbort, transport.OpReload} {
		if v, err := transport.DecodePayload(op, []byte(`not json`)); v != nil || err != nil {
			t.Errorf("%v: got %#v, %v; want nil, nil", op, v, err)
		}
	}
}

func TestDecodePayload_RejectsInvalidOpcode(t *testing.T) {
	for _, op := range []transport.Opcode{transport.OpUnknown, 12} {
		if _, err := transport.DecodePayload(op, []byte(`{}`)); !errors.Is(err, transport.ErrOpcode) {
			t.Errorf("%v: err = %v, want ErrOpcode", op, err)
		}
	}
}

func TestDecodePayload_RejectsInvalidValues(t *testing.T) {
	tooMany := make([]string, transport.MaxCapabilities+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("p", i)
	}
	manyJSON, _ := json.Marshal(map[string]any{"capabilities": tooMany})
	tests := []struct {
		name    string
		op      transport.Opcode
		payload string
	}{
		{"ConcludeUnknownStatus", transport.OpConclude, `{"status":"DONE","metrics":{},"artifacts":[]}`},
		{"ConcludeMissingStatus", transport.OpConclude, `{"metrics":{},"artifacts":[]}`},
		{"ConcludeLowercaseStatus", transport.OpConclude, `{"status":"success"}`},
		{"IdentifyNegativeSlots", transport.OpIdentify, `{"capabilities":["a"],"max_concurrent_jobs":-1}`},
		{"IdentifyEmptyCapability", transport.OpIdentify, `{"capabilities":["a",""]}`},
		{"IdentifyNullCapability", transport.OpIdentify, `{"capabilities":[null]}`},
		{"IdentifyTooManyCapabilities", transport.OpIdentify, string(manyJSON)},
		{"DispatchBadSinkMode", transport.OpDispatch, `{"sinks":[{"topic":"output","uri":"u","mode":"upsert"}]}`},
		{"HeartbeatNegativeCount", transport.OpHeartbeat, `{"status":"BUSY","active_job_count":-1}`},
		{"DeployNoName", transport.OpDeploy, `{"version":"1"}`},
		{"DeployNoVersion", transport.OpDeploy, `{"plugin_name":"p","version":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := transport.DecodePayload(tt.op, []byte(tt.payload)); !errors.Is(err, transport.ErrPayload) {
				t.Fatalf("err = %v, want ErrPayload", err)
			}
		})
	}
}

func TestDecodePayload_AcceptsAnyHeartbeatStatus(t *testing.T) {
	for _, s := range []string{"", "IDLE", "ALIVE", "BUSY", "DRAINING"} {
		payload, _ := json.Marshal(map[string]string{"status": s})
		if _, err := transport.DecodePayload(transport.OpHeartbeat, payload); err != nil {
			t.Errorf("status %q: %v", s, err)
		}
	}
}

func TestIdentify_Slots(t *testing.T) {
	for _, tt := range []struct{ max, want int }{{0, 1}, {1, 1}, {4, 4}} {
		if got := (transport.Identify{MaxConcurrentJobs: tt.max}).Slots(); got != tt.want {
			t.Errorf("Slots() with max %d = %d, want %d", tt.max, got, tt.want)
		}
	}
}

func TestErrorKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("x: %w", transport.ErrTooFewFrames), "too_few_frames"},
		{fmt.Errorf("x: %w", transport.ErrShortHeader), "short_header"},
		{fmt.Errorf("x: %w", transport.ErrVersion), "bad_version"},
		{fmt.Errorf("x: %w", transport.ErrOpcode), "bad_opcode"},
		{fmt.Errorf("x: %w", transport.ErrLengthMismatch), "length_mismatch"},
		{fmt.Errorf("x: %w", transport.ErrTooLarge), "too_large"},
		{fmt.Errorf("x: %w", transport.ErrPayload), "bad_payload"},
		{errors.New("socket closed"), "other"},
	}
	for _, tt := range tests {
		if got := transport.ErrorKind(tt.err); got != tt.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	// The decoder's own errors carry their kind through the wrapping.
	_, err := transport.DecodePayload(transport.OpConclude, []byte(`{"status":1}`))
	if got := transport.ErrorKind(err); got != "bad_payload" {
		t.Errorf("ErrorKind(%v) = %q", err, got)
	}
}
