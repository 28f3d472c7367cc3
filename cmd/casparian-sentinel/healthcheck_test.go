package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/internal/sentineltest"
)

func TestHealthcheck_AgainstARealSentinel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--shutdown-timeout", "5s",
	}, nil)
	addr := httpAddr(t, s)
	_, port, _ := net.SplitHostPort(addr)
	ctx := context.Background()
	noEnv := envFrom(nil)

	var out sentineltest.Logs
	if err := run(ctx, []string{"healthcheck", "--http", addr}, noEnv, &out, &out); err != nil {
		t.Fatalf("healthcheck --http %s: %v", addr, err)
	}
	if !strings.Contains(out.String(), "healthy") {
		t.Errorf("output %q", out.String())
	}
	// In a container the Sentinel listens on 0.0.0.0:8080 (CASPARIAN_HTTP),
	// and the healthcheck reads the same variable.
	env := envFrom(map[string]string{"CASPARIAN_HTTP": "0.0.0.0:" + port})
	if err := run(ctx, []string{"healthcheck"}, env, &out, &out); err != nil {
		t.Fatalf("healthcheck with CASPARIAN_HTTP=0.0.0.0:%s: %v", port, err)
	}

	s.stopClean(t)
	err := run(ctx, []string{"healthcheck", "--http", addr}, noEnv, &out, &out)
	if err == nil {
		t.Fatal("healthcheck of a stopped Sentinel succeeded")
	}
	t.Logf("stopped Sentinel: %v", err)
}

func TestHealthcheck_FailsOnEveryOtherAnswer(t *testing.T) {
	t.Parallel()
	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "stopping", http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()
	ctx := context.Background()
	var out sentineltest.Logs
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"503":       {[]string{"--http", strings.TrimPrefix(unhealthy.URL, "http://")}, "503 Service Unavailable: stopping"},
		"NoAddress": {nil, "no address"},
		"BadAddr":   {[]string{"--http", "localhost"}, "missing port"},
		"ExtraArg":  {[]string{"--http", "127.0.0.1:1", "now"}, `unexpected argument "now"`},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(ctx, append([]string{"healthcheck"}, tc.args...), envFrom(nil), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The docker-compose stack starts the Sentinel with --bootstrap on an empty
// database: the file's plugins become dispatchable at once, and a restart
// with the same file changes nothing.
func TestRun_BootstrapAppliesOnceAndIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inbox := filepath.Join(dir, "inbox")
	boot := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(boot, []byte(fmt.Sprintf(`{
		"source_roots": [%q],
		"routes": [{"pattern": "*.csv", "tag": "csv"}],
		"plugins": [{"name": "csv", "manifest": {"version": "builtin", "source_code": "builtin:csv"},
			"subscribe": ["csv"], "topics": [{"topic": "output", "uri": "sqlite://output/o.db/{file_stem}", "mode": "replace"}]}]
	}`, inbox)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--shutdown-timeout", "5s", "--scan-interval", "0", "--bootstrap", boot,
		"--allowed-roots", dir}
	changes := func(s *sentinel) any {
		for _, e := range logEntries(t, s.logs.String()) {
			if e["message"] == "bootstrap applied" {
				return e["changes"]
			}
		}
		t.Fatalf("no bootstrap log line:\n%s", s.logs)
		return nil
	}

	s := startSentinel(t, args, nil)
	if c := changes(s); c != float64(6) { // root, route, config, subscription, manifest, topic
		t.Errorf("first start: %v changes, want 6", c)
	}
	code, body := request(t, "GET", "http://"+httpAddr(t, s)+"/api/v1/plugins", "")
	if code != 200 || !strings.Contains(body, `"ACTIVE"`) || !strings.Contains(body, `"csv"`) {
		t.Fatalf("plugins: %d %s", code, body)
	}
	s.stopClean(t)

	s = startSentinel(t, args, nil)
	if c := changes(s); c != float64(0) {
		t.Errorf("second start: %v changes, want 0", c)
	}
	s.stopClean(t)

	// A broken file stops the start and says why.
	if err := os.WriteFile(boot, []byte(`{"source_roots": ["relative"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out sentineltest.Logs
	err := run(context.Background(), args, envFrom(nil), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "source_roots[0]: want an absolute path") {
		t.Fatalf("run with a broken bootstrap file: %v", err)
	}
}
