package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/transport"
)

// Options wires a Sentinel to the parts it does not own.
type Options struct {
	Config config.Config
	DB     db.Store
	Router *transport.Router
	Logger zerolog.Logger
	// Stats, when set, are the counters to use; pass the ones given to
	// RouterOptions so the router's rejections are counted too.
	Stats *Stats
	// Lease is the database's ownership (AcquireLease), when the caller
	// took it before writing anything (cmd/casparian-sentinel does, before
	// its bootstrap). When nil, Start takes it. Either way the Sentinel
	// renews it from then on and Stop releases it.
	Lease db.Lease
}

// RouterOptions are the router settings that go with cfg: the payload limit
// enforced before bytes are buffered, the per-connection inbound budget, and
// rejections counted in stats (malformed or oversized input as protocol
// errors, peers dropped for not reading as send failures, messages over the
// budget as dropped) and, for connections cut for flooding, logged.
func RouterOptions(cfg config.Config, stats *Stats, log zerolog.Logger) transport.RouterOptions {
	rate := float64(cfg.PeerRate)
	if cfg.PeerRate == 0 {
		rate = -1 // --peer-rate 0: no budget
	}
	log = log.With().Str("component", "router").Logger()
	limit := newLogLimiter(30 * time.Second)
	return transport.RouterOptions{
		MaxPayload: cfg.MaxMessageSize,
		PeerRate:   rate,
		PeerBurst:  cfg.PeerBurst,
		OnReject: func(reason string) {
			switch reason {
			case transport.RejectSlowPeer:
				stats.SendFailures.Add(1)
			case transport.RejectOverBudget:
				stats.PeersCut.Add(1)
			default:
				stats.ProtocolErrors.Add(1)
			}
		},
		OnDrop: func(reason string) { stats.MessagesDropped.Add(reason) },
		OnOverBudget: func(identity []byte, remote net.Addr, dropped int64) {
			// A flooder that reconnects is cut again and again: one line
			// per address every 30 s, the metric counts them all.
			suppressed, ok := limit.allow(hostOf(remote))
			if !ok {
				return
			}
			log.Warn().Str("worker_id", PeerKey(identity)).Str("remote", remote.String()).
				Int64("dropped", dropped).Int("suppressed", suppressed).
				Msg("peer disconnected: it kept sending over its inbound budget (--peer-rate)")
		},
	}
}

// WithCurve makes every connection of opts speak CurveZMQ with curve's keys.
// Refused handshakes are counted by reason in stats and logged with the
// peer's address and, when it proved one, its key's fingerprint.
func WithCurve(opts transport.RouterOptions, curve *transport.CurveServer, stats *Stats, log zerolog.Logger) transport.RouterOptions {
	opts.Curve = curve
	log = log.With().Str("component", "curve").Logger()
	limit := newLogLimiter(30 * time.Second)
	opts.OnCurveRefusal = func(remote net.Addr, err *transport.CurveError) {
		stats.CurveRefusals.Add(err.Reason)
		// A refused libzmq peer redials every 100 ms: one line per peer
		// and reason every 30 s, with the number left out; the metric
		// counts them all.
		source := err.Reason + " " + hostOf(remote)
		if err.HasKey {
			source = err.Reason + " " + err.Key.Fingerprint()
		}
		suppressed, ok := limit.allow(source)
		if !ok {
			return
		}
		ev := log.Warn().Str("remote", remote.String()).Str("reason", err.Reason).Err(err.Err).Int("suppressed", suppressed)
		if err.HasKey {
			ev = ev.Str("key_fingerprint", err.Key.Fingerprint())
		}
		ev.Msg("connection refused during the CURVE handshake")
	}
	return opts
}

func hostOf(addr net.Addr) string {
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return addr.String()
}

// logLimiter lets one log line per source through every interval and counts
// the rest.
type logLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	last     map[string]time.Time
	dropped  map[string]int
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, last: make(map[string]time.Time), dropped: make(map[string]int)}
}

