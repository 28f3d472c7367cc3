package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testbin"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

func TestRun_HelpExplainsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"--help"}, func(string) string { return "" }, &out, &out, nil)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run --help: %v", err)
	}
	for _, want := range []string{"-endpoint", "CASPARIAN_ENDPOINT", "-concurrency", "-plugins", "csv,jsonl", "-output-dir",
		"parquet://output/<plugin>.parquet", "-heartbeat-interval", "-drain-timeout", "-sentinel-timeout", "-log-level", "-log-format", "-identity",
		"-wasm", "-wasm-memory-mb", "-wasm-time-limit", "-wasm-cache-modules", "-wasm-cache-dir", "-wasm-interpreter",
		"-input-root", "CASPARIAN_INPUT_ROOT", "default the working directory",
		"-sentinel-key", "CASPARIAN_SENTINEL_KEY", "-curve-secret-key", "CASPARIAN_CURVE_SECRET_KEY", "--authorized-workers",
		"-version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q:\n%s", want, out.String())
		}
	}
}

func TestRun_VersionExitsZero(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"--version"}, func(string) string { return "" }, &out, &errOut, nil); err != nil {
		t.Fatalf("run --version = %v, want nil (exit 0)", err)
	}
	if !strings.HasPrefix(out.String(), "casparian-worker ") || errOut.Len() != 0 {
		t.Errorf("--version printed %q, stderr %q", out.String(), errOut.String())
	}
}

func TestRun_RejectsBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--plugins=csv,nope":       `unknown plugin "nope"`,
		"--plugins=,":              "no plugin selected",
		"--concurrency=0":          "--concurrency must be at least 1",
		"--log-level=loud":         "--log-level",
		"--log-format=xml":         "--log-format",
		"--drain-timeout=-1s":      "--drain-timeout must be positive",
		"--sentinel-timeout=-1s":   "--sentinel-timeout must not be negative",
		"--heartbeat-interval=x1":  "invalid value",
		"extra":                    "unexpected arguments",
		"--wasm-memory-mb=0":       "--wasm-memory-mb must be 1 to 4095",
		"--wasm-time-limit=0s":     "--wasm-time-limit must be positive",
		"--wasm-cache-modules=0":   "--wasm-cache-modules must be at least 1",
		"--sentinel-key=k.pub":     "--sentinel-key needs --curve-secret-key",
		"--curve-secret-key=w.key": "--curve-secret-key needs --sentinel-key",
		"--sentinel-key=/nonexistent/s.pub --curve-secret-key=/nonexistent/w.key": "--sentinel-key: open /nonexistent/s.pub",
		"--endpoint=tcp://a:1,,tcp://b:1":                                         "--endpoint: entry 2",
		"--endpoint=tcp://a:1,":                                                   "--endpoint: entry 2",
		"--endpoint=tcp://a:1,tcp://a:1":                                          "--endpoint: tcp://a:1 is listed twice",
		"--endpoint=tcp://a:1,http://b:1":                                         "--endpoint: http://b:1: want a tcp:// or ipc:// endpoint",
		"--endpoint=a:1":                                                          "--endpoint: a:1: want a tcp:// or ipc:// endpoint",
		"--endpoint=tcp://a:1,tcp://b:1 --sentinel-timeout=0":                     "--sentinel-timeout 0 turns failover off",
	} {
		var out bytes.Buffer
		err := run(strings.Fields(args), func(string) string { return "" }, &out, &out, nil)
		if err == nil || !strings.Contains(err.Error()+out.String(), want) {
			t.Errorf("run %s: %v, want an error mentioning %q", args, err, want)
		}
	}
}

// --input-root: the environment gives the default, the first flag replaces
// it, later flags and commas add to it.
func TestFolderList_EnvDefaultThenFlags(t *testing.T) {
	for _, c := range []struct {
		env   string
		flags []string
		want  string
	}{
		{"", nil, ""},
		{"/a, /b", nil, "/a,/b"},
		{"/a", []string{"/c"}, "/c"},
		{"/a", []string{"/c,/d", "/e"}, "/c,/d,/e"},
	} {
		l := &folderList{list: splitList(c.env)}
		for _, f := range c.flags {
			if err := l.Set(f); err != nil {
				t.Fatal(err)
			}
		}
		if got := l.String(); got != c.want {
			t.Errorf("env %q, flags %q: %q, want %q", c.env, c.flags, got, c.want)
		}
	}
	if err := (&folderList{}).Set(" , "); err == nil {
		t.Error("an empty --input-root was accepted")
	}
}

