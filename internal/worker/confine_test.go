package worker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// spy is a plugin that counts its runs and emits one row without reading
// its input: a run at all would mean the confinement let the job through.
type spy struct{ runs atomic.Int64 }

func (*spy) Name() string { return "spy" }

func (p *spy) Run(_ context.Context, _ plugin.Input, emit plugin.Emitter) error {
	p.runs.Add(1)
	return emit.Emit(plugin.OutputTopic, plugin.Row{Columns: []string{"n"}, Values: []any{int64(1)}})
}

// spyJob is a DISPATCH of the spy plugin.
func spyJob(id int64, input string, sinks ...string) *transport.Dispatch {
	d := &transport.Dispatch{PluginName: "spy", FilePath: input, FileVersionID: 100 + id, EnvHash: worker.SystemEnv}
	for _, uri := range sinks {
		d.Sinks = append(d.Sinks, transport.SinkConfig{Topic: "output", URI: uri, Mode: transport.ModeAppend})
	}
	return d
}

// names lists the entries of a folder ("" when it does not exist).
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An input that resolves outside --input-root fails its job with a reason
// that names it and the roots; the plugin never runs and nothing is
// written. Inputs inside, nested or through a link within, still run.
func TestWorker_InputOutsideInputRootFailsUnread(t *testing.T) {
	t.Parallel()
	s := newScripted(t)
	top := filepath.Dir(s.inDir)
	secret := filepath.Join(top, "secret.txt")
	mustWrite(t, secret, "not for plugins\n")
	mustWrite(t, s.inDir+"2/x.txt", "a neighbour\n")
	mustSymlink(t, secret, filepath.Join(s.inDir, "link.txt"))
	mustSymlink(t, top, filepath.Join(s.inDir, "up"))
	mustSymlink(t, s.input, filepath.Join(s.inDir, "inner.txt"))
	sp := &spy{}
	startWorker(t, s.harness(), worker.Options{Plugins: []plugin.Plugin{sp}})
	s.next(transport.OpIdentify)
	out := "file://" + filepath.Join(s.outDir, "out.jsonl")

	id := int64(0)
	for name, input := range map[string]string{
		"FileLinkOut":   filepath.Join(s.inDir, "link.txt"),
		"FolderLinkOut": filepath.Join(s.inDir, "up", "secret.txt"),
		"DotDot":        s.inDir + "/../secret.txt",
		"Absolute":      secret,
		"PrefixTrick":   s.inDir + "2/x.txt",
	} {
		t.Run(name, func(t *testing.T) {
			id++
			r := s.receipt(id, spyJob(id, input, out))
			wantReceipt(t, name, r, transport.StatusFailed, "input "+input)
			if want := "is outside --input-root (" + s.inDir + "); not read"; !strings.Contains(r.ErrorMessage, want) {
				t.Errorf("reason %q does not say %q", r.ErrorMessage, want)
			}
		})
	}
	if n := sp.runs.Load(); n != 0 {
		t.Fatalf("the plugin ran %d times over refused inputs", n)
	}
	if got := names(t, s.outDir); got != nil {
		t.Fatalf("refused jobs wrote %v", got)
	}

	for name, input := range map[string]string{
		"Nested":     s.writeInput("nested.txt", "x\n"),
		"LinkWithin": filepath.Join(s.inDir, "inner.txt"),
	} {
		id++
		wantReceipt(t, name, s.receipt(id, spyJob(id, input, out)), transport.StatusSuccess, "")
	}
	if n := sp.runs.Load(); n != 2 {
		t.Fatalf("the plugin ran %d times over the 2 allowed inputs", n)
	}
}

// The WebAssembly runner reads its input too: the same check refuses an
// outside input before a module is compiled or run.
func TestWasm_InputOutsideInputRootFailsBeforeTheModule(t *testing.T) {
	t.Parallel()
	mods := worker.BuildTestModules(t)
	s := newScripted(t)
	secret := filepath.Join(filepath.Dir(s.inDir), "secret.txt")
	mustWrite(t, secret, "the quick brown fox\n")
	mustSymlink(t, secret, filepath.Join(s.inDir, "words.txt"))
	w := startWorker(t, s.harness(), worker.Options{Wasm: testWasm(0)})
	s.next(transport.OpIdentify)
	out := "file://" + filepath.Join(s.outDir, "out.jsonl")

	input := filepath.Join(s.inDir, "words.txt")
	r := s.receipt(1, deployed("wordcount", mods.Wordcount, "", input, outputTo(out)))
	wantReceipt(t, "linked input", r, transport.StatusFailed, "input "+input+" (resolves to "+secret+") is outside --input-root")
	if st := w.Stats(); st.WasmCompiles != 0 || names(t, s.outDir) != nil {
		t.Fatalf("a refused input compiled %d modules, wrote %v", st.WasmCompiles, names(t, s.outDir))
	}
	r = s.receipt(2, deployed("wordcount", mods.Wordcount, "", s.writeInput("ok.txt", "a b a\n"), outputTo(out)))
	wantReceipt(t, "input inside", r, transport.StatusSuccess, "")
}

