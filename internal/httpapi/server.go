// Package httpapi is the Sentinel's operator HTTP surface: the JSON API
// under /api/v1 with its event stream, Prometheus metrics at /metrics,
// /healthz, and the web console at /. Every answer comes from the actor tree through *actors.Sentinel's
// methods; this package touches neither the database nor the sockets.
package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/internal/api"
)

// Options configure a Server.
type Options struct {
	Sentinel *actors.Sentinel
	Logger   zerolog.Logger
	// RequestTimeout bounds the work behind one request. Default 15s.
	RequestTimeout time.Duration
	// Tokens, when not nil, are the API tokens every route but /healthz
	// asks for (LoadTokens reads them from --api-tokens). Nil serves
	// without tokens, and then only to requests whose Host is a loopback
	// name.
	Tokens *Tokens
	// Pprof serves Go's profiler at /debug/pprof/, to admin tokens. Off by
	// default: the routes are not registered at all.
	Pprof bool
	// AnyHost answers requests without tokens whatever their Host: the
	// operator chose --insecure to serve the API on a network address
	// without tokens, where Hosts are not loopback names. Default false.
	AnyHost bool
	// MaxStreams caps the event streams (GET /api/v1/events) open at once;
	// one more is answered 503. Default 32.
	MaxStreams int
}

// Server serves the operator surface of one Sentinel. Start it with Serve and
// stop it with Shutdown; one Server serves one listener once.
type Server struct {
	s       *actors.Sentinel
	log     zerolog.Logger
	timeout time.Duration
	tokens  *Tokens
	anyHost bool
	refused *prometheus.CounterVec
	routes  []Endpoint
	http    *http.Server
	mux     *http.ServeMux

	// The event streams: how many are open, their cap, the status they
	// share, and closing, closed by Shutdown to end them.
	streams    atomic.Int64
	maxStreams int
	shared     sharedStatus
	closing    chan struct{}
	closeOnce  sync.Once
}

// Endpoint is one route of the operator surface. The same table registers
// the routes and drives the access tests, so that no route can be added
// without saying who may call it.
type Endpoint struct {
	// Pattern is the http.ServeMux pattern, with its method.
	Pattern string
	Access  Access
	// TokenInQuery also accepts the token as ?token=: on the console's
	// page, because a browser cannot put a header on a link it opens, and
	// on the event stream, because EventSource cannot send headers at all.
	// No other route reads it, so a token in an address reaches nothing
	// else.
	TokenInQuery bool
	// page marks the route of the console: a browser refused a token there
	// gets the console's login box rather than JSON.
	page    bool
	handler http.Handler
}

