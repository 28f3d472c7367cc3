// Package wasm runs deployed plugins: WebAssembly modules (WASI preview 1)
// executed with wazero, a pure-Go runtime, inside limits.
//
// A module sees one file, the job's input, read-only under /input; it gets
// the path as its first argument and job metadata in its environment, and
// writes its rows as JSON lines on stdout (see docs/WORKER.md, "Deployed
// plugins"). Each run gets its own instance with a memory ceiling and a
// deadline; cancelling the job's context stops it. Compiled modules are
// kept in a small LRU keyed by the module's content hash, so a plugin is
// compiled once per worker, not once per job.
package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/casparian/sentinel/internal/worker/plugin"
)

// Defaults of Options.
const (
	DefaultMemoryLimit  = 256 << 20
	DefaultTimeLimit    = 10 * time.Minute
	DefaultCacheModules = 16
)

const (
	pageSize = 64 << 10
	// GuestDir is where the input file appears inside the module.
	GuestDir = "/input"
)

// magic is the first four bytes of every WebAssembly binary module.
var magic = []byte("\x00asm")

// Options configure a Runtime. Zero values mean the defaults.
type Options struct {
	// MemoryLimit caps one instance's linear memory, in bytes (rounded
	// down to 64 KiB pages). Default DefaultMemoryLimit.
	MemoryLimit int64
	// TimeLimit bounds one run. Default DefaultTimeLimit.
	TimeLimit time.Duration
	// CacheModules is how many compiled modules are kept. Default
	// DefaultCacheModules.
	CacheModules int
	// CacheDir, when set, is wazero's on-disk compilation cache: compiled
	// code survives a restart of the worker. Empty = memory only.
	CacheDir string
	// Interpreter runs modules with wazero's interpreter instead of its
	// compiler: much faster to compile, much slower to run. wazero uses
	// the interpreter anyway where it has no compiler (not amd64/arm64).
	Interpreter bool
}

// Stats count compilations and cache hits.
type Stats struct {
	Compiles  int64 // modules compiled (cache misses)
	CacheHits int64 // runs that found their module compiled
	Running   int64 // instances running now
}

// Runtime compiles and runs modules. It is safe for concurrent use.
type Runtime struct {
	opts       Options
	limitBytes uint64
	r          wazero.Runtime
	cache      *moduleCache
	compiles   atomic.Int64
	hits       atomic.Int64
	running    atomic.Int64
}

// New starts a wazero runtime with WASI preview 1.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	if opts.MemoryLimit == 0 {
		opts.MemoryLimit = DefaultMemoryLimit
	}
	if opts.TimeLimit == 0 {
		opts.TimeLimit = DefaultTimeLimit
	}
	if opts.CacheModules == 0 {
		opts.CacheModules = DefaultCacheModules
	}
	pages := opts.MemoryLimit / pageSize
	switch {
	case pages < 1 || pages > 65535:
		return nil, fmt.Errorf("wasm memory limit %d bytes: want 64 KiB to 4 GiB", opts.MemoryLimit)
	case opts.TimeLimit < 0:
		return nil, fmt.Errorf("wasm time limit %s is negative", opts.TimeLimit)
	case opts.CacheModules < 0:
		return nil, fmt.Errorf("wasm module cache size %d is negative", opts.CacheModules)
	}
	cfg := wazero.NewRuntimeConfig()
	if opts.Interpreter {
		cfg = wazero.NewRuntimeConfigInterpreter()
	}
	// The memory limit is enforced by each run's allocator (memory.go),
	// not by wazero's WithMemoryLimitPages: wazero refuses a grow past its
	// limit before any allocator sees it, and the guest then fails in its
	// own way (a Go module exits 2 with "out of memory"), so the receipt
	// could not say that the limit was the cause. wazero keeps its default
	// ceiling (4 GiB); the compile step rejects a module that declares
	// more than the limit at start.
	cfg = cfg.WithCloseOnContextDone(true)
	if opts.CacheDir != "" {
		cc, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm compilation cache: %w", err)
		}
		cfg = cfg.WithCompilationCache(cc)
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("wasi: %w", err)
	}
	return &Runtime{opts: opts, limitBytes: uint64(pages) * pageSize, r: r, cache: newModuleCache(opts.CacheModules)}, nil
}