// allow reports whether source may log now, and how many of its lines were
// held back since its last one.
func (l *logLimiter) allow(source string) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, seen := l.last[source]; seen && now.Sub(t) < l.interval {
		l.dropped[source]++
		return 0, false
	}
	if len(l.last) >= 4096 { // many sources: start over rather than grow
		clear(l.last)
		clear(l.dropped)
	}
	suppressed = l.dropped[source]
	delete(l.dropped, source)
	l.last[source] = now
	return suppressed, true
}

// Sentinel is a running actor tree bound to a router and a database. It is not
// an actor: it is the handle cmd/ and tests use to start, watch and stop one.
type Sentinel struct {
	system *actor.ActorSystem
	top    *actor.PID
	queue  *actor.PID
	router *transport.Router
	stats  *Stats
	log    zerolog.Logger
	lease  db.Lease
	watch  *dbWatch
	// notified forwards the database's news of inserted jobs to the queue
	// actor (SQLite's file watch, PostgreSQL's LISTEN); nil when the
	// database has none.
	notified *forwarder

	// stopping is set when Stop begins (health turns 503); stopped once
	// the drain is over and the actors go (operator requests are refused).
	stopping, stopped atomic.Bool
	// bg counts goroutines the actors start outside their mailboxes (the
	// scanner's walker and hashers); Stop waits for them.
	bg *sync.WaitGroup

	drainTimeout time.Duration
	// roots are the folders source roots must lie in (--allowed-roots).
	roots []string
	// scanning: the scanner runs (--scan-interval is not 0).
	scanning bool

	fatal     chan error
	fatalOnce sync.Once
	stopOnce  sync.Once
}

// Start takes the database's lease (unless opts has it), spawns the actor
// tree and starts moving messages from the router. The router and the
// database stay owned by the caller, who closes them after Stop; the lease is
// the Sentinel's from here on, and released by Stop (or by Start when it
// fails).
func Start(opts Options) (*Sentinel, error) {
	if opts.Stats == nil {
		opts.Stats = NewStats()
	}
	if opts.DB == nil || opts.Router == nil {
		return nil, errors.New("start sentinel: database and router are required")
	}
	lease := opts.Lease
	if lease == nil {
		ctx, cancel := context.WithTimeout(context.Background(), renewTimeout)
		var err error
		lease, err = AcquireLease(ctx, opts.DB, opts.Router.Endpoint(), opts.Logger)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("start sentinel: %w", err)
		}
	}
	s, err := start(opts, lease)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), renewTimeout)
		defer cancel()
		_ = lease.Release(ctx)
		return nil, err
	}
	return s, nil
}