// New builds the routes and the metrics registry.
func New(opts Options) *Server {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 15 * time.Second
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = defaultMaxStreams
	}
	srv := &Server{
		s:       opts.Sentinel,
		log:     opts.Logger.With().Str("component", "http").Logger(),
		timeout: opts.RequestTimeout,
		tokens:  opts.Tokens,
		anyHost: opts.AnyHost,
		refused: newRefusedCounter(),
		mux:     http.NewServeMux(),

		maxStreams: opts.MaxStreams,
		closing:    make(chan struct{}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetricsCollector(srv.s, srv.log), srv.refused,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	h := func(f http.HandlerFunc) http.Handler { return f }
	srv.routes = []Endpoint{
		{Pattern: "GET /healthz", Access: Public, handler: h(srv.healthz)},
		{Pattern: "GET /metrics", Access: Read, handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})},
		{Pattern: "GET /{$}", Access: Read, TokenInQuery: true, page: true, handler: h(srv.consolePage)},
		{Pattern: "GET /api/v1/status", Access: Read, handler: h(srv.status)},
		{Pattern: "GET /api/v1/events", Access: Read, TokenInQuery: true, handler: h(srv.events)},
		{Pattern: "GET /api/v1/jobs", Access: Read, handler: h(srv.listJobs)},
		{Pattern: "POST /api/v1/jobs", Access: Admin, handler: h(srv.enqueue)},
		{Pattern: "POST /api/v1/jobs/bulk", Access: Admin, handler: h(srv.bulk)},
		{Pattern: "POST /api/v1/jobs/prune", Access: Admin, handler: h(srv.prune)},
		{Pattern: "GET /api/v1/jobs/{id}", Access: Read, handler: h(srv.showJob)},
		{Pattern: "POST /api/v1/jobs/{id}/cancel", Access: Admin, handler: h(srv.cancel)},
		{Pattern: "POST /api/v1/jobs/{id}/retry", Access: Admin, handler: h(srv.retry)},
		{Pattern: "GET /api/v1/queue/ages", Access: Read, handler: h(srv.queueAges)},
		{Pattern: "GET /api/v1/workers", Access: Read, handler: h(srv.listWorkers)},
		{Pattern: "POST /api/v1/workers/{id}/drain", Access: Admin, handler: h(srv.drainWorker)},
		{Pattern: "POST /api/v1/workers/{id}/undrain", Access: Admin, handler: h(srv.undrainWorker)},
		{Pattern: "POST /api/v1/workers/{id}/disconnect", Access: Admin, handler: h(srv.disconnectWorker)},
		{Pattern: "GET /api/v1/plugins", Access: Read, handler: h(srv.listPlugins)},
		{Pattern: "POST /api/v1/plugins/builtin", Access: Admin, handler: h(srv.addBuiltin)},
		{Pattern: "GET /api/v1/environments", Access: Read, handler: h(srv.listEnvironments)},
		{Pattern: "GET /api/v1/plugins/{name}/subscriptions", Access: Read, handler: h(srv.topicSubscriptions)},
		{Pattern: "POST /api/v1/plugins/{name}/subscriptions", Access: Admin, handler: h(srv.subscribe)},
		{Pattern: "POST /api/v1/plugins/{name}/subscriptions/remove", Access: Admin, handler: h(srv.unsubscribeTopic)},
		{Pattern: "POST /api/v1/plugins/{name}/pause", Access: Admin, handler: h(srv.pausePlugin)},
		{Pattern: "POST /api/v1/plugins/{name}/resume", Access: Admin, handler: h(srv.resumePlugin)},
		{Pattern: "POST /api/v1/plugins/{name}/settings", Access: Admin, handler: h(srv.pluginSettings)},
		{Pattern: "POST /api/v1/plugins/{name}/backfill", Access: Admin, handler: h(srv.backfill)},
		{Pattern: "POST /api/v1/plugins/{name}/rerun", Access: Admin, handler: h(srv.rerun)},
		{Pattern: "GET /api/v1/plugins/{name}/shadow", Access: Read, handler: h(srv.shadowRuns)},
		{Pattern: "GET /api/v1/plugins/{name}/compare", Access: Read, handler: h(srv.shadowCompare)},
		{Pattern: "POST /api/v1/plugins/{name}/promote", Access: Admin, handler: h(srv.shadowPromote)},
		{Pattern: "POST /api/v1/plugins/{name}/discard", Access: Admin, handler: h(srv.shadowDiscard)},
		{Pattern: "GET /api/v1/files/{id}/lineage", Access: Read, handler: h(srv.fileLineage)},
		{Pattern: "GET /api/v1/artifacts/provenance", Access: Read, handler: h(srv.provenance)},
		{Pattern: "GET /api/v1/outputs/stale", Access: Read, handler: h(srv.staleOutputs)},
		{Pattern: "POST /api/v1/outputs/stale/rerun", Access: Admin, handler: h(srv.rerunStale)},
		{Pattern: "GET /api/v1/sources", Access: Read, handler: h(srv.listSources)},
		{Pattern: "POST /api/v1/sources", Access: Admin, handler: h(srv.addSource)},
		{Pattern: "POST /api/v1/sources/rescan", Access: Admin, handler: h(srv.rescan)},
		{Pattern: "GET /api/v1/routes", Access: Read, handler: h(srv.listRoutes)},
		{Pattern: "POST /api/v1/routes", Access: Admin, handler: h(srv.addRoute)},
		// Everything else, of any method, is a JSON 404 behind the same
		// guard, so that nothing is answered to a request the guard
		// would refuse.
		{Pattern: "/", Access: Read, handler: h(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, api.Error{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
		})},
	}
	if opts.Pprof {
		// Go's profiler (--pprof): profiles show the process's command
		// line and memory, so they are for admin tokens.
		srv.routes = append(srv.routes,
			Endpoint{Pattern: "GET /debug/pprof/", Access: Admin, handler: h(pprof.Index)},
			Endpoint{Pattern: "GET /debug/pprof/cmdline", Access: Admin, handler: h(pprof.Cmdline)},
			Endpoint{Pattern: "GET /debug/pprof/profile", Access: Admin, handler: h(pprof.Profile)},
			Endpoint{Pattern: "GET /debug/pprof/symbol", Access: Admin, handler: h(pprof.Symbol)},
			Endpoint{Pattern: "GET /debug/pprof/trace", Access: Admin, handler: h(pprof.Trace)},
		)
	}
	for _, rt := range srv.routes {
		srv.mux.Handle(rt.Pattern, srv.guard(rt, rt.handler))
	}

	srv.http = &http.Server{
		Handler:           srv.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return srv
}

