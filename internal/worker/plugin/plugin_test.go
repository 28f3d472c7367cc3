package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// capture is an Emitter that keeps copies of the rows.
type capture struct {
	columns map[string][]string
	rows    map[string][][]any
}

func (c *capture) Emit(topic string, row Row) error {
	if c.rows == nil {
		c.columns, c.rows = map[string][]string{}, map[string][][]any{}
	}
	c.columns[topic] = slices.Clone(row.Columns)
	c.rows[topic] = append(c.rows[topic], slices.Clone(row.Values))
	return nil
}

func runOn(t *testing.T, p Plugin, content string) (*capture, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	err := p.Run(context.Background(), Input{Path: path, Size: int64(len(content))}, c)
	return c, err
}

func TestCSV_InfersTypesOverTheWholeFile(t *testing.T) {
	in := "\ufeffid, name ,price,active,zip,,id,late\n" +
		"1,apple,1.5,true,007,x,10,1\n" +
		"2,\"pear, green\",2,FALSE,123,,11,2\n" +
		"3,,,,,,12,oops\n"
	c, err := runOn(t, CSV{}, in)
	if err != nil {
		t.Fatal(err)
	}
	wantCols := []string{"id", "name", "price", "active", "zip", "column_6", "id_2", "late"}
	if !slices.Equal(c.columns[OutputTopic], wantCols) {
		t.Fatalf("columns %q, want %q", c.columns[OutputTopic], wantCols)
	}
	want := [][]any{
		{int64(1), "apple", 1.5, true, "007", "x", int64(10), "1"},
		{int64(2), "pear, green", 2.0, false, "123", nil, int64(11), "2"},
		{int64(3), nil, nil, nil, nil, nil, int64(12), "oops"},
	}
	got := c.rows[OutputTopic]
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("row %d = %#v, want %#v", i, got[i], want[i])
		}
	}
}

func TestCSV_BadInputFailsWithLine(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"Ragged":     {"a,b\n1,2\n3\n", "line 3: wrong number of fields (the header has 2)"},
		"BareQuote":  {"a,b\n1,x\"y\n", "line 2"},
		"Empty":      {"", "empty file: no header row"},
		"OpenQuotes": {"a,b\n1,\"never closed\n", "line 2"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := runOn(t, CSV{}, c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestCSV_HeaderOnlyEmitsNothing(t *testing.T) {
	c, err := runOn(t, CSV{}, "a,b\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.rows) != 0 {
		t.Fatalf("rows %v, want none", c.rows)
	}
}

func TestCSV_StopsWhenCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.csv")
	var b strings.Builder
	b.WriteString("n\n")
	for i := range 100000 {
		fmt.Fprintf(&b, "%d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	em := emitFunc(func(string, Row) error {
		if n++; n == 10 {
			cancel()
		}
		return nil
	})
	err := CSV{}.Run(ctx, Input{Path: path}, em)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if n >= 100000 {
		t.Fatalf("emitted all %d rows after cancel", n)
	}
}

type emitFunc func(string, Row) error

func (f emitFunc) Emit(topic string, row Row) error { return f(topic, row) }

func TestJSONL_ColumnsInFirstSeenOrderWithJoinedTypes(t *testing.T) {
	in := `{"id": 1, "user": {"name": "a"}, "ok": true, "v": 1}` + "\n" +
		"\n" +
		`{"id": 2, "extra": "x", "v": 2.5, "ok": null, "mixed": 1}` + "\n" +
		`  {"v": 3, "id": 3, "mixed": "one", "tags": ["a", "b"]}  ` + "\n"
	c, err := runOn(t, JSONL{}, in)
	if err != nil {
		t.Fatal(err)
	}
	wantCols := []string{"id", "user", "ok", "v", "extra", "mixed", "tags"}
	if !slices.Equal(c.columns[OutputTopic], wantCols) {
		t.Fatalf("columns %q, want %q", c.columns[OutputTopic], wantCols)
	}
	want := [][]any{
		{int64(1), `{"name":"a"}`, true, 1.0, nil, nil, nil},
		{int64(2), nil, nil, 2.5, "x", "1", nil},
		{int64(3), nil, nil, 3.0, nil, "one", `["a","b"]`},
	}
	for i := range want {
		if !slices.Equal(c.rows[OutputTopic][i], want[i]) {
			t.Errorf("row %d = %#v, want %#v", i, c.rows[OutputTopic][i], want[i])
		}
	}
}

func TestJSONL_BadLinesFailWithLine(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"NotObject": {"{\"a\":1}\n[1,2]\n", "line 2: not a JSON object"},
		"Broken":    {"{\"a\":1}\n\n{\"a\":\n", "line 3: invalid JSON"},
		"TwoValues": {"{\"a\":1} {\"a\":2}\n", "line 1: invalid JSON: more than one value"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := runOn(t, JSONL{}, c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestTextStats(t *testing.T) {
	cases := []struct {
		in                         string
		lines, words, chars, bytes int64
	}{
		{"", 0, 0, 0, 0},
		{"one two\nthree\n", 2, 3, 14, 14},
		{"no newline at end", 1, 4, 17, 17},
		{"  héllo\twörld  \n\n", 2, 2, 17, 19},
	}
	for _, c := range cases {
		got, err := runOn(t, TextStats{}, c.in)
		if err != nil {
			t.Fatal(err)
		}
		row := got.rows[OutputTopic][0]
		if fmt.Sprint(row[1:]) != fmt.Sprint([]any{c.lines, c.words, c.chars, c.bytes}) {
			t.Errorf("%q: lines, words, chars, bytes = %v, want %v", c.in, row[1:], []int64{c.lines, c.words, c.chars, c.bytes})
		}
	}
}

func TestChecksum(t *testing.T) {
	content := strings.Repeat("casparian\n", 1000)
	got, err := runOn(t, Checksum{}, content)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	row := got.rows[OutputTopic][0]
	if row[1] != int64(len(content)) || row[2] != hex.EncodeToString(sum[:]) {
		t.Fatalf("row %v", row)
	}
}

func TestPlugins_MissingFileFails(t *testing.T) {
	for _, p := range Builtins() {
		err := p.Run(context.Background(), Input{Path: filepath.Join(t.TempDir(), "absent")}, &capture{})
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s on a missing file: %v, want not-exist", p.Name(), err)
		}
	}
}

func TestIsIntAndDecimal(t *testing.T) {
	for s, want := range map[string][2]bool{
		"0": {true, true}, "-12": {true, true}, "+3": {true, true}, "007": {false, false}, "0.5": {false, true}, "01.5": {false, false},
		"1.5": {false, true}, ".5": {false, true}, "1e3": {false, true}, "1e": {false, false},
		"NaN": {false, false}, "Inf": {false, false}, "0x10": {false, false}, "--1": {false, false},
		"9223372036854775808": {false, true}, "": {false, false}, "1,5": {false, false},
	} {
		if got := [2]bool{isInt(s), isDecimal(s)}; got != want {
			t.Errorf("%q: isInt, isDecimal = %v, want %v", s, got, want)
		}
	}
}
