// Package worker is the Casparian worker runtime: it connects a DEALER to
// the Sentinel, identifies with its plugins and capacity, heartbeats, runs
// dispatched jobs in slots through plugins and sinks, honours ABORT, and
// drains on shutdown. Every job it accepts gets exactly one CONCLUDE.
//
// Goroutines: one receives (and never blocks on the network to send), one
// sends (every message, and the heartbeats, so Send stays on one goroutine
// as transport.Dealer asks), and one per running job.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/internal/worker/wasm"
	"github.com/casparian/sentinel/transport"
)

// Defaults of Options.
const (
	DefaultEndpoint          = "tcp://127.0.0.1:5555"
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultSendTimeout       = 5 * time.Second
	DefaultSentinelTimeout   = 60 * time.Second
)

const (
	// abortWait is how long jobs aborted at the drain deadline get to
	// conclude before the worker concludes them ABORTED itself and exits.
	abortWait = 5 * time.Second
	// maxPending bounds the receipts kept for re-sending. Against a
	// Sentinel that never speaks (the originals send no HEARTBEAT) no
	// receipt is ever acknowledged; the oldest then go first.
	maxPending = 4096
	// outboxSize bounds messages waiting for the sender goroutine.
	outboxSize = 1024
	// dialBackoffMin and dialBackoffMax bound the wait between failed dials
	// (a Sentinel that accepts TCP but fails the ZMTP handshake); zmq4
	// itself retries an unreachable one every 250 ms.
	dialBackoffMin = 250 * time.Millisecond
	dialBackoffMax = 10 * time.Second
	// curveDialReport is how long a CURVE dial may go on before the worker
	// logs why it is not connected. A refused handshake is a failed dial
	// that zmq4 retries every 250 ms, forever: without this a worker whose
	// key is not authorized would wait in silence.
	curveDialReport = 5 * time.Second
)

// replayWindow is how long a receipt is still re-sent after a reconnect
// once the Sentinel has acknowledged it (see pendingReceipt). The
// acknowledgement is only a sign (the protocol has none for CONCLUDE), and
// the Sentinel ignores a receipt for a job that is no longer RUNNING under
// this worker (SPEC C.3), so re-sending one too many is harmless. A
// variable so that tests can shorten it.
var replayWindow = 30 * time.Second

var (
	errAbortedBySentinel = errors.New("aborted by the Sentinel")
	errDrainDeadline     = errors.New("aborted at the worker's drain deadline during shutdown")
)

// Options configure a Worker. Zero values mean the defaults.
type Options struct {
	// Endpoint is the Sentinel's ROUTER. Default DefaultEndpoint.
	Endpoint string
	// Curve, when set, connects over CurveZMQ with these keys: the
	// Sentinel's public key and this worker's key pair, whose public half
	// must be in the Sentinel's authorized workers. Default nil: plaintext.
	Curve *transport.CurveClient
	// Identity is the ZeroMQ identity and worker_id. Default NewIdentity().
	Identity string
	// Concurrency is how many jobs run at once, announced as
	// max_concurrent_jobs. Default runtime.NumCPU().
	Concurrency int
	// Plugins are the plugins this worker runs and advertises as its
	// capabilities. Default plugin.Builtins().
	Plugins []plugin.Plugin
	// OutputDir resolves relative sink paths (the Sentinel's default sink
	// is parquet://output/<plugin>.parquet), and every sink, absolute ones
	// included, must stay inside it once ".." and symbolic links are
	// resolved. Default the current directory.
	OutputDir string
	// InputRoots are the folders a job's input file must lie in, once ".."
	// and symbolic links are resolved; any other input fails its job before
	// a byte of it is read. Default the current directory.
	InputRoots []string
	// HeartbeatInterval is how often an unsolicited HEARTBEAT is sent.
	// Default DefaultHeartbeatInterval; keep it well under the Sentinel's
	// worker timeout.
	HeartbeatInterval time.Duration
	// DrainTimeout is how long running jobs may take to finish after
	// shutdown begins before they are aborted. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// SendTimeout bounds one send on the DEALER. Default DefaultSendTimeout.
	SendTimeout time.Duration
	// SentinelTimeout replaces the connection when nothing at all has come
	// from the Sentinel for this long (it heartbeats every worker, and
	// answers an unknown one with ERR). zmq4 stops redialling for good when
	// a reconnect's handshake fails; this gets the worker back. Default
	// DefaultSentinelTimeout; negative turns it off.
	SentinelTimeout time.Duration
	// Wasm turns on deployed plugins: WebAssembly modules that a DISPATCH
	// carries in source_code, run with these limits (zero fields mean
	// wasm's defaults). The worker then also advertises "*" (any plugin).
	// nil = built-in plugins only.
	Wasm *wasm.Options
	// JobDelay makes every job wait this long before its plugin runs (an
	// ABORT or a drain deadline ends the wait). It exists for demos and
	// failure tests that need jobs to stay RUNNING long enough to kill or
	// disconnect something mid-job; 0, the default, adds nothing.
	JobDelay time.Duration
	// Version is announced in IDENTIFY.
	Version string
	// Logger receives the worker's logs.
	Logger zerolog.Logger
}

