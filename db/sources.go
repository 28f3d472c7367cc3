package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/casparian/sentinel/job"
)

// RoutingRuleAdd adds a routing rule and returns its id; adding a rule that
// exists (same pattern and tag) returns the existing id.
func (db *DB) RoutingRuleAdd(ctx context.Context, pattern, tag string, priority int64) (int64, error) {
	pattern, tag, err := CheckRoutingRule(pattern, tag)
	if err != nil {
		return 0, err
	}
	var id int64
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT id FROM cf_routing_rule WHERE pattern = ? AND tag = ? ORDER BY id LIMIT 1`,
			pattern, tag).Scan(&id)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO cf_routing_rule (pattern, tag, priority) VALUES (?, ?, ?) RETURNING id`,
			pattern, tag, priority).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add routing rule %q → %s: %w", pattern, tag, err)
	}
	return id, nil
}

// RoutingRules returns every routing rule, highest priority first.
func (db *DB) RoutingRules(ctx context.Context) ([]job.RoutingRule, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, pattern, tag, priority FROM cf_routing_rule
		ORDER BY COALESCE(priority, 0) DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("routing rules: %w", err)
	}
	defer rows.Close()
	var out []job.RoutingRule
	for rows.Next() {
		var r job.RoutingRule
		var pattern, tag sql.NullString
		var prio sql.NullInt64
		if err := rows.Scan(&r.ID, &pattern, &tag, &prio); err != nil {
			return nil, fmt.Errorf("routing rules: %w", err)
		}
		r.Pattern, r.Tag, r.Priority = pattern.String, tag.String, prio.Int64
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
func (db *DB) SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error) {
	clean, err := CleanSourceRoot(rootPath)
	if err != nil {
		return job.SourceRoot{}, err
	}
	r := job.SourceRoot{Path: clean, Active: true}
	var typ sql.NullString
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO cf_source_root (path, type, active)
			VALUES (?, 'local', 1)
			ON CONFLICT (path) DO UPDATE SET active = 1
			RETURNING id, type`, r.Path).Scan(&r.ID, &typ)
	})
	if err != nil {
		return job.SourceRoot{}, fmt.Errorf("add source root %q: %w", rootPath, err)
	}
	r.Type = orDefault(typ.String, "local")
	return r, nil
}

// SourceRoots returns the source roots by id; activeOnly leaves out the
// inactive ones (NULL active counts as active, the column's default).
func (db *DB) SourceRoots(ctx context.Context, activeOnly bool) ([]job.SourceRoot, error) {
	q := `SELECT id, path, type, COALESCE(active, 1) FROM cf_source_root`
	if activeOnly {
		q += ` WHERE COALESCE(active, 1) = 1`
	}
	rows, err := db.reader.QueryContext(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	defer rows.Close()
	var out []job.SourceRoot
	for rows.Next() {
		var r job.SourceRoot
		var path, typ sql.NullString
		var active int64
		if err := rows.Scan(&r.ID, &path, &typ, &active); err != nil {
			return nil, fmt.Errorf("source roots: %w", err)
		}
		r.Path, r.Type, r.Active = path.String, orDefault(typ.String, "local"), active != 0
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	return out, nil
}

// IgnoreRule is one active cf_ignore_rule row; RootID 0 is a global rule.
type IgnoreRule struct {
	ID      int64
	RootID  int64
	Pattern string
}

// IgnoreRuleAdd adds an active ignore rule for one source root (rootID 0:
// every root) and returns its id.
func (db *DB) IgnoreRuleAdd(ctx context.Context, rootID int64, pattern string) (int64, error) {
	trimmed, err := CheckIgnoreRule(pattern)
	if err != nil {
		return 0, err
	}
	var root any
	if rootID != 0 {
		root = rootID
	}
	var id int64
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO cf_ignore_rule (source_root_id, pattern, active, created_at)
			VALUES (?, ?, 1, ?) RETURNING id`, root, trimmed, formatTime(time.Now())).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add ignore rule %q: %w", pattern, err)
	}
	return id, nil
}

// IgnoreRules returns the active ignore rules (NULL active counts as active).
func (db *DB) IgnoreRules(ctx context.Context) ([]IgnoreRule, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, source_root_id, pattern FROM cf_ignore_rule
		WHERE COALESCE(active, 1) = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	defer rows.Close()
	var out []IgnoreRule
	for rows.Next() {
		var r IgnoreRule
		var root sql.NullInt64
		var pattern sql.NullString
		if err := rows.Scan(&r.ID, &root, &pattern); err != nil {
			return nil, fmt.Errorf("ignore rules: %w", err)
		}
		r.RootID, r.Pattern = root.Int64, pattern.String
		if r.Pattern != "" {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	return out, nil
}
