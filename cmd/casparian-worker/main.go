// Command casparian-worker is the sample Casparian worker: it connects to a
// Sentinel, runs the built-in plugins (csv, jsonl, text_stats, checksum) and
// deployed WebAssembly plugins over the files it is dispatched, and writes
// their rows to SQLite, Parquet, CSV or JSONL sinks. See docs/WORKER.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/internal/logformat"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/internal/worker/wasm"
	"github.com/casparian/sentinel/transport"
)

// version is announced in IDENTIFY ("dev" when empty) and printed by
// --version; release builds set it with -ldflags "-X main.version=...".
var version string

// Log lines carry millisecond timestamps and durations with their unit.
func init() { logformat.Set() }

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, sigs)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "casparian-worker:", err)
		os.Exit(1)
	}
}

// run parses flags, starts the worker and serves until the first signal,
// which starts a drain; a second signal aborts the running jobs at once. It
// returns nil after a clean drain.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, signals <-chan os.Signal) error {
	fs := flag.NewFlagSet("casparian-worker", flag.ContinueOnError)
	fs.SetOutput(stdout)
	endpoint := fs.String("endpoint", orDefault(getenv("CASPARIAN_ENDPOINT"), worker.DefaultEndpoint),
		"Sentinel ROUTER endpoint to connect to, tcp://host:port or ipc://path; several Sentinels' separated by commas, "+
			"tried in order, the next one taken when the current one is silent for --sentinel-timeout (env CASPARIAN_ENDPOINT)")
	sentinelKey := fs.String("sentinel-key", getenv("CASPARIAN_SENTINEL_KEY"),
		"the Sentinel's CURVE public key: its .pub file or the 40 Z85 characters; with --curve-secret-key, "+
			"for a Sentinel run with --curve-secret-key. One key for every --endpoint, or one per endpoint, "+
			"comma-separated in the same order (env CASPARIAN_SENTINEL_KEY)")
	curveSecretKey := fs.String("curve-secret-key", getenv("CASPARIAN_CURVE_SECRET_KEY"),
		"file with this worker's CURVE secret key, from casparian keygen --curve; its .pub must be in the Sentinel's "+
			"--authorized-workers (env CASPARIAN_CURVE_SECRET_KEY; default: plaintext)")
	identity := fs.String("identity", "", "ZeroMQ identity and worker_id (default <hostname>-<pid>-<random hex>)")
	concurrency := fs.Int("concurrency", runtime.NumCPU(),
		"jobs run at once, announced as max_concurrent_jobs; more are REJECTED")
	plugins := fs.String("plugins", strings.Join(plugin.Names(plugin.Builtins()), ","),
		"comma-separated built-in plugins to run and advertise as capabilities")
	outputDir := fs.String("output-dir", ".", "directory that relative sink paths resolve against and that every sink, "+
		"absolute ones included, must stay in (the Sentinel's default sink is parquet://output/<plugin>.parquet)")
	inputRoots := &folderList{list: splitList(getenv("CASPARIAN_INPUT_ROOT"))}
	fs.Var(inputRoots, "input-root", "folder the input files must be in, after .. and symbolic links are resolved; other jobs "+
		"FAIL unread (repeatable or comma-separated; env CASPARIAN_INPUT_ROOT; default the working directory)")
	heartbeat := fs.Duration("heartbeat-interval", worker.DefaultHeartbeatInterval,
		"how often a HEARTBEAT is sent; keep it well under the Sentinel's --worker-timeout")
	drain := fs.Duration("drain-timeout", worker.DefaultDrainTimeout,
		"on SIGTERM/SIGINT, how long running jobs may finish before they are aborted (a second signal aborts at once)")
	sentinelTimeout := fs.Duration("sentinel-timeout", worker.DefaultSentinelTimeout,
		"replace the connection when nothing has come from the Sentinel for this long, with several --endpoint "+
			"entries by one to the next (0 = never; not with several endpoints)")
	wasmOn := fs.Bool("wasm", true, "run deployed WebAssembly plugins (advertises \"*\": any plugin); --wasm=false runs built-ins only")
	wasmMemory := fs.Int("wasm-memory-mb", wasm.DefaultMemoryLimit>>20, "memory limit of one WebAssembly plugin run, in MiB")
	wasmTime := fs.Duration("wasm-time-limit", wasm.DefaultTimeLimit, "time limit of one WebAssembly plugin run")
	wasmCache := fs.Int("wasm-cache-modules", wasm.DefaultCacheModules, "compiled WebAssembly modules kept in memory")
	wasmCacheDir := fs.String("wasm-cache-dir", "", "folder for wazero's on-disk compilation cache, kept across restarts (default none)")
	wasmInterp := fs.Bool("wasm-interpreter", false, "run modules with wazero's interpreter: faster to compile, slower to run")
	jobDelay := fs.Duration("job-delay", 0,
		"wait this long at the start of every job (for demos and failure tests that need long jobs; 0 = off)")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "json, console, or auto (console on a terminal, JSON otherwise)")
	showVersion := fs.Bool("version", false, "print the version and build information, then exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: casparian-worker [flags]

Connects to a Casparian Sentinel, runs the plugins it is dispatched over
local files (built-ins, and deployed WebAssembly modules unless --wasm=false)
and writes their rows to the sinks each job names:
sqlite:///abs/file.db/table, parquet:///abs/file.parquet,
file:///abs/file.csv or file:///abs/file.jsonl (relative paths resolve
against --output-dir). Inputs must lie under --input-root and sinks under
--output-dir, once .. and symbolic links are resolved; a job that names
anything else FAILS without reading or writing it. SIGTERM drains: no new
jobs, running ones finish, every job is concluded, exit 0.

