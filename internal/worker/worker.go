// Package worker is the Casparian worker runtime: it connects a DEALER to
// the Sentinel, identifies with its plugins and capacity, heartbeats, runs
// dispatched jobs in slots through plugins and sinks, honours ABORT, and
// drains on shutdown. Every job it accepts gets exactly one CONCLUDE.
//
// Goroutines: one receives (and never blocks on the network to send), one
// sends (every message, and the heartbeats, so Send stays on one goroutine
// as transport.Dealer asks), one watches for a silent Sentinel, and one
// runs each job. The Worker type's comment says who owns what.
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

var (
	errAbortedBySentinel = errors.New("aborted by the Sentinel")
	errDrainDeadline     = errors.New("aborted at the worker's drain deadline during shutdown")
)

// Options configure a Worker. Zero values mean the defaults.
type Options struct {
	// Endpoint is the Sentinel's ROUTER, tcp://host:port or ipc://path, or
	// several Sentinels' separated by commas (see ParseEndpoints). With
	// several, the worker connects to the first that answers, in order;
	// when the watchdog gives up on the one it is on (SentinelTimeout of
	// silence), it dials the next, round-robin, identifies there, re-sends
	// its pending receipts and lists its running jobs, as after any
	// reconnect. It does not move back when an earlier one returns.
	// Default DefaultEndpoint.
	Endpoint string
	// Curve, when set, connects over CurveZMQ with these keys: the
	// Sentinel's public key and this worker's key pair, whose public half
	// must be in the Sentinel's authorized workers. Its Sentinel key
	// applies to every endpoint unless SentinelKeys is set. Every endpoint
	// must then be tcp://. Default nil: plaintext.
	Curve *transport.CurveClient
	// SentinelKeys, with Curve and several endpoints whose Sentinels have
	// different keys, is each endpoint's Sentinel public key, in the order
	// of Endpoint; it replaces Curve.ServerKey. Empty: Curve.ServerKey for
	// all.
	SentinelKeys []transport.CurveKey
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
	// Endpoint is the Sentinel endpoint of the current connection (the
	// last one dialled successfully; "" before the first).
	Endpoint      string
	Failovers     int64 // connections made to another endpoint than the last one
	WasmCompiles  int64 // WebAssembly modules compiled
	WasmCacheHits int64 // deployed-plugin runs that found their module compiled
	WasmRunning   int64 // WebAssembly instances running now
}

type counters struct {
	identifies, reconnects, started, rejected, succeeded, failed, aborted, replayed, failovers atomic.Int64
}

