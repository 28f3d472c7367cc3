package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// Bootstrap is what a fresh database needs for files dropped into a source
// root to be processed without an operator: source roots, routing rules,
// and per plugin an ACTIVE manifest, subscriptions and output sinks.
type Bootstrap struct {
	SourceRoots []string
	Routes      []job.RoutingRule // ID is ignored
	Plugins     []BootstrapPlugin
}

// BootstrapPlugin is what one plugin gets from a Bootstrap.
type BootstrapPlugin struct {
	Name string
	// ManifestVersion "" means: ensure no manifest.
	ManifestVersion, ManifestSource string
	Subscribe                       []string
	Topics                          []Sink // SchemaDef is ignored
}

// BootstrapApply adds, in one transaction, whatever of b is missing, and
// returns how many rows it inserted or changed. It only fills gaps, so
// applying the same Bootstrap twice changes nothing the second time, and
// what an operator changed since is kept:
//   - a source root whose path exists (active or not) is left alone;
//   - a routing rule with the same pattern and tag is not added again;
//   - subscription tags the plugin lacks are added, none are removed;
//   - the manifest is activated only if the plugin has no ACTIVE manifest
//     (a stored row with the same source is reactivated, as
//     PluginManifestActivate does);
//   - a sink is added only for a topic the plugin has no sink for.
func (db *DB) BootstrapApply(ctx context.Context, b Bootstrap) (int, error) {
	if err := b.Check(); err != nil {
		return 0, err
	}
	for _, p := range b.Plugins {
		if err := db.checkSinks(p.Topics); err != nil {
			return 0, fmt.Errorf("bootstrap: plugin %s: %w", p.Name, err)
		}
	}
	changes := 0
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		now := formatTime(time.Now())
		count := func(res sql.Result, err error) error {
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			changes += int(n)
			return err
		}
		for _, root := range b.SourceRoots {
			if err := count(tx.ExecContext(ctx, `INSERT INTO cf_source_root (path, type, active)
				VALUES (?, 'local', 1) ON CONFLICT (path) DO NOTHING`, filepath.Clean(root))); err != nil {
				return fmt.Errorf("source root %s: %w", root, err)
			}
		}
		for _, r := range b.Routes {
			pattern, tag := strings.TrimSpace(r.Pattern), strings.TrimSpace(r.Tag)
			if err := count(tx.ExecContext(ctx, `INSERT INTO cf_routing_rule (pattern, tag, priority)
				SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM cf_routing_rule WHERE pattern = ? AND tag = ?)`,
				pattern, tag, r.Priority, pattern, tag)); err != nil {
				return fmt.Errorf("routing rule %q → %s: %w", pattern, tag, err)
			}
		}
		for _, p := range b.Plugins {
			n, err := bootstrapPlugin(ctx, tx, p, now)
			if err != nil {
				return fmt.Errorf("plugin %s: %w", p.Name, err)
			}
			changes += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bootstrap: %w", err)
	}
	return changes, nil
}

// bootstrapPlugin fills what plugin p lacks and returns the rows changed.
func bootstrapPlugin(ctx context.Context, tx *sql.Tx, p BootstrapPlugin, now string) (int, error) {
	name := strings.TrimSpace(p.Name)
	changes := 0
	res, err := tx.ExecContext(ctx, `INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters, last_updated)
		VALUES (?, '', '{}', ?) ON CONFLICT (plugin_name) DO NOTHING`, name, now)
	if err != nil {
		return 0, fmt.Errorf("plugin config: %w", err)
	}
	n, _ := res.RowsAffected()
	changes += int(n)

	if len(p.Subscribe) > 0 {
		var current sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT subscription_tags FROM cf_plugin_config WHERE plugin_name = ?`,
			name).Scan(&current); err != nil {
			return 0, fmt.Errorf("subscriptions: %w", err)
		}
		if merged, changed := MergeTags(current.String, p.Subscribe); changed {
			if _, err := tx.ExecContext(ctx, `UPDATE cf_plugin_config SET subscription_tags = ?, last_updated = ?
				WHERE plugin_name = ?`, merged, now, name); err != nil {
				return 0, fmt.Errorf("subscriptions: %w", err)
			}
			changes++
		}
	}

	if p.ManifestVersion != "" {
		n, err := bootstrapManifest(ctx, tx, name, p.ManifestVersion, p.ManifestSource, now)
		if err != nil {
			return 0, err
		}
		changes += n
	}

	for _, s := range p.Topics {
		res, err := tx.ExecContext(ctx, `INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode)
			SELECT ?, ?, ?, ? WHERE NOT EXISTS
				(SELECT 1 FROM cf_topic_config WHERE plugin_name = ? AND topic_name = ?)`,
			name, s.Topic, s.URI, orDefault(s.Mode, SinkModeAppend), name, s.Topic)
		if err != nil {
			return 0, fmt.Errorf("topic %s: %w", s.Topic, err)
		}
		n, _ := res.RowsAffected()
		changes += int(n)
	}
	return changes, nil
}

// bootstrapManifest makes (version, source) the plugin's ACTIVE manifest
// unless the plugin has one, and returns the rows changed.
func bootstrapManifest(ctx context.Context, tx *sql.Tx, plugin, version, source, now string) (int, error) {
	var active int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM cf_plugin_manifest WHERE plugin_name = ? AND status = 'ACTIVE' LIMIT 1`,
		plugin).Scan(&active)
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	// source_hash is UNIQUE across plugins: a row with this source is
	// reactivated (and renamed, as PluginManifestActivate does).
	if _, err := tx.ExecContext(ctx, `INSERT INTO cf_plugin_manifest
		(plugin_name, version, source_code, source_hash, status, created_at, deployed_at)
		VALUES (?, ?, ?, ?, 'ACTIVE', ?, ?)
		ON CONFLICT (source_hash) DO UPDATE SET
			plugin_name = excluded.plugin_name, version = excluded.version, status = 'ACTIVE',
			deployed_at = excluded.deployed_at, validation_error = NULL`,
		plugin, version, source, SourceHash(source), now, now); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	return 1, nil
}
