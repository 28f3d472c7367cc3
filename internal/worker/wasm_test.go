package worker_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/wasm"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// testWasm returns wasm options for tests: the interpreter under the race
// detector (see race_test.go), the shared compilation cache otherwise, and
// a time limit generous enough for a loaded machine.
func testWasm(timeLimit time.Duration) *wasm.Options {
	if timeLimit == 0 {
		timeLimit = time.Minute
	}
	return &wasm.Options{MemoryLimit: 64 << 20, TimeLimit: timeLimit, Interpreter: raceEnabled, CacheDir: wasmCacheDir}
}

// deployed is a DISPATCH of a deployed module, hashed as the Sentinel
// would: env_hash of lock ("system" when lock is empty) and artifact_hash
// over source_code and lock.
func deployed(name string, code []byte, lock, input string, sinks ...transport.SinkConfig) *transport.Dispatch {
	src := base64.StdEncoding.EncodeToString(code)
	env := worker.SystemEnv
	if lock != "" {
		env = worker.EnvHash(lock)
	}
	return &transport.Dispatch{PluginName: name, FilePath: input, FileVersionID: 500, EnvHash: env,
		SourceCode: src, ArtifactHash: worker.ArtifactHash(src, lock), Sinks: sinks}
}

func outputTo(uri string) transport.SinkConfig {
	return transport.SinkConfig{Topic: "output", URI: uri, Mode: transport.ModeAppend}
}

