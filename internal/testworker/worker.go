// Package testworker is a minimal Casparian worker that speaks protocol v4
// over a real DEALER socket. Tests and the demo use it; the full sample worker
// is cmd/casparian-worker's business.
package testworker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casparian/sentinel/transport"
)

// Job is one DISPATCH the worker received.
type Job struct {
	ID       int64
	Dispatch transport.Dispatch
	// Endpoint is the Sentinel endpoint the DISPATCH came through.
	Endpoint string
}

// RunFunc does a job's work and returns its receipt. ctx is cancelled on ABORT.
type RunFunc func(ctx context.Context, job Job) transport.Conclude

// Options configure a Worker. Zero values mean the defaults.
type Options struct {
	// Endpoint is the Sentinel's ROUTER, or a comma-separated list of
	// Sentinels to fail over between (see SentinelTimeout).
	Endpoint     string
	Identity     string   // default: random
	Capabilities []string // default ["*"]
	Slots        int      // default 1; reported as max_concurrent_jobs
	Run          RunFunc  // default: FileStats
	// HeartbeatInterval, when set, makes the worker send unsolicited heartbeats.
	HeartbeatInterval time.Duration
	// Curve, when set, connects over CurveZMQ with these keys (for a
	// Sentinel with CURVE on). Default nil: plaintext.
	Curve *transport.CurveClient
	// PrepareEnv answers PREPARE_ENV, in a goroutine of its own: nil sends
	// ENV_READY, ErrNoAnswer sends nothing, any other error sends ERR
	// (job_id 0) naming the env_hash. Default: ENV_READY at once.
	PrepareEnv func(p transport.PrepareEnv) error
	// SentinelTimeout, when set, replaces a connection over which nothing
	// arrived for this long by one to the next endpoint of Endpoint
	// (round-robin), as cmd/casparian-worker's --sentinel-timeout does:
	// the worker identifies there, re-sends the receipts of the last
	// replayWindow before the old Sentinel went silent, and heartbeats its
	// running jobs so that the new Sentinel adopts them. Default 0: never.
	SentinelTimeout time.Duration
}

// Failover timings (see Options.SentinelTimeout).
const (
	// replayWindow: receipts sent this long before the Sentinel last spoke,
	// or later, are re-sent after a failover. The old Sentinel may have read
	// them and died before committing; one it did commit is stale at the
	// new one and changes nothing.
	replayWindow = 5 * time.Second
	// minDialWindow is the least time one endpoint is given to answer a
	// dial before the next is tried.
	minDialWindow = time.Second
	// dialPause is the wait before the next endpoint when a dial was
	// refused outright, and before dialling again after a failover found
	// none.
	dialPause = 250 * time.Millisecond
)

// ErrNoAnswer makes a PrepareEnv hook leave a PREPARE_ENV unanswered.
var ErrNoAnswer = errors.New("no answer")

// Worker is a running test worker.
type Worker struct {
	opts      Options
	endpoints []string
	sendMu    sync.Mutex
	dealer    *transport.Dealer // guarded by sendMu; replaced by a failover
	at        int               // guarded by sendMu: index of dealer's endpoint

	// lastHeard is when the Sentinel last spoke (unix ns); replacing is set
	// while the watchdog's close of a silent connection is being handled.
	lastHeard atomic.Int64
	replacing atomic.Bool

	mu       sync.Mutex
	active   map[int64]context.CancelFunc
	received []Job
	rejected int
	idents   int
	events   []string      // "prepare:<env_hash>", "dispatch:<job_id>", "reload", in arrival order
	beats    int           // HEARTBEATs received from the Sentinel
	sent     []sentReceipt // receipts kept for a failover (SentinelTimeout > 0)
	failover int           // connections replaced after a silence

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// sentReceipt is a CONCLUDE sent, kept to be re-sent after a failover.
type sentReceipt struct {
	jobID   int64
	receipt transport.Conclude
	at      time.Time
}

// Start connects, identifies, and serves jobs until Close.
func Start(ctx context.Context, opts Options) (*Worker, error) {
	if len(opts.Capabilities) == 0 {
		opts.Capabilities = []string{"*"}
	}
	if opts.Slots <= 0 {
		opts.Slots = 1
	}
	if opts.Run == nil {
		opts.Run = FileStats
	}
	if opts.Identity == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		opts.Identity = "tw-" + hex.EncodeToString(b[:])
	}
	w := &Worker{opts: opts, active: map[int64]context.CancelFunc{}}
	for _, e := range strings.Split(opts.Endpoint, ",") {
		if e = strings.TrimSpace(e); e != "" {
			w.endpoints = append(w.endpoints, e)
		}
	}
	if len(w.endpoints) == 0 {
		return nil, errors.New("no endpoint")
	}
	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	defer cancelDial()
	d, at, err := w.dial(dialCtx, 0)
	if err != nil {
		return nil, err
	}
	w.dealer, w.at = d, at
	w.lastHeard.Store(time.Now().UnixNano())
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if err := w.identify(); err != nil {
		_ = d.Close() // the IDENTIFY's error is the one to report
		return nil, err
	}
	w.wg.Add(1)
	go w.loop()
	if opts.HeartbeatInterval > 0 {
		w.wg.Add(1)
		go w.beat()
	}
	if opts.SentinelTimeout > 0 {
		w.wg.Add(1)
		go w.watchdog()
	}
	return w, nil
}