// Stats are counters of a worker's life, for tests and logs.
type Stats struct {
	Identifies       int64 // IDENTIFY messages sent
	Reconnects       int64 // reconnects (reported by zmq4, or by the watchdog)
	JobsStarted      int64
	JobsRejected     int64 // REJECTED receipts (at capacity or draining)
	JobsSucceeded    int64
	JobsFailed       int64
	JobsAborted      int64
	ReceiptsReplayed int64 // receipts re-sent after a reconnect
	WasmCompiles     int64 // WebAssembly modules compiled
	WasmCacheHits    int64 // deployed-plugin runs that found their module compiled
	WasmRunning      int64 // WebAssembly instances running now
}

type counters struct {
	identifies, reconnects, started, rejected, succeeded, failed, aborted, replayed atomic.Int64
}

// Worker is one worker process's runtime. Create it with New and call Run
// once.
type Worker struct {
	opts     Options
	log      zerolog.Logger
	plugins  map[string]plugin.Plugin
	builtins []string // names of plugins
	caps     []string // builtins, and "*" with deployed plugins
	exe      string
	stats    counters

	wasm    *wasm.Runtime     // nil: deployed plugins off
	envMu   sync.Mutex        // guards envs and modKeys
	envs    map[string]string // lockfiles by env_hash (lower case), from PREPARE_ENV
	modKeys map[string]string // wasm module keys by verified artifact_hash

	connMu      sync.Mutex        // guards dealer and replacing
	dealer      *transport.Dealer // replaced by the watchdog
	replacing   bool              // the watchdog closed dealer on purpose
	lastInbound atomic.Int64      // unix nanoseconds of the last message from the Sentinel
	dialCtx     context.Context   // cancelled when Run ends: stops a redial
	stopDial    context.CancelFunc

	outbox     chan outMsg
	beatNow    chan struct{} // cap 1: send a heartbeat now
	stopSender chan struct{}
	senderDone chan struct{}
	started    atomic.Bool
	closing    atomic.Bool
	// reannounce is set when an IDENTIFY could not be sent: the next
	// heartbeat tick sends a fresh one first.
	reannounce atomic.Bool

	jobsCtx    context.Context // parent of every job's context; never cancelled
	abortNow   chan struct{}   // closed by Abort
	abortOnce  sync.Once
	changed    chan struct{} // cap 1: a job goroutine finished
	mu         sync.Mutex
	jobs       map[int64]*job // accepted, not yet concluded
	goroutines int            // job goroutines that have not returned
	draining   bool
	pending    []*pendingReceipt
	unheard    []*pendingReceipt // written since the Sentinel last spoke
	// epoch counts the connections the Sentinel may have forgotten us
	// over: it moves on every re-identify, and a receipt written on an
	// older epoch is acknowledged by nothing that arrives later.
	epoch int64
}

// job is one accepted DISPATCH.
type job struct {
	id      int64
	d       *transport.Dispatch
	cancel  context.CancelCauseFunc
	started time.Time
}

// outMsg is a message for the sender goroutine.
type outMsg struct {
	op      transport.Opcode
	jobID   int64
	payload any
}

// pendingReceipt is a receipt that may still have to be sent again. zmq4
// drops what is sent while the connection is down without an error, and
// the Sentinel may restart between reading a receipt and committing it, so
// a receipt stays pending, and is re-sent after every IDENTIFY, until the
// Sentinel has acknowledged it: something arrived from the Sentinel over
// the connection the receipt was last written on, after the write (the
// Sentinel heartbeats every worker), and replayWindow has passed since.
type pendingReceipt struct {
	jobID   int64
	receipt *transport.Conclude
	tried   bool      // a write was attempted: until then heartbeats list the job
	written time.Time // last written to a connection; zero: not yet
	epoch   int64     // w.epoch when last written
	heard   bool      // the Sentinel spoke on that epoch after the write
}

