package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// TestCLI_PublishShadowCompareAndPromote: publish --shadow over DEPLOY,
// then plugins compare, promote and discard, with a test worker whose
// shadow version (source "v2") reports one row more than v1.
func TestCLI_PublishShadowCompareAndPromote(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.AllowUnsigned = true })
	e.Plugin("p")
	e.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		c := testworker.FileStats(ctx, j)
		if strings.TrimSpace(j.Dispatch.SourceCode) == "v2" {
			c.Metrics["rows"]++
		}
		return c
	}})
	e.WaitJob(e.Enqueue(e.File("in/a.csv", "a\nb\n"), "p", 0), job.StatusCompleted)

	for _, args := range [][]string{
		{"plugins", "compare", "p", "1.0.0"},
		{"plugins", "promote", "p"},
		{"plugins", "discard", "p", "1", "2"},
	} {
		if code, _, errOut := casparian(t, nil, append([]string{"--server", e.URL}, args...)...); code != exitUsage || errOut == "" {
			t.Errorf("casparian %s: exit %d, stderr %q; want a usage error", strings.Join(args, " "), code, errOut)
		}
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "plugins", "compare", "p", "1.0.0", "2.0.0"); code != exitError ||
		!strings.Contains(errOut, `no version "2.0.0"`) {
		t.Errorf("compare an unknown version: exit %d, stderr %q", code, errOut)
	}

	src := filepath.Join(t.TempDir(), "p-v2.txt")
	if err := os.WriteFile(src, []byte("v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := ok(t, e.URL, "publish", src, "--name", "p", "--version", "2.0.0", "--unsigned", "--publisher", "t",
		"--sentinel", e.Endpoint, "--shadow")
	if !strings.Contains(out, "Shadow-deployed p v2.0.0") || !strings.Contains(out, "1 jobs over the files v1.0.0 completed") {
		t.Fatalf("publish --shadow said %q", out)
	}
	testwait.Eventually(t, sentineltest.Within, "the comparison has the file", func() bool {
		code, out, _ := casparian(t, nil, "--server", e.URL, "plugins", "compare", "p", "1.0.0", "2.0.0")
		return code == exitOK && strings.Contains(out, "1 compared")
	})
	out = ok(t, e.URL, "plugins", "compare", "p", "1.0.0", "2.0.0")
	if !strings.Contains(out, "rows 2 → 3") || !strings.Contains(out, "(0 identical, 1 differing)") {
		t.Errorf("compare said:\n%s", out)
	}
	if out := ok(t, e.URL, "plugins", "promote", "p", "2.0.0"); !strings.Contains(out, "p v2.0.0 is ACTIVE (1 earlier version superseded)") {
		t.Errorf("promote said %q", out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "plugins", "discard", "p", "2.0.0"); code != exitError ||
		!strings.Contains(errOut, "has ended (PROMOTED)") {
		t.Errorf("discard after promote: exit %d, stderr %q", code, errOut)
	}
}
