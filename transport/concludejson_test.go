package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// checkConcludeDecode fails when decodeConclude accepts b and gives anything
// but what encoding/json gives. It returns whether the fast path took b.
func checkConcludeDecode(t testing.TB, b []byte) bool {
	t.Helper()
	got, ok := decodeConclude(b)
	if !ok {
		return false
	}
	var want Conclude
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("decodeConclude accepted %q, encoding/json refuses it: %v", b, err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("decodeConclude(%q):\n got %#v\nwant %#v", b, *got, want)
	}
	return true
}

func TestConcludeDecode_PlainFormMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		`{"status":"SUCCESS","metrics":{},"artifacts":[]}`,
		`{"status":"SUCCESS","metrics":{"rows":1000,"size_bytes":65536},"artifacts":[{"topic":"output","uri":"parquet:///out/a.parquet"}]}`,
		` { "status" : "FAILED" , "error_message" : "boom: it broke" , "metrics" : { "n" : -7 , "z" : 0 , "m" : -0 } } `,
		"{\n\t\"artifacts\": [{}, {\"a\": \"\"}],\r\n\"status\": \"ABORTED\"}\n",
		`{"status":"REJECTED"}`,
		`{"metrics":{"a":1,"a":2}}`,         // a repeated metric keeps the last, as in a map
		`{"artifacts":[{"k":"v","k":"w"}]}`, // likewise in an artifact
		`{"metrics":{"max":9223372036854775807,"min":-9223372036854775808}}`,
		`{}`,
		`{"status":"del \u007f is printable? no, escaped: falls back"}`,
		`{"status":"` + "\x7f" + `"}`,
	} {
		checkConcludeDecode(t, []byte(s))
	}
	if !checkConcludeDecode(t, []byte(`{"status":"SUCCESS","metrics":{"rows":1},"artifacts":[{"topic":"output","uri":"x"}]}`)) {
		t.Fatal("the plain form a worker sends was not decoded by the fast path: the test proves nothing")
	}
}

// Everything outside the plain form goes to encoding/json, which decides:
// the answer of DecodePayload is then exactly encoding/json's.
func TestConcludeDecode_OtherFormsFallBack(t *testing.T) {
	for _, s := range []string{
		`{"Status":"SUCCESS"}`,             // encoding/json matches keys in any case
		`{"status":"SUCCESS","extra":1}`,   // unknown keys are skipped by encoding/json
		`{"status":"SUC\u0043ESS"}`,        // an escape
		`{"status":"caf` + "\u00e9" + `"}`, // non-ASCII
		`{"status":"bad ` + "\xff" + `"}`,  // invalid UTF-8: encoding/json replaces it
		`{"status":null}`, `{"metrics":null}`, `{"artifacts":null}`,
		`{"metrics":{"rows":1.0}}`, `{"metrics":{"rows":1e3}}`, `{"metrics":{"rows":01}}`,
		`{"metrics":{"rows":9223372036854775808}}`, // past int64
		`{"metrics":{"rows":"1"}}`, `{"artifacts":[{"rows":5}]}`, `{"artifacts":{}}`,
		`{"status":"SUCCESS","status":"FAILED"}`, // a repeated field
		`{"metrics":{"a":1},"metrics":{"b":2}}`,  // encoding/json merges these
		`{"status":"SUCCESS"} x`, `{"status":"SUCCESS",}`, `{"status" "x"}`, `{"status":"x"`,
		`{"metrics":{"a":1,}}`, `{"artifacts":[{}],]}`, `[]`, ``, "{\"status\":\"a\tb\"}",
		"{\"status\":\"x\"}\x00",
	} {
		if _, ok := decodeConclude([]byte(s)); ok {
			t.Errorf("decodeConclude took %q, which it must leave to encoding/json", s)
		}
		// DecodePayload's answer is encoding/json's, error or value.
		got, err := DecodePayload(OpConclude, []byte(s))
		var want Conclude
		jsonErr := json.Unmarshal([]byte(s), &want)
		switch {
		case jsonErr != nil:
			if err == nil || !errors.Is(err, ErrPayload) {
				t.Errorf("DecodePayload(%q) = %v, %v; encoding/json refuses it: %v", s, got, err, jsonErr)
			}
		case want.validate() != nil:
			if err == nil {
				t.Errorf("DecodePayload(%q) accepted status %q", s, want.Status)
			}
		case err != nil || !reflect.DeepEqual(got, &want):
			t.Errorf("DecodePayload(%q) = %#v, %v; want %#v", s, got, err, want)
		}
	}
}

// randomConclude writes a CONCLUDE the way a worker might, from a small
// alphabet that includes what the fast path must refuse.
func randomConclude(rng *rand.Rand) string {
	alphabet := []string{"a", "Z", "0", " ", "/", ":", "\\\"", "\\n", "\\u00e9", "é", "\x7f", "\\/"}
	str := func() string {
		var b strings.Builder
		b.WriteByte('"')
		for range rng.IntN(6) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		b.WriteByte('"')
		return b.String()
	}
	num := func() string {
		return []string{"0", "-1", "42", "9223372036854775807", "1.5", "1e2", "007", "-", "18446744073709551616"}[rng.IntN(9)]
	}
	ws := func() string { return []string{"", "", " ", "\n\t"}[rng.IntN(4)] }
	var fields []string
	keys := []string{"status", "metrics", "artifacts", "error_message", "Status", "other"}
	for range rng.IntN(5) {
		k := keys[rng.IntN(len(keys))]
		var v string
		switch k {
		case "metrics":
			var ms []string
			for range rng.IntN(4) {
				ms = append(ms, str()+ws()+":"+ws()+num())
			}
			v = "{" + strings.Join(ms, ",") + "}"
		case "artifacts":
			var as []string
			for range rng.IntN(3) {
				var kv []string
				for range rng.IntN(3) {
					kv = append(kv, str()+":"+str())
				}
				as = append(as, "{"+strings.Join(kv, ","+ws())+"}")
			}
			v = "[" + strings.Join(as, ",") + "]"
		default:
			v = []string{"\"SUCCESS\"", "\"FAILED\"", str(), "null", "1"}[rng.IntN(5)]
		}
		fields = append(fields, fmt.Sprintf("%s%q%s:%s%s", ws(), k, ws(), ws(), v))
	}
	return ws() + "{" + strings.Join(fields, ",") + "}" + ws()
}

func TestConcludeDecode_RandomFormsMatchEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fast := 0
	for range 20000 {
		if checkConcludeDecode(t, []byte(randomConclude(rng))) {
			fast++
		}
	}
	if fast < 1000 {
		t.Fatalf("only %d of 20000 random CONCLUDEs took the fast path: the comparison proves little", fast)
	}
}

func FuzzConcludeDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		f.Add([]byte(randomConclude(rng)))
	}
	f.Add([]byte(`{"status":"SUCCESS","metrics":{"rows":1},"artifacts":[{"topic":"output","uri":"parquet:///o.parquet"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkConcludeDecode(t, b) })
}

// BenchmarkConcludeDecode decodes a worker's usual CONCLUDE.
func BenchmarkConcludeDecode(b *testing.B) {
	payload := []byte(`{"status":"SUCCESS","metrics":{"rows":1000,"size_bytes":65536},"artifacts":[{"topic":"output","uri":"parquet:///var/lib/casparian/output/csv/orders-2026-12.parquet"}]}`)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := DecodePayload(OpConclude, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var m Conclude
			if err := json.Unmarshal(payload, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
