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
	"sync"
	"time"

	"github.com/casparian/sentinel/transport"
)

// Job is one DISPATCH the worker received.
type Job struct {
	ID       int64
	Dispatch transport.Dispatch
}

// RunFunc does a job's work and returns its receipt. ctx is cancelled on ABORT.
type RunFunc func(ctx context.Context, job Job) transport.Conclude

// Options configure a Worker. Zero values mean the defaults.
type Options struct {
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
}

// ErrNoAnswer makes a PrepareEnv hook leave a PREPARE_ENV unanswered.
var ErrNoAnswer = errors.New("no answer")

// Worker is a running test worker.
type Worker struct {
	opts   Options
	dealer *transport.Dealer
	sendMu sync.Mutex

	mu       sync.Mutex
	active   map[int64]context.CancelFunc
	received []Job
	rejected int
	idents   int
	events   []string // "prepare:<env_hash>", "dispatch:<job_id>", "reload", in arrival order
	beats    int      // HEARTBEATs received from the Sentinel

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
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
	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	defer cancelDial()
	d, err := transport.DialDealer(dialCtx, opts.Endpoint, transport.DealerOptions{Identity: []byte(opts.Identity), Curve: opts.Curve})
	if err != nil {
		return nil, err
	}
	w := &Worker{opts: opts, dealer: d, active: map[int64]context.CancelFunc{}}
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
	return w, nil
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
	_ = w.dealer.Close()
	w.wg.Wait()
}

func (w *Worker) identify() error {
	w.mu.Lock()
	w.idents++
	w.mu.Unlock()
	return w.Send(transport.OpIdentify, 0, &transport.Identify{
		Capabilities:      w.opts.Capabilities,
		WorkerID:          w.opts.Identity,
		MaxConcurrentJobs: w.opts.Slots,
		Version:           "testworker",
	})
}

func (w *Worker) loop() {
	defer w.wg.Done()
	for {
		msg, err := w.dealer.Recv()
		if errors.Is(err, transport.ErrReconnected) {
			_ = w.identify()
			continue
		}
		if err != nil {
			if w.ctx.Err() != nil {
				return
			}
			continue // a malformed message from the Sentinel: ignore it
		}
		payload, err := transport.DecodePayload(msg.Opcode, msg.Payload)
		if err != nil {
			continue
		}
		switch msg.Opcode {
		case transport.OpDispatch:
			w.dispatch(int64(msg.JobID), payload.(*transport.Dispatch))
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

func (w *Worker) dispatch(id int64, d *transport.Dispatch) {
	w.mu.Lock()
	w.events = append(w.events, fmt.Sprintf("dispatch:%d", id))
	w.received = append(w.received, Job{ID: id, Dispatch: *d})
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
		receipt := w.opts.Run(ctx, Job{ID: id, Dispatch: *d})
		if w.ctx.Err() != nil {
			return // closed: behave like a crashed worker, no receipt
		}
		if ctx.Err() != nil && receipt.Status == transport.StatusSuccess {
			receipt = transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		}
		w.mu.Lock()
		delete(w.active, id)
		w.mu.Unlock()
		_ = w.Send(transport.OpConclude, uint64(id), &receipt)
	}()
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