// dial connects to the first endpoint that answers, trying them in order
// from endpoints[from], round-robin; with several, each gets
// max(SentinelTimeout, minDialWindow) before the next is tried, and dial
// returns an error only when ctx ends. With one, it returns DialDealer's.
func (w *Worker) dial(ctx context.Context, from int) (*transport.Dealer, int, error) {
	n := len(w.endpoints)
	for i := from % n; ; i = (i + 1) % n {
		attempt, cancel := ctx, context.CancelFunc(func() {})
		if n > 1 {
			attempt, cancel = context.WithTimeout(ctx, max(w.opts.SentinelTimeout, minDialWindow))
		}
		d, err := transport.DialDealer(attempt, w.endpoints[i],
			transport.DealerOptions{Identity: []byte(w.opts.Identity), Curve: w.opts.Curve})
		cancel()
		if err == nil {
			return d, i, nil
		}
		if ctx.Err() != nil || n == 1 {
			return nil, 0, err
		}
		if attempt.Err() == nil {
			// Refused outright (a failed handshake), not just unreachable:
			// a pause, so as not to spin on two refusing endpoints.
			select {
			case <-ctx.Done():
				return nil, 0, err
			case <-time.After(dialPause):
			}
		}
	}
}

// Endpoint is the endpoint of the current connection.
func (w *Worker) Endpoint() string {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.endpoints[w.at]
}

// Failovers counts the connections replaced after SentinelTimeout of
// silence.
func (w *Worker) Failovers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failover
}

// Identity is the worker's ZeroMQ identity (its key in the Sentinel).
func (w *Worker) Identity() string { return w.opts.Identity }

// Received returns the jobs dispatched to this worker so far.
func (w *Worker) Received() []Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Job(nil), w.received...)
}

// Rejected counts jobs refused because every slot was busy.
func (w *Worker) Rejected() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rejected
}

// Identifies counts IDENTIFY messages sent (1 + re-identifications).
func (w *Worker) Identifies() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.idents
}

// Send sends a raw message (tests use it to spoof or misbehave).
func (w *Worker) Send(op transport.Opcode, jobID uint64, v any) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.dealer.Send(op, jobID, v)
}

// Close stops serving; jobs still running are cancelled without a receipt,
// the way a crashed worker would leave them.
func (w *Worker) Close() {
	w.cancel()
	w.sendMu.Lock()
	_ = w.dealer.Close()
	w.sendMu.Unlock()
	w.wg.Wait()
}

func (w *Worker) identify() error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.identifyLocked()
}

// identifyLocked sends an IDENTIFY; sendMu is held.
func (w *Worker) identifyLocked() error {
	w.mu.Lock()
	w.idents++
	w.mu.Unlock()
	return w.dealer.Send(transport.OpIdentify, 0, &transport.Identify{
		Capabilities:      w.opts.Capabilities,
		WorkerID:          w.opts.Identity,
		MaxConcurrentJobs: w.opts.Slots,
		Version:           "testworker",
	})
}

