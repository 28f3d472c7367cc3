// Package config holds the Sentinel's settings and loads them from, in rising
// precedence: defaults, an optional JSON file, CASPARIAN_* environment
// variables, and command-line flags. It is a leaf package: it imports nothing
// from this module.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is the Sentinel's configuration. The default of every field is set
// in Default and shown by --help.
type Config struct {
	// Bind is the ZeroMQ endpoint the ROUTER socket binds. Default tcp://127.0.0.1:5555.
	Bind string
	// Database is the SQLite database (sqlite://relative.db, sqlite:///abs.db or a bare path) or a PostgreSQL
	// one (postgres://user@host:5432/db?sslmode=…) that several Sentinels may share. Default sqlite://casparian_flow.db.
	Database string
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string
	// LogFormat is json, console, or auto (console on a terminal, JSON otherwise). Default auto.
	LogFormat string
	// HeartbeatInterval is how often the Sentinel sends HEARTBEAT to each worker. Default 5s.
	HeartbeatInterval time.Duration
	// WorkerTimeout is how long a silent worker is kept before it is removed and its jobs requeued. Default 30s.
	WorkerTimeout time.Duration
	// RecoveryGrace is how long RUNNING jobs left by a previous run wait for their worker to re-identify. Default 30s.
	RecoveryGrace time.Duration
	// MaxRetries is how many times a job is requeued after infrastructure faults before it is FAILED. Default 5.
	MaxRetries int
	// RetryBackoff is the first retry delay; it doubles per retry, with jitter. Default 1s.
	RetryBackoff time.Duration
	// RetryBackoffMax caps the retry delay. Default 5m.
	RetryBackoffMax time.Duration
	// PollInterval is how often the database is checked for jobs written by other processes when it cannot tell
	// of them itself. Default 250ms.
	PollInterval time.Duration
	// NotifiedPollInterval is how often the database is checked anyway when it tells of other processes'
	// writes (SQLite on Linux: inotify on its files; PostgreSQL: LISTEN/NOTIFY): a safety net. Due retries are
	// checked when due, whichever applies. Default 2s.
	NotifiedPollInterval time.Duration
	// MaxMessageSize is the largest payload frame accepted, in bytes. Default 16 MiB.
	MaxMessageSize int
	// DBTimeout bounds every database call. Default 10s.
	DBTimeout time.Duration
	// ShutdownTimeout bounds a graceful stop after SIGINT/SIGTERM. Default 30s.
	ShutdownTimeout time.Duration
	// DrainTimeout is how long a graceful stop waits for running jobs to conclude. Default 20s, or two
	// thirds of ShutdownTimeout when that is 20s or less and no drain timeout is given, so the default
	// never makes a shorter shutdown timeout invalid.
	DrainTimeout time.Duration
	// JobTimeout aborts and requeues a job running longer than this; 0 turns it off. Default 0.
	JobTimeout time.Duration
	// AbortGrace is how long an aborted job may take to conclude ABORTED before it is requeued anyway. Default 30s.
	AbortGrace time.Duration
	// RetainCompleted is how long COMPLETED jobs are kept after they end; older ones are deleted a small batch
	// at a time by the leading Sentinel. Default 0: kept forever.
	RetainCompleted time.Duration
	// RetainFailed is the same for FAILED and SKIPPED (cancelled) jobs, which an operator may still want to
	// look into or retry, so they have their own retention. Default 0: kept forever.
	RetainFailed time.Duration
	// HTTP is the host:port of the operator HTTP server (API, /metrics, /healthz, web console); "" turns
	// it off. Default "": off, so that several Sentinels (and test runs) on one host never compete for a
	// port and nothing listens that the operator did not ask for; `--http 127.0.0.1:8080` matches the
	// casparian CLI's default server.
	HTTP string
	// ScanInterval is the pause between two scans of the active source roots; 0 turns the scanner off.
	// Default 10s.
	ScanInterval time.Duration
	// TrustedKeys is a PEM public key file, or a folder of *.pub / *.pem files, of the publishers whose
	// signed DEPLOYs are accepted. Default "": no publisher is trusted, every DEPLOY is refused unless
	// AllowUnsigned.
	TrustedKeys string
	// AllowUnsigned accepts DEPLOYs that are unsigned or signed by an unknown key (hashes are still
	// checked). For development only; logged as a warning at start. Default false.
	AllowUnsigned bool
	// PeerRate is the inbound budget of one worker connection, in messages per second: messages over it
	// are dropped (and counted), and a connection that stays over it is disconnected. A worker at full
	// speed sends well under a thousand. 0 turns the budget off. Default 5000.
	PeerRate int
	// PeerBurst is how many messages one connection may send at once above PeerRate. Default 10000.
	PeerBurst int
	// EnvTimeout is how long a worker may take to answer PREPARE_ENV before the job is tried on another
	// worker. Default 10m.
	EnvTimeout time.Duration

	// Bootstrap is a JSON file (see Bootstrap) applied to the database at
	// every start: source roots, routing rules, subscriptions, manifests and
	// sinks that are missing are added, nothing else changes. Default "": none.
	Bootstrap string

	// CurveSecretKey is a file holding the Sentinel's CURVE secret key (Z85, as libzmq's zmq_curve_keypair
	// writes it). When set, the ROUTER speaks CurveZMQ (RFC 26) and only workers whose public key is listed
	// in AuthorizedWorkers may connect. Default "": plaintext ZMTP, which the original Python and Rust
	// workers need.
	CurveSecretKey string
	// AuthorizedWorkers is a file of Z85 public keys (one per line, an optional name after it, # comments),
	// or a folder of *.pub files, of the workers and tools allowed to connect over CURVE; reloaded on
	// SIGHUP. Required with CurveSecretKey. Default "".
	AuthorizedWorkers string
	// APITokens is a file of operator API tokens, one "ROLE TOKEN [name]" per line, ROLE being read or
	// admin; reloaded on SIGHUP. Default "": no tokens, and the HTTP server may bind only a loopback
	// address.
	APITokens string
	// Pprof serves Go's profiler at /debug/pprof/ on the HTTP server, to admin tokens only. Default false.
	Pprof bool
	// Insecure allows binding the ROUTER on a non-loopback address without CURVE, or the HTTP server on a
	// non-loopback address without API tokens. Logged as a warning at start. Default false.
	Insecure bool
	// Lineage records each completed job's outputs (file version, job, plugin manifest, sink; kept on the job
	// row and in sentinel_outputs) and links a new file version whose content was already processed by the
	// same plugin manifest and sinks to that result instead of running it again (issue #20). Default true on
	// SQLite, where since migration 0016 it costs no measurable throughput (casparian-bench, W=8, C=256);
	// false on PostgreSQL unless set (Load), which still writes a row per output with each completion.
	Lineage bool
	// InitSecrets is a folder for the workers' CURVE files. When set, a start that finds
	// --curve-secret-key, --authorized-workers or --api-tokens missing creates them (an existing file
	// is never changed), and writes a worker key pair (worker.key, worker.pub) and the Sentinel's public
	// key (sentinel.pub) into the folder for workers to mount. For the compose stack. Default "": off.
	InitSecrets string
	// AllowedRoots is a comma-separated list of folders under which source roots may be added (API, CLI,
	// bootstrap, scanner). Default "": the Sentinel's working directory only.
	AllowedRoots string
}

