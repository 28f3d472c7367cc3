package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// PluginManifestActivate stores a plugin artifact as the plugin's ACTIVE
// manifest and returns its id. The source is identified by source_hash
// (SHA-256 hex of sourceCode): deploying a source that is already stored
// reactivates that row instead of failing on the UNIQUE constraint. Older
// ACTIVE manifests of the plugin become SUPERSEDED. envHash "" stores NULL
// (the "system" environment); otherwise the cf_plugin_environment row is
// created if missing. The plugin's cf_plugin_config row is created if
// missing.
func (db *DB) PluginManifestActivate(ctx context.Context, plugin, version, sourceCode, envHash, artifactHash string) (int64, error) {
	if plugin == "" {
		return 0, errors.New("activate manifest: empty plugin name")
	}
	sourceHash := SourceHash(sourceCode)
	now := formatTime(time.Now())
	var env, artifact any
	if envHash != "" {
		env = envHash
	}
	if artifactHash != "" {
		artifact = artifactHash
	}
	var id int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		if envHash != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cf_plugin_environment (hash, lockfile_content, created_at, last_used)
				VALUES (?, '', ?, ?) ON CONFLICT (hash) DO NOTHING`, envHash, now, now); err != nil {
				return fmt.Errorf("ensure environment: %w", err)
			}
		}
		err := tx.QueryRowContext(ctx, `INSERT INTO cf_plugin_manifest
			(plugin_name, version, source_code, source_hash, status, created_at, deployed_at, env_hash, artifact_hash)
			VALUES (?, ?, ?, ?, 'ACTIVE', ?, ?, ?, ?)
			ON CONFLICT (source_hash) DO UPDATE SET
				plugin_name = excluded.plugin_name, version = excluded.version, status = 'ACTIVE',
				deployed_at = excluded.deployed_at, env_hash = excluded.env_hash,
				artifact_hash = excluded.artifact_hash, validation_error = NULL
			RETURNING id`,
			plugin, version, sourceCode, sourceHash, now, now, env, artifact).Scan(&id)
		if err != nil {
			return fmt.Errorf("upsert manifest: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
			WHERE plugin_name = ? AND status = 'ACTIVE' AND id <> ?`, plugin, id); err != nil {
			return fmt.Errorf("supersede older manifests: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("activate manifest %s %s: %w", plugin, version, err)
	}
	return id, nil
}

// TopicConfigAdd adds an output topic to a plugin's configuration and returns
// its id; mode "" means append and schemaJSON "" stores NULL. The plugin's
// cf_plugin_config row is created if missing.
func (db *DB) TopicConfigAdd(ctx context.Context, plugin, topic, uri, mode, schemaJSON string) (int64, error) {
	if err := CheckTopicConfig(plugin, topic, uri); err != nil {
		return 0, err
	}
	if err := db.checkSinks([]Sink{{Topic: topic, URI: uri}}); err != nil {
		return 0, fmt.Errorf("add topic config %s: %w", plugin, err)
	}
	var schema any
	if schemaJSON != "" {
		schema = schemaJSON
	}
	var id int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := pluginConfigEnsure(ctx, tx, plugin, formatTime(time.Now())); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode, schema_json)
			VALUES (?, ?, ?, ?, ?) RETURNING id`,
			plugin, topic, uri, orDefault(mode, SinkModeAppend), schema).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add topic config %s/%s: %w", plugin, topic, err)
	}
	return id, nil
}

// pluginConfigEnsure inserts the plugin's cf_plugin_config row (no
// subscriptions, default parameters {}) unless it exists.
func pluginConfigEnsure(ctx context.Context, tx *sql.Tx, plugin, now string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters, last_updated)
		VALUES (?, '', '{}', ?) ON CONFLICT (plugin_name) DO NOTHING`, plugin, now)
	if err != nil {
		return fmt.Errorf("ensure plugin config: %w", err)
	}
	return nil
}

// PluginsList returns every plugin that has a configuration or a manifest,
// by name.
func (db *DB) PluginsList(ctx context.Context) ([]job.Plugin, error) {
	var cat PluginCatalogue
	rows, err := db.reader.QueryContext(ctx, `SELECT plugin_name, subscription_tags FROM cf_plugin_config`)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	for rows.Next() {
		var name, tags sql.NullString
		if err := rows.Scan(&name, &tags); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list plugins: %w", err)
		}
		cat.Config(name.String, tags.String)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	// The same order the dispatch uses to pick the ACTIVE manifest.
	rows, err = db.reader.QueryContext(ctx, `SELECT id, plugin_name, version, status, env_hash, artifact_hash,
		created_at, deployed_at
	FROM cf_plugin_manifest ORDER BY plugin_name, `+manifestNewestFirst)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m job.Manifest
		var name, version, status, env, artifact sql.NullString
		var created, deployed nullTime
		if err := rows.Scan(&m.ID, &name, &version, &status, &env, &artifact, &created, &deployed); err != nil {
			return nil, fmt.Errorf("list plugins: %w", err)
		}
		m.Version, m.Status, m.ArtifactHash, m.EnvHash = version.String, status.String, artifact.String, env.String
		m.CreatedAt, m.DeployedAt = created.Time, deployed.Time
		cat.Manifest(name.String, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	if err := db.pluginSettingsInto(ctx, &cat); err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	return cat.Plugins(), nil
}

// PluginSubscribe adds tags to a plugin's cf_plugin_config.subscription_tags
// (creating the row if needed) and returns the plugin's tags after it. Files
// the scanner records with any of these tags get a job for the plugin.
//
// cf_plugin_subscription is not touched: it subscribes a plugin to another
// plugin's output topics, which is a different thing from file tags.
func (db *DB) PluginSubscribe(ctx context.Context, plugin string, tags []string) ([]string, error) {
	plugin, err := CheckPluginSubscribe(plugin, tags)
	if err != nil {
		return nil, err
	}
	var out []string
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		now := formatTime(time.Now())
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		var current sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT subscription_tags FROM cf_plugin_config WHERE plugin_name = ?`,
			plugin).Scan(&current); err != nil {
			return err
		}
		merged := tagList(append(splitTags(current.String), tags...))
		out = splitTags(merged)
		_, err := tx.ExecContext(ctx, `UPDATE cf_plugin_config SET subscription_tags = ?, last_updated = ?
			WHERE plugin_name = ?`, merged, now, plugin)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", plugin, err)
	}
	return out, nil
}

// validTags reports the first tag that cannot be stored in a comma list.
func validTags(tags []string) error {
	if len(tags) == 0 {
		return fmt.Errorf("at least one tag is required: %w", job.ErrInvalid)
	}
	for _, t := range tags {
		if t = strings.TrimSpace(t); t == "" || strings.Contains(t, ",") {
			return fmt.Errorf("tag %q must be non-empty and contain no comma: %w", t, job.ErrInvalid)
		}
	}
	return nil
}

// splitTags reads a comma list such as subscription_tags or applied_tags.
func splitTags(list string) []string {
	var out []string
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
