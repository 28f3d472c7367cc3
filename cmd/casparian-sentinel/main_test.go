package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to inspect the database file the run created

	"github.com/casparian/sentinel/internal/sentineltest"
)

// everyFlag is every setting the command line accepts.
var everyFlag = []string{
	"config", "version", "bind", "database", "log-level", "log-format",
	"heartbeat-interval", "worker-timeout", "recovery-grace", "max-retries",
	"retry-backoff", "retry-backoff-max", "poll-interval", "notified-poll-interval", "max-message-size", "peer-rate", "peer-burst",
	"db-timeout", "shutdown-timeout", "drain-timeout", "job-timeout", "abort-grace",
	"http", "scan-interval", "bootstrap", "api-tokens", "pprof", "insecure", "allowed-roots",
	"curve-secret-key", "authorized-workers", "init-secrets", "env-timeout", "trusted-keys", "allow-unsigned",
}

// envFrom returns a getenv that reads only m, so the tests never see the
// real environment.
func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// sentinel is one in-process run of runWithReady.
type sentinel struct {
	endpoint string
	stdout   *sentineltest.Logs
	logs     *sentineltest.Logs
	cancel   context.CancelFunc
	done     chan error

	stopOnce sync.Once
	err      error
}

// startSentinel runs runWithReady with args and env and waits until it
// reports its endpoint. The run is stopped when the test ends if the test
// did not stop it; its log is printed if the test failed.
func startSentinel(t *testing.T, args []string, env map[string]string) *sentinel {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sentinel{stdout: &sentineltest.Logs{}, logs: &sentineltest.Logs{}, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		s.done <- runWithReady(ctx, args, envFrom(env), s.stdout, s.logs, ready)
	}()
	t.Cleanup(func() {
		// Tests that expect a clean stop call stopClean first (stop runs
		// once and remembers its error); the others may end in an error.
		_ = s.stop()
		if t.Failed() {
			t.Logf("sentinel stdout:\n%s\nsentinel log:\n%s", s.stdout, s.logs)
		}
	})
	select {
	case s.endpoint = <-ready:
	case err := <-s.done:
		s.stopOnce.Do(func() { s.err = err })
		t.Fatalf("runWithReady returned before it was ready: %v\nlog:\n%s", err, s.logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("sentinel not ready after 15s\nlog:\n%s", s.logs)
	}
	return s
}

// stop cancels the run's context and returns what runWithReady returned.
func (s *sentinel) stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case s.err = <-s.done:
		case <-time.After(20 * time.Second):
			s.err = errors.New("runWithReady did not return within 20s of cancel")
		}
	})
	return s.err
}

// stopClean stops the run and fails the test unless it returned nil.
func (s *sentinel) stopClean(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("runWithReady after cancel: %v", err)
	}
	t.Logf("sentinel stopped in %s", time.Since(start).Round(time.Millisecond))
}

func TestRun_HelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--help"}, envFrom(nil), &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run --help = %v, want flag.ErrHelp", err)
	}
	usage := out.String()
	if !strings.Contains(usage, "Usage: casparian-sentinel") {
		t.Errorf("usage lacks its title:\n%s", usage)
	}
	for _, name := range everyFlag {
		// PrintDefaults writes "  -name type", or "  -name" for a bool;
		// the space or newline after the name keeps -retry-backoff from
		// matching -retry-backoff-max.
		if !strings.Contains(usage, "  -"+name+" ") && !strings.Contains(usage, "  -"+name+"\n") {
			t.Errorf("usage does not mention --%s:\n%s", name, usage)
		}
	}
	for _, env := range []string{"CASPARIAN_BIND", "CASPARIAN_DATABASE", "CASPARIAN_WORKER_TIMEOUT", "CASPARIAN_MAX_RETRIES"} {
		if !strings.Contains(usage, env) {
			t.Errorf("usage does not mention %s", env)
		}
	}
	// Defaults are shown, so an operator can see what is used.
	for _, def := range []string{"tcp://127.0.0.1:5555", "5s", "30s"} {
		if !strings.Contains(usage, def) {
			t.Errorf("usage does not show default %q", def)
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("--help wrote to stderr: %q", errOut.String())
	}
}