// Default returns the configuration used when nothing else is given.
func Default() Config {
	return Config{
		Bind:                 "tcp://127.0.0.1:5555",
		Database:             "sqlite://casparian_flow.db",
		LogLevel:             "info",
		LogFormat:            "auto",
		HeartbeatInterval:    5 * time.Second,
		WorkerTimeout:        30 * time.Second,
		RecoveryGrace:        30 * time.Second,
		MaxRetries:           5,
		RetryBackoff:         time.Second,
		RetryBackoffMax:      5 * time.Minute,
		PollInterval:         250 * time.Millisecond,
		NotifiedPollInterval: 2 * time.Second,
		MaxMessageSize:       16 << 20,
		DBTimeout:            10 * time.Second,
		ShutdownTimeout:      30 * time.Second,
		DrainTimeout:         20 * time.Second,
		AbortGrace:           30 * time.Second,
		ScanInterval:         10 * time.Second,
		EnvTimeout:           10 * time.Minute,
		PeerRate:             5000,
		PeerBurst:            10000,
		Lineage:              true,
	}
}

// setting describes one field once, so that the file, the environment and
// the flags cannot drift apart.
type setting struct {
	name  string // flag name; the file key is name with '-' → '_'; the env var is CASPARIAN_ + upper snake
	usage string
	str   *string
	dur   *time.Duration
	num   *int
	flag  *bool
}

