package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Shadow runs on PostgreSQL: the same methods, meaning and errors as
// package db's (db/shadow.go); the rules are package db's (shadowpath.go).

const shadowRunColumns = `id, plugin_name, version, manifest_id, base_version, base_manifest_id, state, jobs,
	created_at, ended_at`

func scanShadowRun(row pgx.Row) (job.ShadowRun, error) {
	var r job.ShadowRun
	var ended *time.Time
	if err := row.Scan(&r.ID, &r.Plugin, &r.Version, &r.ManifestID, &r.BaseVersion, &r.BaseManifestID, &r.State,
		&r.Jobs, &r.CreatedAt, &ended); err != nil {
		return job.ShadowRun{}, err
	}
	r.CreatedAt = r.CreatedAt.UTC()
	if ended != nil {
		t := ended.UTC()
		r.EndedAt = &t
	}
	return r, nil
}

// readShadowActive reports whether some shadow run is RUNNING.
func (d *DB) readShadowActive(ctx context.Context) (bool, error) {
	var active bool
	err := d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sentinel_shadow_runs WHERE state = 'RUNNING')`).Scan(&active)
	return active, err
}

// pluginDeployShadow stores dep as a SHADOW manifest and begins its shadow
// run, in one transaction, as package db's does.
func (d *DB) pluginDeployShadow(ctx context.Context, now time.Time, dep db.Deployment) (db.DeployResult, error) {
	reqs, err := dep.RequirementsJSON()
	if err != nil {
		return db.DeployResult{}, fmt.Errorf("shadow deploy %s v%s: %w", dep.Plugin, dep.Version, err)
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
		var baseID int64
		var baseVersion string
		var baseSince *time.Time
		err := tx.QueryRow(ctx, `SELECT id, version, COALESCE(deployed_at, created_at) FROM cf_plugin_manifest
			WHERE plugin_name = $1 AND status = 'ACTIVE'
			ORDER BY COALESCE(deployed_at, created_at) DESC NULLS LAST, id DESC LIMIT 1`, dep.Plugin).
			Scan(&baseID, &baseVersion, &baseSince)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return db.ShadowNoBase(dep.Plugin)
		case err != nil:
			return fmt.Errorf("find ACTIVE manifest: %w", err)
		}
		var running string
		err = tx.QueryRow(ctx, `SELECT version FROM sentinel_shadow_runs WHERE plugin_name = $1 AND state = 'RUNNING'`,
			dep.Plugin).Scan(&running)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find shadow run: %w", err)
		default:
			return db.ShadowAlreadyRunning(dep.Plugin, running)
		}
		var a db.StoredArtifact
		var plugin, version, status *string
		err = tx.QueryRow(ctx, `SELECT id, plugin_name, version, status::text FROM cf_plugin_manifest
			WHERE source_hash = $1`, dep.ArtifactHash).Scan(&a.ID, &plugin, &version, &status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			var other int64
			err := tx.QueryRow(ctx, `SELECT id FROM cf_plugin_manifest WHERE plugin_name = $1 AND version = $2 LIMIT 1`,
				dep.Plugin, dep.Version).Scan(&other)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find version: %w", err)
			default:
				return db.DeployVersionTaken(dep, other)
			}
		case err != nil:
			return fmt.Errorf("find artifact: %w", err)
		default:
			a.Plugin, a.Version, a.Status = deref(plugin), deref(version), deref(status)
			if err := db.ShadowOverStored(dep, a); err != nil {
				return err
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
		id := a.ID
		if id == 0 {
			err = tx.QueryRow(ctx, `INSERT INTO cf_plugin_manifest
				(plugin_name, version, source_code, source_hash, status, signature, created_at,
				 env_hash, artifact_hash, publisher_id, system_requirements)
				VALUES ($1, $2, $3, $4, 'SHADOW', $5, $6, $7, $4, $8, $9) RETURNING id`,
				dep.Plugin, dep.Version, dep.SourceCode, dep.ArtifactHash, sig, ts,
				dep.EnvHash, publisher, reqs).Scan(&id)
			if err != nil {
				return fmt.Errorf("insert manifest: %w", err)
			}
		} else if _, err := tx.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'SHADOW', signature = $1,
				publisher_id = $2, env_hash = $3, artifact_hash = $4, system_requirements = $5, validation_error = NULL
				WHERE id = $6`, sig, publisher, dep.EnvHash, dep.ArtifactHash, reqs, id); err != nil {
			return fmt.Errorf("store shadow manifest %d: %w", id, err)
		}
		run := job.ShadowRun{Plugin: dep.Plugin, Version: dep.Version, ManifestID: id, BaseVersion: baseVersion,
			BaseManifestID: baseID, State: job.ShadowRunning, CreatedAt: ts}
		if err := tx.QueryRow(ctx, `INSERT INTO sentinel_shadow_runs
			(plugin_name, manifest_id, version, base_manifest_id, base_version, state, created_at)
			VALUES ($1, $2, $3, $4, $5, 'RUNNING', $6) RETURNING id`,
			dep.Plugin, id, dep.Version, baseID, baseVersion, ts).Scan(&run.ID); err != nil {
			return fmt.Errorf("insert shadow run: %w", err)
		}
		if run.Jobs, err = shadowQueue(ctx, tx, now, run, baseSince, db.ShadowFiles(dep.ShadowFiles)); err != nil {
			return err
		}
		res = db.DeployResult{ManifestID: id, Outcome: db.DeployShadowed, Shadow: &run}
		return nil
	})
	d.shadow.Forget()
	if err != nil {
		return db.DeployResult{}, fmt.Errorf("shadow deploy %s v%s: %w", dep.Plugin, dep.Version, blameInput(err))
	}
	return res, nil
}

