package main

import (
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/job"
)

func TestCLI_PluginPauseSetAndList(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"Pause", []string{"plugins", "pause", "p"}, "plugin p paused"},
		{"Set", []string{"plugins", "set", "p", "--job-timeout", "5m", "--max-retries", "0"}, "plugin p: job timeout 5m0s, max retries 0"},
		{"SetNoTimeout", []string{"plugins", "set", "p", "--job-timeout", "0"}, "plugin p: job timeout none, max retries 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := ok(t, e.URL, tc.args...); !strings.Contains(out, tc.want) {
				t.Errorf("casparian %s said %q, want %q", strings.Join(tc.args, " "), out, tc.want)
			}
		})
	}
	out := ok(t, e.URL, "plugins", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "STATE") || !strings.Contains(lines[0], "MAX RETRIES") ||
		!strings.Contains(lines[1], "paused") || !strings.Contains(lines[1], "none") {
		t.Errorf("plugins ls:\n%s", out)
	}
	if out := ok(t, e.URL, "plugins", "resume", "p"); !strings.Contains(out, "plugin p resumed") {
		t.Errorf("resume said %q", out)
	}
	if out := ok(t, e.URL, "plugins", "set", "p", "--job-timeout", "default", "--max-retries", "-1"); !strings.Contains(out, "job timeout default, max retries default") {
		t.Errorf("set back to defaults said %q", out)
	}

	for _, args := range [][]string{
		{"plugins", "set", "p"},
		{"plugins", "set", "p", "--job-timeout", "soon"},
		{"plugins", "set", "p", "--max-retries", "-7"},
	} {
		if code, _, errOut := casparian(t, nil, append([]string{"--server", e.URL}, args...)...); code != exitUsage || errOut == "" {
			t.Errorf("casparian %s: exit %d, stderr %q; want a usage error", strings.Join(args, " "), code, errOut)
		}
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "plugins", "pause", "nobody"); code != exitError || !strings.Contains(errOut, "nobody") {
		t.Errorf("pause an unknown plugin: exit %d, stderr %q", code, errOut)
	}
}

func TestCLI_SourcesRescan(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.ScanInterval = time.Hour })
	if out := ok(t, e.URL, "sources", "rescan"); !strings.Contains(out, "scan started") {
		t.Errorf("sources rescan said %q", out)
	}
}

func TestCLI_RouteAndSubscribeHintThenBackfill(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	e.File("in/a.csv", "a\n")
	e.File("in/b.csv", "b\n")
	e.File("in/c.txt", "c\n")

	hint := "2 existing files match; run casparian plugins backfill p --yes to queue them"
	if out := ok(t, e.URL, "plugins", "subscribe", "p", "csv"); strings.Contains(out, "existing files") {
		t.Errorf("subscribe before any route hinted: %q", out) // no file is tagged csv yet
	}
	if out := ok(t, e.URL, "routes", "add", "*.csv", "csv"); !strings.Contains(out, hint) {
		t.Errorf("routes add said %q, want the hint %q", out, hint)
	}
	if out := ok(t, e.URL, "plugins", "subscribe", "p", "csv"); !strings.Contains(out, hint) {
		t.Errorf("subscribe said %q, want the hint %q", out, hint)
	}
	if out := ok(t, e.URL, "plugins", "backfill", "p"); !strings.Contains(out, "2 existing files match plugin p") || !strings.Contains(out, "--yes") {
		t.Errorf("backfill without --yes said %q", out)
	}
	if c := e.Counts(); c[job.StatusQueued] != 0 {
		t.Fatalf("backfill without --yes queued jobs: %v", c)
	}
	if out := ok(t, e.URL, "plugins", "backfill", "p", "--yes"); !strings.HasPrefix(out, "2 jobs of plugin p queued") {
		t.Errorf("backfill --yes said %q", out)
	}
	if out := ok(t, e.URL, "plugins", "backfill", "p", "--yes"); !strings.HasPrefix(out, "0 jobs") {
		t.Errorf("second backfill said %q", out)
	}
	if out := ok(t, e.URL, "plugins", "rerun", "p"); !strings.HasPrefix(out, "0 files were processed by plugin p") {
		t.Errorf("rerun without --yes said %q", out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "sources", "rescan"); code != exitError || !strings.Contains(errOut, "scanner is off") {
		t.Errorf("sources rescan with the scanner off: exit %d, stderr %q", code, errOut)
	}
}