func (c *Config) settings() []setting {
	return []setting{
		{name: "bind", usage: "ZeroMQ endpoint the ROUTER binds", str: &c.Bind},
		{name: "database", usage: "SQLite database (sqlite://file.db, sqlite:///abs/file.db or a path), or PostgreSQL " +
			"(postgres://user@host:5432/db; the password from ~/.pgpass, PGPASSFILE or passfile=…) that several Sentinels share", str: &c.Database},
		{name: "log-level", usage: "log level: debug, info, warn, error", str: &c.LogLevel},
		{name: "log-format", usage: "log format: json, console, or auto (console on a terminal)", str: &c.LogFormat},
		{name: "heartbeat-interval", usage: "how often a HEARTBEAT is sent to each worker", dur: &c.HeartbeatInterval},
		{name: "worker-timeout", usage: "a worker silent this long is removed and its jobs requeued", dur: &c.WorkerTimeout},
		{name: "recovery-grace", usage: "after a restart, how long RUNNING jobs wait for their worker to re-identify", dur: &c.RecoveryGrace},
		{name: "max-retries", usage: "requeues after infrastructure faults before a job is FAILED", num: &c.MaxRetries},
		{name: "retry-backoff", usage: "first retry delay (doubles per retry, with jitter)", dur: &c.RetryBackoff},
		{name: "retry-backoff-max", usage: "largest retry delay", dur: &c.RetryBackoffMax},
		{name: "poll-interval", usage: "how often the database is checked for jobs inserted by other processes, when it cannot tell of them " +
			"(SQLite where inotify is missing or refused)", dur: &c.PollInterval},
		{name: "notified-poll-interval", usage: "how often the database is checked anyway when it tells of other processes' inserts " +
			"(SQLite on Linux watches its files with inotify; PostgreSQL LISTENs): a safety net; a retry is checked when its backoff expires either way", dur: &c.NotifiedPollInterval},
		{name: "max-message-size", usage: "largest accepted payload frame in bytes", num: &c.MaxMessageSize},
		{name: "peer-rate", usage: "inbound messages per second one connection may send; the excess is dropped, a sustained excess disconnects (0 = no limit)", num: &c.PeerRate},
		{name: "peer-burst", usage: "messages one connection may send at once above --peer-rate", num: &c.PeerBurst},
		{name: "db-timeout", usage: "bound on every database call", dur: &c.DBTimeout},
		{name: "shutdown-timeout", usage: "bound on a graceful stop after SIGINT/SIGTERM", dur: &c.ShutdownTimeout},
		{name: "drain-timeout", usage: "on a graceful stop, how long running jobs may take to conclude", dur: &c.DrainTimeout},
		{name: "job-timeout", usage: "abort and requeue jobs running longer than this (0 = off)", dur: &c.JobTimeout},
		{name: "abort-grace", usage: "how long an aborted job may take to conclude before it is requeued anyway", dur: &c.AbortGrace},
		{name: "retain-completed", usage: "delete COMPLETED jobs this long after they end (0 = keep forever)", dur: &c.RetainCompleted},
		{name: "retain-failed", usage: "delete FAILED and SKIPPED jobs this long after they end (0 = keep forever)", dur: &c.RetainFailed},
		{name: "http", usage: "host:port of the operator HTTP API, /metrics, /healthz and web console (\"\" = off)", str: &c.HTTP},
		{name: "scan-interval", usage: "pause between scans of the active source roots (0 = scanner off)", dur: &c.ScanInterval},
		{name: "trusted-keys", usage: "PEM public key file or folder of *.pub/*.pem files of trusted plugin publishers", str: &c.TrustedKeys},
		{name: "allow-unsigned", usage: "DEVELOPMENT ONLY: accept unsigned or unknown-key DEPLOYs (hashes still checked)", flag: &c.AllowUnsigned},
		{name: "env-timeout", usage: "how long a worker may take to prepare an environment (PREPARE_ENV) before the job goes elsewhere", dur: &c.EnvTimeout},

		{name: "bootstrap", usage: "JSON file of source roots, routes, subscriptions, manifests and sinks added at start if missing", str: &c.Bootstrap},

		{name: "curve-secret-key", usage: "file with the Sentinel's CURVE secret key (Z85); turns on CurveZMQ for every worker connection", str: &c.CurveSecretKey},
		{name: "authorized-workers", usage: "file of Z85 public keys, or folder of *.pub files, allowed to connect over CURVE (reloaded on SIGHUP)", str: &c.AuthorizedWorkers},
		{name: "api-tokens", usage: "file of \"read|admin TOKEN [name]\" lines for the HTTP API (reloaded on SIGHUP)", str: &c.APITokens},
		{name: "init-secrets", usage: "folder for worker keys: create missing --curve-secret-key, --authorized-workers and --api-tokens files at start (compose stack)", str: &c.InitSecrets},
		{name: "pprof", usage: "serve /debug/pprof/ on the HTTP server, to admin tokens only", flag: &c.Pprof},
		{name: "lineage", usage: "record the outputs of each completed job (lineage, stale outputs) and reuse earlier results for files " +
			"whose content the same plugin version already processed; --lineage=false turns both off. " +
			"On by default with SQLite; with PostgreSQL only when given (it costs throughput there). " +
			"Chained jobs (plugins subscribe NAME PLUGIN:TOPIC) run without it, but only with it does a file's lineage list them", flag: &c.Lineage},
		{name: "insecure", usage: "allow a non-loopback --bind without CURVE or a non-loopback --http without --api-tokens (logged as a warning)", flag: &c.Insecure},
		{name: "allowed-roots", usage: "comma-separated folders under which source roots may be added (\"\" = the working directory)", str: &c.AllowedRoots},
	}
}

