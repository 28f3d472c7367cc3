package db

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
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
	sum := sha256.Sum256([]byte(sourceCode))
	sourceHash := hex.EncodeToString(sum[:])
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
	if plugin == "" || topic == "" || uri == "" {
		return 0, errors.New("add topic config: empty plugin, topic or uri")
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
