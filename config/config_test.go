package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeConfig writes a JSON config file and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sentinel.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var out bytes.Buffer
	return Load(args, envFrom(env), &out)
}

func TestLoad_NothingGivenIsDefault(t *testing.T) {
	cfg, err := load(t, nil, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg != Default() {
		t.Errorf("Load() = %+v, want Default() %+v", cfg, Default())
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default() is invalid: %v", err)
	}
}

func TestLoad_Precedence(t *testing.T) {
	file := writeConfig(t, `{
		"bind": "tcp://127.0.0.1:1111",
		"database": "sqlite://file.db",
		"worker_timeout": "45s",
		"heartbeat_interval": "2s",
		"max_retries": 7,
		"log_level": "warn"
	}`)
	env := map[string]string{
		"CASPARIAN_BIND":               "tcp://127.0.0.1:2222",
		"CASPARIAN_HEARTBEAT_INTERVAL": "3s",
		"CASPARIAN_LOG_LEVEL":          "debug",
	}
	// --log-level is given with the default's value: an explicit flag wins
	// even when it equals the default.
	cfg, err := load(t, []string{"--config", file, "--bind", "tcp://127.0.0.1:3333", "--log-level", "info"}, env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"bind: flag over env over file", cfg.Bind, "tcp://127.0.0.1:3333"},
		{"log-level: explicit default flag over env", cfg.LogLevel, "info"},
		{"heartbeat-interval: env over file", cfg.HeartbeatInterval, 3 * time.Second},
		{"worker-timeout: file over default", cfg.WorkerTimeout, 45 * time.Second},
		{"max-retries: file number", cfg.MaxRetries, 7},
		{"database: file", cfg.Database, "sqlite://file.db"},
		{"poll-interval: default", cfg.PollInterval, Default().PollInterval},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoad_EnvironmentOverFileWithoutFlags(t *testing.T) {
	file := writeConfig(t, `{"bind": "tcp://127.0.0.1:1111", "worker_timeout": "45s"}`)
	cfg, err := load(t, []string{"--config", file}, map[string]string{"CASPARIAN_BIND": "tcp://127.0.0.1:2222"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Bind != "tcp://127.0.0.1:2222" || cfg.WorkerTimeout != 45*time.Second {
		t.Errorf("bind %q worker-timeout %s, want env's bind and the file's 45s", cfg.Bind, cfg.WorkerTimeout)
	}
}

func TestLoad_ConfigFileFromEnvironment(t *testing.T) {
	fromEnv := writeConfig(t, `{"worker_timeout": "45s"}`)
	fromFlag := writeConfig(t, `{"worker_timeout": "50s"}`)

	cfg, err := load(t, nil, map[string]string{"CASPARIAN_CONFIG": fromEnv})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.WorkerTimeout != 45*time.Second {
		t.Errorf("CASPARIAN_CONFIG not read: worker-timeout %s, want 45s", cfg.WorkerTimeout)
	}

	cfg, err = load(t, []string{"--config", fromFlag}, map[string]string{"CASPARIAN_CONFIG": fromEnv})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.WorkerTimeout != 50*time.Second {
		t.Errorf("--config should beat CASPARIAN_CONFIG: worker-timeout %s, want 50s", cfg.WorkerTimeout)
	}
}

func TestLoad_FlagsParseEveryKind(t *testing.T) {
	cfg, err := load(t, []string{
		"--bind", "ipc:///tmp/sentinel.sock",
		"--database", "/var/lib/casparian/flow.db",
		"--log-format", "console",
		"--heartbeat-interval", "250ms",
		"--worker-timeout", "2s",
		"--recovery-grace", "0s",
		"--max-retries", "0",
		"--retry-backoff", "10ms",
		"--retry-backoff-max", "1m",
		"--poll-interval", "1s",
		"--notified-poll-interval", "3s",
		"--max-message-size", "2048",
		"--db-timeout", "3s",
		"--shutdown-timeout", "4s",
		"--drain-timeout", "1s",
		"--job-timeout", "1m",
		"--abort-grace", "5s",
		"--http", "127.0.0.1:0",
		"--scan-interval", "0s",
		"--trusted-keys", "/etc/casparian/publishers",
		"--allow-unsigned",
		"--env-timeout", "90s",
		"--peer-rate", "0",
		"--peer-burst", "50",
		"--lineage=false", // on by default
	}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		Bind: "ipc:///tmp/sentinel.sock", Database: "/var/lib/casparian/flow.db",
		LogLevel: "info", LogFormat: "console",
		HeartbeatInterval: 250 * time.Millisecond, WorkerTimeout: 2 * time.Second,
		RecoveryGrace: 0, MaxRetries: 0,
		RetryBackoff: 10 * time.Millisecond, RetryBackoffMax: time.Minute,
		PollInterval: time.Second, NotifiedPollInterval: 3 * time.Second, MaxMessageSize: 2048,
		DBTimeout: 3 * time.Second, ShutdownTimeout: 4 * time.Second,
		DrainTimeout: time.Second, JobTimeout: time.Minute, AbortGrace: 5 * time.Second,
		HTTP: "127.0.0.1:0", ScanInterval: 0,
		TrustedKeys: "/etc/casparian/publishers", AllowUnsigned: true, EnvTimeout: 90 * time.Second,
		PeerRate: 0, PeerBurst: 50,
	}
	if cfg != want {
		t.Errorf("Load = %+v\nwant   %+v", cfg, want)
	}
}

func TestLoad_Help(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"-h"}, envFrom(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load -h = %v, want flag.ErrHelp", err)
	}
	for _, s := range (&Config{}).settings() {
		named := strings.Contains(out.String(), "-"+s.name+" ") || strings.Contains(out.String(), "-"+s.name+"\n") // booleans take no value
		if !named || !strings.Contains(out.String(), EnvName(s.name)) {
			t.Errorf("usage lacks --%s or %s", s.name, EnvName(s.name))
		}
	}
}

func TestLoad_Version(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"--bind", "tcp://127.0.0.1:0", "--version"}, envFrom(nil), &out)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("Load --version = %v, want ErrVersion", err)
	}
	if out.Len() != 0 {
		t.Errorf("Load --version wrote %q; the caller prints the version", out.String())
	}
	if _, err := Load([]string{"-h"}, envFrom(nil), &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-version") {
		t.Errorf("usage lacks --version:\n%s", out.String())
	}
}