// writeInput writes a file into a fresh folder under s.inDir and returns its
// path.
func (s *scripted) writeInput(name, content string) string {
	s.t.Helper()
	dir, err := os.MkdirTemp(s.inDir, "input-")
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// receipt sends d as job id and returns the job's CONCLUDE.
func (s *scripted) receipt(id int64, d *transport.Dispatch) *transport.Conclude {
	s.t.Helper()
	s.send(transport.OpDispatch, id, d)
	return s.concluded(id)
}

// wasmWithin bounds a wait for a job that may compile a module: some 10 s
// with wazero's interpreter under the race detector on a loaded machine.
const wasmWithin = 2 * time.Minute

// concluded waits for job id's CONCLUDE, recording every receipt.
func (s *scripted) concluded(id int64) *transport.Conclude {
	s.t.Helper()
	if r := s.receipts[id]; len(r) > 0 { // next() met it first
		return r[len(r)-1]
	}
	deadline := time.After(wasmWithin)
	for {
		select {
		case m := <-s.in:
			if s.identity == nil {
				s.identity = m.identity
			}
			if c, ok := m.payload.(*transport.Conclude); ok {
				s.receipts[int64(m.msg.JobID)] = append(s.receipts[int64(m.msg.JobID)], c)
				if int64(m.msg.JobID) == id {
					return c
				}
			}
		case <-deadline:
			s.t.Fatalf("no CONCLUDE for job %d within %s", id, wasmWithin)
		}
	}
}

func wantReceipt(t *testing.T, what string, r *transport.Conclude, status, errorPart string) {
	t.Helper()
	if r.Status != status || !strings.Contains(r.ErrorMessage, errorPart) {
		t.Fatalf("%s: receipt %s %q, want %s containing %q", what, r.Status, r.ErrorMessage, status, errorPart)
	}
}

// PREPARE_ENV is checked and remembered; IDENTIFY advertises "*" next to
// the built-ins; a DISPATCH whose module does not match its artifact_hash,
// whose environment is unknown, or whose source is not a module fails
// before anything runs; built-in manifests still run the built-ins.
func TestWasm_EnvironmentsAndVerification(t *testing.T) {
	t.Parallel()
	mods := worker.BuildTestModules(t)
	s := newScripted(t)
	w := startWorker(t, s.harness(), worker.Options{Wasm: testWasm(0)})

	hello := s.next(transport.OpIdentify).payload.(*transport.Identify)
	if want := []string{"*", "checksum", "csv", "jsonl", "text_stats"}; !slices.Equal(hello.Capabilities, want) {
		t.Fatalf("IDENTIFY capabilities %q, want %q", hello.Capabilities, want)
	}

	lock := "wordcount==1.0\n"
	env := worker.EnvHash(lock)
	for i, wantCached := range []bool{false, true} {
		s.send(transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: env, LockfileContent: lock})
		ready := s.next(transport.OpEnvReady).payload.(*transport.EnvReady)
		if ready.EnvHash != env || ready.InterpreterPath != "wazero" || ready.Cached != wantCached {
			t.Fatalf("PREPARE_ENV #%d: ENV_READY %+v, want cached %t", i+1, ready, wantCached)
		}
	}
	s.send(transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: worker.SystemEnv})
	if ready := s.next(transport.OpEnvReady).payload.(*transport.EnvReady); ready.EnvHash != "system" || !ready.Cached {
		t.Fatalf("PREPARE_ENV system: %+v", ready)
	}
	badEnv := worker.EnvHash("the lockfile the Sentinel meant")
	s.send(transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: badEnv, LockfileContent: "another lockfile"})
	errMsg := s.next(transport.OpErr)
	if e := errMsg.payload.(*transport.Err); errMsg.msg.JobID != 0 || !strings.Contains(e.Message, badEnv) ||
		!strings.Contains(e.Message, worker.EnvHash("another lockfile")) {
		t.Fatalf("bad lockfile: ERR job %d %+v", errMsg.msg.JobID, e)
	}

	input := s.writeInput("words.txt", "a b a\n")
	out := "file://" + filepath.Join(s.outDir, "out.jsonl")

	d := deployed("wordcount", mods.Wordcount, lock, input, outputTo(out))
	d.ArtifactHash = worker.ArtifactHash(d.SourceCode, "") // hashed without the lockfile
	wantReceipt(t, "tampered artifact_hash", s.receipt(1, d), transport.StatusFailed, "artifact_hash mismatch")

	tampered := slices.Clone(mods.Wordcount)
	tampered[len(tampered)/2] ^= 1
	d = deployed("wordcount", mods.Wordcount, lock, input, outputTo(out))
	d.SourceCode = base64.StdEncoding.EncodeToString(tampered) // the artifact_hash is the original's
	wantReceipt(t, "tampered module", s.receipt(2, d), transport.StatusFailed, "artifact_hash mismatch")

	d = deployed("wordcount", mods.Wordcount, "never prepared\n", input, outputTo(out))
	wantReceipt(t, "unknown env", s.receipt(3, d), transport.StatusFailed, "environment "+worker.EnvHash("never prepared\n")+" is not prepared")

	d = deployed("wordcount", nil, "", input, outputTo(out))
	d.SourceCode = "AGFzbQEAAAA*not base64*"
	d.ArtifactHash = worker.ArtifactHash(d.SourceCode, "")
	wantReceipt(t, "bad base64", s.receipt(4, d), transport.StatusFailed, "not valid base64")

	d = deployed("wordcount", []byte("\x00asm\x01\x00\x00\x00\xffgarbage"), "", input, outputTo(out))
	wantReceipt(t, "not a module", s.receipt(5, d), transport.StatusFailed, "invalid WebAssembly module")

	d = deployed("unknown", nil, "", input, outputTo(out))
	d.SourceCode, d.ArtifactHash = "print('hello')", ""
	wantReceipt(t, "neither built-in nor module", s.receipt(6, d), transport.StatusFailed,
		`plugin "unknown" is not a built-in of this worker (it has: checksum, csv, jsonl, text_stats) and its source_code is not a base64 WebAssembly module`)

	// A built-in's manifest carries text, not a module: the built-in runs.
	d = &transport.Dispatch{PluginName: "text_stats", FilePath: input, FileVersionID: 9, EnvHash: "system",
		SourceCode: "builtin:text_stats", Sinks: []transport.SinkConfig{outputTo(out)}}
	wantReceipt(t, "built-in", s.receipt(7, d), transport.StatusSuccess, "")
	b, err := os.ReadFile(strings.TrimPrefix(out, "file://"))
	if err != nil || !strings.Contains(string(b), `"words":3`) {
		t.Fatalf("built-in output %q, %v", b, err)
	}
	if st := w.Stats(); st.WasmCompiles != 1 || st.WasmCacheHits != 0 || st.JobsFailed != 6 || st.JobsSucceeded != 1 {
		t.Fatalf("stats %+v: only the garbage module should have reached the compiler", st)
	}

	// With deployed plugins off, "*" is not advertised and a module fails.
	s2 := newScripted(t)
	startWorker(t, s2.harness(), worker.Options{InputRoots: []string{s.inDir}, OutputDir: s.outDir})
	if caps := s2.next(transport.OpIdentify).payload.(*transport.Identify).Capabilities; slices.Contains(caps, "*") {
		t.Fatalf("IDENTIFY without wasm: %q", caps)
	}
	wantReceipt(t, "wasm off", s2.receipt(1, deployed("wordcount", mods.Wordcount, "", input, outputTo(out))),
		transport.StatusFailed, "deployed plugins are turned off")
}

