package process_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// runCLI runs the casparian command line and returns its exit code and
// combined output.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	default:
		t.Fatalf("casparian %s: %v\n%s", strings.Join(args, " "), err, out.String())
		return -1, ""
	}
}

// TestDeploy_PublishedWasmPluginRunsOnSampleWorkers is the deploy lifecycle
// with every part real: `casparian keygen` and `casparian publish` send the
// example WebAssembly plugin to a Sentinel that trusts the key, and sample
// worker processes (cmd/casparian-worker) that never heard of the plugin
// prepare its environment, verify the artifact, run the module on the files
// and write its rows. An unsigned publish is refused first and changes
// nothing.
func TestDeploy_PublishedWasmPluginRunsOnSampleWorkers(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	keys := filepath.Join(c.dir, "publisher")
	if code, out := runCLI(t, "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen exit %d:\n%s", code, out)
	}
	o := defaultSentinelOpts()
	// Every DISPATCH carries the 4 MiB module: heartbeats far apart enough
	// that one is on the wire and decoded well within the reconciliation
	// window (two heartbeats), as with the defaults (5 s).
	o.extra = []string{"--trusted-keys", keys + ".pub", "--heartbeat-interval", "1s", "--worker-timeout", "10s"}
	c.startSentinel("sentinel", o)

	outDir := filepath.Join(c.dir, "out")
	for _, id := range []string{"wasm-a", "wasm-b"} {
		p, err := startProc("worker "+id, sampleWorkerBin,
			"--endpoint", c.endpoint, "--identity", id, "--concurrency", "2",
			"--output-dir", outDir, "--input-root", filepath.Join(c.dir, "files"), "--heartbeat-interval", "1s",
			"--log-format", "json")
		if err != nil {
			t.Fatal(err)
		}
		c.track(p)
	}

	code, out := runCLI(t, "publish", wordcountWasm, "--name", "wordcount", "--version", "1.0.0",
		"--unsigned", "--publisher", "process-test", "--sentinel", c.endpoint)
	if code != 1 || !strings.Contains(out, "deploy rejected: unsigned deploy (no signature) refused") {
		t.Fatalf("unsigned publish: exit %d, want the Sentinel's refusal:\n%s", code, out)
	}
	ctx, cancel := c.ctx()
	plugins, err := c.store.PluginsList(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plugins {
		if p.Name == "wordcount" {
			t.Fatalf("refused publish stored a plugin: %+v", p)
		}
	}

	code, out = runCLI(t, "publish", wordcountWasm, "--name", "wordcount", "--version", "1.0.0",
		"--key", keys+".key", "--publisher", "process-test", "--sentinel", c.endpoint)
	if code != 0 || !strings.Contains(out, "Deployed wordcount v1.0.0") {
		t.Fatalf("publish: exit %d:\n%s", code, out)
	}

	ids := c.enqueue("wordcount", 6)
	n := c.waitSettled(2*time.Minute, 0)
	if n[job.StatusCompleted] != int64(len(ids)) {
		for _, id := range ids {
			t.Logf("job %d: %+v", id, c.job(id))
		}
		t.Fatalf("jobs settled as %s, want all %d COMPLETED", fmtCounts(n), len(ids))
	}
	for _, id := range ids {
		j := c.job(id)
		// "row R of file I" for R in 0..lines-1, with I among the R: the
		// distinct words are row, of, file and the numbers 0..lines-1.
		want := 3 + c.files[j.FileVersionID].lines
		if j.Metrics["rows"] != want {
			t.Errorf("job %d: rows %d, want %d (metrics %v)", id, j.Metrics["rows"], want, j.Metrics)
		}
		if j.Attempt != 1 {
			t.Logf("job %d took %d attempts", id, j.Attempt)
		}
	}
	if st, err := os.Stat(filepath.Join(outDir, "output", "wordcount.parquet")); err != nil || st.Size() == 0 {
		t.Errorf("default output sink: %v, %v", st, err)
	}
}
