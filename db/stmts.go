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

// prepareWriter makes sure every query is prepared on the writer connection.
// It must be called before writeTx, never inside it: the writer's only
// connection is busy for the whole transaction.
func (db *DB) prepareWriter(ctx context.Context, queries ...string) error {
	for _, q := range queries {
		db.stmts.mu.Lock()
		_, ok := db.stmts.m[q]
		db.stmts.mu.Unlock()
		if ok {
			continue
		}
		// Not under the lock: preparing waits for the connection, and a
		// transaction that holds it may be waiting for the lock in txStmt.
		st, err := db.writer.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		db.stmts.mu.Lock()
		if _, dup := db.stmts.m[q]; dup {
			st.Close()
		} else {
			if db.stmts.m == nil {
				db.stmts.m = make(map[string]*sql.Stmt)
			}
			db.stmts.m[q] = st
		}
		db.stmts.mu.Unlock()
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

// closeStmts closes every cached statement.
func (db *DB) closeStmts() error {
	db.stmts.mu.Lock()
	defer db.stmts.mu.Unlock()
	var first error
	for q, st := range db.stmts.m {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
		delete(db.stmts.m, q)
	}
	return first
}