func start(opts Options, lease db.Lease) (*Sentinel, error) {
	keys, err := trustedKeys(opts.Config, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("start sentinel: %w", err)
	}
	roots, err := opts.Config.AllowedRootPaths()
	if err != nil {
		return nil, fmt.Errorf("start sentinel: %w", err)
	}
	s := &Sentinel{
		lease:  lease,
		router: opts.Router,
		stats:  opts.Stats,
		log:    opts.Logger,
		bg:     &sync.WaitGroup{},
		fatal:  make(chan error, 1),
		roots:  roots,

		scanning:     opts.Config.ScanInterval > 0,
		drainTimeout: opts.Config.DrainTimeout,
	}
	s.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(renameMessageAttr{zerolog.NewSlogHandler(opts.Logger.With().Str("component", "protoactor").Logger())})
	}))
	changes := queueChanges(opts.DB, opts.Config, opts.Logger)
	d := deps{cfg: opts.Config, db: opts.DB, router: opts.Router, stats: s.stats, log: opts.Logger, bg: s.bg, keys: keys,
		roots: roots, batches: &batchWrites{}, lease: lease, drained: newKeySet(), notified: changes != nil}
	// Jobs the database links to an earlier result at enqueue time are
	// counted here (casparian_jobs_reused_total).
	opts.DB.OnReuse(func(plugin string) { s.stats.ByPlugin.For(plugin).Reused.Add(1) })
	opts.DB.SetLineage(opts.Config.Lineage)
	props := newSupervisorProps(d).Configure(actor.WithGuardian(&topStrategy{
		max: 3, window: time.Minute, stats: s.stats, onGiveUp: s.giveUp,
	}))
	top, err := s.system.Root.SpawnNamed(props, "sentinel")
	if err != nil {
		return nil, fmt.Errorf("spawn supervisor: %w", err)
	}
	s.top = top
	s.queue = s.system.NewLocalPID(top.Id + "/queue")
	socket := s.system.NewLocalPID(top.Id + "/socket")
	root := s.system.Root
	// The supervisor spawns its children when it starts, before it handles
	// any message: once it answers, the queue, dispatcher and socket actors
	// exist, so neither frames nor operator requests meet dead letters.
	if _, err := root.RequestFuture(top, &WorkersQuery{}, 10*time.Second).Result(); err != nil {
		_ = root.StopFuture(top).Wait()
		s.system.Shutdown()
		return nil, fmt.Errorf("start actor tree: %w", err)
	}
	s.watch = startDBWatch(lease, d.batches, opts.Logger, func(err error) {
		root.Send(top, &StopDispatching{})
		if lease.Shared() && errors.Is(err, db.ErrLeaseLost) {
			// The other Sentinels treat this one as dead and take its
			// jobs; a fresh start joins them again with a new lease.
			s.fail(fmt.Errorf("%w: exiting, so that the service manager starts this Sentinel again with a new lease", err))
		}
	})
	if changes != nil {
		s.notified = forwardQueueChanges(changes, func() { root.Send(s.queue, &QueueNotified{}) })
	}
	s.router.Start(func(in transport.Inbound) { root.Send(socket, &FramesReceived{In: in}) })
	return s, nil
}

// trustedKeys loads the publishers' keys named by --trusted-keys and says
// loudly how DEPLOYs will be judged.
func trustedKeys(cfg config.Config, log zerolog.Logger) ([]deploy.TrustedKey, error) {
	var keys []deploy.TrustedKey
	if cfg.TrustedKeys != "" {
		var err error
		if keys, err = deploy.LoadTrustedKeys(cfg.TrustedKeys); err != nil {
			return nil, err
		}
		for _, k := range keys {
			log.Info().Str("key", k.Name).Str("fingerprint", deploy.Fingerprint(k.Key)).Msg("trusted publisher key")
		}
	}
	switch {
	case cfg.AllowUnsigned:
		log.Warn().Msg("--allow-unsigned is ON: unsigned and unknown-key DEPLOYs are accepted. Never use this in production.")
	case len(keys) == 0:
		log.Info().Msg("no --trusted-keys: every DEPLOY will be refused")
	}
	return keys, nil
}

// Stats returns the live counters.
func (s *Sentinel) Stats() *Stats { return s.stats }

// Fatal delivers an error when supervision gave up on the whole tree; the
// process should then exit non-zero and let its service manager restart it.
func (s *Sentinel) Fatal() <-chan error { return s.fatal }

func (s *Sentinel) giveUp(reason any) {
	s.fail(fmt.Errorf("actor tree gave up: %v", reason))
}

// fail reports the first fatal error on Fatal.
func (s *Sentinel) fail(err error) {
	s.fatalOnce.Do(func() {
		s.log.Error().Err(err).Msg("the Sentinel cannot go on")
		s.fatal <- err
	})
}

// Workers lists the keys of the connected workers.
func (s *Sentinel) Workers(timeout time.Duration) ([]string, error) {
	res, err := s.system.Root.RequestFuture(s.top, &WorkersQuery{}, timeout).Result()
	if err != nil {
		return nil, err
	}
	return res.(*WorkersList).Workers, nil
}

// InjectPanic makes one actor panic: "supervisor", "queue", "dispatcher",
// "socket", "scanner" or a worker key. Tests use it to prove supervision.
func (s *Sentinel) InjectPanic(target string) {
	s.system.Root.Send(s.top, &crash{target: target})
}