// TestRun_CurveKeysFromFlagsOrEnvironment checks that the two keys reach
// the worker, from flags or from the environment, and the Sentinel's key as
// a file or inline: the worker logs both fingerprints as it connects.
func TestRun_CurveKeysFromFlagsOrEnvironment(t *testing.T) {
	dir := t.TempDir()
	spub, ssec, _ := transport.GenerateCurveKeyPair()
	wpub, wsec, _ := transport.GenerateCurveKeyPair()
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "sentinel"), spub, ssec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "worker"), wpub, wsec); err != nil {
		t.Fatal(err)
	}
	endpoint := "tcp://127.0.0.1:1" // nobody listens: the worker is stopped while it waits
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"FlagsWithKeyFile": {args: []string{"--sentinel-key", filepath.Join(dir, "sentinel.pub"),
			"--curve-secret-key", filepath.Join(dir, "worker.key")}},
		"FlagsWithInlineKey": {args: []string{"--sentinel-key", spub.String(),
			"--curve-secret-key", filepath.Join(dir, "worker.key")}},
		"Environment": {env: map[string]string{"CASPARIAN_SENTINEL_KEY": spub.String(),
			"CASPARIAN_CURVE_SECRET_KEY": filepath.Join(dir, "worker.key")}},
	} {
		t.Run(name, func(t *testing.T) {
			var out sentineltest.Logs
			signals := make(chan os.Signal, 1)
			signals <- syscall.SIGTERM
			args := append([]string{"--endpoint", endpoint, "--log-format", "json", "--wasm=false"}, tc.args...)
			if err := run(args, func(k string) string { return tc.env[k] }, &out, &out, signals); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			line := logLine(t, out.String(), "connecting to the Sentinel")
			if line["security"] != "curve" || line["key_fingerprint"] != wpub.Fingerprint() ||
				line["sentinel_key_fingerprint"] != spub.Fingerprint() {
				t.Fatalf("connecting with %v; want curve, key %s, Sentinel key %s", line, wpub.Fingerprint(), spub.Fingerprint())
			}
		})
	}
}

// TestRun_SentinelKeyPerEndpoint: --sentinel-key takes one key for every
// --endpoint entry, or a comma-separated list of one per entry, in order.
func TestRun_SentinelKeyPerEndpoint(t *testing.T) {
	dir := t.TempDir()
	apub, asec, _ := transport.GenerateCurveKeyPair()
	bpub, _, _ := transport.GenerateCurveKeyPair()
	_, wsec, _ := transport.GenerateCurveKeyPair()
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "a"), apub, asec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "worker"), apub, wsec); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "worker.key")
	endpoints := "tcp://127.0.0.1:1,tcp://127.0.0.1:2"
	run1 := func(args ...string) (string, error) {
		var out sentineltest.Logs
		signals := make(chan os.Signal, 1)
		signals <- syscall.SIGTERM // stop at once: the endpoints answer nothing
		args = append([]string{"--log-format", "json", "--wasm=false", "--curve-secret-key", secret}, args...)
		err := run(args, func(string) string { return "" }, &out, &out, signals)
		return out.String(), err
	}
	logs, err := run1("--endpoint", endpoints, "--sentinel-key", filepath.Join(dir, "a.pub")+", "+bpub.String())
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	line := logLine(t, logs, "connecting to the Sentinel")
	prints, _ := line["sentinel_key_fingerprints"].([]any)
	if line["endpoint"] != endpoints || len(prints) != 2 || prints[0] != apub.Fingerprint() || prints[1] != bpub.Fingerprint() {
		t.Fatalf("connecting with %v; want endpoints %s with Sentinel keys %s, %s", line, endpoints, apub.Fingerprint(), bpub.Fingerprint())
	}
	logs, err = run1("--endpoint", endpoints, "--sentinel-key", bpub.String())
	if line := logLine(t, logs, "connecting to the Sentinel"); err != nil || line["sentinel_key_fingerprint"] != bpub.Fingerprint() {
		t.Fatalf("one key for two endpoints: %v, %v", err, line)
	}
	for _, tc := range []struct{ endpoints, keys, want string }{
		{endpoints + ",tcp://127.0.0.1:3", apub.String() + "," + bpub.String(), "--sentinel-key: 2 keys for 3 --endpoint entries"},
		{"tcp://127.0.0.1:1", apub.String() + "," + bpub.String(), "--sentinel-key: 2 keys for 1 --endpoint entries"},
		{endpoints, apub.String() + ",", "--sentinel-key: entry 2 is empty"},
		{endpoints, apub.String() + ",nonsense", "--sentinel-key: entry 2"},
	} {
		if _, err := run1("--endpoint", tc.endpoints, "--sentinel-key", tc.keys); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--endpoint %s --sentinel-key %s: %v, want an error containing %q", tc.endpoints, tc.keys, err, tc.want)
		}
	}
}