// AllowedRootPaths returns AllowedRoots as absolute folders; an empty list
// means the working directory. Symbolic links are left to the comparison
// (confine.Check), which resolves them every time, so a root that is created
// or re-linked later is judged as it is then.
func (c Config) AllowedRootPaths() ([]string, error) {
	var out []string
	for _, r := range strings.Split(c.AllowedRoots, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("--allowed-roots %s: %w", r, err)
		}
		out = append(out, abs)
	}
	if len(out) == 0 {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("--allowed-roots: working directory: %w", err)
		}
		out = append(out, wd)
	}
	return out, nil
}

// ErrVersion is what Load returns when --version is given. The caller prints
// the version and exits 0: the build information lives with the binary, and
// this package imports nothing of the module.
var ErrVersion = errors.New("version requested")

// databaseIsPostgres reports whether a --database setting names
// PostgreSQL (postgres:// or postgresql://).
func databaseIsPostgres(setting string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(setting), "://")
	return ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql"))
}

// EnvName returns the environment variable for a flag name: bind → CASPARIAN_BIND.
func EnvName(flagName string) string {
	return "CASPARIAN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Load builds the configuration from defaults, the file named by --config (or
// CASPARIAN_CONFIG), the environment and the flags in args. getenv is
// os.Getenv in production and a map lookup in tests. It returns flag.ErrHelp
// after printing usage to out when -h or --help is given, and ErrVersion when
// --version is.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg := Default()
	fs := flag.NewFlagSet("casparian-sentinel", flag.ContinueOnError)
	configPath := fs.String("config", "", "optional JSON config file (keys are flag names with _ for -)")
	showVersion := fs.Bool("version", false, "print the version and build information, then exit")
	for _, s := range cfg.settings() {
		switch {
		case s.str != nil:
			fs.StringVar(s.str, s.name, *s.str, s.usage+" (env "+EnvName(s.name)+")")
		case s.dur != nil:
			fs.DurationVar(s.dur, s.name, *s.dur, s.usage+" (env "+EnvName(s.name)+")")
		case s.num != nil:
			fs.IntVar(s.num, s.name, *s.num, s.usage+" (env "+EnvName(s.name)+")")
		case s.flag != nil:
			fs.BoolVar(s.flag, s.name, *s.flag, s.usage+" (env "+EnvName(s.name)+")")
		}
	}
	// Parse errors are returned (the caller prints them to stderr); only an
	// explicit --help prints the usage, to out.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "Usage: casparian-sentinel [flags]\n"+
				"       casparian-sentinel healthcheck [--http host:port] [--timeout d]   (exit 0 when /healthz answers 200)\n\n"+
				"Casparian Sentinel schedules queued jobs (SQLite) onto workers connected over ZeroMQ.\n"+
				"Settings come from defaults < --config file < CASPARIAN_* environment < flags.\n\nFlags:\n")
			fs.SetOutput(out)
			fs.PrintDefaults()
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%w (see --help)", err)
	}
	if *showVersion {
		return Config{}, ErrVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (settings are flags, see --help)", fs.Arg(0))
	}

	// Flags were parsed into cfg already; remember them so lower layers cannot override.
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	fromFlags := cfg

	path := *configPath
	if path == "" {
		path = getenv("CASPARIAN_CONFIG")
	}
	base := Default()
	given := map[string]bool{} // every setting some layer gave, by flag name
	for name := range explicit {
		given[name] = true
	}
	if path != "" {
		if err := base.loadFile(path, given); err != nil {
			return Config{}, err
		}
	}
	if err := base.loadEnv(getenv, given); err != nil {
		return Config{}, err
	}
	// Re-apply the flags given on the command line over file and environment.
	flagSettings := fromFlags.settings()
	for i, s := range base.settings() {
		if !explicit[s.name] {
			continue
		}
		f := flagSettings[i]
		switch {
		case s.str != nil:
			*s.str = *f.str
		case s.dur != nil:
			*s.dur = *f.dur
		case s.num != nil:
			*s.num = *f.num
		case s.flag != nil:
			*s.flag = *f.flag
		}
	}
	if !given["lineage"] && databaseIsPostgres(base.Database) {
		// PostgreSQL still writes a row per output with each completion
		// (SQLite keeps a key on the job row: migration 0016), which costs
		// throughput there: lineage is on only when asked for.
		base.Lineage = false
	}
	if !given["drain-timeout"] && base.ShutdownTimeout > 0 && base.DrainTimeout >= base.ShutdownTimeout {
		// The default drain must fit in a shorter shutdown timeout; only a
		// drain timeout somebody chose is held against it.
		base.DrainTimeout = base.ShutdownTimeout * 2 / 3
	}
	if err := base.Validate(); err != nil {
		return Config{}, err
	}
	return base, nil
}