// current returns the connection and its endpoint.
func (w *Worker) current() (*transport.Dealer, string) {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.dealer, w.endpoints[w.at]
}

func (w *Worker) loop() {
	defer w.wg.Done()
	for {
		d, endpoint := w.current()
		msg, err := d.Recv()
		if w.ctx.Err() != nil {
			return
		}
		if err != nil && w.replacing.Load() {
			if !w.failOver() {
				return
			}
			continue
		}
		if errors.Is(err, transport.ErrReconnected) {
			_ = w.identify()
			continue
		}
		if err != nil {
			continue // a malformed message from the Sentinel: ignore it
		}
		w.lastHeard.Store(time.Now().UnixNano())
		payload, err := transport.DecodePayload(msg.Opcode, msg.Payload)
		if err != nil {
			continue
		}
		switch msg.Opcode {
		case transport.OpDispatch:
			w.dispatch(int64(msg.JobID), payload.(*transport.Dispatch), endpoint)
		case transport.OpPrepareEnv:
			w.prepareEnv(*payload.(*transport.PrepareEnv))
		case transport.OpReload:
			w.record("reload")
		case transport.OpHeartbeat:
			w.mu.Lock()
			w.beats++
			w.mu.Unlock()
			_ = w.Send(transport.OpHeartbeat, 0, w.heartbeat())
		case transport.OpAbort:
			w.mu.Lock()
			if cancel, ok := w.active[int64(msg.JobID)]; ok {
				cancel()
			}
			w.mu.Unlock()
		case transport.OpErr:
			if e := payload.(*transport.Err); e.Message == transport.UnknownWorkerMessage {
				_ = w.identify()
			}
		}
	}
}

// watchdog closes the connection when the Sentinel has been silent for
// SentinelTimeout; loop then fails over.
func (w *Worker) watchdog() {
	defer w.wg.Done()
	limit := w.opts.SentinelTimeout
	t := time.NewTicker(max(limit/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, w.lastHeard.Load())) < limit || w.replacing.Load() {
			continue
		}
		w.replacing.Store(true)
		d, _ := w.current()
		_ = d.Close() // loop's Recv returns, and it fails over
	}
}

// failOver replaces the connection the watchdog closed by one to the next
// endpoint that answers, identifies there, re-sends the recent receipts
// and heartbeats the running jobs, in that order (the Sentinel requeues a
// job it holds for us that heartbeats leave out, so the receipts go
// first). It returns false when the worker is closing.
func (w *Worker) failOver() bool {
	w.sendMu.Lock()
	from := w.at + 1
	w.sendMu.Unlock()
	d, at, err := w.dial(w.ctx, from)
	for err != nil { // one endpoint, which refused: again, until Close
		select {
		case <-w.ctx.Done():
			return false
		case <-time.After(dialPause):
		}
		d, at, err = w.dial(w.ctx, from)
	}
	w.sendMu.Lock()
	if w.ctx.Err() != nil { // Close came first: it closed the old one
		w.sendMu.Unlock()
		_ = d.Close()
		return false
	}
	w.dealer, w.at = d, at
	w.lastHeard.Store(time.Now().UnixNano())
	w.replacing.Store(false)
	// Under sendMu: nothing reaches the new Sentinel before the IDENTIFY.
	_ = w.identifyLocked()
	w.sendMu.Unlock()

	w.mu.Lock()
	w.failover++
	replay := append([]sentReceipt(nil), w.sent...)
	w.mu.Unlock()
	for _, r := range replay {
		_ = w.Send(transport.OpConclude, uint64(r.jobID), &r.receipt)
	}
	_ = w.Send(transport.OpHeartbeat, 0, w.heartbeat())
	return true
}

func (w *Worker) beat() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			_ = w.Send(transport.OpHeartbeat, 0, w.heartbeat())
		}
	}
}

func (w *Worker) heartbeat() *transport.Heartbeat {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]int64, 0, len(w.active))
	for id := range w.active {
		ids = append(ids, id)
	}
	status := transport.HeartbeatIdle
	if len(ids) > 0 {
		status = transport.HeartbeatBusy
	}
	return &transport.Heartbeat{Status: status, ActiveJobCount: len(ids), ActiveJobIDs: ids}
}

