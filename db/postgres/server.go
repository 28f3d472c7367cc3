package postgres

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// What tools (the benchmark) do to the server itself rather than to the
// Sentinel's schema.

// DatabaseCreate creates an empty database on the server serverURL reaches
// (its user needs CREATEDB; serverURL's own database is only where the
// statement runs) and returns serverURL naming the new database.
func DatabaseCreate(ctx context.Context, serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	if err := adminExec(ctx, serverURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// DatabaseDrop drops a database DatabaseCreate made, ending the sessions
// still connected to it (WITH (FORCE), PostgreSQL 13 and later).
func DatabaseDrop(ctx context.Context, serverURL, name string) error {
	if err := adminExec(ctx, serverURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// adminExec runs one statement on a connection of its own: CREATE and DROP
// DATABASE cannot run inside a transaction or a pool's session settings.
func adminExec(ctx context.Context, serverURL, stmt string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, stmt)
	// The statement's error is the one that matters; a failed goodbye
	// changes nothing on the server.
	_ = conn.Close(context.Background())
	return err
}

// Backend is one of the server's processes as the server reports it: a
// tool on the same host finds the server's processes from it (the
// backend's parent is the postmaster).
type Backend struct {
	PID             int       // pg_backend_pid() of one pooled connection
	PostmasterStart time.Time // pg_postmaster_start_time()
}

// Backend reports a pooled connection's server process; it needs no
// privilege.
func (db *DB) Backend(ctx context.Context) (Backend, error) {
	var b Backend
	var pid int32
	if err := db.pool.QueryRow(ctx, `SELECT pg_backend_pid(), pg_postmaster_start_time()`).Scan(&pid, &b.PostmasterStart); err != nil {
		return Backend{}, fmt.Errorf("backend: %w", err)
	}
	b.PID = int(pid)
	return b, nil
}
