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

// Per-plugin settings (sentinel_plugin_settings, migration 0009), backfills
// and reruns, as package db's (db/pluginsettings.go). The claim statement
// skips paused plugins and carries the job timeout (claims.go); a requeue
// reads max_retries (retriesSQL).

// pausedFilter is the claim statement's test that a job's plugin is not
// paused: an anti-join on a table with a row per configured plugin.
const pausedFilter = ` AND NOT EXISTS (SELECT 1 FROM sentinel_plugin_settings s
			WHERE s.plugin_name = cf_processing_queue.plugin_name AND s.paused_at IS NOT NULL)`

const settingsColumns = `plugin_name, paused_at, job_timeout_ms, max_retries, reuse, updated_at`

func scanSettings(row pgx.Row) (string, job.PluginSettings, error) {
	var name string
	var paused, updated *time.Time
	var c db.SettingsColumns
	if err := row.Scan(&name, &paused, &c.JobTimeoutMS, &c.MaxRetries, &c.Reuse, &updated); err != nil {
		return "", job.PluginSettings{}, err
	}
	return name, db.PluginSettingsOf(utc(paused), c, utc(updated)), nil
}

// pluginKnown reports job.ErrNotFound unless the plugin has a configuration
// or a manifest.
func pluginKnown(ctx context.Context, tx pgx.Tx, plugin string) error {
	var known bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM cf_plugin_config WHERE plugin_name = $1)
		OR EXISTS (SELECT 1 FROM cf_plugin_manifest WHERE plugin_name = $1)`, plugin).Scan(&known); err != nil {
		return err
	}
	if !known {
		return fmt.Errorf("plugin %q: %w", plugin, job.ErrNotFound)
	}
	return nil
}

// PluginPause pauses or resumes a plugin, as package db's. Resuming
// notifies casparian_queue with the plugin's name in the same transaction,
// so that every Sentinel (each listens there) claims its jobs at once.
func (d *DB) PluginPause(ctx context.Context, now time.Time, plugin string, pause bool) (job.PluginSettings, error) {
	plugin, err := db.CheckPluginName(plugin)
	if err != nil {
		return job.PluginSettings{}, err
	}
	var paused *time.Time
	if pause {
		paused = &now
	}
	var out job.PluginSettings
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		if err := pluginKnown(ctx, tx, plugin); err != nil {
			return err
		}
		row := tx.QueryRow(ctx, `INSERT INTO sentinel_plugin_settings (plugin_name, paused_at, updated_at)
			VALUES ($1, $2, $3)
			ON CONFLICT (plugin_name) DO UPDATE SET
				paused_at = CASE WHEN excluded.paused_at IS NULL THEN NULL
					ELSE COALESCE(sentinel_plugin_settings.paused_at, excluded.paused_at) END,
				updated_at = excluded.updated_at
			RETURNING `+settingsColumns, plugin, paused, now)
		if _, out, err = scanSettings(row); err != nil {
			return err
		}
		if !pause {
			_, err = tx.Exec(ctx, `SELECT pg_notify('`+QueueChannel+`', $1)`, plugin)
		}
		return err
	})
	if err != nil {
		return job.PluginSettings{}, fmt.Errorf("pause %s: %w", plugin, err)
	}
	return out, nil
}

// PluginSettingsSet changes a plugin's job timeout and max retries, as
// package db's.
func (d *DB) PluginSettingsSet(ctx context.Context, now time.Time, plugin string, u job.PluginSettingsUpdate) (job.PluginSettings, error) {
	plugin, err := db.CheckPluginName(plugin)
	if err != nil {
		return job.PluginSettings{}, err
	}
	var out job.PluginSettings
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		if err := pluginKnown(ctx, tx, plugin); err != nil {
			return err
		}
		var cur db.SettingsColumns
		err := tx.QueryRow(ctx, `SELECT job_timeout_ms, max_retries, reuse FROM sentinel_plugin_settings
			WHERE plugin_name = $1 FOR UPDATE`, plugin).Scan(&cur.JobTimeoutMS, &cur.MaxRetries, &cur.Reuse)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		next, err := cur.Apply(u)
		if err != nil {
			return err
		}
		row := tx.QueryRow(ctx, `INSERT INTO sentinel_plugin_settings (plugin_name, job_timeout_ms, max_retries, reuse, updated_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (plugin_name) DO UPDATE SET
				job_timeout_ms = excluded.job_timeout_ms, max_retries = excluded.max_retries, reuse = excluded.reuse,
				updated_at = excluded.updated_at
			RETURNING `+settingsColumns, plugin, next.JobTimeoutMS, next.MaxRetries, next.Reuse, now)
		_, out, err = scanSettings(row)
		return err
	})
	if err != nil {
		return job.PluginSettings{}, fmt.Errorf("set %s: %w", plugin, err)
	}
	return out, nil
}

// PluginBackfillFiles returns the backfill candidates of a plugin, as
// package db's.
func (d *DB) PluginBackfillFiles(ctx context.Context, plugin string) ([]db.BackfillFile, error) {
	rows, err := d.pool.Query(ctx, `SELECT v.id, l.rel_path, COALESCE(v.applied_tags, ''), v.modified_time
	FROM cf_file_location l
	JOIN cf_source_root r ON r.id = l.source_root_id AND COALESCE(r.active, 1) <> 0
	JOIN cf_file_version v ON v.id = l.current_version_id
	WHERE l.missing_since IS NULL
	  AND v.id NOT IN (SELECT file_version_id FROM cf_processing_queue WHERE plugin_name = $1 AND file_version_id IS NOT NULL)
	ORDER BY v.id`, plugin)
	if err != nil {
		return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
	}
	defer rows.Close()
	var out []db.BackfillFile
	for rows.Next() {
		var f db.BackfillFile
		var mtime *time.Time
		if err := rows.Scan(&f.VersionID, &f.RelPath, &f.AppliedTags, &mtime); err != nil {
			return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
		}
		f.ModTime = utc(mtime)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
	}
	return out, nil
}

// lockPluginQueue serialises the backfills and reruns of one plugin across
// Sentinels for the rest of tx, so that two at once cannot both queue a
// file.
func lockPluginQueue(ctx context.Context, tx pgx.Tx, plugin string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sentinel_backfill:' || $1))`, plugin)
	return err
}