// Stop shuts down in order: stop dispatching and scanning, let running jobs conclude
// (up to the drain timeout or ctx), stop reading the socket, write the pending
// conclusions, stop the actors. Jobs still RUNNING then stay so in the
// database and are adopted by their workers (or requeued) at the next start.
func (s *Sentinel) Stop(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		root := s.system.Root
		// Acknowledged, so that the supervisor knows the tree is stopping
		// before the scanner's termination reaches it.
		_, _ = root.RequestFuture(s.top, &StopDispatching{}, 5*time.Second).Result()
		// The scanner queues new work: it stops first, with its walker and
		// hashers, so nothing it started outlives the queue actor. (A PID
		// that was never spawned, with --scan-interval 0, stops at once.)
		if e := root.StopFuture(s.system.NewLocalPID(s.top.Id + "/scanner")).Wait(); e != nil {
			err = fmt.Errorf("stop scanner: %w", e)
		}
		s.bg.Wait() // the stopped scanner cancelled them; each ends within one read
		s.drain(ctx)
		s.stopped.Store(true)
		err = s.router.Close()
		queue := s.system.NewLocalPID(s.top.Id + "/queue")
		if e := root.PoisonFuture(queue).Wait(); e != nil && err == nil {
			err = fmt.Errorf("stop queue: %w", e)
		}
		if e := root.StopFuture(s.top).Wait(); e != nil && err == nil {
			err = fmt.Errorf("stop supervisor: %w", e)
		}
		s.system.Shutdown()
		if s.notified != nil {
			s.notified.close()
		}
		// Last, the lease: nothing writes the database any more.
		s.watch.close()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if e := s.lease.Release(rctx); e != nil && err == nil {
			err = e
		}
	})
	return err
}

// drain waits until no job is RUNNING, the drain timeout passes or ctx ends.
func (s *Sentinel) drain(ctx context.Context) {
	if s.drainTimeout <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.drainTimeout)
	defer cancel()
	queue := s.system.NewLocalPID(s.top.Id + "/queue")
	// The count is asked every 200 ms and logged when it changed, at most
	// once a second.
	var lastLogged time.Time
	lastN := int64(-1)
	for {
		res, err := s.system.Root.RequestFuture(queue, &RunningCountQuery{}, time.Second).Result()
		if c, ok := res.(*RunningCount); err == nil && ok && c.Err == nil {
			if c.N == 0 {
				return
			}
			if c.N != lastN && time.Since(lastLogged) >= time.Second {
				s.log.Info().Int64("running", c.N).Msg("draining: waiting for running jobs to conclude")
				lastLogged, lastN = time.Now(), c.N
			}
		}
		select {
		case <-ctx.Done():
			s.log.Warn().Msg("drain timeout: stopping with jobs still RUNNING; they are reconciled at the next start")
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// topStrategy supervises the supervisor itself: restart it a few times, then
// stop it and report, because a tree that keeps failing needs a fresh process.
type topStrategy struct {
	max      int
	window   time.Duration
	stats    *Stats
	onGiveUp func(reason any)
}

func (t *topStrategy) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, _ any) {
	t.stats.ActorRestarts.Add(1)
	rs.Fail()
	if rs.NumberOfFailures(t.window) > t.max {
		sup.StopChildren(child)
		t.onGiveUp(reason)
		return
	}
	sup.RestartChildren(child)
}

// renameMessageAttr renames protoactor's "message" attribute, which would
// collide with zerolog's own message field.
type renameMessageAttr struct{ slog.Handler }

func (h renameMessageAttr) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "message" {
			a.Key = "actor_message"
		}
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h renameMessageAttr) WithAttrs(attrs []slog.Attr) slog.Handler {
	for i := range attrs {
		if attrs[i].Key == "message" {
			attrs[i].Key = "actor_message"
		}
	}
	return renameMessageAttr{h.Handler.WithAttrs(attrs)}
}

func (h renameMessageAttr) WithGroup(name string) slog.Handler {
	return renameMessageAttr{h.Handler.WithGroup(name)}
}