// shadowQueue queues run's jobs as package db's does.
func shadowQueue(ctx context.Context, tx pgx.Tx, now time.Time, run job.ShadowRun, baseSince *time.Time, limit int) (int64, error) {
	topics, err := pgSource{tx}.TopicSinks(ctx, run.Plugin)
	if err != nil {
		return 0, fmt.Errorf("topics of %s: %w", run.Plugin, err)
	}
	rows, err := tx.Query(ctx, `SELECT q.id, q.file_version_id, COALESCE(q.config_overrides, ''),
		q.artifacts_json, q.metrics_json
		FROM cf_processing_queue q
		WHERE q.plugin_name = $1 AND q.status = 'COMPLETED' AND q.file_version_id IS NOT NULL
		  AND ($2::timestamp IS NULL OR COALESCE(q.claim_time, q.end_time) >= $2::timestamp)
		  AND NOT EXISTS (SELECT 1 FROM sentinel_shadow_jobs s WHERE s.job_id = q.id)
		ORDER BY q.id DESC`, run.Plugin, utcWall(baseSince))
	if err != nil {
		return 0, fmt.Errorf("base jobs: %w", err)
	}
	type base struct {
		id, fv             int64
		overrides          string
		artifacts, metrics *string
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
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("base jobs: %w", err)
	}
	due := now.Add(db.ShadowDelay)
	for _, b := range bases {
		overrides, err := db.ShadowOverrides(run.Plugin, slices.Clone(topics), b.overrides, run.ID)
		if err != nil {
			return 0, err
		}
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at, enqueued_at, next_run_at)
			VALUES ($1, $2, $3, 'QUEUED', $4, 0, $5, $5, $6) RETURNING id`,
			b.fv, run.Plugin, overrides, db.ShadowPriority, now, due).Scan(&id); err != nil {
			return 0, fmt.Errorf("queue shadow job: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO sentinel_shadow_jobs
			(job_id, run_id, manifest_id, file_version_id, base_job_id, base_artifacts, base_metrics)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, run.ID, run.ManifestID, b.fv, b.id, b.artifacts, b.metrics); err != nil {
			return 0, fmt.Errorf("record shadow job: %w", err)
		}
	}
	n := int64(len(bases))
	if _, err := tx.Exec(ctx, `UPDATE sentinel_shadow_runs SET jobs = $1 WHERE id = $2`, n, run.ID); err != nil {
		return 0, fmt.Errorf("count shadow jobs: %w", err)
	}
	return n, nil
}

// utcWall is t as a UTC wall-clock time, the form of the queue's claim_time
// (TIMESTAMP WITHOUT TIME ZONE); nil stays nil.
func utcWall(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	w := time.Date(u.Year(), u.Month(), u.Day(), u.Hour(), u.Minute(), u.Second(), u.Nanosecond(), time.UTC)
	return &w
}

// ShadowRuns lists the shadow runs of plugin ("" for all), newest first.
func (d *DB) ShadowRuns(ctx context.Context, plugin string) ([]job.ShadowRun, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+shadowRunColumns+` FROM sentinel_shadow_runs
		WHERE $1 = '' OR plugin_name = $1 ORDER BY id DESC`, plugin)
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

// queryRower is a pool or a transaction.
type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// shadowRunOf finds the newest shadow run of plugin's version (over
// baseVersion, unless it is ""), or says why there is none.
func shadowRunOf(ctx context.Context, q queryRower, plugin, version, baseVersion string) (job.ShadowRun, error) {
	r, err := scanShadowRun(q.QueryRow(ctx, `SELECT `+shadowRunColumns+` FROM sentinel_shadow_runs
		WHERE plugin_name = $1 AND version = $2 AND ($3 = '' OR base_version = $3) ORDER BY id DESC LIMIT 1`,
		plugin, version, baseVersion))
	if !errors.Is(err, pgx.ErrNoRows) {
		return r, err
	}
	var versions []string
	if err := q.QueryRow(ctx, `SELECT COALESCE(array_agg(version::text ORDER BY id), '{}') FROM cf_plugin_manifest
		WHERE plugin_name = $1`, plugin).Scan(&versions); err != nil {
		return job.ShadowRun{}, err
	}
	return job.ShadowRun{}, db.ShadowRunMissing(plugin, version, baseVersion, versions)
}

// ShadowCompare compares the shadow run of plugin's version over
// baseVersion with what baseVersion had written, as package db's does.
func (d *DB) ShadowCompare(ctx context.Context, plugin, baseVersion, version string) (job.ShadowComparison, error) {
	if err := db.CheckShadowName(plugin, version); err != nil {
		return job.ShadowComparison{}, err
	}
	if err := db.CheckShadowName(plugin, baseVersion); err != nil {
		return job.ShadowComparison{}, err
	}
	run, err := shadowRunOf(ctx, d.pool, plugin, version, baseVersion)
	if err != nil {
		return job.ShadowComparison{}, err
	}
	rows, err := d.pool.Query(ctx, `SELECT j.file_version_id, j.base_job_id, j.job_id,
		COALESCE(j.base_artifacts, ''), COALESCE(j.base_metrics, ''),
		COALESCE(q.status::text, 'QUEUED'), q.id IS NOT NULL, COALESCE(q.artifacts_json, ''), COALESCE(q.metrics_json, ''),
		(SELECT ARRAY[r.path::text, l.rel_path::text] FROM cf_file_version v
			JOIN cf_file_location l ON l.id = v.location_id
			JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = j.file_version_id)
		FROM sentinel_shadow_jobs j LEFT JOIN cf_processing_queue q ON q.id = j.job_id
		WHERE j.run_id = $1 ORDER BY j.file_version_id, j.job_id`, run.ID)
	if err != nil {
		return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
	}
	defer rows.Close()
	var pairs []db.ShadowPair
	for rows.Next() {
		var p db.ShadowPair
		var status string
		var location []*string
		if err := rows.Scan(&p.FileVersionID, &p.BaseJobID, &p.ShadowJobID, &p.BaseArtifacts, &p.BaseMetrics,
			&status, &p.ShadowFound, &p.ShadowArtifacts, &p.ShadowMetrics, &location); err != nil {
			return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
		}
		p.ShadowStatus = job.Status(status)
		if len(location) == 2 && location[0] != nil && location[1] != nil {
			p.FilePath = db.JoinLocated(*location[0], *location[1])
		}
		pairs = append(pairs, p)
	}
	if err := rows.Err(); err != nil {
		return job.ShadowComparison{}, fmt.Errorf("compare shadow run %d: %w", run.ID, err)
	}
	return db.ShadowComparisonOf(run, pairs)
}

// ShadowEnd promotes or discards the RUNNING shadow run of plugin's
// version, as package db's does.
func (d *DB) ShadowEnd(ctx context.Context, now time.Time, plugin, version string, promote bool) (job.ShadowEnd, error) {
	if err := db.CheckShadowName(plugin, version); err != nil {
		return job.ShadowEnd{}, err
	}
	ts := now.UTC()
	var out job.ShadowEnd
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		out = job.ShadowEnd{}
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		run, err := shadowRunOf(ctx, tx, plugin, version, "")
		if err != nil {
			return err
		}
		if run.State != job.ShadowRunning {
			return db.ShadowNotRunning(run)
		}
		state := job.ShadowDiscarded
		if promote {
			state = job.ShadowPromoted
			if _, err := tx.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'ACTIVE', deployed_at = $1 WHERE id = $2`,
				ts, run.ManifestID); err != nil {
				return fmt.Errorf("activate manifest %d: %w", run.ManifestID, err)
			}
			if err := supersede(ctx, tx, plugin, run.ManifestID, &out.Superseded); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT COALESCE(env_hash, '') FROM cf_plugin_manifest WHERE id = $1`,
				run.ManifestID).Scan(&out.EnvHash); err != nil {
				return fmt.Errorf("environment of manifest %d: %w", run.ManifestID, err)
			}
		} else if _, err := tx.Exec(ctx, `UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
			WHERE id = $1 AND status = 'SHADOW'`, run.ManifestID); err != nil {
			return fmt.Errorf("set aside manifest %d: %w", run.ManifestID, err)
		}
		tag, err := tx.Exec(ctx, `UPDATE cf_processing_queue SET
				status = 'SKIPPED', error_message = $1, end_time = $2, next_run_at = NULL, claimed_by = NULL, updated_at = $3
			WHERE id IN (SELECT job_id FROM sentinel_shadow_jobs WHERE run_id = $4)
			  AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING')`, db.ShadowSkippedMessage, utcWall(&ts), now, run.ID)
		if err != nil {
			return fmt.Errorf("skip shadow jobs: %w", err)
		}
		out.Cancelled = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `UPDATE sentinel_shadow_runs SET state = $1, ended_at = $2 WHERE id = $3`,
			state, ts, run.ID); err != nil {
			return fmt.Errorf("end shadow run %d: %w", run.ID, err)
		}
		run.State, run.EndedAt = state, &ts
		out.Run = run
		return nil
	})
	d.shadow.Forget()
	if err != nil {
		return job.ShadowEnd{}, fmt.Errorf("shadow %s v%s: %w", plugin, version, err)
	}
	return out, nil
}

// Manifest reads the manifest with id, whatever its status (a shadow
// job's).
func (s pgSource) Manifest(ctx context.Context, id int64) (db.ActiveManifest, bool, error) {
	var src, env, artifact *string
	err := s.tx.QueryRow(ctx, `SELECT source_code, env_hash, artifact_hash FROM cf_plugin_manifest WHERE id = $1`,
		id).Scan(&src, &env, &artifact)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return db.ActiveManifest{}, false, nil
	case err != nil:
		return db.ActiveManifest{}, false, err
	}
	return db.ActiveManifest{SourceCode: deref(src), EnvHash: deref(env), ArtifactHash: deref(artifact)}, true, nil
}
