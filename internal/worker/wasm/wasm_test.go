package wasm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/tetratelabs/wazero"

	"github.com/casparian/sentinel/internal/worker/plugin"
)

// rows records what a rowWriter emits.
type rows struct {
	got  []string
	fail error
}

func (r *rows) Emit(topic string, row plugin.Row) error {
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, fmt.Sprintf("%s %v %#v", topic, row.Columns, row.Values))
	return nil
}

func TestRowWriter_LinesBecomeRows(t *testing.T) {
	var r rows
	var stopped error
	w := newRowWriter(&r, func(err error) { stopped = err })
	// Written in pieces that split lines, as a guest's buffered writes do.
	out := `{"topic":"words","row":{"w":"a","n":1,"x":1.5,"ok":true,"tags":["p", "q"],"none":null}}` + "\n\n" +
		`{"row":{"b":"z"}}` + "\n" +
		`{"topic":"words","row":{"n":2,"w":"b"}}` + "\n" +
		`{"row":{"b":"end, no newline"}}`
	for len(out) > 0 {
		n := min(7, len(out))
		if _, err := w.Write([]byte(out[:n])); err != nil {
			t.Fatal(err)
		}
		out = out[n:]
	}
	w.finish()
	want := []string{
		`words [w n x ok tags none] []interface {}{"a", 1, 1.5, true, "[\"p\",\"q\"]", interface {}(nil)}`,
		`output [b] []interface {}{"z"}`,
		`words [w n x ok tags none] []interface {}{"b", 2, interface {}(nil), interface {}(nil), interface {}(nil), interface {}(nil)}`,
		`output [b] []interface {}{"end, no newline"}`,
	}
	if fmt.Sprint(r.got) != fmt.Sprint(want) || w.err != nil || stopped != nil {
		t.Fatalf("rows\n%s\nwant\n%s\nerr %v", strings.Join(r.got, "\n"), strings.Join(want, "\n"), w.err)
	}
}

func TestRowWriter_BadLinesStopTheModule(t *testing.T) {
	for line, want := range map[string]string{
		`not json`:                          "output line 2: not a JSON object",
		`{"row":{"a":1}} {"row":{"a":2}}`:   "more than one value",
		`{"row":[1,2]}`:                     `"row" is not an object`,
		`{"topic":"t"}`:                     `no "row"`,
		`{"topic":5,"row":{"a":1}}`:         `"topic" is not a non-empty string`,
		`{"row":{"a":1},"extra":1}`:         `unknown key "extra"`,
		`{"row":{}}`:                        `"row" is empty`,
		`{"row":{"a":1,"a":2}}`:             `column "a" appears twice`,
		`{"row":{"b":1}}`:                   `column "b" is not in topic "output"'s first row (a)`,
		`{"row":{"a":1e999}}`:               "out of range",
		`{"row":{"a":1}`:                    "invalid JSON",
		`{"topic":"output","row":{"a":"x"}`: "invalid JSON",
	} {
		var r rows
		var stopped error
		w := newRowWriter(&r, func(err error) { stopped = err })
		_, err := w.Write([]byte(`{"row":{"a":0}}` + "\n" + line + "\n" + `{"row":{"a":3}}` + "\n"))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(stopped, err) || len(r.got) != 1 {
			t.Errorf("%s: error %v, stopped %v, %d rows; want %q after one row", line, err, stopped, len(r.got), want)
		}
		if _, err := w.Write([]byte("{\"row\":{\"a\":4}}\n")); err == nil || len(r.got) != 1 {
			t.Errorf("%s: a write after the failure was accepted", line)
		}
	}
}

func TestRowWriter_EmitErrorAndLongLine(t *testing.T) {
	var stopped error
	w := newRowWriter(&rows{fail: errors.New("no sink for it")}, func(err error) { stopped = err })
	if _, err := w.Write([]byte("{\"row\":{\"a\":1}}\n")); err == nil || err.Error() != "no sink for it" || stopped == nil {
		t.Fatalf("emit error: %v", err)
	}
	w = newRowWriter(&rows{}, func(err error) { stopped = err })
	chunk := []byte(strings.Repeat("x", 1<<20))
	var err error
	for i := 0; i <= maxLine>>20 && err == nil; i++ {
		_, err = w.Write(chunk)
	}
	if err == nil || !strings.Contains(err.Error(), "output line 1: longer than 16 MiB") {
		t.Fatalf("long line: %v", err)
	}
}

func TestCapture_KeepsStartAndEnd(t *testing.T) {
	var c capture
	fmt.Fprint(&c, "fatal error: out of memory\n")
	for i := range 2000 {
		fmt.Fprintf(&c, "frame %d\n", i)
	}
	s := c.short()
	if !strings.HasPrefix(s, "fatal error: out of memory") || !strings.HasSuffix(s, "frame 1999") || !strings.Contains(s, " … ") ||
		len(s) > headShown+tailShown+10 {
		t.Fatalf("short stderr (%d bytes): %q", len(s), s)
	}
	var small capture
	fmt.Fprint(&small, "  just this\n")
	if small.short() != "just this" || small.String() != "just this" {
		t.Fatalf("small stderr %q", small.short())
	}
}