// Heartbeats counts the HEARTBEATs received from the Sentinel (each one
// answered with the worker's own, active_job_ids included).
func (w *Worker) Heartbeats() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.beats
}

// Events lists what the worker received, in order: "prepare:<env_hash>",
// "dispatch:<job_id>" and "reload".
func (w *Worker) Events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

func (w *Worker) record(event string) {
	w.mu.Lock()
	w.events = append(w.events, event)
	w.mu.Unlock()
}

func (w *Worker) prepareEnv(p transport.PrepareEnv) {
	w.record("prepare:" + p.EnvHash)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		var err error
		if w.opts.PrepareEnv != nil {
			err = w.opts.PrepareEnv(p)
		}
		switch {
		case w.ctx.Err() != nil || errors.Is(err, ErrNoAnswer):
		case err != nil:
			_ = w.Send(transport.OpErr, 0, &transport.Err{Message: "prepare environment " + p.EnvHash + ": " + err.Error()})
		default:
			_ = w.Send(transport.OpEnvReady, 0, &transport.EnvReady{EnvHash: p.EnvHash, InterpreterPath: "/bin/true"})
		}
	}()
}

func (w *Worker) dispatch(id int64, d *transport.Dispatch, endpoint string) {
	j := Job{ID: id, Dispatch: *d, Endpoint: endpoint}
	w.mu.Lock()
	w.events = append(w.events, fmt.Sprintf("dispatch:%d", id))
	w.received = append(w.received, j)
	if len(w.active) >= w.opts.Slots {
		w.rejected++
		w.mu.Unlock()
		_ = w.Send(transport.OpConclude, uint64(id), &transport.Conclude{Status: transport.StatusRejected, ErrorMessage: "at capacity"})
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	w.active[id] = cancel
	w.mu.Unlock()

	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer cancel()
		receipt := w.opts.Run(ctx, j)
		if w.ctx.Err() != nil {
			return // closed: behave like a crashed worker, no receipt
		}
		if ctx.Err() != nil && receipt.Status == transport.StatusSuccess {
			receipt = transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		}
		w.mu.Lock()
		delete(w.active, id)
		w.keep(id, receipt)
		w.mu.Unlock()
		_ = w.Send(transport.OpConclude, uint64(id), &receipt)
	}()
}

// keep remembers a receipt for a failover, and forgets those sent more than
// replayWindow before the Sentinel last spoke; w.mu is held. Without a
// SentinelTimeout there is no failover, and nothing is kept.
func (w *Worker) keep(id int64, receipt transport.Conclude) {
	if w.opts.SentinelTimeout <= 0 {
		return
	}
	now := time.Now()
	horizon := time.Unix(0, w.lastHeard.Load()).Add(-replayWindow)
	i := 0
	for i < len(w.sent) && w.sent[i].at.Before(horizon) {
		i++
	}
	w.sent = append(w.sent[i:], sentReceipt{jobID: id, receipt: receipt, at: now})
}

// FileStats is real work: it reads the dispatched file and reports its size,
// line count and SHA-256. A missing or unreadable file is a FAILED receipt.
func FileStats(ctx context.Context, job Job) transport.Conclude {
	f, err := os.Open(job.Dispatch.FilePath)
	if err != nil {
		return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: err.Error()}
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var size, lines int64
	for {
		if ctx.Err() != nil {
			return transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		}
		n, err := f.Read(buf)
		for _, b := range buf[:n] {
			if b == '\n' {
				lines++
			}
		}
		size += int64(n)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: err.Error()}
		}
	}
	return transport.Conclude{
		Status:    transport.StatusSuccess,
		Metrics:   map[string]int64{"rows": lines, "size_bytes": size},
		Artifacts: []map[string]string{{"topic": "output", "uri": "sha256:" + hex.EncodeToString(h.Sum(nil))}},
	}
}

// Succeed is a RunFunc that does no work and succeeds at once.
func Succeed(context.Context, Job) transport.Conclude {
	return transport.Conclude{Status: transport.StatusSuccess, Metrics: map[string]int64{"rows": 1}}
}
