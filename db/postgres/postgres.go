// Package postgres is the Sentinel's PostgreSQL database: the same cf_*
// schema as the SQLite one in package db, created and upgraded by its own
// numbered migrations, plus what several Sentinels sharing one database
// need: a lease row per Sentinel, a leader elected with an advisory lock,
// and a NOTIFY on every job inserted.
//
// It talks to PostgreSQL through github.com/jackc/pgx/v5, the standard
// PostgreSQL driver for Go (used natively, not through database/sql, so that
// LISTEN/NOTIFY, advisory locks held on one connection and COPY are at
// hand). Like package db it is the only place its SQL lives.
package postgres

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/casparian/sentinel/db"
)

// Pool and session defaults. Each applies only where the URL does not set
// it (pool_max_conns=…, connect_timeout=…, statement_timeout=… and so on as
// query parameters), so an operator can always override them.
const (
	// defaultMaxConns: the queue actor makes one call at a time and the
	// operator API a few; the leader election and the listener hold their
	// own connections outside the pool. Eight leaves headroom without
	// eating into PostgreSQL's max_connections (100 by default) when
	// several Sentinels share a server.
	defaultMaxConns = 8
	defaultMinConns = 1

	// Connections are recycled so that a server-side change (a failover
	// behind a DNS name, a changed setting) reaches every connection, with
	// jitter so that they are not all replaced at once.
	defaultMaxConnLifetime       = 30 * time.Minute
	defaultMaxConnLifetimeJitter = 5 * time.Minute
	defaultMaxConnIdleTime       = 5 * time.Minute
	defaultHealthCheckPeriod     = 10 * time.Second
	defaultConnectTimeout        = 5 * time.Second

	// applicationName shows in pg_stat_activity, so an operator can tell
	// the Sentinels' sessions apart from everyone else's.
	applicationName = "casparian-sentinel"
)

// sessionDefaults are run-time parameters every pooled connection starts
// with. A statement that runs longer than statement_timeout, or waits longer
// than lock_timeout for a row lock, fails instead of holding a pooled
// connection forever; a session that stays idle inside a transaction (its
// client hung or died with the socket open) is ended by the server, so the
// row locks it holds are not held for ever either.
var sessionDefaults = map[string]string{
	"statement_timeout":                   "30s",
	"lock_timeout":                        "10s",
	"idle_in_transaction_session_timeout": "60s",
	"application_name":                    applicationName,
}

// DB is a Sentinel's PostgreSQL database. Its methods are safe for
// concurrent use.
type DB struct {
	pool *pgxpool.Pool

	// connConfig is the pool's connection configuration, for the
	// connections that must live outside the pool: a session-level
	// advisory lock (leader election) or LISTEN belongs to one session,
	// and the pool may close or hand out any of its connections.
	connConfig *pgx.ConnConfig

	// sentinelID is stored in sentinel_id by every claim (SetSentinelID).
	sentinelID string
	// leading is whether this DB's Sentinel leads (its lease's election):
	// the leader's JobsRunning("") also lists the jobs of dead Sentinels.
	leading atomic.Bool
	// orphanGrace is how long after a Sentinel's lease expired its
	// RUNNING jobs wait for their workers to fail over (the lease's TTL).
	orphanGrace time.Duration

	// The queue listener, started by the first QueueChanges (notify.go);
	// version counts what it heard, for DataVersion.
	listenOnce sync.Once
	listener   atomic.Pointer[Listener]
	version    atomic.Int64

	reuse db.ReuseReporter // reused jobs, for the metrics (outputs.go)
	chain db.ChainCache    // the subscribed topics, for the completions (chain.go)
	// shadow: whether a shadow run is RUNNING, for the claim's statement
	// (shadow.go); another Sentinel's run is seen within db.ShadowFresh.
	shadow db.ShadowFlag
	// lineage: record outputs with completions and reuse earlier results
	// (SetLineage).
	lineage atomic.Bool
}

// IsURL reports whether a database setting names PostgreSQL
// ("postgres://…" or "postgresql://…") rather than a SQLite file.
func IsURL(dsn string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(dsn), "://")
	return ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql"))
}

// Open connects to the PostgreSQL database named by rawURL
// ("postgres://user:password@host:port/dbname?…") and brings its schema up
// to date. The URL's query parameters are pgx's: pool_max_conns and the
// other pool_* settings, sslmode, connect_timeout, and any other name is a
// run-time parameter of every session (statement_timeout=5s).
func Open(ctx context.Context, rawURL string) (*DB, error) {
	cfg, err := parseConfig(rawURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db := &DB{pool: pool, connConfig: cfg.ConnConfig}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database %s: %w", Redact(rawURL), err)
	}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database %s: %w", Redact(rawURL), err)
	}
	return db, nil
}

// parseConfig turns the URL into a pool configuration with this package's
// defaults wherever the URL is silent.
func parseConfig(rawURL string) (*pgxpool.Config, error) {
	rawURL = strings.TrimSpace(rawURL)
	if !IsURL(rawURL) {
		return nil, fmt.Errorf("parse database url: want postgres://… or postgresql://…")
	}
	// pgx parses the URL itself, hiding the password in its errors. It
	// also takes several hosts (postgres://a:5432,b:5432/db), which
	// net/url refuses, so only the query is read here, to know which
	// settings the URL makes.
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	_, rawQuery, _ := strings.Cut(rawURL, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("parse database url %s: %w", Redact(rawURL), err)
	}
	if !q.Has("pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if !q.Has("pool_min_conns") {
		cfg.MinConns = defaultMinConns
	}
	if !q.Has("pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = defaultMaxConnLifetime
	}
	if !q.Has("pool_max_conn_lifetime_jitter") {
		cfg.MaxConnLifetimeJitter = defaultMaxConnLifetimeJitter
	}
	if !q.Has("pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = defaultMaxConnIdleTime
	}
	if !q.Has("pool_health_check_period") {
		cfg.HealthCheckPeriod = defaultHealthCheckPeriod
	}
	if !q.Has("connect_timeout") {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = make(map[string]string)
	}
	for k, v := range sessionDefaults {
		if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	return cfg, nil
}

// Redact returns the URL with its password, if any, replaced by "xxxxx",
// for error messages and logs.
func Redact(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rawURL
	}
	// The user information ends at the last '@' before the path.
	authority, path, hasPath := strings.Cut(rest, "/")
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return rawURL
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return rawURL
	}
	out := scheme + "://" + user + ":xxxxx" + authority[at:]
	if hasPath {
		out += "/" + path
	}
	return out
}

// Ping checks that the server answers a query.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close closes every pooled connection, waiting for those in use to be
// returned. Elections and listeners hold their own connections and are
// stopped by their own Stop.
func (db *DB) Close() {
	if l := db.listener.Load(); l != nil {
		l.Stop()
	}
	db.pool.Close()
}

// connect opens a connection outside the pool, named for its purpose in
// pg_stat_activity.
func (db *DB) connect(ctx context.Context, purpose string) (*pgx.Conn, error) {
	cfg := db.connConfig.Copy()
	cfg.RuntimeParams["application_name"] = applicationName + " " + purpose
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect (%s): %w", purpose, err)
	}
	return conn, nil
}
