package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/casparian/sentinel/job"
)

// Shadow runs on SQLite (the rules are in shadowpath.go).

const shadowRunColumns = `id, plugin_name, version, manifest_id, base_version, base_manifest_id, state, jobs,
	created_at, ended_at`

func scanShadowRun(row interface{ Scan(...any) error }) (job.ShadowRun, error) {
	var r job.ShadowRun
	var created, ended nullTime
	if err := row.Scan(&r.ID, &r.Plugin, &r.Version, &r.ManifestID, &r.BaseVersion, &r.BaseManifestID, &r.State,
		&r.Jobs, &created, &ended); err != nil {
		return job.ShadowRun{}, err
	}
	r.CreatedAt = created.Time
	if ended.Valid {
		t := ended.Time
		r.EndedAt = &t
	}
	return r, nil
}

// readShadowActive reports whether some shadow run is RUNNING.
func (db *DB) readShadowActive(ctx context.Context) (bool, error) {
	var active bool
	err := db.reader.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sentinel_shadow_runs WHERE state = 'RUNNING')`).
		Scan(&active)
	return active, err
}

// pluginDeployShadow stores d as a SHADOW manifest and begins its shadow
// run, in one transaction: see PluginDeploy.
func (db *DB) pluginDeployShadow(ctx context.Context, now time.Time, d Deployment) (DeployResult, error) {
	var res DeployResult
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(now)
		var baseID int64
		var baseVersion string
		var baseDeployed sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT id, version, COALESCE(deployed_at, created_at) FROM cf_plugin_manifest
			WHERE plugin_name = ? AND status = 'ACTIVE' ORDER BY `+manifestNewestFirst+` LIMIT 1`, d.Plugin).
			Scan(&baseID, &baseVersion, &baseDeployed)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ShadowNoBase(d.Plugin)
		case err != nil:
			return fmt.Errorf("find ACTIVE manifest: %w", err)
		}
		var running string
		err = tx.QueryRowContext(ctx, `SELECT version FROM sentinel_shadow_runs WHERE plugin_name = ? AND state = 'RUNNING'`,
			d.Plugin).Scan(&running)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find shadow run: %w", err)
		default:
			return ShadowAlreadyRunning(d.Plugin, running)
		}
		var id int64
		var plugin, version, status sql.NullString
		err = tx.QueryRowContext(ctx, `SELECT id, plugin_name, version, status FROM cf_plugin_manifest
			WHERE source_hash = ?`, d.ArtifactHash).Scan(&id, &plugin, &version, &status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			var other int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM cf_plugin_manifest WHERE plugin_name = ? AND version = ? LIMIT 1`,
				d.Plugin, d.Version).Scan(&other)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find version: %w", err)
			default:
				return DeployVersionTaken(d, other)
			}
		case err != nil:
			return fmt.Errorf("find artifact: %w", err)
		default:
			if err := ShadowOverStored(d, StoredArtifact{ID: id, Plugin: plugin.String, Version: version.String, Status: status.String}); err != nil {
				return err
			}
		}
		if id, err = storeManifest(ctx, tx, d, id, "SHADOW", ts); err != nil {
			return err
		}
		run := job.ShadowRun{Plugin: d.Plugin, Version: d.Version, ManifestID: id, BaseVersion: baseVersion,
			BaseManifestID: baseID, State: job.ShadowRunning, CreatedAt: now}
		if err := tx.QueryRowContext(ctx, `INSERT INTO sentinel_shadow_runs
			(plugin_name, manifest_id, version, base_manifest_id, base_version, state, created_at)
			VALUES (?, ?, ?, ?, ?, 'RUNNING', ?) RETURNING id`,
			d.Plugin, id, d.Version, baseID, baseVersion, ts).Scan(&run.ID); err != nil {
			return fmt.Errorf("insert shadow run: %w", err)
		}
		if run.Jobs, err = shadowQueue(ctx, tx, now, run, baseDeployed.String, ShadowFiles(d.ShadowFiles)); err != nil {
			return err
		}
		res = DeployResult{ManifestID: id, Outcome: DeployShadowed, Shadow: &run}
		return nil
	})
	db.shadow.Forget()
	if err != nil {
		return DeployResult{}, fmt.Errorf("shadow deploy %s v%s: %w", d.Plugin, d.Version, err)
	}
	return res, nil
}

// shadowQueue queues run's jobs: one per file version of the newest limit
// the base version completed (jobs claimed since it was deployed), each
// into shadow sinks, due ShadowDelay from now.
func shadowQueue(ctx context.Context, tx *sql.Tx, now time.Time, run job.ShadowRun, baseSince string, limit int) (int64, error) {
	topics, err := topicSinksTx(ctx, tx, run.Plugin)
	if err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT q.id, q.file_version_id, COALESCE(q.config_overrides, ''),
		q.artifacts_json, q.metrics_json
		FROM cf_processing_queue q
		WHERE q.plugin_name = ? AND q.status = 'COMPLETED' AND q.file_version_id IS NOT NULL
		  AND (? = '' OR julianday(COALESCE(q.claim_time, q.end_time)) >= julianday(?))
		  AND NOT EXISTS (SELECT 1 FROM sentinel_shadow_jobs s WHERE s.job_id = q.id)
		ORDER BY q.id DESC`, run.Plugin, baseSince, baseSince)
	if err != nil {
		return 0, fmt.Errorf("base jobs: %w", err)
	}
	type base struct {
		id, fv             int64
		overrides          string
		artifacts, metrics sql.NullString
	}
	var bases []base
	seen := map[int64]bool{}
	for rows.Next() && len(bases) < limit {
		var b base
		if err := rows.Scan(&b.id, &b.fv, &b.overrides, &b.artifacts, &b.metrics); err != nil {
			rows.Close()
			return 0, fmt.Errorf("base jobs: %w", err)
		}
		if !seen[b.fv] {
			seen[b.fv] = true
			bases = append(bases, b)
		}
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("base jobs: %w", err)
	}
	ts, due := formatTime(now), unixMillis(now.Add(ShadowDelay))
	for _, b := range bases {
		overrides, err := ShadowOverrides(run.Plugin, slices.Clone(topics), b.overrides, run.ID)
		if err != nil {
			return 0, err
		}
		var id int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at, enqueued_at, next_run_at)
			VALUES (?, ?, ?, 'QUEUED', ?, 0, ?, ?, ?) RETURNING id`,
			b.fv, run.Plugin, overrides, ShadowPriority, ts, unixMillis(now), due).Scan(&id); err != nil {
			return 0, fmt.Errorf("queue shadow job: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sentinel_shadow_jobs
			(job_id, run_id, manifest_id, file_version_id, base_job_id, base_artifacts, base_metrics)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, run.ID, run.ManifestID, b.fv, b.id, b.artifacts, b.metrics); err != nil {
			return 0, fmt.Errorf("record shadow job: %w", err)
		}
	}
	n := int64(len(bases))
	if _, err := tx.ExecContext(ctx, `UPDATE sentinel_shadow_runs SET jobs = ? WHERE id = ?`, n, run.ID); err != nil {
		return 0, fmt.Errorf("count shadow jobs: %w", err)
	}
	return n, nil
}

// topicSinksTx reads the plugin's cf_topic_config rows in id order.
func topicSinksTx(ctx context.Context, tx *sql.Tx, plugin string) ([]Sink, error) {
	rows, err := tx.QueryContext(ctx, topicSinksSQL, plugin)
	if err != nil {
		return nil, fmt.Errorf("topics of %s: %w", plugin, err)
	}
	defer rows.Close()
	var sinks []Sink
	for rows.Next() {
		var topic, uri, mode, schema sql.NullString
		if err := rows.Scan(&topic, &uri, &mode, &schema); err != nil {
			return nil, fmt.Errorf("topics of %s: %w", plugin, err)
		}
		sinks = append(sinks, Sink{Topic: topic.String, URI: uri.String, Mode: mode.String, SchemaDef: schema.String})
	}
	return sinks, rows.Err()
}

// ShadowRuns lists the shadow runs of plugin ("" for all), newest first.
func (db *DB) ShadowRuns(ctx context.Context, plugin string) ([]job.ShadowRun, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT `+shadowRunColumns+` FROM sentinel_shadow_runs
		WHERE ? = '' OR plugin_name = ? ORDER BY id DESC`, plugin, plugin)
	if err != nil {
		return nil, fmt.Errorf("shadow runs: %w", err)
	}
	defer rows.Close()
	out := []job.ShadowRun{}
	for rows.Next() {
		r, err := scanShadowRun(rows)
		if err != nil {
			return nil, fmt.Errorf("shadow runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// shadowRunOf finds the newest shadow run of plugin's version (over
// baseVersion, unless it is ""), or says why there is none.
func shadowRunOf(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, plugin, version, baseVersion string) (job.ShadowRun, error) {
	r, err := scanShadowRun(q.QueryRowContext(ctx, `SELECT `+shadowRunColumns+` FROM sentinel_shadow_runs
		WHERE plugin_name = ? AND version = ? AND (? = '' OR base_version = ?) ORDER BY id DESC LIMIT 1`,
		plugin, version, baseVersion, baseVersion))
	if !errors.Is(err, sql.ErrNoRows) {
		return r, err
	}
	var list string
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(json_group_array(version), '[]') FROM cf_plugin_manifest
		WHERE plugin_name = ?`, plugin).Scan(&list); err != nil {
		return job.ShadowRun{}, err
	}
	var versions []string
	_ = json.Unmarshal([]byte(list), &versions)
	return job.ShadowRun{}, ShadowRunMissing(plugin, version, baseVersion, versions)
}

// ShadowCompare compares the shadow run of plugin's version over
// baseVersion with what baseVersion had written, per file version.
func (db *DB) ShadowCompare(ctx context.Context, plugin, baseVersion, version string) (job.ShadowComparison, error) {
	if err := CheckShadowName(plugin, version); err != nil {
		return job.ShadowComparison{}, err
	}
	if err := CheckShadowName(plugin, baseVersion); err != nil {
		return job.ShadowComparison{}, err
	}
	run, err := shadowRunOf(ctx, db.reader, plugin, version, baseVersion)
	if err != nil {
		return job.ShadowComparison{}, err
	}
	rows, err := db.reader.QueryContext(ctx, `SELECT j.file_version_id, j.base_job_id, j.job_id,
		COALESCE(j.base_artifacts, ''), COALESCE(j.base_metrics, ''),
		COALESCE(q.status, 'QUEUED'), q.id IS NOT NULL, COALESCE(q.artifacts_json, ''), COALESCE(q.metrics_json, ''),
		(SELECT r.path || char(0) || l.rel_path FROM cf_file_version v
			JOIN cf_file_location l ON l.id = v.location_id
			JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = j.file_version_id)
		FROM sentinel_shadow_jobs j LEFT JOIN cf_processing_queue q ON q.id = j.job_id
		WHERE j.run_id = ? ORDER BY j.file_version_id, j.job_id`, run.ID)
	if err != nil {
		return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
	}
	defer rows.Close()
	var pairs []ShadowPair
	for rows.Next() {
		var p ShadowPair
		var status string
		var path sql.NullString
		if err := rows.Scan(&p.FileVersionID, &p.BaseJobID, &p.ShadowJobID, &p.BaseArtifacts, &p.BaseMetrics,
			&status, &p.ShadowFound, &p.ShadowArtifacts, &p.ShadowMetrics, &path); err != nil {
			return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
		}
		p.ShadowStatus, p.FilePath = job.Status(status), locatedPath(path)
		pairs = append(pairs, p)
	}
	if err := rows.Err(); err != nil {
		return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
	}
	return ShadowComparisonOf(run, pairs)
}

// ShadowEnd promotes (promote) or discards the RUNNING shadow run of
// plugin's version, in one transaction: its QUEUED shadow jobs are
// SKIPPED; a promotion makes the version ACTIVE (the others SUPERSEDED, as
// a deploy does), a discard leaves the ACTIVE version as it is and the
// shadow manifest SUPERSEDED.
func (db *DB) ShadowEnd(ctx context.Context, now time.Time, plugin, version string, promote bool) (job.ShadowEnd, error) {
	if err := CheckShadowName(plugin, version); err != nil {
		return job.ShadowEnd{}, err
	}
	var out job.ShadowEnd
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		out = job.ShadowEnd{}
		run, err := shadowRunOf(ctx, tx, plugin, version, "")
		if err != nil {
			return err
		}
		if run.State != job.ShadowRunning {
			return ShadowNotRunning(run)
		}
		ts := formatTime(now)
		state := job.ShadowDiscarded
		if promote {
			state = job.ShadowPromoted
			if _, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = 'ACTIVE', deployed_at = ? WHERE id = ?`,
				ts, run.ManifestID); err != nil {
				return fmt.Errorf("activate manifest %d: %w", run.ManifestID, err)
			}
			r, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
				WHERE plugin_name = ? AND status = 'ACTIVE' AND id <> ?`, plugin, run.ManifestID)
			if err != nil {
				return fmt.Errorf("supersede older manifests: %w", err)
			}
			out.Superseded, _ = r.RowsAffected()
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(env_hash, '') FROM cf_plugin_manifest WHERE id = ?`,
				run.ManifestID).Scan(&out.EnvHash); err != nil {
				return fmt.Errorf("environment of manifest %d: %w", run.ManifestID, err)
			}
		} else if _, err := tx.ExecContext(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
			WHERE id = ? AND status = 'SHADOW'`, run.ManifestID); err != nil {
			return fmt.Errorf("set aside manifest %d: %w", run.ManifestID, err)
		}
		r, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				status = 'SKIPPED', error_message = ?, end_time = ?, next_run_at = NULL, claimed_by = NULL, updated_at = ?
			WHERE id IN (SELECT job_id FROM sentinel_shadow_jobs WHERE run_id = ?)
			  AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING')`, ShadowSkippedMessage, ts, ts, run.ID)
		if err != nil {
			return fmt.Errorf("skip shadow jobs: %w", err)
		}
		out.Cancelled, _ = r.RowsAffected()
		if _, err := tx.ExecContext(ctx, `UPDATE sentinel_shadow_runs SET state = ?, ended_at = ? WHERE id = ?`,
			state, ts, run.ID); err != nil {
			return fmt.Errorf("end shadow run %d: %w", run.ID, err)
		}
		run.State, run.EndedAt = state, &now
		out.Run = run
		return nil
	})
	db.shadow.Forget()
	if err != nil {
		return job.ShadowEnd{}, fmt.Errorf("shadow %s v%s: %w", plugin, version, err)
	}
	return out, nil
}