func (c *Config) loadFile(path string, given map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]json.RawMessage
	if err := json.Unmarshal(raw, &values); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	known := map[string]setting{}
	for _, s := range c.settings() {
		known[strings.ReplaceAll(s.name, "-", "_")] = s
	}
	for key, v := range values {
		s, ok := known[key]
		if !ok {
			return fmt.Errorf("config file %s: unknown key %q", path, key)
		}
		given[s.name] = true
		var text string
		if s.num != nil {
			if err := json.Unmarshal(v, s.num); err != nil {
				return fmt.Errorf("config file %s: %s: want a number: %w", path, key, err)
			}
			continue
		}
		if s.flag != nil {
			if err := json.Unmarshal(v, s.flag); err != nil {
				return fmt.Errorf("config file %s: %s: want true or false: %w", path, key, err)
			}
			continue
		}
		if err := json.Unmarshal(v, &text); err != nil {
			return fmt.Errorf("config file %s: %s: want a string: %w", path, key, err)
		}
		if err := s.set(text); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, key, err)
		}
	}
	return nil
}

func (c *Config) loadEnv(getenv func(string) string, given map[string]bool) error {
	for _, s := range c.settings() {
		v := getenv(EnvName(s.name))
		if v == "" {
			continue
		}
		given[s.name] = true
		if err := s.set(v); err != nil {
			return fmt.Errorf("%s: %w", EnvName(s.name), err)
		}
	}
	return nil
}

func (s setting) set(text string) error {
	switch {
	case s.str != nil:
		*s.str = text
	case s.dur != nil:
		d, err := time.ParseDuration(text)
		if err != nil {
			return err
		}
		*s.dur = d
	case s.num != nil:
		var n int
		if _, err := fmt.Sscan(text, &n); err != nil {
			return fmt.Errorf("want a whole number, got %q", text)
		}
		*s.num = n
	case s.flag != nil:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", text)
		}
		*s.flag = b
	}
	return nil
}