A Sentinel run with --curve-secret-key speaks CurveZMQ and takes only the
workers it lists: give --sentinel-key (its public key) and
--curve-secret-key (this worker's key, made by casparian keygen --curve,
whose .pub goes into the Sentinel's --authorized-workers).

Sentinels that share one queue can all be given to --endpoint,
comma-separated: the worker is on one at a time and, when it is silent for
--sentinel-timeout, moves to the next, identifies there, re-sends its
pending receipts and lists its running jobs. --sentinel-key then takes one
key for all of them, or one per endpoint, comma-separated in the same order.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		buildinfo.Print(stdout, "casparian-worker", version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		return err
	}
	selected, err := selectPlugins(*plugins)
	if err != nil {
		return err
	}
	if *concurrency <= 0 {
		return fmt.Errorf("--concurrency must be at least 1, got %d", *concurrency)
	}
	if *drain <= 0 {
		return fmt.Errorf("--drain-timeout must be positive, got %s", *drain)
	}
	if *jobDelay < 0 {
		return fmt.Errorf("--job-delay must not be negative, got %s", *jobDelay)
	}
	if *sentinelTimeout < 0 {
		return fmt.Errorf("--sentinel-timeout must not be negative, got %s", *sentinelTimeout)
	}
	endpoints, err := worker.ParseEndpoints(*endpoint)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	if *sentinelTimeout == 0 {
		if len(endpoints) > 1 {
			return errors.New("--sentinel-timeout 0 turns failover off: with several --endpoint entries it must be positive")
		}
		*sentinelTimeout = -1 // the option's "off"
	}
	var wasmOpts *wasm.Options
	if *wasmOn {
		if *wasmMemory < 1 || *wasmMemory > 4095 {
			return fmt.Errorf("--wasm-memory-mb must be 1 to 4095, got %d", *wasmMemory)
		}
		if *wasmTime <= 0 {
			return fmt.Errorf("--wasm-time-limit must be positive, got %s", *wasmTime)
		}
		if *wasmCache < 1 {
			return fmt.Errorf("--wasm-cache-modules must be at least 1, got %d", *wasmCache)
		}
		wasmOpts = &wasm.Options{MemoryLimit: int64(*wasmMemory) << 20, TimeLimit: *wasmTime,
			CacheModules: *wasmCache, CacheDir: *wasmCacheDir, Interpreter: *wasmInterp}
	}
	curve, sentinelKeys, err := loadCurve(*sentinelKey, *curveSecretKey, len(endpoints))
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*outputDir)
	if err != nil {
		return fmt.Errorf("--output-dir: %w", err)
	}

	w, err := worker.New(worker.Options{
		Endpoint:          strings.Join(endpoints, ","),
		Curve:             curve,
		SentinelKeys:      sentinelKeys,
		Identity:          *identity,
		Concurrency:       *concurrency,
		Plugins:           selected,
		OutputDir:         dir,
		InputRoots:        inputRoots.list, // none: the working directory
		HeartbeatInterval: *heartbeat,
		DrainTimeout:      *drain,
		SentinelTimeout:   *sentinelTimeout,
		Wasm:              wasmOpts,
		JobDelay:          *jobDelay,
		Version:           version,
		Logger:            log,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case sig := <-signals:
				if n == 0 {
					log.Info().Stringer("signal", sig).Msg("shutting down: draining")
					cancel()
				} else {
					log.Warn().Stringer("signal", sig).Msg("second signal: aborting running jobs")
					w.Abort()
				}
			}
		}
	}()
	return w.Run(ctx)
}

