// Package httpapi is the Sentinel's operator HTTP surface: the JSON API
// under /api/v1, Prometheus metrics at /metrics, /healthz, and a status page
// at /. Every answer comes from the actor tree through *actors.Sentinel's
// methods; this package touches neither the database nor the sockets.
package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
)

// Options configure a Server.
type Options struct {
	Sentinel *actors.Sentinel
	Logger   zerolog.Logger
	// RequestTimeout bounds the work behind one request. Default 15s.
	RequestTimeout time.Duration
}

// Server serves the operator surface of one Sentinel. Start it with Serve and
// stop it with Shutdown; one Server serves one listener once.
type Server struct {
	s       *actors.Sentinel
	log     zerolog.Logger
	timeout time.Duration
	http    *http.Server
	mux     *http.ServeMux
}

// New builds the routes and the metrics registry.
func New(opts Options) *Server {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 15 * time.Second
	}
	srv := &Server{
		s:       opts.Sentinel,
		log:     opts.Logger.With().Str("component", "http").Logger(),
		timeout: opts.RequestTimeout,
		mux:     http.NewServeMux(),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetricsCollector(srv.s, srv.log),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m := srv.mux
	m.HandleFunc("GET /healthz", srv.healthz)
	m.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.HandleFunc("GET /{$}", srv.statusPage)
	m.HandleFunc("GET /api/v1/status", srv.status)
	m.HandleFunc("GET /api/v1/jobs", srv.listJobs)
	m.HandleFunc("POST /api/v1/jobs", srv.enqueue)
	m.HandleFunc("GET /api/v1/jobs/{id}", srv.showJob)
	m.HandleFunc("POST /api/v1/jobs/{id}/cancel", srv.cancel)
	m.HandleFunc("POST /api/v1/jobs/{id}/retry", srv.retry)
	m.HandleFunc("GET /api/v1/workers", srv.listWorkers)
	m.HandleFunc("GET /api/v1/plugins", srv.listPlugins)
	m.HandleFunc("POST /api/v1/plugins/{name}/subscriptions", srv.subscribe)
	m.HandleFunc("GET /api/v1/sources", srv.listSources)
	m.HandleFunc("POST /api/v1/sources", srv.addSource)
	m.HandleFunc("GET /api/v1/routes", srv.listRoutes)
	m.HandleFunc("POST /api/v1/routes", srv.addRoute)
	// Go's profiler, for the figures in README's Performance section. The
	// operator server is already trusted with cancelling jobs; profiles
	// show no more than that.
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})

	srv.http = &http.Server{
		Handler:           srv.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return srv
}

// Handler returns the routes, for tests that serve them themselves.
func (srv *Server) Handler() http.Handler { return srv.mux }

// Serve answers requests on ln until Shutdown; it returns nil after a
// Shutdown and the listener's error otherwise.
func (srv *Server) Serve(ln net.Listener) error {
	srv.log.Info().Str("http", ln.Addr().String()).Msg("operator HTTP server listening")
	if err := srv.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits (up to ctx) for requests in
// progress to finish.
func (srv *Server) Shutdown(ctx context.Context) error {
	return srv.http.Shutdown(ctx)
}

// healthz is 200 when the Sentinel serves and its database answers, 503
// otherwise (before the tree is up, while it shuts down, or when the queue
// actor cannot reach the database).
func (srv *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), min(srv.timeout, 5*time.Second))
	defer cancel()
	if err := srv.s.Health(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