// TestWorkerProcess_SIGTERMDrainsAndExitsZero runs the real binary against
// an in-process Sentinel: SIGTERM while jobs run must let them finish, take
// no new ones, conclude them all and exit 0.
func TestWorkerProcess_SIGTERMDrainsAndExitsZero(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	dir := t.TempDir()
	bin := buildWorker(t)

	h := startSentinel(t)
	h.Plugin("csv")
	out := filepath.Join(dir, "out", "orders.db")
	h.Topic("csv", "output", "sqlite://"+out+"/orders", "append")
	// Both slots must still be busy when SIGTERM arrives, which is within
	// milliseconds of their "job started": --job-delay holds every job
	// jobDelay before its plugin runs, so the whole run of the plugin and
	// its sink commit happen during the drain (the test fails, and says
	// so, if the drain begins with nothing running). Files of 100,000 rows
	// once did the holding, at some 3 s of CPU; the delay holds for
	// certain at none, and a drain that cancelled its jobs would fail
	// them in the delay just as in the plugin.
	const (
		rows     = 5_000
		jobDelay = "3s"
	)
	var jobs []int64
	for i := range 4 {
		name := fmt.Sprintf("orders-%d.csv", i)
		size := writeOrders(t, filepath.Join(h.Root, name), rows)
		fv, err := h.Store.FileVersionAdd(t.Context(), h.RootID, name, "hash-"+name, size, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		id := h.Enqueue(fv, "csv", 0)
		jobs = append(jobs, id)
	}

	cmd := exec.Command(bin, "--endpoint", h.Endpoint, "--concurrency", "2", "--output-dir", dir, "--input-root", h.Root,
		"--heartbeat-interval", "100ms", "--drain-timeout", "60s", "--job-delay", jobDelay, "--log-format", "json")
	var stderr sentineltest.Logs
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	running := func() []int64 {
		var ids []int64
		for _, id := range jobs {
			if h.Job(id).Status == job.StatusRunning {
				ids = append(ids, id)
			}
		}
		return ids
	}
	// RUNNING in the database is not enough: the DISPATCH may still be on
	// its way. The worker logs each job it starts.
	testwait.Eventually(t, 20*time.Second, "two jobs started by the worker", func() bool {
		return strings.Count(stderr.String(), `"message":"job started"`) == 2
	})
	if r := running(); len(r) != 2 {
		t.Fatalf("jobs %v RUNNING, want two", r)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("worker exited with %v; stderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("worker did not exit after SIGTERM; stderr:\n%s", stderr.String())
	}

	// The drain began with jobs still running...
	drain := logLine(t, stderr.String(), "draining: taking no new jobs")
	if n, _ := drain["running"].(float64); n < 1 {
		t.Fatalf("SIGTERM arrived after the jobs had finished (%v): the test proves nothing; make the files bigger; log:\n%s", drain, stderr.String())
	}
	// ... and every job it had taken completed; the others were never
	// claimed and wait for another worker. The Sentinel records receipts
	// asynchronously, so the last one may land just after the exit.
	testwait.Eventually(t, 10*time.Second, "no job left RUNNING", func() bool { return len(running()) == 0 })
	completed := 0
	for _, id := range jobs {
		j := h.Job(id)
		switch {
		case j.Status == job.StatusCompleted:
			completed++
			if j.Metrics["rows"] != rows {
				t.Errorf("job %d: %d rows, want %d", id, j.Metrics["rows"], rows)
			}
			t.Logf("job %d: %d rows csv→sqlite in %d ms, %s of them --job-delay", id, j.Metrics["rows"], j.Metrics["duration_ms"], jobDelay)
		case j.Status == job.StatusQueued && j.Attempt == 0:
		default:
			t.Errorf("job %d: %s attempt %d %q, want COMPLETED, or QUEUED and never claimed", id, j.Status, j.Attempt, j.ErrorMessage)
		}
	}
	if completed < int(drain["running"].(float64)) {
		t.Errorf("%d jobs completed, but %v were running at SIGTERM", completed, drain["running"])
	}
	conn, err := sql.Open("sqlite", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int
	if err := conn.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != completed*rows {
		t.Errorf("%d rows in the output, want %d", n, completed*rows)
	}
	logLine(t, stderr.String(), "worker stopped")
}

// startSentinel runs an in-process Sentinel (internal/sentineltest) for the
// binary: a worker may stay silent 2 s (it runs real jobs under the race
// detector), and a stop does not wait for a drain. Its Stop is safe to call
// twice.
func startSentinel(t *testing.T) *sentineltest.Env {
	t.Helper()
	return sentineltest.Start(t, func(c *config.Config) {
		c.WorkerTimeout = 2 * time.Second
		c.DrainTimeout = 0
	})
}

// Once per test binary, buildWorker builds the binary that the process
// tests run (each a process of its own, so they share it). internal/testbin
// keeps the linked binary in the build cache, shared with tests/process and
// the next run.
var (
	workerBuild    sync.Once
	workerBin      string
	workerBuildErr error
)

// buildWorker builds the binary, once, into a folder removed by TestMain,
// and returns its path.
func buildWorker(t *testing.T) string {
	t.Helper()
	workerBuild.Do(func() {
		workerBin, workerBuildErr = testbin.Build(workerBinDir, "casparian-worker", "github.com/casparian/sentinel/cmd/casparian-worker")
	})
	if workerBuildErr != nil {
		t.Fatal(workerBuildErr)
	}
	return workerBin
}

// workerBinDir holds the binary buildWorker builds.
var workerBinDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casparian-worker-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	workerBinDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir) // a leftover temp folder costs disk space, not a result
	os.Exit(code)
}

// TestWorkerProcess_FailsOverToTheNextSentinel runs the real binary with two
// endpoints, A and B, two Sentinels with a database each: it connects to A;
// A stops; it moves to B, says so, and runs a job enqueued there; SIGTERM
// still drains and exits 0.
func TestWorkerProcess_FailsOverToTheNextSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	dir := t.TempDir()
	bin := buildWorker(t)
	a, b := startSentinel(t), startSentinel(t)
	cmd := exec.Command(bin, "--endpoint", a.Endpoint+","+b.Endpoint, "--sentinel-timeout", "1s",
		"--heartbeat-interval", "100ms", "--output-dir", dir, "--input-root", b.Root, "--wasm=false", "--log-format", "json")
	var stderr sentineltest.Logs
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	on := func(msg, endpoint string) func() bool {
		return func() bool {
			for _, l := range strings.Split(stderr.String(), "\n") {
				if strings.Contains(l, `"message":"`+msg+`"`) && strings.Contains(l, `"endpoint":"`+endpoint+`"`) {
					return true
				}
			}
			return false
		}
	}
	testwait.Eventually(t, 20*time.Second, "connected to A", on("connected to the Sentinel", a.Endpoint))
	a.Stop()
	testwait.Eventually(t, 20*time.Second, "failed over to B", on("failed over to another Sentinel; identifying there", b.Endpoint))

	b.Plugin("csv")
	b.Topic("csv", "output", "sqlite://"+filepath.Join(dir, "out", "b.db")+"/orders", "append")
	size := writeOrders(t, filepath.Join(b.Root, "orders.csv"), 100)
	fv, err := b.Store.FileVersionAdd(t.Context(), b.RootID, "orders.csv", "hash-orders", size, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := b.Enqueue(fv, "csv", 0)
	testwait.Eventually(t, 20*time.Second, "the job on B completed", func() bool { return b.Job(id).Status == job.StatusCompleted })
	if j := b.Job(id); j.Metrics["rows"] != 100 {
		t.Fatalf("job on B: %+v", j)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("worker exited with %v; stderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not exit after SIGTERM; stderr:\n%s", stderr.String())
	}
}

// logLine returns the first JSON log line whose message is msg.
func logLine(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
			return m
		}
	}
	t.Fatalf("no log line %q in:\n%s", msg, logs)
	return nil
}

func writeOrders(t *testing.T, path string, n int) int64 {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("order_id,customer,amount,quantity,paid\n")
	for i := range n {
		fmt.Fprintf(&b, "%d,customer-%d,%d.%02d,%d,%t\n", i, i%1000, i%5000, i%100, i%17, i%3 == 0)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return int64(b.Len())
}