// New checks opts and returns a Worker ready to Run.
func New(opts Options) (*Worker, error) {
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	if opts.Identity == "" {
		opts.Identity = NewIdentity()
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = runtime.NumCPU()
	}
	if opts.Concurrency < 0 {
		return nil, fmt.Errorf("concurrency %d is negative", opts.Concurrency)
	}
	if opts.Plugins == nil {
		opts.Plugins = plugin.Builtins()
	}
	if len(opts.Plugins) == 0 {
		return nil, errors.New("no plugins: a worker without plugins can run no job")
	}
	if opts.OutputDir == "" {
		opts.OutputDir = "."
	}
	if len(opts.InputRoots) == 0 {
		opts.InputRoots = []string{"."}
	}
	roots := make([]string, len(opts.InputRoots))
	for i, r := range opts.InputRoots {
		abs, err := filepath.Abs(r)
		if r == "" || err != nil {
			return nil, fmt.Errorf("input root %q: not a usable folder (%v)", r, err)
		}
		roots[i] = abs
	}
	opts.InputRoots = roots
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.DrainTimeout < 0 {
		return nil, fmt.Errorf("drain timeout %s is negative", opts.DrainTimeout)
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = DefaultSendTimeout
	}
	if opts.SentinelTimeout == 0 {
		opts.SentinelTimeout = DefaultSentinelTimeout
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	plugins := make(map[string]plugin.Plugin, len(opts.Plugins))
	for _, p := range opts.Plugins {
		name := p.Name()
		if name == "" || name == "*" {
			return nil, fmt.Errorf("plugin name %q is not allowed", name)
		}
		if _, dup := plugins[name]; dup {
			return nil, fmt.Errorf("two plugins are named %q", name)
		}
		plugins[name] = p
	}
	builtins := plugin.Names(opts.Plugins)
	caps := builtins
	var rt *wasm.Runtime
	if opts.Wasm != nil {
		var err error
		if rt, err = wasm.New(context.Background(), *opts.Wasm); err != nil {
			return nil, err
		}
		// The Sentinel's claim reads "*" as any plugin.
		caps = append([]string{"*"}, builtins...)
	}
	exe, _ := os.Executable()
	return &Worker{
		opts:       opts,
		log:        opts.Logger.With().Str("component", "worker").Str("worker_id", opts.Identity).Logger(),
		plugins:    plugins,
		builtins:   builtins,
		caps:       caps,
		exe:        exe,
		wasm:       rt,
		envs:       map[string]string{},
		modKeys:    map[string]string{},
		outbox:     make(chan outMsg, outboxSize),
		beatNow:    make(chan struct{}, 1),
		stopSender: make(chan struct{}),
		senderDone: make(chan struct{}),
		jobsCtx:    context.Background(),
		abortNow:   make(chan struct{}),
		changed:    make(chan struct{}, 1),
		jobs:       map[int64]*job{},
	}, nil
}

// NewIdentity returns <hostname>-<pid>-<8 hex digits>: readable in the
// Sentinel's logs and claimed_by column, and unique even for two workers
// started with the same pid in two containers of one host name.
func NewIdentity() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, host)
	if len(host) > 64 {
		host = host[:64]
	}
	if host == "" {
		host = "worker"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Identity is the worker's ZeroMQ identity.
func (w *Worker) Identity() string { return w.opts.Identity }

// Stats returns a snapshot of the counters.
func (w *Worker) Stats() Stats {
	st := Stats{
		Identifies:       w.stats.identifies.Load(),
		Reconnects:       w.stats.reconnects.Load(),
		JobsStarted:      w.stats.started.Load(),
		JobsRejected:     w.stats.rejected.Load(),
		JobsSucceeded:    w.stats.succeeded.Load(),
		JobsFailed:       w.stats.failed.Load(),
		JobsAborted:      w.stats.aborted.Load(),
		ReceiptsReplayed: w.stats.replayed.Load(),
	}
	if w.wasm != nil {
		ws := w.wasm.Stats()
		st.WasmCompiles, st.WasmCacheHits, st.WasmRunning = ws.Compiles, ws.CacheHits, ws.Running
	}
	return st
}

// Abort makes a drain that is under way, or that starts later, abort the
// running jobs at once instead of waiting for DrainTimeout (a second
// SIGTERM).
func (w *Worker) Abort() { w.abortOnce.Do(func() { close(w.abortNow) }) }

// Run connects (waiting as long as it takes for the Sentinel to be
// reachable), serves jobs until ctx is cancelled, then drains: it stops
// taking jobs, lets the running ones finish for up to DrainTimeout, aborts
// the rest, sends every receipt and returns nil. It returns an error only
// if it could not start.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	if w.wasm != nil {
		// After the drain: every job has concluded (a module stops when its
		// job's context ends, so none outlives it).
		defer w.wasm.Close(context.Background())
		mem, limit := w.wasm.Limits()
		w.log.Info().Int64("memory_limit_mib", mem>>20).Dur("time_limit", limit).Msg("deployed WebAssembly plugins enabled")
	}
	ev := w.log.Info().Str("endpoint", w.opts.Endpoint).Strs("plugins", w.caps).Int("concurrency", w.opts.Concurrency).
		Str("output_dir", w.opts.OutputDir).Strs("input_roots", w.opts.InputRoots)
	if c := w.opts.Curve; c != nil {
		ev = ev.Str("security", "curve").Str("key_fingerprint", c.Public.Fingerprint()).
			Str("sentinel_key_fingerprint", c.ServerKey.Fingerprint())
	} else {
		ev = ev.Str("security", "plaintext")
	}
	ev.Msg("connecting to the Sentinel")
	d, err := w.dial(ctx)
	if err != nil {
		w.log.Info().Msg("stopped before the Sentinel was reachable")
		return nil
	}
	w.dealer = d
	w.lastInbound.Store(time.Now().UnixNano())
	w.dialCtx, w.stopDial = context.WithCancel(context.Background())
	defer w.stopDial()
	go w.sendLoop()
	w.identify()
	w.sendHeartbeat()

	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		w.recvLoop()
	}()
	watchStop := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		w.watchdog(watchStop)
	}()
	w.log.Info().Msg("worker ready")

	<-ctx.Done()
	w.drain()

	// Every receipt is queued now; let the sender write them, then close.
	close(w.stopSender)
	<-w.senderDone
	close(watchStop)
	<-watchDone
	w.connMu.Lock()
	w.closing.Store(true)
	d = w.dealer
	w.connMu.Unlock()
	w.stopDial()
	_ = d.Close()
	<-recvDone
	st := w.Stats()
	w.log.Info().Int64("succeeded", st.JobsSucceeded).Int64("failed", st.JobsFailed).
		Int64("aborted", st.JobsAborted).Int64("rejected", st.JobsRejected).Msg("worker stopped")
	return nil
}

