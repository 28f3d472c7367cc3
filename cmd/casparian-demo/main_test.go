package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDemo_DrainsTheQueue(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--dir", t.TempDir(), "--files", "12", "--workers", "2", "--job-delay", "1ms"}, &out)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	if !strings.Contains(text, "24 jobs QUEUED") || !strings.Contains(text, "COMPLETED  24  FAILED   0") {
		t.Fatalf("demo output does not show 24 jobs completing:\n%s", text)
	}
}
