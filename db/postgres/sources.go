package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Source roots, routing rules and ignore rules: the same methods, with the
// same meaning and errors, as package db's (db/sources.go). cf_source_root's
// active is the original's INTEGER, cf_ignore_rule's a BOOLEAN.

// RoutingRuleAdd adds a routing rule and returns its id; adding a rule that
// exists (same pattern and tag) returns the existing id.
func (d *DB) RoutingRuleAdd(ctx context.Context, pattern, tag string, priority int64) (int64, error) {
	pattern, tag, err := db.CheckRoutingRule(pattern, tag)
	if err != nil {
		return 0, err
	}
	var id int64
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT id FROM cf_routing_rule WHERE pattern = $1 AND tag = $2 ORDER BY id LIMIT 1`,
			pattern, tag).Scan(&id)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO cf_routing_rule (pattern, tag, priority) VALUES ($1, $2, $3) RETURNING id`,
			pattern, tag, priority).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add routing rule %q → %s: %w", pattern, tag, blameInput(err))
	}
	return id, nil
}

// RoutingRules returns every routing rule, highest priority first.
func (d *DB) RoutingRules(ctx context.Context) ([]job.RoutingRule, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, pattern, tag, priority FROM cf_routing_rule
		ORDER BY COALESCE(priority, 0) DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("routing rules: %w", err)
	}
	defer rows.Close()
	var out []job.RoutingRule
	for rows.Next() {
		var r job.RoutingRule
		var pattern, tag *string
		var prio *int64
		if err := rows.Scan(&r.ID, &pattern, &tag, &prio); err != nil {
			return nil, fmt.Errorf("routing rules: %w", err)
		}
		r.Pattern, r.Tag, r.Priority = deref(pattern), deref(tag), deref(prio)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("routing rules: %w", err)
	}
	return out, nil
}

// SourceRootAdd adds the folder at an absolute path as an active source
// root, or reactivates it, and returns it. The path is cleaned first, so
// "/data/in/" and "/data/in" name one root.
func (d *DB) SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error) {
	clean, err := db.CleanSourceRoot(rootPath)
	if err != nil {
		return job.SourceRoot{}, err
	}
	r := job.SourceRoot{Path: clean, Active: true}
	var typ *string
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO cf_source_root (path, type, active)
			VALUES ($1, 'local', 1)
			ON CONFLICT (path) DO UPDATE SET active = 1
			RETURNING id, type`, r.Path).Scan(&r.ID, &typ)
	})
	if err != nil {
		return job.SourceRoot{}, fmt.Errorf("add source root %q: %w", rootPath, blameInput(err))
	}
	r.Type = orDefault(deref(typ), "local")
	return r, nil
}

// SourceRoots returns the source roots by id; activeOnly leaves out the
// inactive ones (NULL active counts as active, the column's default).
func (d *DB) SourceRoots(ctx context.Context, activeOnly bool) ([]job.SourceRoot, error) {
	q := `SELECT id, path, type, COALESCE(active, 1) FROM cf_source_root`
	if activeOnly {
		q += ` WHERE COALESCE(active, 1) = 1`
	}
	rows, err := d.pool.Query(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	defer rows.Close()
	var out []job.SourceRoot
	for rows.Next() {
		var r job.SourceRoot
		var path, typ *string
		var active int64
		if err := rows.Scan(&r.ID, &path, &typ, &active); err != nil {
			return nil, fmt.Errorf("source roots: %w", err)
		}
		r.Path, r.Type, r.Active = deref(path), orDefault(deref(typ), "local"), active != 0
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	return out, nil
}

// IgnoreRuleAdd adds an active ignore rule for one source root (rootID 0:
// every root) and returns its id.
func (d *DB) IgnoreRuleAdd(ctx context.Context, rootID int64, pattern string) (int64, error) {
	trimmed, err := db.CheckIgnoreRule(pattern)
	if err != nil {
		return 0, err
	}
	var root *int64
	if rootID != 0 {
		root = &rootID
	}
	var id int64
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO cf_ignore_rule (source_root_id, pattern, active, created_at)
			VALUES ($1, $2, true, $3) RETURNING id`, root, trimmed, time.Now().UTC()).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add ignore rule %q: %w", pattern, blameInput(err))
	}
	return id, nil
}

// IgnoreRules returns the active ignore rules (NULL active counts as active).
func (d *DB) IgnoreRules(ctx context.Context) ([]db.IgnoreRule, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, source_root_id, pattern FROM cf_ignore_rule
		WHERE COALESCE(active, true) ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	defer rows.Close()
	var out []db.IgnoreRule
	for rows.Next() {
		var r db.IgnoreRule
		var root *int64
		var pattern *string
		if err := rows.Scan(&r.ID, &root, &pattern); err != nil {
			return nil, fmt.Errorf("ignore rules: %w", err)
		}
		r.RootID, r.Pattern = deref(root), deref(pattern)
		if r.Pattern != "" {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	return out, nil
}