// dial connects a DEALER, waiting while the Sentinel is unreachable (zmq4
// retries every 250 ms) and backing off when a dial fails outright (the
// ZMTP handshake failed). Over CURVE it logs every curveDialReport why it
// is not connected yet (the last refusal's reason). It returns an error
// only when ctx ends.
func (w *Worker) dial(ctx context.Context) (*transport.Dealer, error) {
	backoff := dialBackoffMin
	for {
		attempt, cancel := ctx, context.CancelFunc(func() {})
		if w.opts.Curve != nil {
			// Safe to give up on: every CURVE handshake has a deadline, so
			// the dialing goroutine DialDealer leaves behind ends soon.
			attempt, cancel = context.WithTimeout(ctx, curveDialReport)
		}
		d, err := transport.DialDealer(attempt, w.opts.Endpoint, transport.DealerOptions{
			Identity: []byte(w.opts.Identity),
			Timeout:  w.opts.SendTimeout,
			Curve:    w.opts.Curve,
		})
		cancel()
		if err == nil {
			return d, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt.Err() != nil {
			// zmq4 was retrying all along: no backoff on top.
			w.log.Warn().Err(err).Msg("not connected to the Sentinel yet; still trying")
			continue
		}
		w.log.Warn().Err(err).Dur("retry_in", backoff).Msg("connect failed")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, dialBackoffMax)
	}
}