// Worker is one worker process's runtime. Create it with New and call Run
// once.
//
// Its state is split by concern, a file each:
//
//   - conn (conn.go): the DEALER, which the watchdog may replace; dialling
//     (round-robin over the endpoints, endpoints.go), the receiver, the
//     watchdog, re-IDENTIFY;
//   - the outbox (sender.go): the sender goroutine and what it writes;
//   - slots (slots.go): the running jobs, capacity, the drain;
//   - receipts (receipts.go): conclusions the Sentinel may not have yet,
//     re-sent after every IDENTIFY until acknowledged;
//   - envs (deployed.go): PREPARE_ENV lockfiles and module keys.
//
// Goroutines, and what each one alone may do:
//
//   - Run: sets conn.dealer and conn.dialCtx before starting the others,
//     drains, then stops them in order: the sender (after the last receipt
//     is queued), the watchdog, then it closes the DEALER, which ends the
//     receiver.
//   - the receiver (recvLoop): Dealer.Recv; replacing conn.dealer after the
//     watchdog closed it (redial, to the next endpoint if there are
//     several), and conn.at with it; handling every message in order
//     (DISPATCH starts jobs, ABORT, PREPARE_ENV, re-IDENTIFY).
//   - the sender (sendLoop): Dealer.Send, the heartbeat ticker, and
//     reannounce, which nothing else touches.
//   - the watchdog: closes the DEALER after SentinelTimeout of silence.
//   - one per job (dispatch): runs it and concludes it (conclude); drain
//     concludes a job whose plugin ignores its abort.
//
// Locks, and what each guards:
//
//   - mu: slots and receipts, together, because a job moves from one to the
//     other: conclude frees its slot and makes its receipt pending in one
//     critical section (release), and heartbeat and replayable read both in
//     one. With a lock each, a heartbeat or a re-IDENTIFY between the two
//     steps would neither list the job nor re-send its receipt.
//   - conn.mu: conn.dealer, conn.replacing, conn.closing.
//   - envs.mu: envs.lockfiles, envs.moduleKeys.
//
// Lock order: mu, then conn.mu, then envs.mu. Today each is a leaf: no
// code holds one of them while it takes another, and none is held across a
// channel operation, a Dealer call, a plugin or a log write, so no path
// can deadlock on them. Keep them leaves; a path that ever needs two takes
// them in that order.
//
// Without a lock: conn.lastInbound, conn.at and the stats are atomics; started is
// an atomic for Run's only-once check; everything set in New (opts,
// plugins, caps, …) is read-only afterwards. The rest is channels.
type Worker struct {
	opts     Options
	log      zerolog.Logger
	plugins  map[string]plugin.Plugin
	builtins []string // names of plugins
	caps     []string // builtins, and "*" with deployed plugins
	exe      string
	// endpoints are the Sentinels to connect to, in order (one, usually).
	endpoints []endpoint
	stats     counters
	started   atomic.Bool

	wasm *wasm.Runtime // nil: deployed plugins off
	envs environments

	conn connection

	// The outbox: anyone queues, the sender writes.
	outbox     chan outMsg
	beatNow    chan struct{} // cap 1: send a heartbeat now
	stopSender chan struct{} // closed by Run when every receipt is queued
	senderDone chan struct{} // closed by the sender when it returns
	// reannounce is set when an IDENTIFY could not be sent: the next
	// heartbeat tick sends a fresh one first. Owned by the sender.
	reannounce bool

	jobsCtx   context.Context // parent of every job's context; never cancelled
	abortNow  chan struct{}   // closed by Abort
	abortOnce sync.Once
	changed   chan struct{} // cap 1: a job goroutine finished

	mu       sync.Mutex
	slots    slots    // guarded by mu
	receipts receipts // guarded by mu
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
	endpoints, err := endpointsOf(opts)
	if err != nil {
		return nil, err
	}
	if len(endpoints) > 1 && opts.SentinelTimeout < 0 {
		return nil, errors.New("several endpoints need the Sentinel timeout: without it the worker never fails over")
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
		endpoints:  endpoints,
		wasm:       rt,
		envs:       environments{lockfiles: map[string]string{}, moduleKeys: map[string]string{}},
		outbox:     make(chan outMsg, outboxSize),
		beatNow:    make(chan struct{}, 1),
		stopSender: make(chan struct{}),
		senderDone: make(chan struct{}),
		jobsCtx:    context.Background(),
		abortNow:   make(chan struct{}),
		changed:    make(chan struct{}, 1),
		slots:      slots{jobs: map[int64]*job{}},
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
		Endpoint:         w.conn.endpoint(w.endpoints),
		Failovers:        w.stats.failovers.Load(),
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
		defer func() { _ = w.wasm.Close(context.Background()) }() // in-memory runtime: nothing to lose
		mem, limit := w.wasm.Limits()
		w.log.Info().Int64("memory_limit_mib", mem>>20).Dur("time_limit", limit).Msg("deployed WebAssembly plugins enabled")
	}
	addrs := make([]string, len(w.endpoints))
	for i, e := range w.endpoints {
		addrs[i] = e.addr
	}
	ev := w.log.Info().Str("endpoint", strings.Join(addrs, ",")).Strs("plugins", w.caps).Int("concurrency", w.opts.Concurrency).
		Str("output_dir", w.opts.OutputDir).Strs("input_roots", w.opts.InputRoots)
	if c := w.opts.Curve; c != nil {
		ev = ev.Str("security", "curve").Str("key_fingerprint", c.Public.Fingerprint())
		if len(w.opts.SentinelKeys) == 0 {
			ev = ev.Str("sentinel_key_fingerprint", c.ServerKey.Fingerprint())
		} else {
			prints := make([]string, len(w.endpoints))
			for i, e := range w.endpoints {
				prints[i] = e.curve.ServerKey.Fingerprint()
			}
			ev = ev.Strs("sentinel_key_fingerprints", prints)
		}
	} else {
		ev = ev.Str("security", "plaintext")
	}
	ev.Msg("connecting to the Sentinel")
	d, at, err := w.dial(ctx, 0)
	if err != nil {
		w.log.Info().Msg("stopped before the Sentinel was reachable")
		return nil
	}
	w.connected(at, true)
	w.conn.dealer = d
	w.conn.heard()
	w.conn.dialCtx, w.conn.stopDial = context.WithCancel(context.Background())
	defer w.conn.stopDial()
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
	d = w.conn.close()
	w.conn.stopDial()
	_ = d.Close()
	<-recvDone
	st := w.Stats()
	w.log.Info().Int64("succeeded", st.JobsSucceeded).Int64("failed", st.JobsFailed).
		Int64("aborted", st.JobsAborted).Int64("rejected", st.JobsRejected).Msg("worker stopped")
	return nil
}

// handle acts on one message from the Sentinel, on the receiver goroutine.
func (w *Worker) handle(msg transport.Message) {
	jobID := int64(msg.JobID)
	payload, err := transport.DecodePayload(msg.Opcode, msg.Payload)
	if err != nil {
		w.log.Warn().Err(err).Stringer("op", msg.Opcode).Int64("job_id", jobID).Msg("malformed payload from the Sentinel")
		w.mu.Lock()
		running := w.slots.running(jobID)
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
