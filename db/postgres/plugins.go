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

// Plugins as the operator API lists them and the seeding helpers store them:
// the same methods, with the same meaning and errors, as package db's
// (db/plugins.go). cf_plugin_manifest.status is the original's enum
// pluginstatusenum, read as text.

// PluginManifestActivate stores a plugin artifact as the plugin's ACTIVE
// manifest and returns its id, as package db's does: a source already
// stored (by source_hash, db.SourceHash) is reactivated, older ACTIVE
// manifests of the plugin become SUPERSEDED, envHash "" stores NULL and
// otherwise ensures the environment row, and the plugin's configuration is
// created if missing.
func (d *DB) PluginManifestActivate(ctx context.Context, plugin, version, sourceCode, envHash, artifactHash string) (int64, error) {
	if plugin == "" {
		return 0, errors.New("activate manifest: empty plugin name")
	}
	sourceHash := db.SourceHash(sourceCode)
	now := time.Now().UTC()
	var env, artifact *string
	if envHash != "" {
		env = &envHash
	}
	if artifactHash != "" {
		artifact = &artifactHash
	}
	var id int64
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		if envHash != "" {
			if _, err := tx.Exec(ctx, `INSERT INTO cf_plugin_environment (hash, lockfile_content, created_at, last_used)
				VALUES ($1, '', $2, $2) ON CONFLICT (hash) DO NOTHING`, envHash, now); err != nil {
				return fmt.Errorf("ensure environment: %w", err)
			}
		}
		err := tx.QueryRow(ctx, `INSERT INTO cf_plugin_manifest
			(plugin_name, version, source_code, source_hash, status, created_at, deployed_at, env_hash, artifact_hash)
			VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $5, $6, $7)
			ON CONFLICT (source_hash) DO UPDATE SET
				plugin_name = excluded.plugin_name, version = excluded.version, status = 'ACTIVE',
				deployed_at = excluded.deployed_at, env_hash = excluded.env_hash,
				artifact_hash = excluded.artifact_hash, validation_error = NULL
			RETURNING id`,
			plugin, version, sourceCode, sourceHash, now, env, artifact).Scan(&id)
		if err != nil {
			return fmt.Errorf("upsert manifest: %w", err)
		}
		return supersede(ctx, tx, plugin, id, nil)
	})
	if err != nil {
		return 0, fmt.Errorf("activate manifest %s %s: %w", plugin, version, blameInput(err))
	}
	return id, nil
}

// supersede marks the plugin's ACTIVE manifests other than keep SUPERSEDED
// and counts them into n (if not nil).
func supersede(ctx context.Context, tx pgx.Tx, plugin string, keep int64, n *int64) error {
	tag, err := tx.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
		WHERE plugin_name = $1 AND status = 'ACTIVE' AND id <> $2`, plugin, keep)
	if err != nil {
		return fmt.Errorf("supersede older manifests: %w", err)
	}
	if n != nil {
		*n = tag.RowsAffected()
	}
	return nil
}

// TopicConfigAdd adds an output topic to a plugin's configuration and returns
// its id; mode "" means append and schemaJSON "" stores NULL. The plugin's
// cf_plugin_config row is created if missing. Unlike SQLite's there is no
// sink guard: no sink can name a PostgreSQL database.
func (d *DB) TopicConfigAdd(ctx context.Context, plugin, topic, uri, mode, schemaJSON string) (int64, error) {
	if err := db.CheckTopicConfig(plugin, topic, uri); err != nil {
		return 0, err
	}
	var schema *string
	if schemaJSON != "" {
		schema = &schemaJSON
	}
	var id int64
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if err := pluginConfigEnsure(ctx, tx, plugin, time.Now()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode, schema_json)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			plugin, topic, uri, orDefault(mode, db.SinkModeAppend), schema).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add topic config %s/%s: %w", plugin, topic, blameInput(err))
	}
	return id, nil
}

// PluginsList returns every plugin that has a configuration or a manifest,
// by name, its manifests newest first (the dispatch's order).
func (d *DB) PluginsList(ctx context.Context) ([]job.Plugin, error) {
	var cat db.PluginCatalogue
	// One snapshot for both reads, so that a deploy between them cannot
	// list a manifest of a plugin without its configuration.
	err := pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT plugin_name, subscription_tags FROM cf_plugin_config`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var name, tags *string
				if err := rows.Scan(&name, &tags); err != nil {
					rows.Close()
					return err
				}
				cat.Config(deref(name), deref(tags))
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			rows, err = tx.Query(ctx, `SELECT id, plugin_name, version, status::text, env_hash, artifact_hash,
				created_at, deployed_at
			FROM cf_plugin_manifest
			ORDER BY plugin_name, COALESCE(deployed_at, created_at) DESC NULLS LAST, id DESC`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var m job.Manifest
				var name, version, status, env, artifact *string
				var created, deployed *time.Time
				if err := rows.Scan(&m.ID, &name, &version, &status, &env, &artifact, &created, &deployed); err != nil {
					return err
				}
				m.Version, m.Status, m.ArtifactHash, m.EnvHash = deref(version), deref(status), deref(artifact), deref(env)
				m.CreatedAt, m.DeployedAt = utc(created), utc(deployed)
				cat.Manifest(deref(name), m)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			rows.Close()
			rows, err = tx.Query(ctx, `SELECT `+settingsColumns+` FROM sentinel_plugin_settings`)
			if err != nil {
				return err
			}
			for rows.Next() {
				name, s, err := scanSettings(rows)
				if err != nil {
					return err
				}
				cat.Settings(name, s)
			}
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	return cat.Plugins(), nil
}

// PluginSubscribe adds tags to a plugin's cf_plugin_config.subscription_tags
// (creating the row if needed) and returns the plugin's tags after it, as
// package db's does.
func (d *DB) PluginSubscribe(ctx context.Context, plugin string, tags []string) ([]string, error) {
	plugin, err := db.CheckPluginSubscribe(plugin, tags)
	if err != nil {
		return nil, err
	}
	var out []string
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		now := time.Now()
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		var current *string
		if err := tx.QueryRow(ctx, `SELECT subscription_tags FROM cf_plugin_config WHERE plugin_name = $1 FOR UPDATE`,
			plugin).Scan(&current); err != nil {
			return err
		}
		merged, _ := db.MergeTags(deref(current), tags)
		out = db.SplitTags(merged)
		_, err := tx.Exec(ctx, `UPDATE cf_plugin_config SET subscription_tags = $1, last_updated = $2
			WHERE plugin_name = $3`, merged, now.UTC(), plugin)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", plugin, blameInput(err))
	}
	return out, nil
}