// watchdog closes the connection when the Sentinel has been silent for
// SentinelTimeout; recvLoop then dials a new one.
func (w *Worker) watchdog(stop <-chan struct{}) {
	limit := w.opts.SentinelTimeout
	if limit < 0 {
		return
	}
	t := time.NewTicker(max(limit/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		silent := time.Since(time.Unix(0, w.lastInbound.Load()))
		if silent < limit {
			continue
		}
		w.connMu.Lock()
		if w.replacing || w.closing.Load() {
			w.connMu.Unlock()
			continue
		}
		w.replacing = true
		d := w.dealer
		w.connMu.Unlock()
		w.log.Warn().Dur("silent", silent).Msg("nothing from the Sentinel; replacing the connection")
		_ = d.Close() // recvLoop's Recv returns and it dials again
	}
}

// drain stops taking jobs, waits for the running ones, and aborts what is
// left at the deadline.
func (w *Worker) drain() {
	w.mu.Lock()
	w.draining = true
	n := len(w.jobs)
	w.mu.Unlock()
	w.log.Info().Int("running", n).Dur("drain_timeout", w.opts.DrainTimeout).Msg("draining: taking no new jobs")
	// Re-identifying with no capabilities makes the Sentinel stop
	// dispatching here; a DISPATCH already on its way is REJECTED and
	// requeued by the Sentinel.
	w.identify()
	w.sendHeartbeat()

	deadline := time.NewTimer(w.opts.DrainTimeout)
	defer deadline.Stop()
	if w.waitIdle(deadline.C, w.abortNow) {
		return
	}
	n = w.abortAll(errDrainDeadline)
	w.log.Warn().Int("jobs", n).Msg("drain deadline reached: aborting running jobs")
	grace := time.NewTimer(abortWait)
	defer grace.Stop()
	if w.waitIdle(grace.C, nil) {
		return
	}
	// A plugin that ignores cancellation must not keep the process alive
	// or leave its job without a receipt.
	w.mu.Lock()
	stuck := make([]*job, 0, len(w.jobs))
	for _, j := range w.jobs {
		stuck = append(stuck, j)
	}
	w.mu.Unlock()
	for _, j := range stuck {
		w.log.Error().Int64("job_id", j.id).Str("plugin", j.d.PluginName).Msg("job did not stop after abort; concluding it ABORTED")
		w.conclude(j, transport.Conclude{Status: transport.StatusAborted,
			ErrorMessage: fmt.Sprintf("%v; the plugin did not stop within %s", errDrainDeadline, abortWait)})
	}
}

// waitIdle waits until no job goroutine is left, or until timeout or abort
// fires (false).
func (w *Worker) waitIdle(timeout <-chan time.Time, abort <-chan struct{}) bool {
	for {
		w.mu.Lock()
		idle := w.goroutines == 0
		w.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-w.changed:
		case <-timeout:
			return false
		case <-abort:
			return false
		}
	}
}

func (w *Worker) abortAll(cause error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range w.jobs {
		j.cancel(cause)
	}
	return len(w.jobs)
}

// --- receiving ---

func (w *Worker) recvLoop() {
	for {
		w.connMu.Lock()
		d := w.dealer
		w.connMu.Unlock()
		msg, err := d.Recv()
		if w.closing.Load() {
			return
		}
		if err == nil {
			w.lastInbound.Store(time.Now().UnixNano())
			w.heard()
			w.handle(msg)
			continue
		}
		if transport.ErrorKind(err) != "other" {
			w.log.Warn().Err(err).Msg("malformed message from the Sentinel ignored")
			continue
		}
		w.connMu.Lock()
		replace := w.replacing
		w.connMu.Unlock()
		if replace {
			if !w.redial() {
				return
			}
			w.reconnected()
			continue
		}
		// zmq4 redials before it reports the broken connection: io.EOF
		// (ErrReconnected) or the socket error itself ("connection reset
		// by peer"). Either way the Sentinel may have restarted, and what
		// was sent meanwhile is lost.
		if !errors.Is(err, transport.ErrReconnected) {
			w.log.Warn().Err(err).Msg("connection to the Sentinel broke")
		}

		w.log.Warn().Msg("reconnected to the Sentinel; identifying again")
		w.reconnected()
	}
}

// redial replaces the connection the watchdog closed. It returns false when
// the worker is stopping.
func (w *Worker) redial() bool {
	nd, err := w.dial(w.dialCtx)
	if err != nil {
		return false
	}
	w.connMu.Lock()
	if w.closing.Load() {
		w.connMu.Unlock()
		_ = nd.Close()
		return false
	}
	w.dealer, w.replacing = nd, false
	w.connMu.Unlock()
	w.lastInbound.Store(time.Now().UnixNano())
	w.log.Info().Msg("connection replaced")
	return true
}