// A sink that resolves outside --output-dir fails its job with a reason
// that names it and the folder; nothing is written for any sink of the job
// (no staging file, no folder), inside the output dir or out of it.
// Relative and absolute sinks inside still work.
func TestWorker_SinkOutsideOutputDirFailsAndWritesNothing(t *testing.T) {
	t.Parallel()
	s := newScripted(t)
	outside := filepath.Join(filepath.Dir(s.inDir), "outside")
	for _, d := range []string{outside, s.outDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustSymlink(t, outside, filepath.Join(s.outDir, "escape"))
	sp := &spy{}
	startWorker(t, s.harness(), worker.Options{Plugins: []plugin.Plugin{sp}})
	s.next(transport.OpIdentify)

	id := int64(0)
	for name, uri := range map[string]string{
		"AbsoluteOutside":    "sqlite://" + outside + "/x.db/t",
		"DotDotRelative":     "parquet://../outside/x.parquet",
		"DotDotAbsolute":     "file://" + s.outDir + "/../outside/x.csv",
		"LinkedFolderOut":    "parquet://escape/x.parquet",
		"LinkedFolderNewDir": "sqlite://escape/a/b/x.db/t",
		"PrefixTrick":        "file://" + s.outDir + "2/x.jsonl",
	} {
		t.Run(name, func(t *testing.T) {
			id++
			// A first sink that is fine: it must not be written either.
			r := s.receipt(id, spyJob(id, s.input, "file://ok/first.jsonl", uri))
			wantReceipt(t, name, r, transport.StatusFailed, "sink "+uri)
			if want := "is outside --output-dir (" + s.outDir + ")"; !strings.Contains(r.ErrorMessage, want) {
				t.Errorf("reason %q does not say %q", r.ErrorMessage, want)
			}
		})
	}
	if n := sp.runs.Load(); n != 0 {
		t.Fatalf("the plugin ran %d times for jobs with a refused sink", n)
	}
	if got := names(t, outside); got != nil {
		t.Fatalf("written outside the output dir: %v", got)
	}
	if got := names(t, s.outDir); !slices.Equal(got, []string{"escape"}) {
		t.Fatalf("the output dir holds %v; want only the planted link", got)
	}

	for _, c := range []struct{ uri, file string }{
		{"parquet://nested/dir/rel.parquet", "nested/dir/rel.parquet"},
		{"file://" + s.outDir + "/abs/x.csv", "abs/x.csv"},
		{"sqlite://nested/../back.db/t", "back.db"},
	} {
		id++
		wantReceipt(t, c.uri, s.receipt(id, spyJob(id, s.input, c.uri)), transport.StatusSuccess, "")
		if _, err := os.Stat(filepath.Join(s.outDir, c.file)); err != nil {
			t.Errorf("sink %s: %v", c.uri, err)
		}
	}
}

// End to end: a job whose sink names the Sentinel's own database fails at
// dispatch, FAILED at once with the reason, and never reaches the worker,
// even one whose --output-dir holds the database; the catalogue
// (cf_plugin_config) is intact and ordinary jobs still run.
func TestWorker_SinkNamingTheSentinelDatabaseFailsTheJob(t *testing.T) {
	t.Parallel()
	h := newSentinel(t, nil)
	dir := filepath.Dir(h.Root)
	dbPath := filepath.Join(dir, "casparian_flow.db")
	h.Plugin("csv")
	if _, err := h.Store.PluginSubscribe(t.Context(), "csv", []string{"csv", "tsv"}); err != nil {
		t.Fatal(err)
	}
	catalogue := func() []string {
		return querySQLite(t, dbPath, `SELECT plugin_name, subscription_tags, default_parameters, last_updated FROM cf_plugin_config ORDER BY 1`)
	}
	before := catalogue()
	mustSymlink(t, dbPath, filepath.Join(dir, "looks-harmless.db"))
	w := startWorker(t, h, worker.Options{OutputDir: dir})
	fv := h.sample("orders.csv")

	for name, uri := range map[string]string{
		"Direct":  "sqlite://" + dbPath + "/cf_plugin_config",
		"DotDot":  "sqlite://" + h.Root + "/../casparian_flow.db/cf_plugin_config",
		"Symlink": "sqlite://" + filepath.Join(dir, "looks-harmless.db") + "/cf_plugin_config",
		"WAL":     "parquet://" + dbPath + "-wal",
	} {
		t.Run(name, func(t *testing.T) {
			id := h.enqueueUnchecked(fv, "csv", fmt.Sprintf(`{"output": {"uri": %q, "mode": "replace"}}`, uri))
			j := h.WaitJob(id, job.StatusFailed, job.StatusCompleted)
			if j.Status != job.StatusFailed || j.RetryCount != 0 ||
				!strings.Contains(j.ErrorMessage, "sink "+uri+" names the Sentinel's database") {
				t.Fatalf("job: %s after %d retries, %q; want FAILED at once naming the database", j.Status, j.RetryCount, j.ErrorMessage)
			}
		})
	}
	if st := w.Stats(); st.JobsStarted != 0 {
		t.Fatalf("the worker was sent %d of the refused jobs", st.JobsStarted)
	}
	if after := catalogue(); !slices.Equal(after, before) {
		t.Fatalf("cf_plugin_config changed:\n%q\nwant\n%q", after, before)
	}
	ok := h.EnqueueOverrides(fv, "csv", `{"output": {"uri": "sqlite://out/orders.db/orders"}}`)
	if j := h.WaitJob(ok, job.StatusFailed, job.StatusCompleted); j.Status != job.StatusCompleted {
		t.Fatalf("an ordinary job: %s %q", j.Status, j.ErrorMessage)
	}
}
