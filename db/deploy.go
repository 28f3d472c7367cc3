package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/casparian/sentinel/job"
)

// Deployment is a verified DEPLOY to store (the caller checked the hashes
// and the signature; this package only stores).
type Deployment struct {
	Plugin, Version    string
	SourceCode         string
	Lockfile           string
	EnvHash            string // sha256 of Lockfile
	ArtifactHash       string // sha256 of SourceCode followed by Lockfile
	Signature          string // "" stores NULL (an --allow-unsigned deploy)
	PublisherName      string
	PublisherEmail     string // optional
	AzureOID           string // optional; identifies the publisher when given
	SystemRequirements []string
	// Shadow stores the deployment as a SHADOW manifest and begins a
	// shadow run (shadow.go) instead of making it ACTIVE; ShadowFiles
	// bounds its file versions (0: ShadowFilesDefault).
	Shadow      bool
	ShadowFiles int
}

// DeployConflict is PluginDeploy's refusal of a deployment that clashes with
// what is stored; Reason is meant for the publisher. It matches job.ErrConflict.
type DeployConflict struct{ Reason string }

func (e *DeployConflict) Error() string { return e.Reason }

// Unwrap makes errors.Is(err, job.ErrConflict) hold.
func (e *DeployConflict) Unwrap() error { return job.ErrConflict }

// DeployOutcome says what PluginDeploy did.
type DeployOutcome int

// The outcomes of PluginDeploy.
const (
	// DeployCreated stored a new ACTIVE manifest.
	DeployCreated DeployOutcome = iota + 1
	// DeployUnchanged found the same artifact already ACTIVE for the same
	// plugin and version: nothing was written.
	DeployUnchanged
	// DeployReactivated made a stored, no longer ACTIVE manifest of the same
	// plugin, version and artifact ACTIVE again (a rollback).
	DeployReactivated
	// DeployShadowed stored a SHADOW manifest and began its shadow run.
	DeployShadowed
)

// DeployResult is what PluginDeploy did.
type DeployResult struct {
	ManifestID int64
	Outcome    DeployOutcome
	Superseded int64 // earlier ACTIVE manifests of the plugin now SUPERSEDED
	// Shadow is the shadow run a DeployShadowed began.
	Shadow *job.ShadowRun
}

// PluginDeploy stores a verified deployment in one transaction: the publisher
// (cf_publisher, by azure_oid when given, else by name) and the environment
// (cf_plugin_environment with its lockfile) are upserted, the manifest is
// inserted ACTIVE with deployed_at, and the plugin's other ACTIVE manifests
// become SUPERSEDED.
//
// A manifest is identified by its content: source_hash holds the
// artifact_hash (UNIQUE; for an empty lockfile it equals the SHA-256 of the
// source, which is what PluginManifestActivate stores). So:
//   - the same plugin, version and artifact again is idempotent
//     (DeployUnchanged while ACTIVE, DeployReactivated otherwise);
//   - the same artifact under another plugin or version, or the same plugin
//     and version with other content, is refused with job.ErrConflict: a version
//     names one content, and one stored artifact belongs to one version.
func (db *DB) PluginDeploy(ctx context.Context, now time.Time, d Deployment) (DeployResult, error) {
	if err := d.Check(); err != nil {
		return DeployResult{}, err
	}
	if d.Shadow {
		return db.pluginDeployShadow(ctx, now, d)
	}
	var res DeployResult
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(now)
		var id int64
		var plugin, version, status sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT id, plugin_name, version, status FROM cf_plugin_manifest
			WHERE source_hash = ?`, d.ArtifactHash).Scan(&id, &plugin, &version, &status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find artifact: %w", err)
		default:
			r, done, err := DeployOver(d, StoredArtifact{ID: id, Plugin: plugin.String, Version: version.String, Status: status.String})
			if err != nil || done {
				res = r
				return err
			}
		}
		if id == 0 {
			var other int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM cf_plugin_manifest
				WHERE plugin_name = ? AND version = ? LIMIT 1`, d.Plugin, d.Version).Scan(&other)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find version: %w", err)
			default:
				return DeployVersionTaken(d, other)
			}
		}
		if id == 0 {
			res.Outcome = DeployCreated
		} else {
			res.Outcome = DeployReactivated
		}
		if id, err = storeManifest(ctx, tx, d, id, "ACTIVE", ts); err != nil {
			return err
		}
		res.ManifestID = id
		r, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
			WHERE plugin_name = ? AND status = 'ACTIVE' AND id <> ?`, d.Plugin, id)
		if err != nil {
			return fmt.Errorf("supersede older manifests: %w", err)
		}
		res.Superseded, _ = r.RowsAffected()
		return nil
	})
	if err != nil {
		return DeployResult{}, fmt.Errorf("deploy %s v%s: %w", d.Plugin, d.Version, err)
	}
	return res, nil
}

// storeManifest stores d as manifest id with status (ACTIVE, deployed now,
// or SHADOW, not deployed), inserting it when id is 0, after the plugin's
// config row, its publisher and its environment; it returns the id.
func storeManifest(ctx context.Context, tx *sql.Tx, d Deployment, id int64, status, ts string) (int64, error) {
	if err := pluginConfigEnsure(ctx, tx, d.Plugin, ts); err != nil {
		return 0, err
	}
	publisher, err := publisherUpsert(ctx, tx, d, ts)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO cf_plugin_environment (hash, lockfile_content, created_at, last_used)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (hash) DO UPDATE SET lockfile_content = excluded.lockfile_content, last_used = excluded.last_used`,
		d.EnvHash, d.Lockfile, ts, ts); err != nil {
		return 0, fmt.Errorf("upsert environment: %w", err)
	}
	var sig any
	if d.Signature != "" {
		sig = d.Signature
	}
	reqs, err := d.RequirementsJSON()
	if err != nil {
		return 0, err
	}
	var deployed any // a SHADOW manifest is not deployed yet
	if status == "ACTIVE" {
		deployed = ts
	}
	if id == 0 {
		err = tx.QueryRowContext(ctx, `INSERT INTO cf_plugin_manifest
			(plugin_name, version, source_code, source_hash, status, signature, created_at, deployed_at,
			 env_hash, artifact_hash, publisher_id, system_requirements)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			d.Plugin, d.Version, d.SourceCode, d.ArtifactHash, status, sig, ts, deployed,
			d.EnvHash, d.ArtifactHash, publisher, reqs).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("insert manifest: %w", err)
		}
		return id, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = ?, deployed_at = COALESCE(?, deployed_at),
		signature = ?, publisher_id = ?, env_hash = ?, artifact_hash = ?, system_requirements = ?,
		validation_error = NULL WHERE id = ?`,
		status, deployed, sig, publisher, d.EnvHash, d.ArtifactHash, reqs, id); err != nil {
		return 0, fmt.Errorf("store manifest %d as %s: %w", id, status, err)
	}
	return id, nil
}

