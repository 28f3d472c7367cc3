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

// Deploys and their environments: the same methods, with the same meaning
// and errors, as package db's (db/deploy.go); when a deployment conflicts
// with what is stored is package db's rule (db.DeployOver,
// db.DeployVersionTaken).

// PluginDeploy stores a verified deployment in one transaction, as package
// db's does: publisher and environment upserted, the manifest inserted
// ACTIVE (or a stored one of the same plugin, version and artifact
// reactivated, or left alone while ACTIVE), the plugin's other ACTIVE
// manifests SUPERSEDED; other content under a stored version, or a stored
// artifact under another plugin or version, is job.ErrConflict. The
// catalogue lock makes two Sentinels deploying the same artifact at once
// end as one DeployCreated and one DeployUnchanged, as on SQLite.
func (d *DB) PluginDeploy(ctx context.Context, now time.Time, dep db.Deployment) (db.DeployResult, error) {
	if err := dep.Check(); err != nil {
		return db.DeployResult{}, err
	}
	if dep.Shadow {
		return d.pluginDeployShadow(ctx, now, dep)
	}
	reqs, err := dep.RequirementsJSON()
	if err != nil {
		return db.DeployResult{}, fmt.Errorf("deploy %s v%s: %w", dep.Plugin, dep.Version, err)
	}
	var sig *string
	if dep.Signature != "" {
		sig = &dep.Signature
	}
	ts := now.UTC()
	var res db.DeployResult
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		res = db.DeployResult{}
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		var a db.StoredArtifact
		var plugin, version, status *string
		err := tx.QueryRow(ctx, `SELECT id, plugin_name, version, status::text FROM cf_plugin_manifest
			WHERE source_hash = $1`, dep.ArtifactHash).Scan(&a.ID, &plugin, &version, &status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find artifact: %w", err)
		default:
			a.Plugin, a.Version, a.Status = deref(plugin), deref(version), deref(status)
			r, done, err := db.DeployOver(dep, a)
			if err != nil || done {
				res = r
				return err
			}
		}
		if a.ID == 0 {
			var other int64
			err := tx.QueryRow(ctx, `SELECT id FROM cf_plugin_manifest
				WHERE plugin_name = $1 AND version = $2 LIMIT 1`, dep.Plugin, dep.Version).Scan(&other)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find version: %w", err)
			default:
				return db.DeployVersionTaken(dep, other)
			}
		}
		if err := pluginConfigEnsure(ctx, tx, dep.Plugin, now); err != nil {
			return err
		}
		publisher, err := publisherUpsert(ctx, tx, dep, ts)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO cf_plugin_environment (hash, lockfile_content, created_at, last_used)
			VALUES ($1, $2, $3, $3)
			ON CONFLICT (hash) DO UPDATE SET lockfile_content = excluded.lockfile_content, last_used = excluded.last_used`,
			dep.EnvHash, dep.Lockfile, ts); err != nil {
			return fmt.Errorf("upsert environment: %w", err)
		}
		if a.ID == 0 {
			err = tx.QueryRow(ctx, `INSERT INTO cf_plugin_manifest
				(plugin_name, version, source_code, source_hash, status, signature, created_at, deployed_at,
				 env_hash, artifact_hash, publisher_id, system_requirements)
				VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $6, $6, $7, $4, $8, $9) RETURNING id`,
				dep.Plugin, dep.Version, dep.SourceCode, dep.ArtifactHash, sig, ts,
				dep.EnvHash, publisher, reqs).Scan(&res.ManifestID)
			if err != nil {
				return fmt.Errorf("insert manifest: %w", err)
			}
			res.Outcome = db.DeployCreated
		} else {
			if _, err := tx.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'ACTIVE', deployed_at = $1,
				signature = $2, publisher_id = $3, env_hash = $4, artifact_hash = $5, system_requirements = $6,
				validation_error = NULL WHERE id = $7`,
				ts, sig, publisher, dep.EnvHash, dep.ArtifactHash, reqs, a.ID); err != nil {
				return fmt.Errorf("reactivate manifest %d: %w", a.ID, err)
			}
			res.ManifestID, res.Outcome = a.ID, db.DeployReactivated
		}
		return supersede(ctx, tx, dep.Plugin, res.ManifestID, &res.Superseded)
	})
	if err != nil {
		return db.DeployResult{}, fmt.Errorf("deploy %s v%s: %w", dep.Plugin, dep.Version, blameInput(err))
	}
	return res, nil
}