func (w *Worker) handle(msg transport.Message) {
	jobID := int64(msg.JobID)
	payload, err := transport.DecodePayload(msg.Opcode, msg.Payload)
	if err != nil {
		w.log.Warn().Err(err).Stringer("op", msg.Opcode).Int64("job_id", jobID).Msg("malformed payload from the Sentinel")
		w.mu.Lock()
		_, running := w.jobs[jobID]
		w.mu.Unlock()
		if msg.Opcode == transport.OpDispatch && jobID != 0 && !running {
			// The job is RUNNING under us now: say why it cannot run.
			w.send(transport.OpConclude, jobID, &transport.Conclude{Status: transport.StatusFailed,
				ErrorMessage: "worker could not decode the DISPATCH: " + err.Error()})
		}
		return
	}
	switch msg.Opcode {
	case transport.OpDispatch:
		w.dispatch(jobID, payload.(*transport.Dispatch))
	case transport.OpAbort:
		w.abort(jobID)
	case transport.OpHeartbeat:
		w.kickHeartbeat()
	case transport.OpErr:
		e := payload.(*transport.Err)
		if e.Message == transport.UnknownWorkerMessage {
			// The Sentinel restarted (or dropped us): what we sent it
			// meanwhile is lost. This ERR can come before zmq4 reports the
			// broken connection, over the new one, and then our heartbeats
			// would get a job requeued before its receipt is re-sent.
			w.log.Info().Msg("the Sentinel does not know this worker; identifying again")
			w.reidentify()
			return
		}
		w.log.Warn().Int64("job_id", jobID).Str("error", e.Message).Msg("error from the Sentinel")
	case transport.OpPrepareEnv:
		w.prepareEnv(payload.(*transport.PrepareEnv))
	case transport.OpReload:
		w.log.Info().Msg("RELOAD ignored: this worker has no reloadable configuration")
	default:
		w.log.Debug().Stringer("op", msg.Opcode).Msg("message ignored")
	}
}

func (w *Worker) dispatch(id int64, d *transport.Dispatch) {
	log := w.log.With().Int64("job_id", id).Str("plugin", d.PluginName).Logger()
	w.mu.Lock()
	if _, dup := w.jobs[id]; dup {
		w.mu.Unlock()
		// Running it twice would write its output twice; the running
		// copy concludes for both.
		log.Warn().Msg("duplicate DISPATCH for a running job ignored")
		return
	}
	var reason string
	switch {
	case w.draining:
		reason = "worker is shutting down"
	case len(w.jobs) >= w.opts.Concurrency:
		reason = fmt.Sprintf("worker at capacity (%d of %d slots busy)", len(w.jobs), w.opts.Concurrency)
	}
	if reason != "" {
		w.mu.Unlock()
		w.stats.rejected.Add(1)
		log.Info().Str("reason", reason).Msg("job rejected")
		w.send(transport.OpConclude, id, &transport.Conclude{Status: transport.StatusRejected, ErrorMessage: reason})
		return
	}
	ctx, cancel := context.WithCancelCause(w.jobsCtx)
	j := &job{id: id, d: d, cancel: cancel, started: time.Now()}
	w.jobs[id] = j
	w.goroutines++
	w.mu.Unlock()
	w.stats.started.Add(1)
	log.Info().Str("file", d.FilePath).Msg("job started")

	go func() {
		defer w.goroutineDone()
		defer cancel(nil)
		receipt := w.execute(ctx, id, d, log)
		w.conclude(j, receipt)
	}()
}