func TestRun_VersionPrintsAndOpensNothing(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "never-created.db")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--database", dbPath, "--version"}, envFrom(nil), &out, &errOut)
	if err != nil {
		t.Fatalf("run --version = %v, want nil (exit 0)", err)
	}
	if !strings.HasPrefix(out.String(), "casparian-sentinel ") || !strings.Contains(out.String(), "  go        go1.") {
		t.Errorf("--version printed:\n%s", out.String())
	}
	if errOut.Len() != 0 {
		t.Errorf("--version wrote to stderr: %q", errOut.String())
	}
	if _, err := os.Stat(dbPath); !os.IsNotExist(err) {
		t.Errorf("--version touched the database: %v", err)
	}
}

func TestRun_BadInputNamesTheField(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "never-created.db")
	// Every case binds port 0 on a temp database, so an input that is wrongly
	// accepted shows up as a run that does not fail, not as a clash on :5555.
	base := []string{"--bind", "tcp://127.0.0.1:0", "--database", dbPath}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the error
		// notWant must not be in the error (a password).
		notWant string
	}{
		{name: "zero heartbeat", args: []string{"--heartbeat-interval", "0s"},
			want: []string{"--heartbeat-interval", "must be positive"}},
		{name: "negative worker timeout", args: []string{"--worker-timeout", "-1s"},
			want: []string{"--worker-timeout", "must be positive"}},
		{name: "heartbeat not shorter than timeout", args: []string{"--heartbeat-interval", "10s", "--worker-timeout", "10s"},
			want: []string{"--heartbeat-interval", "shorter than --worker-timeout"}},
		{name: "unknown log level", args: []string{"--log-level", "loud"},
			want: []string{"--log-level", `"loud"`}},
		{name: "unknown log format", args: []string{"--log-format", "xml"},
			want: []string{"--log-format", `"xml"`}},
		{name: "negative retries", args: []string{"--max-retries", "-1"},
			want: []string{"--max-retries", "must not be negative"}},
		{name: "tiny message limit", args: []string{"--max-message-size", "10"},
			want: []string{"--max-message-size", "1024"}},
		{name: "bind without scheme", args: []string{"--bind", "localhost:5555"},
			want: []string{"--bind", `"localhost:5555"`}},
		{name: "unsupported database scheme", args: []string{"--database", "mysql://root:hunter2@x/db"},
			want: []string{"database", `"mysql"`, "sqlite://", "postgres://"}, notWant: "hunter2"},
		{name: "malformed duration", args: []string{"--poll-interval", "soon"},
			want: []string{"poll-interval", "soon"}},
		{name: "unknown flag", args: []string{"--frobnicate"},
			want: []string{"flag provided but not defined", "frobnicate"}},
		{name: "stray argument", args: []string{"extra"},
			want: []string{"unexpected argument", `"extra"`}},
		{name: "bad environment value", env: map[string]string{"CASPARIAN_WORKER_TIMEOUT": "banana"},
			want: []string{"CASPARIAN_WORKER_TIMEOUT", "banana"}},
		{name: "several errors at once", args: []string{"--heartbeat-interval", "0s", "--log-level", "loud"},
			want: []string{"--heartbeat-interval", "--log-level"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			args := append(append([]string{}, base...), tc.args...)
			err := run(ctx, args, envFrom(tc.env), &out, &errOut)
			if err == nil {
				t.Fatalf("run %q returned nil, want an error", args)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Fatalf("run %q returned flag.ErrHelp, want a real error", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q contains %q", err, tc.notWant)
			}
		})
	}
	if _, err := os.Stat(dbPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rejected configurations created the database file (stat: %v)", err)
	}
}