// Close releases the runtime; running instances are stopped.
func (rt *Runtime) Close(ctx context.Context) error { return rt.r.Close(ctx) }

// Stats returns the counters.
func (rt *Runtime) Stats() Stats {
	return Stats{Compiles: rt.compiles.Load(), CacheHits: rt.hits.Load(), Running: rt.running.Load()}
}

// Limits returns the effective memory limit (bytes) and time limit.
func (rt *Runtime) Limits() (int64, time.Duration) { return int64(rt.limitBytes), rt.opts.TimeLimit }

// LooksLikeModule reports whether source, a DISPATCH's source_code, is the
// base64 of a WebAssembly binary: it decodes only the first 8 characters
// and checks the "\0asm" magic. Built-in plugins' manifests carry other
// text, so this tells the two kinds apart before any real work.
func LooksLikeModule(source string) bool {
	source = strings.TrimSpace(source)
	if len(source) < 8 {
		return false
	}
	head, err := base64.StdEncoding.DecodeString(source[:8])
	return err == nil && bytes.HasPrefix(head, magic)
}

// Decode turns source_code into module bytes: standard base64 of a binary
// that starts with the WebAssembly magic.
func Decode(source string) ([]byte, error) {
	code, err := base64.StdEncoding.DecodeString(strings.TrimSpace(source))
	if err != nil {
		return nil, fmt.Errorf("source_code is not valid base64: %w", err)
	}
	if !bytes.HasPrefix(code, magic) {
		return nil, errors.New("source_code is not a WebAssembly module (no \\0asm magic)")
	}
	return code, nil
}

// ModuleKey is the compiled-module cache key of code: its sha256, hex.
func ModuleKey(code []byte) string {
	sum := sha256.Sum256(code)
	return hex.EncodeToString(sum[:])
}

// Plugin returns a plugin.Plugin named name that runs the module whose
// ModuleKey is key. load returns the module's bytes; it is called only when
// the module is not compiled yet, so a caller that already knows the key
// of a verified artifact need not decode it again. log receives the
// module's stderr after each run.
func (rt *Runtime) Plugin(name, key string, load func() ([]byte, error), log zerolog.Logger) plugin.Plugin {
	return &modulePlugin{rt: rt, name: name, key: key, load: load, log: log}
}

// modulePlugin is one deployed module, run once per job.
type modulePlugin struct {
	rt   *Runtime
	name string
	key  string // ModuleKey of the code
	load func() ([]byte, error)
	log  zerolog.Logger
}

func (p *modulePlugin) Name() string { return p.name }

