package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
}