// The module's file system is the one input file, and nothing else.
func TestSingleFile_OnlyTheInput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(path, []byte("a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fsys := singleFile{name: "in.csv", path: path}
	if err := fstest.TestFS(fsys, "in.csv"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"secret.txt", "../secret.txt", "/in.csv", "in.csv/x"} {
		if f, err := fsys.Open(name); err == nil {
			f.Close()
			t.Errorf("Open(%q) succeeded", name)
		}
	}
}

func TestMemory_RefusesGrowthPastTheLimit(t *testing.T) {
	m := &limitedMemory{limit: 4 * pageSize}
	if b := m.Reallocate(pageSize); len(b) != pageSize {
		t.Fatalf("initial %d", len(b))
	}
	b := m.Reallocate(3 * pageSize)
	b[3*pageSize-1] = 7
	if b = m.Reallocate(4 * pageSize); len(b) != 4*pageSize || b[3*pageSize-1] != 7 {
		t.Fatal("growth lost the contents")
	}
	if m.Reallocate(6*pageSize) != nil || m.refused != 6*pageSize {
		t.Fatalf("growth past the limit: refused %d", m.refused)
	}
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "needs 0.3 MiB of memory at start, over the 0.2 MiB limit") {
			t.Fatalf("initial size over the limit: %v", v)
		}
	}()
	(&limitedMemory{limit: 4 * pageSize}).Reallocate(5 * pageSize)
}

// Concurrent misses compile once; eviction closes a module only after its
// last user released it; a failed compile is not cached.
func TestModuleCache(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	// A module with one function, so that it has compiled code; keys are
	// content hashes, so each key's function has its own number of nops.
	module := func(key string) []byte {
		nops := int(key[0] - 'a')
		body := append(append([]byte{0}, make([]byte, nops)...), 0x0b)
		for i := range nops {
			body[1+i] = 0x01
		}
		code := append([]byte{0x0a, byte(2 + len(body)), 1, byte(len(body))}, body...)
		return append([]byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"), code...)
	}
	c := newModuleCache(1)
	var mu sync.Mutex
	compiles := 0
	compiler := func(key string) func(ctx context.Context) (wazero.CompiledModule, error) {
		return func(ctx context.Context) (wazero.CompiledModule, error) {
			mu.Lock()
			compiles++
			mu.Unlock()
			return r.CompileModule(ctx, module(key))
		}
	}
	var wg sync.WaitGroup
	releases := make(chan func(), 8)
	for range 8 {
		wg.Go(func() {
			_, release, _, err := c.acquire(ctx, "a", compiler("a"))
			if err != nil {
				t.Error(err)
				return
			}
			releases <- release
		})
	}
	wg.Wait()
	close(releases)
	if compiles != 1 || c.len() != 1 {
		t.Fatalf("%d compiles, %d cached; want 1, 1", compiles, c.len())
	}
	held, releaseHeld, _, _ := c.acquire(ctx, "a", compiler("a"))
	for release := range releases {
		release()
	}
	// "b" evicts "a", which one run still holds: it must stay usable.
	_, releaseB, hit, err := c.acquire(ctx, "b", compiler("b"))
	if err != nil || hit || c.len() != 1 {
		t.Fatalf("b: hit %t err %v len %d", hit, err, c.len())
	}
	if _, err := r.InstantiateModule(ctx, held, wazero.NewModuleConfig().WithName("")); err != nil {
		t.Fatalf("an evicted module still in use was closed: %v", err)
	}
	releaseHeld()
	if _, err := r.InstantiateModule(ctx, held, wazero.NewModuleConfig().WithName("")); err == nil {
		t.Fatal("an evicted module was not closed after its last user released it")
	}
	releaseB()
	boom := errors.New("bad module")
	if _, _, _, err := c.acquire(ctx, "c", func(context.Context) (wazero.CompiledModule, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed compile: %v", err)
	}
	if _, release, hit, err := c.acquire(ctx, "c", compiler("c")); err != nil || hit {
		t.Fatalf("after a failed compile: hit %t err %v", hit, err)
	} else {
		release()
	}
}

func TestLooksLikeModuleAndDecode(t *testing.T) {
	for src, want := range map[string]bool{
		"AGFzbQEAAAA=": true, "  AGFzbQEAAAABBQ==\n": true, "builtin:csv": false, "": false,
		"aGVsbG8gd29ybGQ=": false, "AGFzbQ": false, "print('x')": false,
	} {
		if got := LooksLikeModule(src); got != want {
			t.Errorf("LooksLikeModule(%q) = %t", src, got)
		}
	}
	if b, err := Decode("AGFzbQEAAAA="); err != nil || string(b) != "\x00asm\x01\x00\x00\x00" {
		t.Errorf("Decode: %q %v", b, err)
	}
	if _, err := Decode("AGFzbQEAAAA*"); err == nil || !strings.Contains(err.Error(), "not valid base64") {
		t.Errorf("Decode bad base64: %v", err)
	}
	if _, err := Decode("aGVsbG8="); err == nil || !strings.Contains(err.Error(), "no \\0asm magic") {
		t.Errorf("Decode text: %v", err)
	}
}