// Endpoints returns the route table: what is served, and to whom.
func (srv *Server) Endpoints() []Endpoint { return append([]Endpoint(nil), srv.routes...) }

// ReloadTokens re-reads the --api-tokens file (on SIGHUP); a file that is
// not valid leaves the previous tokens in force. Without tokens it does
// nothing.
func (srv *Server) ReloadTokens() error {
	if srv.tokens == nil {
		return nil
	}
	return srv.tokens.Reload()
}

// Handler returns the routes, for tests that serve them themselves.
func (srv *Server) Handler() http.Handler { return srv.mux }

// Serve answers requests on ln until Shutdown; it returns nil after a
// Shutdown and the listener's error otherwise.
func (srv *Server) Serve(ln net.Listener) error {
	srv.log.Info().Str("http", ln.Addr().String()).Bool("tokens", srv.tokens != nil).Msg("operator HTTP server listening")
	if srv.tokens == nil {
		srv.log.Warn().Str("http", ln.Addr().String()).
			Msg("the operator HTTP API runs without tokens (--api-tokens): any local process may use it; only loopback Host names are answered")
	}
	if err := srv.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections, ends the event streams, and waits
// (up to ctx) for requests in progress to finish.
func (srv *Server) Shutdown(ctx context.Context) error {
	// http.Server.Shutdown waits for handlers but does not cancel their
	// contexts: an event stream would hold it until ctx expires.
	srv.closeOnce.Do(func() { close(srv.closing) })
	return srv.http.Shutdown(ctx)
}

// healthz is 200 {"status":"ok"} when the Sentinel serves and its database
// answers, with "sentinel" (its lease id) and "leader" (whether it runs the
// scanner and the sweeps); 200 {"status":"degraded"} while it serves but the database is
// locked or slow (a reason says which); 503 {"status":"unavailable"} before
// the tree is up, while it shuts down, when the database file was deleted or
// replaced (dispatching has stopped), or while writes fail. It answers within
// about a second whatever the database does.
func (srv *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), min(srv.timeout, 5*time.Second))
	defer cancel()
	h := srv.s.HealthCheck(ctx)
	// Which Sentinel answered, by its lease id only: the route is public,
	// so hosts and endpoints are left to /api/v1/status.
	me := srv.s.Self()
	out := map[string]any{"status": h.Status, "sentinel": me.ID, "leader": me.Leader}
	switch h.Status {
	case actors.HealthOK:
		writeJSON(w, http.StatusOK, out)
	case actors.HealthDegraded:
		out["reason"] = h.Err.Error()
		writeJSON(w, http.StatusOK, out)
	default:
		out["error"] = h.Err.Error()
		writeJSON(w, http.StatusServiceUnavailable, out)
	}
}
