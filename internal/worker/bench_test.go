package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/worker/wasm"
	"github.com/casparian/sentinel/transport"
)

// writeOrders writes a CSV of n order rows: int, string, float, int, bool,
// date-as-string columns.
func writeOrders(tb testing.TB, path string, n int) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "order_id,customer,amount,quantity,paid,order_date")
	for i := range n {
		fmt.Fprintf(w, "%d,customer-%d,%d.%02d,%d,%t,2026-01-%02d\n", i, i%1000, i%5000, i%100, i%17, i%3 == 0, i%28+1)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkCSVTo measures the whole job path (two CSV passes, typing,
// staging, commit) from a 100k-row CSV into each sink kind, without the
// network. It reports rows/s.
func BenchmarkCSVTo(b *testing.B) {
	const rows = 100_000
	dir := b.TempDir()
	in := filepath.Join(dir, "orders.csv")
	writeOrders(b, in, rows)
	w, err := New(Options{Logger: zerolog.Nop(), OutputDir: dir, InputRoots: []string{dir}})
	if err != nil {
		b.Fatal(err)
	}
	for name, uri := range map[string]string{
		"SQLite":  "sqlite://" + filepath.Join(dir, "out.db") + "/orders",
		"Parquet": "parquet://" + filepath.Join(dir, "out.parquet"),
		"CSV":     "file://" + filepath.Join(dir, "out.csv"),
		"JSONL":   "file://" + filepath.Join(dir, "out.jsonl"),
	} {
		b.Run(name, func(b *testing.B) {
			d := &transport.Dispatch{PluginName: "csv", FilePath: in, FileVersionID: 1,
				Sinks: []transport.SinkConfig{{Topic: "output", URI: uri, Mode: transport.ModeReplace}}}
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				r := w.execute(context.Background(), int64(i+1), d, zerolog.Nop())
				if r.Status != transport.StatusSuccess || r.Metrics["rows"] != rows {
					b.Fatalf("receipt %+v", r)
				}
			}
			b.ReportMetric(float64(rows*b.N)/time.Since(start).Seconds(), "rows/s")
		})
	}
}

// BenchmarkWasmJob measures a deployed plugin's job: the artifact check,
// an instance of the cached compiled example plugin (wordcount) running
// over a 1 KiB text, and its rows into a JSONL file, with wazero's
// compiler. The first run, which decodes and compiles, is not timed.
func BenchmarkWasmJob(b *testing.B) {
	mods := BuildTestModules(b)
	dir := b.TempDir()
	in := filepath.Join(dir, "words.txt")
	if err := os.WriteFile(in, bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 24), 0o644); err != nil {
		b.Fatal(err)
	}
	w, err := New(Options{Logger: zerolog.Nop(), OutputDir: dir, InputRoots: []string{dir}, Wasm: &wasm.Options{}})
	if err != nil {
		b.Fatal(err)
	}
	defer w.wasm.Close(context.Background())
	src := base64.StdEncoding.EncodeToString(mods.Wordcount)
	d := &transport.Dispatch{PluginName: "wordcount", FilePath: in, FileVersionID: 1, EnvHash: SystemEnv,
		SourceCode: src, ArtifactHash: ArtifactHash(src, ""),
		Sinks: []transport.SinkConfig{{Topic: "output", URI: "file://" + filepath.Join(dir, "out.jsonl"), Mode: transport.ModeReplace}}}
	run := func(i int) {
		if r := w.execute(context.Background(), int64(i+1), d, zerolog.Nop()); r.Status != transport.StatusSuccess || r.Metrics["rows"] != 8 {
			b.Fatalf("receipt %+v", r)
		}
	}
	run(0)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		run(i + 1)
	}
	if st := w.Stats(); st.WasmCompiles != 1 {
		b.Fatalf("stats %+v: the module was compiled more than once", st)
	}
}