func (w *Worker) goroutineDone() {
	w.mu.Lock()
	w.goroutines--
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// conclude sends j's one receipt. Whoever removes j from the running set
// sends it: the job's goroutine, or drain for a job that would not stop.
func (w *Worker) conclude(j *job, receipt transport.Conclude) {
	w.mu.Lock()
	if w.jobs[j.id] != j {
		w.mu.Unlock()
		return
	}
	// The slot is free before the receipt leaves, so a DISPATCH the
	// Sentinel sends in reply cannot find it still taken. The receipt is
	// pending from the same moment: a re-identify in between would
	// otherwise neither report the job as running nor re-send its receipt.
	delete(w.jobs, j.id)
	w.rememberLocked(j.id, &receipt)
	w.mu.Unlock()
	switch receipt.Status {
	case transport.StatusSuccess:
		w.stats.succeeded.Add(1)
	case transport.StatusAborted:
		w.stats.aborted.Add(1)
	default:
		w.stats.failed.Add(1)
	}
	w.send(transport.OpConclude, j.id, &receipt)
}

func (w *Worker) abort(id int64) {
	w.mu.Lock()
	j := w.jobs[id]
	w.mu.Unlock()
	if j == nil {
		// Already concluded (the receipt crossed the ABORT), or never ours.
		w.log.Debug().Int64("job_id", id).Msg("ABORT for a job not running here ignored")
		return
	}
	w.log.Info().Int64("job_id", id).Msg("ABORT received; cancelling the job")
	j.cancel(errAbortedBySentinel)
}

// reconnected counts a reconnect and identifies again.
func (w *Worker) reconnected() {
	w.stats.reconnects.Add(1)
	w.reidentify()
}

// reidentify announces the worker again, re-sends the pending receipts (any
// of them may have been lost with the old connection, or with a new one
// that broke again straight away), and reports its jobs.
func (w *Worker) reidentify() {
	w.mu.Lock()
	w.epoch++
	w.mu.Unlock()
	w.identify()
	replay := w.replayable()
	for _, r := range replay {
		w.stats.replayed.Add(1)
		w.send(transport.OpConclude, r.jobID, r.receipt)
	}
	if len(replay) > 0 {
		w.log.Info().Int("receipts", len(replay)).Msg("re-sent pending receipts")
	}
	// Queued behind the receipts: the Sentinel requeues a job it holds for
	// us that two heartbeats in a row leave out, so the receipts must get
	// there first.
	w.sendHeartbeat()
}

// replayable returns the pending receipts to send again after an IDENTIFY.
func (w *Worker) replayable() []pendingReceipt {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.prune(time.Now())
	var replay []pendingReceipt
	for _, r := range w.pending {
		if _, again := w.jobs[r.jobID]; again {
			continue // dispatched to us again since: that run will conclude
		}
		replay = append(replay, *r)
	}
	return replay
}

// heard records that the Sentinel spoke: receipts written on this epoch
// before now have reached it.
func (w *Worker) heard() {
	w.mu.Lock()
	for _, r := range w.unheard {
		// One written on an older epoch went out over a connection the
		// Sentinel may have lost; only a write on this one can be heard.
		r.heard = r.epoch == w.epoch
	}
	clear(w.unheard)
	w.unheard = w.unheard[:0]
	w.mu.Unlock()
}

// written records a write of a receipt, and whether it went out (on the
// current epoch).
func (w *Worker) written(r *transport.Conclude, ok bool) {
	w.mu.Lock()
	for _, p := range w.pending {
		if p.receipt != r {
			continue
		}
		p.tried = true
		if ok {
			p.written, p.epoch, p.heard = time.Now(), w.epoch, false
			w.unheard = append(w.unheard, p)
		}
	}
	w.mu.Unlock()
}

// identify queues an IDENTIFY: the plugins and slots, or no capabilities
// while draining so the Sentinel sends nothing more.
func (w *Worker) identify() {
	w.stats.identifies.Add(1)
	w.send(transport.OpIdentify, 0, w.hello())
}

// hello is the IDENTIFY payload as of now.
func (w *Worker) hello() *transport.Identify {
	w.mu.Lock()
	caps := w.caps
	if w.draining {
		caps = []string{}
	}
	w.mu.Unlock()
	return &transport.Identify{
		Capabilities:      caps,
		WorkerID:          w.opts.Identity,
		MaxConcurrentJobs: w.opts.Concurrency,
		Version:           "casparian-worker/" + w.opts.Version,
	}
}

// --- sending ---

// send queues a message for the sender goroutine. It blocks only while the
// outbox is full, and drops the message once the worker has stopped.
func (w *Worker) send(op transport.Opcode, jobID int64, payload any) {
	if r, ok := payload.(*transport.Conclude); ok && r.Status != transport.StatusRejected {
		w.mu.Lock()
		w.rememberLocked(jobID, r)
		w.mu.Unlock()
	}
	select {
	case <-w.senderDone:
		w.log.Warn().Stringer("op", op).Int64("job_id", jobID).Msg("worker stopped: message dropped")
		return
	default:
	}
	select {
	case w.outbox <- outMsg{op: op, jobID: jobID, payload: payload}:
	case <-w.senderDone:
		w.log.Warn().Stringer("op", op).Int64("job_id", jobID).Msg("worker stopped: message dropped")
	}
}

// rememberLocked makes a receipt pending from the moment it is queued: a
// reconnect may come while it still waits in the outbox or in a send to the
// connection that is breaking. REJECTED is not kept: if it is lost the job
// stays RUNNING under us, and the Sentinel's heartbeat reconciliation
// requeues it. w.mu is held.
func (w *Worker) rememberLocked(jobID int64, r *transport.Conclude) {
	w.prune(time.Now())
	if !slices.ContainsFunc(w.pending, func(p *pendingReceipt) bool { return p.receipt == r }) {
		w.pending = append(w.pending, &pendingReceipt{jobID: jobID, receipt: r})
	}
}

// prune forgets the receipts the Sentinel acknowledged more than
// replayWindow ago, and the oldest beyond maxPending. w.mu is held.
func (w *Worker) prune(now time.Time) {
	w.pending = slices.DeleteFunc(w.pending, func(p *pendingReceipt) bool {
		return p.heard && now.Sub(p.written) > replayWindow
	})
	if n := len(w.pending) - maxPending; n > 0 {
		w.pending = slices.Delete(w.pending, 0, n)
	}
}

// sendHeartbeat queues a heartbeat behind what is already queued; its job
// list is taken when it is written.
func (w *Worker) sendHeartbeat() { w.send(transport.OpHeartbeat, 0, nil) }

// kickHeartbeat has the sender write a heartbeat next, ahead of the queue:
// the answer to the Sentinel's probe.
func (w *Worker) kickHeartbeat() {
	select {
	case w.beatNow <- struct{}{}:
	default:
	}
}

// sendLoop owns Dealer.Send. It also sends the periodic heartbeats, so they
// go out on time however busy the jobs are.
func (w *Worker) sendLoop() {
	defer close(w.senderDone)
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case m := <-w.outbox:
			w.write(m)
		case <-w.beatNow:
			w.flushOutbox()
			w.write(outMsg{op: transport.OpHeartbeat, payload: w.heartbeat()})
		case <-t.C:
			w.flushOutbox()
			if w.reannounce.Swap(false) {
				// The IDENTIFY that failed had the pending receipts
				// behind it; they follow this one too.
				w.stats.identifies.Add(1)
				w.write(outMsg{op: transport.OpIdentify, payload: w.hello()})
				for _, r := range w.replayable() {
					w.stats.replayed.Add(1)
					w.write(outMsg{op: transport.OpConclude, jobID: r.jobID, payload: r.receipt})
				}
			}
			w.write(outMsg{op: transport.OpHeartbeat, payload: w.heartbeat()})
		case <-w.stopSender:
			for {
				select {
				case m := <-w.outbox:
					w.write(m)
				default:
					return
				}
			}
		}
	}
}