func TestRun_BindsServesAndStopsCleanly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "sentinel.db")
	// Everything from the environment: the flags are the only layer missing.
	env := map[string]string{
		"CASPARIAN_BIND":               "tcp://127.0.0.1:0",
		"CASPARIAN_DATABASE":           "sqlite://" + dbPath,
		"CASPARIAN_LOG_FORMAT":         "json",
		"CASPARIAN_HEARTBEAT_INTERVAL": "100ms",
		"CASPARIAN_WORKER_TIMEOUT":     "1s",
		"CASPARIAN_SHUTDOWN_TIMEOUT":   "5s",
	}
	start := time.Now()
	s := startSentinel(t, nil, env)
	t.Logf("ready in %s at %s", time.Since(start).Round(time.Millisecond), s.endpoint)

	host, port, ok := strings.Cut(strings.TrimPrefix(s.endpoint, "tcp://"), ":")
	if !strings.HasPrefix(s.endpoint, "tcp://") || !ok || host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("ready endpoint = %q, want tcp://127.0.0.1:<real port>", s.endpoint)
	}
	conn, err := net.DialTimeout("tcp", host+":"+port, 5*time.Second)
	if err != nil {
		t.Fatalf("nothing listens on the ready endpoint %s: %v", s.endpoint, err)
	}
	conn.Close()

	s.stopClean(t)

	// After the stop the port is free again.
	if ln, err := net.Listen("tcp", host+":"+port); err != nil {
		t.Errorf("port %s still bound after stop: %v", port, err)
	} else {
		ln.Close()
	}

	if s.stdout.String() != "" {
		t.Errorf("a normal run wrote to stdout: %q", s.stdout)
	}
	var started, stopped bool
	for _, entry := range logEntries(t, s.logs.String()) {
		switch entry["message"] {
		case "sentinel started":
			started = true
			if entry["bind"] != s.endpoint {
				t.Errorf("start log bind = %v, want %s", entry["bind"], s.endpoint)
			}
		case "sentinel stopped":
			stopped = true
		}
	}
	if !started || !stopped {
		t.Errorf("log lacks start (%v) or stop (%v) lines:\n%s", started, stopped, s.logs)
	}

	if _, err := os.Stat(dbPath); err != nil {
		t.Fatalf("database file: %v", err)
	}
	tables := sqliteTables(t, dbPath)
	for _, want := range []string{
		"cf_source_root", "cf_file_hash_registry", "cf_file_location", "cf_file_version",
		"cf_processing_queue", "cf_plugin_config", "cf_topic_config", "cf_plugin_manifest",
		"cf_plugin_environment", "cf_publisher", "cf_routing_rule", "cf_ignore_rule",
		"cf_file_tag", "cf_plugin_subscription", "cf_worker_node",
		"cf_library_whitelist", "cf_surveyor_session", "cf_surveyor_decision",
	} {
		if !tables[want] {
			t.Errorf("database lacks table %s (has %v)", want, tables)
		}
	}
}

// logEntries parses a JSON log, one object per line, failing on any line
// that is not JSON.
func logEntries(t *testing.T, log string) []map[string]any {
	t.Helper()
	var entries []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if line == "" {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		entries = append(entries, entry)
	}
	return entries
}

// sqliteTables lists the tables of the database at path, opened read-only.
func sqliteTables(t *testing.T, path string) map[string]bool {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer raw.Close()
	rows, err := raw.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	defer rows.Close()
	tables := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("list tables: %v", err)
		}
		tables[name] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list tables: %v", err)
	}
	return tables
}

func TestRun_FlagBeatsEnvironment(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "sentinel.db")
	// The environment's bind is invalid: the run only starts if the flag
	// replaces it before validation.
	env := map[string]string{
		"CASPARIAN_BIND":     "not-an-endpoint",
		"CASPARIAN_DATABASE": filepath.Join(t.TempDir(), "from-env.db"),
	}
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", dbPath, "--log-format", "json",
		"--shutdown-timeout", "5s",
	}, env)
	if !strings.HasPrefix(s.endpoint, "tcp://127.0.0.1:") {
		t.Errorf("endpoint = %q, want the flag's tcp://127.0.0.1:<port>", s.endpoint)
	}
	s.stopClean(t)
	if _, err := os.Stat(dbPath); err != nil {
		t.Errorf("the --database file was not used: %v", err)
	}
	if _, err := os.Stat(env["CASPARIAN_DATABASE"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the CASPARIAN_DATABASE file was created although --database was given (stat: %v)", err)
	}
}

func TestRun_ConfigFileUnderEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sentinel.json")
	fileDB := filepath.Join(dir, "from-file.db")
	envDB := filepath.Join(dir, "from-env.db")
	cfg := fmt.Sprintf(`{"bind": "tcp://127.0.0.1:0", "database": %q, "worker_timeout": "45s", "log_format": "json"}`, fileDB)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSentinel(t, []string{"--config", cfgPath, "--shutdown-timeout", "5s"},
		map[string]string{"CASPARIAN_DATABASE": "sqlite://" + envDB})
	s.stopClean(t)
	if _, err := os.Stat(envDB); err != nil {
		t.Errorf("CASPARIAN_DATABASE should beat the config file's database: %v", err)
	}
	if _, err := os.Stat(fileDB); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the config file's database was created although the environment overrides it (stat: %v)", err)
	}
	// The file's worker_timeout reached the running Sentinel.
	if !strings.Contains(s.logs.String(), `"worker_timeout":"45s"`) {
		t.Errorf("start log does not show worker_timeout 45s from the file:\n%s", s.logs)
	}
}
