package transport

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// referenceDispatch is Dispatch as encoding/json writes it, field for field:
// what appendJSON must reproduce byte for byte.
type referenceDispatch struct {
	PluginName    string       `json:"plugin_name"`
	FilePath      string       `json:"file_path"`
	Sinks         []SinkConfig `json:"sinks"`
	FileVersionID int64        `json:"file_version_id"`
	EnvHash       string       `json:"env_hash"`
	SourceCode    string       `json:"source_code"`
	ArtifactHash  string       `json:"artifact_hash,omitempty"`
}

func referenceJSON(t testing.TB, d Dispatch) []byte {
	t.Helper()
	if d.Sinks == nil {
		d.Sinks = []SinkConfig{}
	}
	b, err := json.Marshal(referenceDispatch(d))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkDispatchJSON(t testing.TB, d Dispatch) {
	t.Helper()
	got := d.appendJSON(nil)
	if want := referenceJSON(t, d); !bytes.Equal(got, want) {
		t.Fatalf("appendJSON:\n got %q\nwant %q", got, want)
	}
	var back Dispatch
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("appendJSON wrote invalid JSON %q: %v", got, err)
	}
}

func TestDispatchJSON_MatchesEncodingJSON(t *testing.T) {
	for _, d := range []Dispatch{
		{},
		{PluginName: "csv", FilePath: "/data/a.csv", FileVersionID: 7, EnvHash: "system", SourceCode: "builtin:csv"},
		{PluginName: "p", Sinks: []SinkConfig{{Topic: "t", URI: "parquet://x"}, {Topic: "u", URI: "sqlite://y", Mode: ModeReplace, SchemaDef: `{"a":"int"}`}},
			FileVersionID: -1, ArtifactHash: "abc"},
		{PluginName: "quote\" back\\slash <tag> & \u2028\u2029 tab\t nl\n cr\r nul\x00 del\x7f é 🙂", FilePath: "bad utf-8 \xff\xfe \xe2\x82",
			SourceCode: "line1\nline2\x1f", EnvHash: "\u0080\u07ff\uffff"},
	} {
		checkDispatchJSON(t, d)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "0", " ", "\"", "\\", "/", "<", ">", "&", "\x00", "\x01", "\x1f", "\x7f", "\n", "\t", "\b", "\f", "\r",
		"é", "€", "🙂", "\u2028", "\u2029", "\xff", "\xc3", "\xe2\x82", "\ufffd"}
	str := func() string {
		var b []byte
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))]...)
		}
		return string(b)
	}
	for range 2000 {
		d := Dispatch{PluginName: str(), FilePath: str(), FileVersionID: rng.Int64() - rng.Int64(), EnvHash: str(), SourceCode: str(), ArtifactHash: str()}
		for range rng.IntN(3) {
			d.Sinks = append(d.Sinks, SinkConfig{Topic: str(), URI: str(), Mode: []string{"", ModeAppend, ModeReplace, ModeError}[rng.IntN(4)], SchemaDef: str()})
		}
		checkDispatchJSON(t, d)
	}
}

func FuzzDispatchJSON(f *testing.F) {
	f.Add("csv", "/a\n\"b\"", "parquet://x", "", int64(3), "builtin:csv\xff")
	f.Fuzz(func(t *testing.T, plugin, path, uri, mode string, fv int64, source string) {
		checkDispatchJSON(t, Dispatch{PluginName: plugin, FilePath: path, Sinks: []SinkConfig{{Topic: plugin, URI: uri, Mode: mode}},
			FileVersionID: fv, SourceCode: source, ArtifactHash: path})
	})
}

func BenchmarkDispatchEncode(b *testing.B) {
	d := &Dispatch{PluginName: "noop", FilePath: "/data/in/2026/12/file-000123.csv", FileVersionID: 123456, EnvHash: "system",
		SourceCode: "builtin:noop", ArtifactHash: "art-noop", Sinks: []SinkConfig{{Topic: "output", URI: "parquet://out/noop.parquet"}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(OpDispatch, 1, d); err != nil {
			b.Fatal(err)
		}
	}
}

// referenceConclude is Conclude as encoding/json writes it.
type referenceConclude struct {
	Status       string              `json:"status"`
	Metrics      map[string]int64    `json:"metrics"`
	Artifacts    []map[string]string `json:"artifacts"`
	ErrorMessage string              `json:"error_message,omitempty"`
}

func checkConcludeJSON(t testing.TB, c Conclude) {
	t.Helper()
	got := c.appendJSON(nil)
	ref := referenceConclude(c)
	if ref.Metrics == nil {
		ref.Metrics = map[string]int64{}
	}
	if ref.Artifacts == nil {
		ref.Artifacts = []map[string]string{}
	}
	want, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendJSON:\n got %q\nwant %q", got, want)
	}
}

func TestConcludeJSON_MatchesEncodingJSON(t *testing.T) {
	checkConcludeJSON(t, Conclude{})
	checkConcludeJSON(t, Conclude{Status: StatusSuccess, Metrics: map[string]int64{"rows": 3, "bytes": -1, "a\"<": 1 << 62},
		Artifacts: []map[string]string{{"topic": "t", "uri": "parquet://x"}, nil, {}, {"z": "\xff\u2028", "a": ""}}, ErrorMessage: "bad\n"})
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "b", "0", "\"", "\\", "<", "&", "\x01", "\b", "é", "🙂", "\u2029", "\xff"}
	str := func() string {
		var b []byte
		for range rng.IntN(6) {
			b = append(b, alphabet[rng.IntN(len(alphabet))]...)
		}
		return string(b)
	}
	for range 2000 {
		c := Conclude{Status: str(), ErrorMessage: str()}
		if rng.IntN(4) > 0 {
			c.Metrics = map[string]int64{}
			for range rng.IntN(5) {
				c.Metrics[str()] = rng.Int64() - rng.Int64()
			}
		}
		for range rng.IntN(3) {
			a := map[string]string{}
			for range rng.IntN(4) {
				a[str()] = str()
			}
			c.Artifacts = append(c.Artifacts, a)
		}
		checkConcludeJSON(t, c)
	}
}