func TestLoad_Errors(t *testing.T) {
	cases := []struct {
		name string
		file string // config file body; "" means none
		args []string
		env  map[string]string
		want []string
	}{
		{name: "unknown file key", file: `{"worker_timout": "45s"}`,
			want: []string{"unknown key", `"worker_timout"`}},
		{name: "number as string in file", file: `{"max_retries": "7"}`,
			want: []string{"max_retries", "want a number"}},
		{name: "duration as number in file", file: `{"worker_timeout": 45}`,
			want: []string{"worker_timeout", "want a string"}},
		{name: "bad duration in file", file: `{"worker_timeout": "45 seconds"}`,
			want: []string{"worker_timeout", "45 seconds"}},
		{name: "file not JSON", file: `worker_timeout = 45s`,
			want: []string{"config file"}},
		{name: "invalid value in file is validated", file: `{"log_level": "loud"}`,
			want: []string{"--log-level", `"loud"`}},
		{name: "missing file", args: []string{"--config", "/nonexistent/sentinel.json"},
			want: []string{"config file", "/nonexistent/sentinel.json"}},
		{name: "negative retention", args: []string{"--retain-completed", "-1h"},
			want: []string{"--retain-completed", "-1h"}},
		{name: "bad env number", env: map[string]string{"CASPARIAN_MAX_RETRIES": "many"},
			want: []string{"CASPARIAN_MAX_RETRIES", `"many"`}},
		{name: "bad env duration", env: map[string]string{"CASPARIAN_POLL_INTERVAL": "often"},
			want: []string{"CASPARIAN_POLL_INTERVAL", "often"}},
		{name: "negative recovery grace", args: []string{"--recovery-grace", "-1s"},
			want: []string{"--recovery-grace", "must not be negative"}},
		{name: "empty database", args: []string{"--database", ""},
			want: []string{"--database", "must not be empty"}},
		{name: "zero db timeout", args: []string{"--db-timeout", "0s"},
			want: []string{"--db-timeout", "must be positive"}},
		{name: "stray argument", args: []string{"--bind", "tcp://127.0.0.1:1", "serve"},
			want: []string{"unexpected argument", `"serve"`}},
		{name: "unknown flag", args: []string{"--verbose"},
			want: []string{"not defined", "-verbose"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeConfig(t, tc.file)}, args...)
			}
			_, err := load(t, args, tc.env)
			if err == nil {
				t.Fatalf("Load(%q) = nil error", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidate_ReportsEveryBadField(t *testing.T) {
	cfg := Default()
	cfg.HeartbeatInterval = 0
	cfg.LogFormat = "xml"
	cfg.MaxRetries = -2
	cfg.MaxMessageSize = 1
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate = nil")
	}
	for _, name := range []string{"--heartbeat-interval", "--log-format", "--max-retries", "--max-message-size"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"bind":               "CASPARIAN_BIND",
		"heartbeat-interval": "CASPARIAN_HEARTBEAT_INTERVAL",
		"retry-backoff-max":  "CASPARIAN_RETRY_BACKOFF_MAX",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoad_DefaultDrainFitsAShorterShutdownTimeout(t *testing.T) {
	cfg, err := load(t, []string{"--shutdown-timeout", "6s"}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.DrainTimeout != 4*time.Second {
		t.Errorf("drain timeout = %s, want 4s (two thirds of the shutdown timeout)", cfg.DrainTimeout)
	}
	// A drain timeout somebody chose is not adjusted: it is an error.
	for _, given := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"--shutdown-timeout", "6s", "--drain-timeout", "20s"}},
		{args: []string{"--shutdown-timeout", "6s"}, env: map[string]string{"CASPARIAN_DRAIN_TIMEOUT": "20s"}},
	} {
		if _, err := load(t, given.args, given.env); err == nil || !strings.Contains(err.Error(), "--drain-timeout") {
			t.Errorf("Load %v %v = %v, want a --drain-timeout error", given.args, given.env, err)
		}
	}
}

func TestLoad_HTTPAndScanInterval(t *testing.T) {
	cfg, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP != "" || cfg.ScanInterval != 10*time.Second {
		t.Errorf("defaults: http %q scan-interval %s", cfg.HTTP, cfg.ScanInterval)
	}
	cfg, err = load(t, nil, map[string]string{"CASPARIAN_HTTP": "127.0.0.1:8080", "CASPARIAN_SCAN_INTERVAL": "1m"})
	if err != nil || cfg.HTTP != "127.0.0.1:8080" || cfg.ScanInterval != time.Minute {
		t.Errorf("from env: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{{"--http", "8080"}, {"--http", "localhost:"}, {"--scan-interval", "-1s"}} {
		if _, err := load(t, bad, nil); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("Load %v = %v, want an error naming %s", bad, err, bad[0])
		}
	}
}

func TestLoad_DeploySettings(t *testing.T) {
	cfg, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TrustedKeys != "" || cfg.AllowUnsigned || cfg.EnvTimeout != 10*time.Minute {
		t.Errorf("defaults: trusted-keys %q allow-unsigned %v env-timeout %s", cfg.TrustedKeys, cfg.AllowUnsigned, cfg.EnvTimeout)
	}
	file := writeConfig(t, `{"trusted_keys": "/keys", "allow_unsigned": true, "env_timeout": "2m"}`)
	cfg, err = load(t, []string{"--config", file}, nil)
	if err != nil || cfg.TrustedKeys != "/keys" || !cfg.AllowUnsigned || cfg.EnvTimeout != 2*time.Minute {
		t.Errorf("from file: %+v, %v", cfg, err)
	}
	// The environment beats the file; a flag beats both, also for booleans.
	cfg, err = load(t, []string{"--config", file, "--allow-unsigned=false"},
		map[string]string{"CASPARIAN_TRUSTED_KEYS": "/env-keys", "CASPARIAN_ENV_TIMEOUT": "3s"})
	if err != nil || cfg.TrustedKeys != "/env-keys" || cfg.AllowUnsigned || cfg.EnvTimeout != 3*time.Second {
		t.Errorf("layers: %+v, %v", cfg, err)
	}
	cfg, err = load(t, nil, map[string]string{"CASPARIAN_ALLOW_UNSIGNED": "true"})
	if err != nil || !cfg.AllowUnsigned {
		t.Errorf("env bool: %+v, %v", cfg, err)
	}
	for _, bad := range []struct {
		args []string
		env  map[string]string
		name string
	}{
		{[]string{"--env-timeout", "0s"}, nil, "env-timeout"},
		{nil, map[string]string{"CASPARIAN_ALLOW_UNSIGNED": "maybe"}, "CASPARIAN_ALLOW_UNSIGNED"},
		{[]string{"--config", writeConfig(t, `{"allow_unsigned": "yes"}`)}, nil, "allow_unsigned"},
	} {
		if _, err := load(t, bad.args, bad.env); err == nil || !strings.Contains(err.Error(), bad.name) {
			t.Errorf("Load %v %v = %v, want an error naming %s", bad.args, bad.env, err, bad.name)
		}
	}
}

func TestLoad_NetworkListenersNeedCredentialsOrInsecure(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string // "" means the configuration is valid
	}{
		{name: "loopback plaintext", args: []string{"--bind", "tcp://127.0.0.1:5555", "--http", "127.0.0.1:8080"}},
		{name: "localhost plaintext", args: []string{"--bind", "tcp://localhost:5555", "--http", "localhost:8080"}},
		{name: "ipv6 loopback", args: []string{"--bind", "tcp://[::1]:5555"}},
		{name: "all interfaces without curve", args: []string{"--bind", "tcp://0.0.0.0:5555"}, want: "--bind"},
		{name: "star without curve", args: []string{"--bind", "tcp://*:5555"}, want: "--bind"},
		{name: "lan address without curve", args: []string{"--bind", "tcp://192.0.2.10:5555"}, want: "--bind"},
		{name: "all interfaces with curve", args: []string{"--bind", "tcp://0.0.0.0:5555",
			"--curve-secret-key", "s.key", "--authorized-workers", "workers"}},
		{name: "all interfaces insecure", args: []string{"--bind", "tcp://0.0.0.0:5555", "--insecure"}},
		{name: "curve key without authorized workers", args: []string{"--curve-secret-key", "s.key"}, want: "--curve-secret-key"},
		{name: "authorized workers without curve key", args: []string{"--authorized-workers", "w"}, want: "--curve-secret-key"},
		{name: "http on all interfaces without tokens", args: []string{"--http", "0.0.0.0:8080"}, want: "--http"},
		{name: "http with empty host without tokens", args: []string{"--http", ":8080"}, want: "--http"},
		{name: "http on all interfaces with tokens", args: []string{"--http", "0.0.0.0:8080", "--api-tokens", "tokens"}},
		{name: "http on all interfaces insecure", args: []string{"--http", "0.0.0.0:8080", "--insecure"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.args, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Load(%q) = %v, want no error", tc.args, err)
			case tc.want != "" && err == nil:
				t.Fatalf("Load(%q) = nil error, want one naming %s", tc.args, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Load(%q) = %v, want it to name %s", tc.args, err, tc.want)
			}
		})
	}
}

func TestAllowedRootPaths_DefaultIsTheWorkingDirectory(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", []string{wd}},
		{" , ", []string{wd}},
		{"/data", []string{"/data"}},
		{"/data/, /srv/in ,", []string{"/data", "/srv/in"}},
		{"inbox", []string{filepath.Join(wd, "inbox")}},
	} {
		got, err := Config{AllowedRoots: c.in}.AllowedRootPaths()
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("AllowedRootPaths(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestLoad_Retention(t *testing.T) {
	c, err := Load([]string{"--retain-completed", "720h"}, envFrom(map[string]string{"CASPARIAN_RETAIN_FAILED": "2160h"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.RetainCompleted != 720*time.Hour || c.RetainFailed != 2160*time.Hour {
		t.Errorf("retention = %s completed, %s failed; want 720h, 2160h", c.RetainCompleted, c.RetainFailed)
	}
	if d := Default(); d.RetainCompleted != 0 || d.RetainFailed != 0 {
		t.Errorf("default retention = %s, %s; want 0 (keep forever)", d.RetainCompleted, d.RetainFailed)
	}
}

// --lineage is on by default with SQLite and off with PostgreSQL, unless
// some layer sets it.
func TestLoad_LineageDefaultFollowsTheDatabase(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{nil, nil, true},
		{[]string{"--database", "sqlite://x.db"}, nil, true},
		{[]string{"--database", "postgres://u@h/db"}, nil, false},
		{[]string{"--database", "PostgreSQL://u@h/db"}, nil, false},
		{[]string{"--database", "postgres://u@h/db", "--lineage"}, nil, true},
		{[]string{"--database", "postgres://u@h/db"}, map[string]string{"CASPARIAN_LINEAGE": "true"}, true},
		{[]string{"--lineage=false"}, nil, false},
	} {
		cfg, err := Load(tc.args, envFrom(tc.env), nil)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if cfg.Lineage != tc.want {
			t.Errorf("%v %v: Lineage = %v, want %v", tc.args, tc.env, cfg.Lineage, tc.want)
		}
	}
}
