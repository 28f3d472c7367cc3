package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/transport"
)

func TestDemo_VersionExitsZero(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--dir", dir, "--version"}, &out); err != nil {
		t.Fatalf("run --version = %v, want nil (exit 0)", err)
	}
	if !strings.HasPrefix(out.String(), "casparian-demo ") {
		t.Errorf("--version printed %q", out.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("--version made the demo folder: %v", err)
	}
}

// TestDemo_DrainsTheQueue runs the README's first command small: every job
// completes and the sample workers' rows are on disk, one Parquet file per
// input for csv and one shared file for the checksums.
func TestDemo_DrainsTheQueue(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"--dir", dir, "--files", "12", "--workers", "2", "--job-delay", "1ms"}, &out)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	if !strings.Contains(text, "24 jobs QUEUED") || !strings.Contains(text, "COMPLETED  24  FAILED   0") {
		t.Fatalf("demo output does not show 24 jobs completing:\n%s", text)
	}
	perFile, err := filepath.Glob(filepath.Join(dir, "output", "csv", "*.parquet"))
	if err != nil || len(perFile) != 12 {
		t.Errorf("csv outputs: %d files (%v), want 12", len(perFile), err)
	}
	if st, err := os.Stat(filepath.Join(dir, "output", "checksums.parquet")); err != nil || st.Size() == 0 {
		t.Errorf("checksums output: %v", err)
	}
	// The workers connected over CURVE, with the keys the demo wrote.
	sentinel, err := transport.ReadCurveKeyFile(filepath.Join(dir, "keys", "sentinel.pub"))
	if err != nil {
		t.Fatal(err)
	}
	worker, err := transport.ReadCurveKeyFile(filepath.Join(dir, "keys", "worker.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "CURVE on: fresh keys in " + filepath.Join(dir, "keys") + " (sentinel " + sentinel.Fingerprint() +
		", workers " + worker.Fingerprint() + ")"; !strings.Contains(text, want) {
		t.Errorf("demo output lacks %q:\n%s", want, text)
	}
	if st, err := os.Stat(filepath.Join(dir, "keys", "worker.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("worker secret key: %v, %v", st, err)
	}
}

// TestDemo_RunsAgainAndInPlaintext runs the demo three times in one
// folder: a second run replaces the database and the keys; --curve=false
// runs without keys.
func TestDemo_RunsAgainAndInPlaintext(t *testing.T) {
	dir := t.TempDir()
	for _, curve := range []bool{true, true, false} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"--dir", dir, "--files", "3", "--workers", "1", "--job-delay", "1ms",
			fmt.Sprintf("--curve=%t", curve)}, &out)
		if err != nil {
			t.Fatalf("demo --curve=%t: %v\n%s", curve, err, out.String())
		}
		text := out.String()
		if !strings.Contains(text, "COMPLETED   6  FAILED   0") || strings.Contains(text, "CURVE on") != curve {
			t.Fatalf("demo --curve=%t output:\n%s", curve, text)
		}
	}
}
