// Command casparian-sentinel is the Casparian Flow control plane: it binds a
// ZeroMQ ROUTER, registers workers, claims queued jobs from SQLite, dispatches
// them and records what the workers conclude. It scans the source roots for
// new files (--scan-interval) and serves the operator HTTP API, metrics and
// web console (--http).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/db/backend"
	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/logformat"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
	"github.com/rs/zerolog"
)

// version is set by release builds: -ldflags "-X main.version=..."
// (docker/build.sh); --version prints it with the build information.
var version string

// Log lines carry millisecond timestamps and durations with their unit.
func init() { logformat.Set() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "casparian-sentinel:", err)
		os.Exit(1)
	}
}

// run starts the Sentinel and blocks until ctx is cancelled (SIGINT/SIGTERM)
// or supervision gives up. ready, when not nil, receives the bound endpoint
// once the Sentinel accepts workers (tests use it with port 0).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWithReady(ctx, args, getenv, stdout, stderr, nil)
}

func runWithReady(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], getenv, stdout)
	}
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, config.ErrVersion) {
		buildinfo.Print(stdout, "casparian-sentinel", version)
		return nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	// A bad bootstrap file fails the start before anything is opened.
	var boot *config.Bootstrap
	if cfg.Bootstrap != "" {
		b, err := config.ReadBootstrap(cfg.Bootstrap)
		if err != nil {
			return fmt.Errorf("--bootstrap: %w", err)
		}
		allowed, err := cfg.AllowedRootPaths()
		if err != nil {
			return err
		}
		for i, root := range b.SourceRoots {
			if _, err := actors.CheckSourceRoot(root, allowed); err != nil {
				return fmt.Errorf("--bootstrap %s: source_roots[%d]: %w", cfg.Bootstrap, i, err)
			}
		}
		boot = &b
	}
	// Missing keys and tokens are made first when asked (--init-secrets),
	// then a bad token file fails the start too.
	if err := initSecrets(cfg, log); err != nil {
		return err
	}
	var tokens *httpapi.Tokens
	switch {
	case cfg.APITokens != "" && cfg.HTTP == "":
		log.Warn().Str("file", cfg.APITokens).Msg("--api-tokens is given but --http is off: the tokens are not used")
	case cfg.APITokens != "":
		if tokens, err = httpapi.LoadTokens(cfg.APITokens, log); err != nil {
			return fmt.Errorf("--api-tokens: %w", err)
		}
	}

	store, err := backend.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error().Err(err).Msg("close database")
		}
	}()

	warnInsecure(cfg, log)
	curve, err := loadCurve(cfg, log)
	if err != nil {
		return err
	}
	stats := actors.NewStats()
	routerOpts := actors.RouterOptions(cfg, stats, log)
	if curve != nil {
		routerOpts = actors.WithCurve(routerOpts, curve, stats, log)
	}
	router, err := transport.ListenRouter(cfg.Bind, routerOpts)
	if err != nil {
		return err
	}
	// Once the actors run, their Stop closes the router and reports its
	// error, and this second Close returns nil; before that, it is the
	// only one.
	defer func() {
		if err := router.Close(); err != nil {
			log.Error().Err(err).Msg("close router")
		}
	}()

	// The HTTP port is taken before the actors start, so a port in use
	// fails the start instead of leaving a Sentinel nobody can watch.
	var httpLn net.Listener
	httpAddr := ""
	if cfg.HTTP != "" {
		if httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
			return fmt.Errorf("--http: %w", err)
		}
		// Once served, api.Shutdown has closed it and this Close only
		// returns net.ErrClosed; before, it lets go of a port the start
		// is giving up on anyway.
		defer func() { _ = httpLn.Close() }()
		httpAddr = httpLn.Addr().String()
	}

	// One Sentinel per SQLite database: a second one stops here, before
	// it writes anything, with an error naming the first. On PostgreSQL
	// each Sentinel adds its own lease row beside the others'. The
	// endpoint is bound by now, so the row can say where it serves.
	lease, err := actors.AcquireLease(ctx, store, router.Endpoint(), log)
	if err != nil {
		return err
	}
	if boot != nil {
		changes, err := store.BootstrapApply(ctx, bootstrapForDB(*boot))
		if err != nil {
			releaseLease(lease, log)
			return fmt.Errorf("--bootstrap %s: %w", cfg.Bootstrap, err)
		}
		log.Info().Str("file", cfg.Bootstrap).Int("changes", changes).Msg("bootstrap applied")
	}

	s, err := actors.Start(actors.Options{Config: cfg, DB: store, Router: router, Logger: log, Stats: stats, Lease: lease})
	if err != nil {
		return err
	}
	var api *httpapi.Server
	httpDone := make(chan error, 1)
	if httpLn != nil {
		api = httpapi.New(httpapi.Options{Sentinel: s, Logger: log, Tokens: tokens, Pprof: cfg.Pprof, AnyHost: cfg.Insecure})
		go func() { httpDone <- api.Serve(httpLn) }()
	}
	// SIGHUP re-reads, in this order, the files that may change while the
	// Sentinel runs.
	var reloads []reloadStep
	if curve != nil {
		reloads = append(reloads, reloadStep{name: "authorized-workers", reload: func() error {
			return reloadAuthorizedWorkers(cfg, curve, log)
		}})
	}
	if tokens != nil {
		reloads = append(reloads, reloadStep{name: "api-tokens", reload: tokens.Reload})
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	log.Info().Str("bind", router.Endpoint()).Str("database", store.Describe()).Str("sentinel_id", s.Self().ID).Bool("leader", s.Self().Leader).Str("http", httpAddr).
		Dur("heartbeat_interval", cfg.HeartbeatInterval).Dur("worker_timeout", cfg.WorkerTimeout).
		Dur("scan_interval", cfg.ScanInterval).Msg("sentinel started")
	if ready != nil {
		ready <- router.Endpoint()
	}

	var runErr error
serve:
	for {
		select {
		case <-hup:
			reload(log, reloads)
		case <-ctx.Done():
			log.Info().Msg("shutting down")
			break serve
		case runErr = <-s.Fatal():
			break serve
		case err := <-httpDone:
			runErr = fmt.Errorf("http server: %w", err)
			api = nil
			break serve
		}
	}
	signal.Stop(hup)
	// Shutdown order: the Sentinel stops (health turns 503 at once, the API
	// answers through the drain), then the HTTP server, then the deferred
	// router and database closes.
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		log.Error().Err(err).Msg("stop")
	}
	if api != nil {
		if err := api.Shutdown(stopCtx); err != nil {
			log.Error().Err(err).Msg("stop http server")
		}
		if err := <-httpDone; err != nil {
			log.Error().Err(err).Msg("http server")
		}
	}
	log.Info().Msg("sentinel stopped")
	return runErr
}