// loadCurve reads the CURVE keys: this worker's key pair, and the
// Sentinel's public key, one for every endpoint, or a comma-separated list
// of one per endpoint (returned as keys; nil with one key).
func loadCurve(sentinelKey, secretKeyFile string, endpoints int) (*transport.CurveClient, []transport.CurveKey, error) {
	list := strings.Split(sentinelKey, ",")
	curve, err := transport.LoadCurveClient(strings.TrimSpace(list[0]), secretKeyFile)
	if err != nil || len(list) == 1 {
		return curve, nil, err
	}
	if len(list) != endpoints {
		return nil, nil, fmt.Errorf("--sentinel-key: %d keys for %d --endpoint entries; give one key for all, or one per endpoint",
			len(list), endpoints)
	}
	keys := make([]transport.CurveKey, len(list))
	for i, k := range list {
		k = strings.TrimSpace(k)
		if k == "" {
			return nil, nil, fmt.Errorf("--sentinel-key: entry %d is empty", i+1)
		}
		if keys[i], err = transport.ReadCurvePublicKey(k); err != nil {
			return nil, nil, fmt.Errorf("--sentinel-key: entry %d: %w", i+1, err)
		}
	}
	return curve, keys, nil
}

// selectPlugins picks built-in plugins by name.
func selectPlugins(list string) ([]plugin.Plugin, error) {
	byName := map[string]plugin.Plugin{}
	for _, p := range plugin.Builtins() {
		byName[p.Name()] = p
	}
	var out []plugin.Plugin
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		p, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("--plugins: unknown plugin %q (built-ins: %s)", name, strings.Join(plugin.Names(plugin.Builtins()), ", "))
		}
		seen[name] = true
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("--plugins: no plugin selected")
	}
	return out, nil
}

func newLogger(level, format string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %w", err)
	}
	switch format {
	case "auto":
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "console"
			}
		}
	case "json", "console":
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format: want json, console or auto, got %q", format)
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// folderList is a repeatable flag of comma-separated folders. Its first
// use replaces the default (from the environment); later ones add to it.
type folderList struct {
	list []string
	set  bool
}

func (f *folderList) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.list, ",")
}

func (f *folderList) Set(v string) error {
	folders := splitList(v)
	if len(folders) == 0 {
		return errors.New("want a folder")
	}
	if !f.set {
		f.list, f.set = nil, true
	}
	f.list = append(f.list, folders...)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
