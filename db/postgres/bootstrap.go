package postgres

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/casparian/sentinel/db"
)

// BootstrapApply adds, in one transaction, whatever of b is missing, and
// returns how many rows it inserted or changed, as package db's does: it
// only fills gaps (an existing root, route, subscription tag, ACTIVE
// manifest or sink of a topic is left as it is), so a second apply of the
// same Bootstrap changes nothing. Unlike SQLite's there is no sink guard:
// no sink can name a PostgreSQL database. The catalogue lock makes several
// Sentinels starting at once with one bootstrap file apply it once.
func (d *DB) BootstrapApply(ctx context.Context, b db.Bootstrap) (int, error) {
	if err := b.Check(); err != nil {
		return 0, err
	}
	changes := 0
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		changes = 0
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		now := time.Now().UTC()
		count := func(tag pgconn.CommandTag, err error) error {
			changes += int(tag.RowsAffected())
			return err
		}
		for _, root := range b.SourceRoots {
			if err := count(tx.Exec(ctx, `INSERT INTO cf_source_root (path, type, active)
				VALUES ($1, 'local', 1) ON CONFLICT (path) DO NOTHING`, filepath.Clean(root))); err != nil {
				return fmt.Errorf("source root %s: %w", root, err)
			}
		}
		for _, r := range b.Routes {
			pattern, tag := strings.TrimSpace(r.Pattern), strings.TrimSpace(r.Tag)
			if err := count(tx.Exec(ctx, `INSERT INTO cf_routing_rule (pattern, tag, priority)
				SELECT $1::text, $2::text, $3::int WHERE NOT EXISTS
					(SELECT 1 FROM cf_routing_rule WHERE pattern = $1::text AND tag = $2::text)`,
				pattern, tag, r.Priority)); err != nil {
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
		return 0, fmt.Errorf("bootstrap: %w", blameInput(err))
	}
	return changes, nil
}

// bootstrapPlugin fills what plugin p lacks and returns the rows changed.
func bootstrapPlugin(ctx context.Context, tx pgx.Tx, p db.BootstrapPlugin, now time.Time) (int, error) {
	name := strings.TrimSpace(p.Name)
	changes := 0
	tag, err := tx.Exec(ctx, `INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters, last_updated)
		VALUES ($1, '', '{}', $2) ON CONFLICT (plugin_name) DO NOTHING`, name, now)
	if err != nil {
		return 0, fmt.Errorf("plugin config: %w", err)
	}
	changes += int(tag.RowsAffected())

	if len(p.Subscribe) > 0 {
		var current *string
		// FOR UPDATE: PluginSubscribe, which does not take the catalogue
		// lock, must not merge its tags into a value this is replacing.
		if err := tx.QueryRow(ctx, `SELECT subscription_tags FROM cf_plugin_config WHERE plugin_name = $1 FOR UPDATE`,
			name).Scan(&current); err != nil {
			return 0, fmt.Errorf("subscriptions: %w", err)
		}
		if merged, changed := db.MergeTags(deref(current), p.Subscribe); changed {
			if _, err := tx.Exec(ctx, `UPDATE cf_plugin_config SET subscription_tags = $1, last_updated = $2
				WHERE plugin_name = $3`, merged, now, name); err != nil {
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
		tag, err := tx.Exec(ctx, `INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode)
			SELECT $1::text, $2::text, $3::text, $4::text WHERE NOT EXISTS
				(SELECT 1 FROM cf_topic_config WHERE plugin_name = $1::text AND topic_name = $2::text)`,
			name, s.Topic, s.URI, orDefault(s.Mode, db.SinkModeAppend))
		if err != nil {
			return 0, fmt.Errorf("topic %s: %w", s.Topic, err)
		}
		changes += int(tag.RowsAffected())
	}
	return changes, nil
}

// bootstrapManifest makes (version, source) the plugin's ACTIVE manifest
// unless the plugin has one, and returns the rows changed.
func bootstrapManifest(ctx context.Context, tx pgx.Tx, plugin, version, source string, now time.Time) (int, error) {
	var active int64
	err := tx.QueryRow(ctx, `SELECT id FROM cf_plugin_manifest WHERE plugin_name = $1 AND status = 'ACTIVE' LIMIT 1`,
		plugin).Scan(&active)
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	// source_hash is UNIQUE across plugins: a row with this source is
	// reactivated (and renamed, as PluginManifestActivate does).
	if _, err := tx.Exec(ctx, `INSERT INTO cf_plugin_manifest
		(plugin_name, version, source_code, source_hash, status, created_at, deployed_at)
		VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $5)
		ON CONFLICT (source_hash) DO UPDATE SET
			plugin_name = excluded.plugin_name, version = excluded.version, status = 'ACTIVE',
			deployed_at = excluded.deployed_at, validation_error = NULL`,
		plugin, version, source, db.SourceHash(source), now); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	return 1, nil
}