// releaseLease gives the database up when the start fails after taking it
// (actors.Start releases it itself once it has it).
func releaseLease(lease db.Lease, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := lease.Release(ctx); err != nil {
		log.Error().Err(err).Msg("release the database lease")
	}
}

// reloadStep is one thing a SIGHUP re-reads.
type reloadStep struct {
	name   string // the flag naming what is reloaded
	reload func() error
}

// reload runs the steps of a SIGHUP in order. A step that fails keeps what
// it had and is logged; the steps after it still run.
func reload(log zerolog.Logger, steps []reloadStep) {
	log.Info().Int("steps", len(steps)).Msg("SIGHUP: reloading")
	for _, st := range steps {
		if err := st.reload(); err != nil {
			log.Error().Err(err).Str("reload", st.name).Msg("reload failed; the previous settings stay in force")
		}
	}
}

// bootstrapForDB turns the bootstrap file's content into what the database
// applies.
func bootstrapForDB(b config.Bootstrap) db.Bootstrap {
	out := db.Bootstrap{SourceRoots: b.SourceRoots}
	for _, r := range b.Routes {
		out.Routes = append(out.Routes, job.RoutingRule{Pattern: r.Pattern, Tag: r.Tag, Priority: r.Priority})
	}
	for _, p := range b.Plugins {
		bp := db.BootstrapPlugin{Name: p.Name, Subscribe: p.Subscribe}
		if p.Manifest != nil {
			bp.ManifestVersion, bp.ManifestSource = p.Manifest.Version, p.Manifest.SourceCode
		}
		for _, t := range p.Topics {
			bp.Topics = append(bp.Topics, db.Sink{Topic: t.Topic, URI: t.URI, Mode: t.Mode})
		}
		out.Plugins = append(out.Plugins, bp)
	}
	return out
}

func newLogger(cfg config.Config, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %w", err)
	}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "console"
			}
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}