// publisherUpsert finds or creates the publisher of d and records its
// activity; it returns the cf_publisher id.
func publisherUpsert(ctx context.Context, tx *sql.Tx, d Deployment, ts string) (int64, error) {
	var email any
	if d.PublisherEmail != "" {
		email = d.PublisherEmail
	}
	var id int64
	if d.AzureOID != "" {
		err := tx.QueryRowContext(ctx, `INSERT INTO cf_publisher (azure_oid, name, email, created_at, last_active)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (azure_oid) DO UPDATE SET name = excluded.name,
				email = COALESCE(excluded.email, email), last_active = excluded.last_active
			RETURNING id`, d.AzureOID, d.PublisherName, email, ts, ts).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("upsert publisher: %w", err)
		}
		return id, nil
	}
	err := tx.QueryRowContext(ctx, `SELECT id FROM cf_publisher WHERE azure_oid IS NULL AND name = ?
		ORDER BY id LIMIT 1`, d.PublisherName).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err = tx.QueryRowContext(ctx, `INSERT INTO cf_publisher (name, email, created_at, last_active)
			VALUES (?, ?, ?, ?) RETURNING id`, d.PublisherName, email, ts, ts).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("insert publisher: %w", err)
		}
	case err != nil:
		return 0, fmt.Errorf("find publisher: %w", err)
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE cf_publisher SET email = COALESCE(?, email), last_active = ?
			WHERE id = ?`, email, ts, id); err != nil {
			return 0, fmt.Errorf("update publisher: %w", err)
		}
	}
	return id, nil
}

// EnvironmentLockfile returns the lockfile of environment hash, or
// job.ErrNotFound.
func (db *DB) EnvironmentLockfile(ctx context.Context, hash string) (string, error) {
	var lock sql.NullString
	err := db.reader.QueryRowContext(ctx, `SELECT lockfile_content FROM cf_plugin_environment WHERE hash = ?`,
		hash).Scan(&lock)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("environment %s: %w", hash, job.ErrNotFound)
	case err != nil:
		return "", fmt.Errorf("environment %s: %w", hash, err)
	}
	return lock.String, nil
}

// ManifestRow is one whole cf_plugin_manifest row, for checks and tests.
type ManifestRow struct {
	ID                                   int64
	Plugin, Version, Status              string
	SourceCode, SourceHash, ArtifactHash string
	EnvHash, Signature                   string
	PublisherID                          int64
	DeployedAt                           time.Time
}

// PluginManifestRows lists a plugin's manifests with their source, oldest
// first.
func (db *DB) PluginManifestRows(ctx context.Context, plugin string) ([]ManifestRow, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, plugin_name, version, status, source_code, source_hash,
		artifact_hash, env_hash, signature, publisher_id, deployed_at
		FROM cf_plugin_manifest WHERE plugin_name = ? ORDER BY id`, plugin)
	if err != nil {
		return nil, fmt.Errorf("manifests of %s: %w", plugin, err)
	}
	defer rows.Close()
	var out []ManifestRow
	for rows.Next() {
		var m ManifestRow
		var status, artifact, env, sig, deployed sql.NullString
		var publisher sql.NullInt64
		if err := rows.Scan(&m.ID, &m.Plugin, &m.Version, &status, &m.SourceCode, &m.SourceHash,
			&artifact, &env, &sig, &publisher, &deployed); err != nil {
			return nil, fmt.Errorf("manifests of %s: %w", plugin, err)
		}
		m.Status, m.ArtifactHash, m.EnvHash, m.Signature = status.String, artifact.String, env.String, sig.String
		m.PublisherID = publisher.Int64
		if deployed.Valid {
			if m.DeployedAt, err = parseTime(deployed.String); err != nil {
				return nil, fmt.Errorf("manifest %d deployed_at: %w", m.ID, err)
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