// publisherUpsert finds or creates the publisher of dep (by azure_oid when
// given, else by name) and records its activity; it returns the
// cf_publisher id.
func publisherUpsert(ctx context.Context, tx pgx.Tx, dep db.Deployment, ts time.Time) (int64, error) {
	var email *string
	if dep.PublisherEmail != "" {
		email = &dep.PublisherEmail
	}
	var id int64
	if dep.AzureOID != "" {
		err := tx.QueryRow(ctx, `INSERT INTO cf_publisher (azure_oid, name, email, created_at, last_active)
			VALUES ($1, $2, $3, $4, $4)
			ON CONFLICT (azure_oid) DO UPDATE SET name = excluded.name,
				email = COALESCE(excluded.email, cf_publisher.email), last_active = excluded.last_active
			RETURNING id`, dep.AzureOID, dep.PublisherName, email, ts).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("upsert publisher: %w", err)
		}
		return id, nil
	}
	err := tx.QueryRow(ctx, `SELECT id FROM cf_publisher WHERE azure_oid IS NULL AND name = $1
		ORDER BY id LIMIT 1`, dep.PublisherName).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = tx.QueryRow(ctx, `INSERT INTO cf_publisher (name, email, created_at, last_active)
			VALUES ($1, $2, $3, $3) RETURNING id`, dep.PublisherName, email, ts).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("insert publisher: %w", err)
		}
	case err != nil:
		return 0, fmt.Errorf("find publisher: %w", err)
	default:
		if _, err := tx.Exec(ctx, `UPDATE cf_publisher SET email = COALESCE($1, email), last_active = $2
			WHERE id = $3`, email, ts, id); err != nil {
			return 0, fmt.Errorf("update publisher: %w", err)
		}
	}
	return id, nil
}

// EnvironmentLockfile returns the lockfile of environment hash, or
// job.ErrNotFound.
func (d *DB) EnvironmentLockfile(ctx context.Context, hash string) (string, error) {
	var lock *string
	err := d.pool.QueryRow(ctx, `SELECT lockfile_content FROM cf_plugin_environment WHERE hash = $1`,
		hash).Scan(&lock)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("environment %s: %w", hash, job.ErrNotFound)
	case err != nil:
		return "", fmt.Errorf("environment %s: %w", hash, err)
	}
	return deref(lock), nil
}

// PluginManifestRows lists a plugin's manifests with their source, oldest
// first.
func (d *DB) PluginManifestRows(ctx context.Context, plugin string) ([]db.ManifestRow, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, plugin_name, version, status::text, source_code, source_hash,
		artifact_hash, env_hash, signature, publisher_id, deployed_at
		FROM cf_plugin_manifest WHERE plugin_name = $1 ORDER BY id`, plugin)
	if err != nil {
		return nil, fmt.Errorf("manifests of %s: %w", plugin, err)
	}
	defer rows.Close()
	var out []db.ManifestRow
	for rows.Next() {
		var m db.ManifestRow
		var status, artifact, env, sig *string
		var publisher *int64
		var deployed *time.Time
		if err := rows.Scan(&m.ID, &m.Plugin, &m.Version, &status, &m.SourceCode, &m.SourceHash,
			&artifact, &env, &sig, &publisher, &deployed); err != nil {
			return nil, fmt.Errorf("manifests of %s: %w", plugin, err)
		}
		m.Status, m.ArtifactHash, m.EnvHash, m.Signature = deref(status), deref(artifact), deref(env), deref(sig)
		m.PublisherID, m.DeployedAt = deref(publisher), utc(deployed)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("manifests of %s: %w", plugin, err)
	}
	return out, nil
}