// The example plugin runs from its DISPATCH into real SQLite and Parquet
// sinks, the second job reusing the compiled module; the module sees its
// input and nothing else, read-only.
func TestWasm_DeployedPluginWritesRows(t *testing.T) {
	t.Parallel()
	mods := worker.BuildTestModules(t)
	s := newScripted(t)
	w := startWorker(t, s.harness(), worker.Options{Wasm: testWasm(0)})
	s.next(transport.OpIdentify)

	lock := "wordcount==1.0\n"
	s.send(transport.OpPrepareEnv, 0, &transport.PrepareEnv{EnvHash: worker.EnvHash(lock), LockfileContent: lock})
	s.next(transport.OpEnvReady)

	input := s.writeInput("words.txt", "The cat and the hat.\nThe END, the end!\n")
	dbPath := filepath.Join(s.outDir, "out.db")
	r := s.receipt(1, deployed("wordcount", mods.Wordcount, lock, input, outputTo("sqlite://"+dbPath+"/words")))
	wantReceipt(t, "wordcount to SQLite", r, transport.StatusSuccess, "")
	if r.Metrics["rows"] != 5 {
		t.Fatalf("receipt %+v, want 5 rows", r)
	}
	got := querySQLite(t, dbPath, `SELECT word, count, typeof(count), _job_id, _file_version_id FROM words ORDER BY rowid`)
	want := []string{"the|4|integer|1|500", "end|2|integer|1|500", "and|1|integer|1|500", "cat|1|integer|1|500", "hat|1|integer|1|500"}
	if !slices.Equal(got, want) {
		t.Fatalf("SQLite rows\n%q\nwant\n%q", got, want)
	}

	pq := filepath.Join(s.outDir, "words.parquet")
	r = s.receipt(2, deployed("wordcount", mods.Wordcount, lock, input, outputTo("parquet://"+pq)))
	wantReceipt(t, "wordcount to Parquet", r, transport.StatusSuccess, "")
	if rows := readParquet(t, pq); fmt.Sprint(rows) != "[[the 4 2 500] [end 2 2 500] [and 1 2 500] [cat 1 2 500] [hat 1 2 500]]" {
		t.Fatalf("Parquet rows %v", rows)
	}
	if st := w.Stats(); st.WasmCompiles != 1 || st.WasmCacheHits != 1 {
		t.Fatalf("stats %+v: want the second job to hit the compiled-module cache", st)
	}

	// What the module can see and do.
	peekIn := s.writeInput("peek.txt", "peek\n")
	if err := os.WriteFile(filepath.Join(filepath.Dir(peekIn), "sibling.txt"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	jsonl := filepath.Join(s.outDir, "peek.jsonl")
	r = s.receipt(3, deployed("peeker", mods.Misbehave, "", peekIn, outputTo("file://"+jsonl)))
	wantReceipt(t, "peek", r, transport.StatusSuccess, "")
	seen := map[string]string{}
	b, err := os.ReadFile(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var row struct{ Check, Result string }
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("peek output %q: %v", line, err)
		}
		seen[row.Check] = row.Result
	}
	for check, want := range map[string]string{
		"args": "peeker /input/peek.txt", "CASPARIAN_INPUT": "/input/peek.txt", "CASPARIAN_INPUT_NAME": "peek.txt",
		"CASPARIAN_INPUT_SIZE": "5", "CASPARIAN_JOB_ID": "3", "CASPARIAN_FILE_VERSION_ID": "500", "CASPARIAN_PLUGIN": "peeker",
		"list": "peek.txt", "sibling": "denied", "write": "denied", "create": "denied",
	} {
		if seen[check] != want {
			t.Errorf("module's %s: %q, want %q (all: %v)", check, seen[check], want, seen)
		}
	}
	if root := seen["root"]; root != "denied" && root != "input" {
		t.Errorf("module's view of /: %q, want only input", root)
	}
	if b, _ := os.ReadFile(peekIn); string(b) != "peek\n" {
		t.Errorf("input changed to %q", b)
	}
}

// The limits stop a module that spins, one that allocates without end, and
// one that writes a malformed line; a non-zero exit fails the job with its
// code and stderr; ABORT and the drain stop a running module. The worker
// serves the next job after each.
func TestWasm_LimitsStopModules(t *testing.T) {
	mods := worker.BuildTestModules(t)
	s := newScripted(t)
	// Long enough for a well-behaved run of the module under the race
	// detector, which interprets it.
	timeLimit := 4 * time.Second
	if raceEnabled {
		timeLimit = 10 * time.Second
	}
	opts := testWasm(timeLimit)
	opts.MemoryLimit = 16 << 20
	w := startWorker(t, s.harness(), worker.Options{Wasm: opts, DrainTimeout: time.Second})
	s.next(transport.OpIdentify)
	out := "file://" + filepath.Join(s.outDir, "out.jsonl")
	job := func(id int64, command string) *transport.Dispatch {
		return deployed("misbehave", mods.Misbehave, "", s.writeInput("cmd.txt", command+"\n"), outputTo(out))
	}

	start := time.Now()
	wantReceipt(t, "loop", s.receipt(1, job(1, "loop")), transport.StatusFailed, fmt.Sprintf("misbehave: time limit of %s exceeded", timeLimit))
	if d := time.Since(start); d < timeLimit {
		t.Fatalf("the spinning module failed after %s, before its time limit", d)
	}
	wantReceipt(t, "rows after loop", s.receipt(2, job(2, "rows 3")), transport.StatusSuccess, "")

	wantReceipt(t, "hog", s.receipt(3, job(3, "hog")), transport.StatusFailed, "misbehave: memory limit of 16 MiB exceeded (the module asked for")
	wantReceipt(t, "exit", s.receipt(4, job(4, "exit 3")), transport.StatusFailed, "misbehave: exit code 3; stderr: giving up with 3")
	start = time.Now()
	wantReceipt(t, "badline", s.receipt(5, job(5, "badline")), transport.StatusFailed,
		"misbehave: output line 2: not a JSON object")
	if d := time.Since(start); d >= timeLimit {
		t.Fatalf("malformed output took %s: the module was not stopped at the bad line", d)
	}

	// ABORT while it spins.
	s.send(transport.OpDispatch, 6, job(6, "loop"))
	testwait.Eventually(t, wasmWithin, "job 6's module running", func() bool { return w.Stats().WasmRunning == 1 })
	start = time.Now()
	s.send(transport.OpAbort, 6, nil)
	wantReceipt(t, "abort", s.concluded(6), transport.StatusAborted, "aborted by the Sentinel")
	if d := time.Since(start); d >= timeLimit {
		t.Fatalf("ABORT took %s", d)
	}
	wantReceipt(t, "rows after abort", s.receipt(7, job(7, "rows 2")), transport.StatusSuccess, "")

	rows, err := os.ReadFile(strings.TrimPrefix(out, "file://"))
	if err != nil || strings.Count(string(rows), "\n") != 5 || strings.Contains(string(rows), `"n":1,"_job_id":5`) {
		t.Fatalf("output %q (%v): want the rows of jobs 2 and 7 only", rows, err)
	}
	if st := w.Stats(); st.WasmCompiles != 1 || st.WasmCacheHits != 6 {
		t.Fatalf("stats %+v", st)
	}

	// The drain deadline stops a module that would never finish.
	s.send(transport.OpDispatch, 8, job(8, "loop"))
	testwait.Eventually(t, wasmWithin, "job 8's module running", func() bool { return w.Stats().WasmRunning == 1 })
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	wantReceipt(t, "drain", s.concluded(8), transport.StatusAborted, "drain deadline")
}

// End to end: a module in an ACTIVE manifest is claimed by a worker that
// advertises "*", runs, and its rows and the job's status land.
func TestWasm_EndToEndWithSentinel(t *testing.T) {
	t.Parallel()
	mods := worker.BuildTestModules(t)
	// Every DISPATCH carries the 4.4 MB of base64 module, which takes the
	// worker a while to decode under the race detector, and compiling it
	// keeps both cores busy. With the harness's 100 ms heartbeats the
	// Sentinel would take the job back as unreported before the worker has
	// registered it; give it production-like timings.
	// Longer still on a loaded machine: a job missing from two heartbeats
	// 2 × HeartbeatInterval after its DISPATCH is requeued, and decoding
	// that DISPATCH took longer than 2 × 2 s there (the job then ran twice).
	h := newSentinel(t, func(c *config.Config) {
		c.HeartbeatInterval = 5 * time.Second
		c.WorkerTimeout = 60 * time.Second
	})
	src := base64.StdEncoding.EncodeToString(mods.Wordcount)
	if _, err := h.Store.PluginManifestActivate(t.Context(), "wordcount", "1.0.0", src, "", worker.ArtifactHash(src, "")); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(h.out, "words.db")
	h.Topic("wordcount", "output", "sqlite://"+dbPath+"/words", transport.ModeAppend)
	// Three files for a worker with two slots: two instances of the module
	// may run at once (the second waiting for the first's compilation);
	// either way the module is compiled once.
	texts := []string{"to be or not to be\n", "be quick\n", "Or Not\n"}
	var fvs, ids []int64
	for i, text := range texts {
		fv := h.File(fmt.Sprintf("speech-%d.txt", i), text)
		fvs = append(fvs, fv)
		ids = append(ids, h.EnqueueOverrides(fv, "wordcount", ""))
	}
	w := startWorker(t, h, worker.Options{Wasm: testWasm(0), Concurrency: 2})

	for _, id := range ids {
		var j job.Job
		testwait.Eventually(t, wasmWithin, fmt.Sprintf("job %d concludes", id), func() bool {
			j = h.Job(id)
			return j.Status == job.StatusCompleted || j.Status == job.StatusFailed
		})
		if j.Status != job.StatusCompleted {
			t.Fatalf("job %+v", j)
		}
	}
	want := map[int64][]string{
		ids[0]: {fmt.Sprintf("be|2|%d", fvs[0]), fmt.Sprintf("to|2|%d", fvs[0]), fmt.Sprintf("not|1|%d", fvs[0]), fmt.Sprintf("or|1|%d", fvs[0])},
		ids[1]: {fmt.Sprintf("be|1|%d", fvs[1]), fmt.Sprintf("quick|1|%d", fvs[1])},
		ids[2]: {fmt.Sprintf("not|1|%d", fvs[2]), fmt.Sprintf("or|1|%d", fvs[2])},
	}
	for id, rows := range want {
		got := querySQLite(t, dbPath, `SELECT word, count, _file_version_id FROM words WHERE _job_id = ? ORDER BY rowid`, id)
		if !slices.Equal(got, rows) {
			t.Errorf("job %d rows\n%q\nwant\n%q", id, got, rows)
		}
	}
	// A job run twice (at least once allows it) is a third cache hit, not
	// a second compilation.
	if st := w.Stats(); st.WasmCompiles != 1 || st.WasmCacheHits < 2 {
		t.Errorf("stats %+v: want one compilation for three jobs, the others from the cache", st)
	}
}

// readParquet reads a Parquet file's rows as text values, checking that
// its columns are word (string), count (int64) and the lineage.
func readParquet(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, fl := range pf.Schema().Fields() {
		cols = append(cols, fl.Name()+":"+fl.Type().String())
	}
	if want := []string{"word:STRING", "count:INT(64,true)", "_job_id:INT(64,true)", "_file_version_id:INT(64,true)"}; !slices.Equal(cols, want) {
		t.Fatalf("parquet columns %v, want %v", cols, want)
	}
	r := parquet.NewReader(pf)
	defer r.Close()
	buf := make([]parquet.Row, 100)
	n, _ := r.ReadRows(buf)
	out := make([][]string, n)
	for i, row := range buf[:n] {
		for _, v := range row {
			s := strconv.FormatInt(v.Int64(), 10)
			if v.Kind() == parquet.ByteArray {
				s = string(v.ByteArray())
			}
			out[i] = append(out[i], s)
		}
	}
	return out
}