// Run compiles (or finds compiled) the module, runs it over in and feeds
// its rows to emit.
func (p *modulePlugin) Run(ctx context.Context, in plugin.Input, emit plugin.Emitter) error {
	cm, release, hit, err := p.rt.cache.acquire(ctx, p.key, p.compile)
	if err != nil {
		return err
	}
	defer release()
	if hit {
		p.rt.hits.Add(1)
	}

	// runCtx ends on the job's cancellation (ABORT, drain), on the time
	// limit, or when the output is malformed; wazero then closes the
	// instance wherever it is (WithCloseOnContextDone).
	stopCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	limit := p.rt.opts.TimeLimit
	errTime := fmt.Errorf("time limit of %s exceeded", limit)
	runCtx, cancel := context.WithTimeoutCause(stopCtx, limit, errTime)
	defer cancel()
	mem := &limitedMemory{limit: p.rt.limitBytes}
	runCtx = experimental.WithMemoryAllocator(runCtx, mem)

	out := newRowWriter(emit, stop)
	stderr := &capture{}
	base := filepath.Base(in.Path)
	guestPath := GuestDir + "/" + base
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many jobs may run one module at once
		WithArgs(p.name, guestPath).
		WithEnv("CASPARIAN_INPUT", guestPath).
		WithEnv("CASPARIAN_INPUT_NAME", base).
		WithEnv("CASPARIAN_INPUT_SIZE", strconv.FormatInt(in.Size, 10)).
		WithEnv("CASPARIAN_JOB_ID", strconv.FormatInt(in.JobID, 10)).
		WithEnv("CASPARIAN_FILE_VERSION_ID", strconv.FormatInt(in.FileVersionID, 10)).
		WithEnv("CASPARIAN_PLUGIN", p.name).
		WithStdin(bytes.NewReader(nil)).
		WithStdout(out).
		WithStderr(stderr).
		WithFSConfig(wazero.NewFSConfig().WithFSMount(singleFile{name: base, path: in.Path}, GuestDir)).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)
	p.rt.running.Add(1)
	mod, runErr := p.instantiate(runCtx, cm, cfg)
	p.rt.running.Add(-1)
	if mod != nil {
		_ = mod.Close(context.Background())
	}
	var exit *sys.ExitError
	exited := errors.As(runErr, &exit)
	if runErr == nil || (exited && exit.ExitCode() == 0) {
		out.finish() // a last line without a newline
	}
	if s := stderr.String(); s != "" {
		p.log.Debug().Str("stderr", s).Msg("plugin stderr")
	}

	switch {
	case out.err != nil:
		return out.err // malformed output, or a row the sinks refused
	case ctx.Err() != nil:
		return context.Cause(ctx) // ABORT or drain: the worker concludes ABORTED
	case runErr == nil || (exited && exit.ExitCode() == 0):
		return nil
	case errors.Is(context.Cause(runCtx), errTime):
		return withStderr(errTime, stderr)
	case mem.refused > 0:
		return withStderr(fmt.Errorf("memory limit of %s exceeded (the module asked for %s)",
			mib(mem.limit), mib(mem.refused)), stderr)
	case exited:
		return withStderr(fmt.Errorf("exit code %d", exit.ExitCode()), stderr)
	}
	return withStderr(fmt.Errorf("wasm: %w", runErr), stderr)
}

// instantiate runs the module. The allocator panics with errStartMemory
// when a memory the compile step could not check (not exported) declares
// more than the limit; wazero cannot take a refusal there.
func (p *modulePlugin) instantiate(ctx context.Context, cm wazero.CompiledModule, cfg wazero.ModuleConfig) (mod api.Module, err error) {
	defer func() {
		if v := recover(); v != nil {
			se, ok := v.(startMemoryError)
			if !ok {
				panic(v)
			}
			err = se
		}
	}()
	return p.rt.r.InstantiateModule(ctx, cm, cfg)
}

// compile is the cache's miss path.
func (p *modulePlugin) compile(ctx context.Context) (wazero.CompiledModule, error) {
	code, err := p.load()
	if err != nil {
		return nil, err
	}
	if ModuleKey(code) != p.key {
		return nil, errors.New("module bytes do not match their key") // a caller's bug
	}
	p.rt.compiles.Add(1)
	start := time.Now()
	cm, err := p.rt.r.CompileModule(ctx, code)
	if err != nil {
		return nil, fmt.Errorf("invalid WebAssembly module: %w", err)
	}
	p.log.Info().Str("module_sha256", p.key).Int("bytes", len(code)).Dur("took", time.Since(start)).Msg("WebAssembly module compiled")
	for _, m := range cm.ExportedMemories() {
		if need := uint64(m.Min()) * pageSize; need > p.rt.limitBytes {
			_ = cm.Close(ctx)
			return nil, fmt.Errorf("the module needs %s of memory at start, over the %s limit", mib(need), mib(p.rt.limitBytes))
		}
	}
	if len(cm.ImportedMemories()) > 0 {
		_ = cm.Close(ctx)
		return nil, errors.New("the module imports its memory; it must define its own")
	}
	return cm, nil
}

// withStderr appends the start and end of the module's stderr to err.
func withStderr(err error, stderr *capture) error {
	if s := stderr.short(); s != "" {
		return fmt.Errorf("%w; stderr: %s", err, s)
	}
	return err
}

func mib(b uint64) string {
	if b%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
