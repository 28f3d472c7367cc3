// Package backend opens the database a --database setting names: SQLite
// (package db) for sqlite://… and bare paths, PostgreSQL (package
// db/postgres) for postgres://… and postgresql://…. Commands open their
// database here, so that neither backend imports the other and the actors
// see only db.Store.
package backend

import (
	"context"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/db/postgres"
)

// Database is an open database as a command holds it: the Store the
// Sentinel's queue actor uses, the bootstrap the command applies before it
// starts, and what the command needs to name and close it.
type Database interface {
	db.Store
	// BootstrapApply writes a --bootstrap file's settings and returns how
	// many rows it changed (0 when the file was applied before).
	BootstrapApply(ctx context.Context, b db.Bootstrap) (int, error)
	// Describe names the database for logs and errors, without a password.
	Describe() string
	// Kind is "sqlite" or "postgres".
	Kind() string
	Close() error
}

// Open opens the database setting names and brings its schema up to date.
func Open(ctx context.Context, setting string) (Database, error) {
	if postgres.IsURL(setting) {
		d, err := postgres.Open(ctx, setting)
		if err != nil {
			return nil, err
		}
		return pg{d, postgres.Redact(setting)}, nil
	}
	d, err := db.Open(ctx, setting)
	if err != nil {
		return nil, err
	}
	return sqlite{d}, nil
}

// SQLite is d as a Database, for a caller that opened it with db.Open
// because it also uses calls only SQLite has.
func SQLite(d *db.DB) Database { return sqlite{d} }

// IsPostgres reports whether setting names a PostgreSQL database.
func IsPostgres(setting string) bool { return postgres.IsURL(setting) }

type sqlite struct{ *db.DB }

func (s sqlite) Describe() string { return s.Path() }

func (s sqlite) Kind() string { return "sqlite" }

type pg struct {
	*postgres.DB
	url string // redacted
}

func (p pg) Describe() string { return p.url }
func (p pg) Kind() string     { return "postgres" }

// Close closes the pool; PostgreSQL's closing reports nothing.
func (p pg) Close() error {
	p.DB.Close()
	return nil
}

var (
	_ Database = sqlite{}
	_ Database = pg{}
	// The queue listener reaches the Sentinel through the interface.
	_ db.QueueNotifier = pg{}
)