// Validate reports every invalid field by its flag name.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: "+format, append([]any{name}, args...)...))
	}
	if !strings.Contains(c.Bind, "://") {
		bad("bind", "want an endpoint like tcp://127.0.0.1:5555, got %q", c.Bind)
	}
	if c.Database == "" {
		bad("database", "must not be empty")
	} else if i := strings.Index(c.Database, "://"); i >= 0 {
		// Only the scheme is quoted: a PostgreSQL URL may hold a password.
		switch scheme := strings.ToLower(c.Database[:i]); scheme {
		case "sqlite", "postgres", "postgresql":
		default:
			bad("database", "want sqlite://file.db, a path, or postgres://user@host/db; the scheme %q is not supported", scheme)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console", "auto":
	default:
		bad("log-format", "want json, console or auto, got %q", c.LogFormat)
	}
	positive := map[string]time.Duration{
		"heartbeat-interval": c.HeartbeatInterval, "worker-timeout": c.WorkerTimeout,
		"retry-backoff": c.RetryBackoff, "retry-backoff-max": c.RetryBackoffMax,
		"poll-interval": c.PollInterval, "notified-poll-interval": c.NotifiedPollInterval, "db-timeout": c.DBTimeout, "shutdown-timeout": c.ShutdownTimeout,
		"env-timeout": c.EnvTimeout,
	}
	for _, s := range c.settings() {
		if d, ok := positive[s.name]; ok && d <= 0 {
			bad(s.name, "must be positive, got %s", d)
		}
	}
	nonNegative := map[string]time.Duration{"recovery-grace": c.RecoveryGrace, "drain-timeout": c.DrainTimeout,
		"job-timeout": c.JobTimeout, "abort-grace": c.AbortGrace, "scan-interval": c.ScanInterval,
		"retain-completed": c.RetainCompleted, "retain-failed": c.RetainFailed}
	for _, s := range c.settings() {
		if d, ok := nonNegative[s.name]; ok && d < 0 {
			bad(s.name, "must not be negative, got %s", d)
		}
	}
	if c.DrainTimeout >= c.ShutdownTimeout && c.ShutdownTimeout > 0 {
		bad("drain-timeout", "must be shorter than --shutdown-timeout (%s), got %s", c.ShutdownTimeout, c.DrainTimeout)
	}
	if c.WorkerTimeout > 0 && c.HeartbeatInterval >= c.WorkerTimeout {
		bad("heartbeat-interval", "must be shorter than --worker-timeout (%s), got %s", c.WorkerTimeout, c.HeartbeatInterval)
	}
	if c.MaxRetries < 0 {
		bad("max-retries", "must not be negative, got %d", c.MaxRetries)
	}
	if c.PeerRate < 0 {
		bad("peer-rate", "must not be negative, got %d", c.PeerRate)
	}
	if c.PeerBurst < 1 {
		bad("peer-burst", "must be at least 1, got %d", c.PeerBurst)
	}
	if c.MaxMessageSize < 1024 {
		bad("max-message-size", "must be at least 1024 bytes, got %d", c.MaxMessageSize)
	}
	if c.HTTP != "" {
		if _, port, err := net.SplitHostPort(c.HTTP); err != nil || port == "" {
			bad("http", "want host:port such as 127.0.0.1:8080, or \"\" to turn it off, got %q", c.HTTP)
		}
	}
	if (c.CurveSecretKey == "") != (c.AuthorizedWorkers == "") {
		bad("curve-secret-key", "--curve-secret-key and --authorized-workers go together: give both or neither")
	}
	if c.CurveSecretKey == "" && !c.Insecure && !loopbackEndpoint(c.Bind) {
		bad("bind", "%q is not a loopback address: give --curve-secret-key and --authorized-workers, or --insecure to accept plaintext workers from the network", c.Bind)
	}
	if c.HTTP != "" && c.APITokens == "" && !c.Insecure && !loopbackHostPort(c.HTTP) {
		bad("http", "%q is not a loopback address: give --api-tokens, or --insecure to serve the API without authentication", c.HTTP)
	}
	return errors.Join(errs...)
}

// loopbackEndpoint reports whether a ZeroMQ endpoint listens only on this
// host: tcp:// on a loopback address or localhost, or a transport that never
// leaves it (inproc://, ipc://).
func loopbackEndpoint(endpoint string) bool {
	rest, ok := strings.CutPrefix(endpoint, "tcp://")
	if !ok {
		return strings.HasPrefix(endpoint, "inproc://") || strings.HasPrefix(endpoint, "ipc://")
	}
	return loopbackHostPort(rest)
}

// loopbackHostPort reports whether host:port names a loopback address. An
// empty host, 0.0.0.0 or "*" listen on every interface and are not loopback.
func loopbackHostPort(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
