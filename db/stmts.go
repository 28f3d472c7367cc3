package db

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// stmtCache holds the hot statements, prepared once on the writer connection.
//
// Parsing SQL was about a sixth of the Sentinel's CPU under load when every
// claim and every batch of conclusions prepared its statements afresh. A
// statement prepared on db.writer lives on that pool's only connection, and
// tx.StmtContext binds it to a transaction on that connection without
// parsing it again.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// prepared returns q prepared on pool, preparing it the first time.
func (c *stmtCache) prepared(ctx context.Context, pool *sql.DB, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.m[q]
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	// Not under the lock: preparing waits for the connection, and a
	// transaction that holds it may be waiting for the lock in txStmt.
	st, err := pool.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, dup := c.m[q]; dup {
		st.Close()
		return prev, nil
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[q] = st
	return st, nil
}

// prepareWriter makes sure every query is prepared on the writer connection.
// It must be called before writeTx, never inside it: the writer's only
// connection is busy for the whole transaction.
func (db *DB) prepareWriter(ctx context.Context, queries ...string) error {
	for _, q := range queries {
		if _, err := db.stmts.prepared(ctx, db.writer, q); err != nil {
			return err
		}
	}
	return nil
}

// txStmt returns the cached statement for q bound to tx; q must have been
// given to prepareWriter before the transaction began. The bound statement is
// closed with the transaction; the cached one stays prepared.
func (db *DB) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	db.stmts.mu.Lock()
	st, ok := db.stmts.m[q]
	db.stmts.mu.Unlock()
	if !ok {
		// A programming error, not a database state: say so plainly.
		return nil, fmt.Errorf("statement not prepared before its transaction: %.60q", q)
	}
	return tx.StmtContext(ctx, st), nil
}

// readerStmt returns q prepared on the reader pool, preparing it the first
// time. database/sql prepares a pool's statement on each connection the
// first time it runs there and keeps it, so with readerConns connections q
// is parsed at most that many times, not at every call: the frequent
// read-only queries (a job by id, the next due job, a dispatch's catalogue)
// cost a parse of their SQL each time otherwise, which under the race
// detector was a fifth of the actors tests' CPU. Only fixed query strings
// belong here, never one assembled per call: the cache keeps every string
// it is given until Close. It must not be called inside a read
// transaction (preparing may wait for a free connection): prepare first,
// then bind with tx.StmtContext.
func (db *DB) readerStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	return db.rstmts.prepared(ctx, db.reader, q)
}

// closeStmts closes every cached statement, the writer's and the readers'.
func (db *DB) closeStmts() error {
	var first error
	for _, c := range []*stmtCache{&db.stmts, &db.rstmts} {
		c.mu.Lock()
		for q, st := range c.m {
			if err := st.Close(); err != nil && first == nil {
				first = err
			}
			delete(c.m, q)
		}
		c.mu.Unlock()
	}
	return first
}
