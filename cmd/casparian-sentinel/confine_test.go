package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/internal/sentineltest"
)

// The bootstrap file goes through the same checks as the API: a source root
// outside --allowed-roots (by default the working directory), or a sink
// naming the Sentinel's database, fails the start with the reason; a root
// nested under an allowed one starts.
func TestRun_BootstrapConfinedToTheAllowedRoots(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link-out")); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "sentinel.db")
	boot := filepath.Join(dir, "bootstrap.json")
	write := func(roots []string, sink string) {
		t.Helper()
		doc := fmt.Sprintf(`{"source_roots": [%s], "plugins": [{"name": "csv", "topics": [{"topic": "output", "uri": %q}]}]}`,
			`"`+strings.Join(roots, `", "`)+`"`, sink)
		if err := os.WriteFile(boot, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := func(extra ...string) []string {
		return append([]string{"--bind", "tcp://127.0.0.1:0", "--database", dbPath, "--log-format", "json",
			"--shutdown-timeout", "5s", "--scan-interval", "0", "--bootstrap", boot}, extra...)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	inbox := filepath.Join(dir, "data", "inbox")
	for _, c := range []struct {
		name  string
		roots []string
		sink  string
		flags []string
		want  []string
	}{
		{"OutsideTheFlag", []string{inbox, outside}, "sqlite://out/o.db/t", []string{"--allowed-roots", dir},
			[]string{"source_roots[1]: source root " + outside + " is outside --allowed-roots (" + dir + ")"}},
		{"LinkOut", []string{filepath.Join(dir, "link-out", "inbox")}, "sqlite://out/o.db/t", []string{"--allowed-roots", dir},
			[]string{"source_roots[0]: source root " + filepath.Join(dir, "link-out", "inbox") + " (resolves to", "is outside --allowed-roots"}},
		{"DefaultIsTheWorkingDirectory", []string{inbox}, "sqlite://out/o.db/t", nil,
			[]string{"source root " + inbox + " is outside --allowed-roots (" + wd + ")"}},
		{"SinkNamingTheDatabase", []string{inbox}, "sqlite://" + dbPath + "/cf_plugin_config", []string{"--allowed-roots", dir},
			[]string{"plugin csv", "sink sqlite://" + dbPath + "/cf_plugin_config names the Sentinel's database"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			write(c.roots, c.sink)
			var out sentineltest.Logs
			err := run(context.Background(), args(c.flags...), envFrom(nil), &out, &out)
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("run = %v; want an error containing %q", err, w)
				}
			}
		})
	}

	// Nested under the allowed root (given through the environment, as
	// docker-compose does): it starts and the root is stored.
	write([]string{inbox}, "sqlite://out/o.db/t")
	s := startSentinel(t, args("--http", "127.0.0.1:0"), map[string]string{"CASPARIAN_ALLOWED_ROOTS": filepath.Join(dir, "data")})
	code, body := request(t, "GET", "http://"+httpAddr(t, s)+"/api/v1/sources", "")
	if code != 200 || !strings.Contains(body, inbox) {
		t.Fatalf("sources: %d %s", code, body)
	}
	s.stopClean(t)
}