// versionsWithJobs returns the file versions that have a job of plugin.
func versionsWithJobs(ctx context.Context, tx pgx.Tx, plugin string) (map[int64]bool, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT file_version_id FROM cf_processing_queue
		WHERE plugin_name = $1 AND file_version_id IS NOT NULL`, plugin)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
}

// PluginBackfill queues one job of plugin per file, as package db's. Each
// insert notifies casparian_queue through the queue's trigger.
func (d *DB) PluginBackfill(ctx context.Context, now time.Time, plugin string, files []db.BackfillFile) (int64, error) {
	if len(files) == 0 {
		return 0, nil
	}
	var n int64
	var reused []string
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		if err := lockPluginQueue(ctx, tx, plugin); err != nil {
			return err
		}
		have, err := versionsWithJobs(ctx, tx, plugin)
		if err != nil {
			return err
		}
		var ids, prios []int64
		for _, f := range files {
			if have[f.VersionID] {
				continue
			}
			have[f.VersionID] = true
			ids = append(ids, f.VersionID)
			prios = append(prios, db.ScanPriority(now.Sub(f.ModTime)))
		}
		rows, err := tx.Query(ctx, insertJobsSQL+` RETURNING id`, ids, prios, plugin, now)
		if err != nil {
			return err
		}
		jobs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		n = int64(len(jobs))
		reused, err = d.reuseJobs(ctx, tx, now, jobs) // outputs.go
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("backfill %s: %w", plugin, err)
	}
	d.reuse.Report(reused)
	return n, nil
}

// insertJobsSQL inserts QUEUED jobs of plugin $3 for the file versions $1
// with the priorities $2.
const insertJobsSQL = `INSERT INTO cf_processing_queue
	(file_version_id, plugin_name, status, priority, retry_count, updated_at)
	SELECT v, $3, 'QUEUED', p, 0, $4 FROM unnest($1::bigint[], $2::bigint[]) AS t(v, p) ORDER BY v`

// PluginRerun queues again the plugin's COMPLETED jobs that ended before
// its ACTIVE manifest was deployed, as package db's.
func (d *DB) PluginRerun(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.BackfillResult, error) {
	plugin, err := db.CheckPluginName(plugin)
	if err != nil {
		return job.BackfillResult{}, err
	}
	res := job.BackfillResult{Plugin: plugin, DryRun: dryRun}
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		res.Matched, res.Queued = 0, 0
		if err := lockPluginQueue(ctx, tx, plugin); err != nil {
			return err
		}
		var deployed *time.Time
		err := tx.QueryRow(ctx, `SELECT COALESCE(deployed_at, created_at) FROM cf_plugin_manifest
			WHERE plugin_name = $1 AND status = 'ACTIVE'
			ORDER BY COALESCE(deployed_at, created_at) DESC NULLS LAST, id DESC LIMIT 1`, plugin).Scan(&deployed)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("plugin %q has no ACTIVE manifest: %w", plugin, job.ErrNotFound)
		}
		if err != nil || deployed == nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT file_version_id, COALESCE(status::text, 'QUEUED'), COALESCE(priority, 0), end_time
			FROM cf_processing_queue q WHERE plugin_name = $1 AND file_version_id IS NOT NULL
			  AND NOT EXISTS (SELECT 1 FROM sentinel_shadow_jobs s WHERE s.job_id = q.id) -- a shadow run's (shadow.go)
			ORDER BY id`, plugin)
		if err != nil {
			return err
		}
		past, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (db.PastJob, error) {
			var j db.PastJob
			var end *time.Time
			err := row.Scan(&j.FileVersionID, &j.Status, &j.Priority, &end)
			j.EndTime = utc(end)
			return j, err
		})
		if err != nil {
			return err
		}
		pick := db.RerunPick(past, utc(deployed))
		res.Matched = int64(len(pick))
		if dryRun || len(pick) == 0 {
			return nil
		}
		ids := db.SortedVersions(pick)
		prios := make([]int64, len(ids))
		for i, v := range ids {
			prios[i] = pick[v]
		}
		tag, err := tx.Exec(ctx, insertJobsSQL, ids, prios, plugin, now)
		res.Queued = tag.RowsAffected()
		return err
	})
	if err != nil {
		return job.BackfillResult{}, fmt.Errorf("rerun %s: %w", plugin, err)
	}
	return res, nil
}