// flushOutbox writes what is queued now, so that a heartbeat, whose job
// list is taken when it is written, never overtakes a receipt queued before
// it: a heartbeat that leaves out a job whose receipt has not gone yet
// tells the Sentinel the job is gone.
func (w *Worker) flushOutbox() {
	for range len(w.outbox) {
		select {
		case m := <-w.outbox:
			w.write(m)
		default:
			return
		}
	}
}

func (w *Worker) write(m outMsg) {
	if m.op == transport.OpHeartbeat && m.payload == nil {
		m.payload = w.heartbeat()
	}
	w.connMu.Lock()
	d := w.dealer
	w.connMu.Unlock()
	w.log.Trace().Stringer("op", m.op).Int64("job_id", m.jobID).Msg("send")
	err := d.Send(m.op, uint64(m.jobID), m.payload)
	if r, ok := m.payload.(*transport.Conclude); ok {
		w.written(r, err == nil)
	}
	if err != nil {
		// Most likely the connection is down; receipts stay pending (see
		// pendingReceipt) and are re-sent after the reconnect. Heartbeats
		// fail quietly, or an outage would flood the log.
		ev := w.log.Warn()
		if m.op == transport.OpHeartbeat {
			ev = w.log.Debug()
		}
		ev.Err(err).Stringer("op", m.op).Int64("job_id", m.jobID).Msg("send failed")
		if m.op == transport.OpIdentify {
			w.reannounce.Store(true)
		}
	}
}

// heartbeat reports the running jobs, oldest first, and then the jobs whose
// receipts are queued but not written yet: the Sentinel requeues a job that
// two heartbeats leave out, and one that concluded is not gone until the
// Sentinel has its receipt.
func (w *Worker) heartbeat() *transport.Heartbeat {
	w.mu.Lock()
	jobs := make([]*job, 0, len(w.jobs))
	for _, j := range w.jobs {
		jobs = append(jobs, j)
	}
	var concluding []int64
	for _, p := range w.pending {
		if !p.tried {
			if _, again := w.jobs[p.jobID]; !again {
				concluding = append(concluding, p.jobID)
			}
		}
	}
	w.mu.Unlock()
	slices.SortFunc(jobs, func(a, b *job) int { return a.started.Compare(b.started) })
	hb := &transport.Heartbeat{Status: transport.HeartbeatIdle, ActiveJobIDs: make([]int64, 0, len(jobs)+len(concluding))}
	for _, j := range jobs {
		hb.ActiveJobIDs = append(hb.ActiveJobIDs, j.id)
	}
	hb.ActiveJobIDs = append(hb.ActiveJobIDs, concluding...)
	hb.ActiveJobCount = len(hb.ActiveJobIDs)
	if len(hb.ActiveJobIDs) > 0 {
		hb.Status = transport.HeartbeatBusy
		hb.CurrentJobID = &hb.ActiveJobIDs[0]
	}
	return hb
}
