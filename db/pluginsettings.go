package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/casparian/sentinel/job"
)

// Per-plugin settings (sentinel_plugin_settings, migration 0009), backfills
// and reruns. The claim statement skips paused plugins and carries the job
// timeout (claims.go); a requeue reads max_retries (retriesSQL).

// pausedFilter is the claim statement's test that a job's plugin is not
// paused: one primary-key lookup in a table with a row per configured
// plugin, on the rows the claim index hands out.
const pausedFilter = ` AND NOT EXISTS (SELECT 1 FROM sentinel_plugin_settings s
			WHERE s.plugin_name = cf_processing_queue.plugin_name AND s.paused_at IS NOT NULL)`

// pausedFresh is how long pausedPlugins trusts what it read. PluginPause
// forgets it at once; the bound is for a pause written by another process.
// A stale answer never claims a paused plugin's job (the claim statement's
// pausedFilter decides); it can only leave a just-resumed plugin out of a
// claim's request for this long.
const pausedFresh = time.Second

// pausedCache keeps the paused plugins between claims: the claim path asked
// the database for them on every batch (8 % of the Sentinel's CPU under load).
type pausedCache struct {
	mu    sync.Mutex
	set   map[string]bool
	until time.Time // zero: nothing read, or forgotten
}

// forget drops what the cache holds.
func (c *pausedCache) forget() {
	c.mu.Lock()
	c.until = time.Time{}
	c.mu.Unlock()
}

// pausedPlugins returns the paused plugins, nil when there are none.
func (db *DB) pausedPlugins(ctx context.Context) (map[string]bool, error) {
	db.paused.mu.Lock()
	defer db.paused.mu.Unlock()
	now := time.Now()
	if now.Before(db.paused.until) {
		return db.paused.set, nil
	}
	set, err := db.readPaused(ctx)
	if err != nil {
		return nil, err
	}
	db.paused.set, db.paused.until = set, now.Add(pausedFresh)
	return set, nil
}

// readPaused reads the paused plugins.
func (db *DB) readPaused(ctx context.Context) (map[string]bool, error) {
	rows, err := db.reader.QueryContext(ctx, PausedPluginsSQL)
	if err != nil {
		return nil, fmt.Errorf("paused plugins: %w", err)
	}
	defer rows.Close()
	var out map[string]bool
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("paused plugins: %w", err)
		}
		if out == nil {
			out = map[string]bool{}
		}
		out[name] = true
	}
	return out, rows.Err()
}

// pluginSettingsInto adds every settings row to cat.
func (db *DB) pluginSettingsInto(ctx context.Context, cat *PluginCatalogue) error {
	rows, err := db.reader.QueryContext(ctx, `SELECT plugin_name, paused_at, job_timeout_ms, max_retries, reuse, updated_at
		FROM sentinel_plugin_settings`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		name, s, err := scanSettings(rows)
		if err != nil {
			return err
		}
		cat.Settings(name, s)
	}
	return rows.Err()
}

func scanSettings(row interface{ Scan(...any) error }) (string, job.PluginSettings, error) {
	var name string
	var paused, updated nullTime
	var timeout, retries sql.NullInt64
	var reuse sql.NullBool
	if err := row.Scan(&name, &paused, &timeout, &retries, &reuse, &updated); err != nil {
		return "", job.PluginSettings{}, err
	}
	return name, PluginSettingsOf(paused.Time, SettingsColumns{JobTimeoutMS: nullInt(timeout), MaxRetries: nullInt(retries),
		Reuse: nullBool(reuse)}, updated.Time), nil
}

func nullBool(b sql.NullBool) *bool {
	if !b.Valid {
		return nil
	}
	return &b.Bool
}

func nullInt(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	return &n.Int64
}

// pluginKnown reports job.ErrNotFound unless the plugin has a configuration
// or a manifest: settings for a name nobody uses are a typo.
func pluginKnown(ctx context.Context, tx *sql.Tx, plugin string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 WHERE EXISTS (SELECT 1 FROM cf_plugin_config WHERE plugin_name = ?)
		OR EXISTS (SELECT 1 FROM cf_plugin_manifest WHERE plugin_name = ?)`, plugin, plugin).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("plugin %q: %w", plugin, job.ErrNotFound)
	}
	return err
}

// PluginPause pauses a plugin (its QUEUED jobs are not claimed until it is
// resumed; RUNNING ones finish) or, with pause false, resumes it, and
// returns its settings. Pausing a paused plugin keeps the first paused_at.
// An unknown plugin is job.ErrNotFound.
func (db *DB) PluginPause(ctx context.Context, now time.Time, plugin string, pause bool) (job.PluginSettings, error) {
	plugin, err := CheckPluginName(plugin)
	if err != nil {
		return job.PluginSettings{}, err
	}
	ts := formatTime(now)
	var paused any
	if pause {
		paused = ts
	}
	var out job.PluginSettings
	defer db.paused.forget() // also after a failed write: it may have committed
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := pluginKnown(ctx, tx, plugin); err != nil {
			return err
		}
		row := tx.QueryRowContext(ctx, `INSERT INTO sentinel_plugin_settings (plugin_name, paused_at, updated_at)
			VALUES (?, ?, ?)
			ON CONFLICT (plugin_name) DO UPDATE SET
				paused_at = CASE WHEN excluded.paused_at IS NULL THEN NULL ELSE COALESCE(paused_at, excluded.paused_at) END,
				updated_at = excluded.updated_at
			RETURNING plugin_name, paused_at, job_timeout_ms, max_retries, reuse, updated_at`, plugin, paused, ts)
		_, out, err = scanSettings(row)
		return err
	})
	if err != nil {
		return job.PluginSettings{}, fmt.Errorf("pause %s: %w", plugin, err)
	}
	return out, nil
}

// PluginSettingsSet changes a plugin's job timeout and max retries (see
// job.PluginSettingsUpdate) and returns its settings. An unknown plugin is
// job.ErrNotFound; a value out of range job.ErrInvalid.
func (db *DB) PluginSettingsSet(ctx context.Context, now time.Time, plugin string, u job.PluginSettingsUpdate) (job.PluginSettings, error) {
	plugin, err := CheckPluginName(plugin)
	if err != nil {
		return job.PluginSettings{}, err
	}
	var out job.PluginSettings
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := pluginKnown(ctx, tx, plugin); err != nil {
			return err
		}
		var cur SettingsColumns
		var timeout, retries sql.NullInt64
		var reuse sql.NullBool
		err := tx.QueryRowContext(ctx, `SELECT job_timeout_ms, max_retries, reuse FROM sentinel_plugin_settings
			WHERE plugin_name = ?`, plugin).Scan(&timeout, &retries, &reuse)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		cur.JobTimeoutMS, cur.MaxRetries, cur.Reuse = nullInt(timeout), nullInt(retries), nullBool(reuse)
		next, err := cur.Apply(u)
		if err != nil {
			return err
		}
		row := tx.QueryRowContext(ctx, `INSERT INTO sentinel_plugin_settings (plugin_name, job_timeout_ms, max_retries, reuse, updated_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (plugin_name) DO UPDATE SET
				job_timeout_ms = excluded.job_timeout_ms, max_retries = excluded.max_retries, reuse = excluded.reuse,
				updated_at = excluded.updated_at
			RETURNING plugin_name, paused_at, job_timeout_ms, max_retries, reuse, updated_at`,
			plugin, next.JobTimeoutMS, next.MaxRetries, next.Reuse, formatTime(now))
		_, out, err = scanSettings(row)
		return err
	})
	if err != nil {
		return job.PluginSettings{}, fmt.Errorf("set %s: %w", plugin, err)
	}
	return out, nil
}

// backfillFilesSQL lists the current versions of the files present in
// active roots that have no job of plugin ($1) yet. NOT IN reads the
// plugin's jobs once (the queue has no index on file_version_id).
const backfillFilesSQL = `SELECT v.id, l.rel_path, COALESCE(v.applied_tags, ''), v.modified_time
	FROM cf_file_location l
	JOIN cf_source_root r ON r.id = l.source_root_id AND COALESCE(r.active, 1) <> 0
	JOIN cf_file_version v ON v.id = l.current_version_id
	WHERE l.missing_since IS NULL
	  AND v.id NOT IN (SELECT file_version_id FROM cf_processing_queue WHERE plugin_name = ? AND file_version_id IS NOT NULL)
	ORDER BY v.id`

// PluginBackfillFiles returns the backfill candidates of a plugin: the
// current version of every file present in an active root that has no job
// of the plugin yet (BackfillFile).
func (db *DB) PluginBackfillFiles(ctx context.Context, plugin string) ([]BackfillFile, error) {
	rows, err := db.reader.QueryContext(ctx, backfillFilesSQL, plugin)
	if err != nil {
		return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
	}
	defer rows.Close()
	var out []BackfillFile
	for rows.Next() {
		var f BackfillFile
		var mtime nullTime
		if err := rows.Scan(&f.VersionID, &f.RelPath, &f.AppliedTags, &mtime); err != nil {
			return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
		}
		f.ModTime = mtime.Time
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("backfill files of %s: %w", plugin, err)
	}
	return out, nil
}

// PluginBackfill queues one job of plugin for each file, with the scanner's
// priority for the file's age (ScanPriority), except for versions that have
// a job of the plugin by now: two backfills never queue a file twice. It
// returns how many jobs it queued.
func (db *DB) PluginBackfill(ctx context.Context, now time.Time, plugin string, files []BackfillFile) (int64, error) {
	if len(files) == 0 {
		return 0, nil
	}
	ts := formatTime(now)
	var n int64
	var reused []string
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		n = 0
		var ids []int64
		have, err := versionsWithJobs(ctx, tx, plugin)
		if err != nil {
			return err
		}
		for _, f := range files {
			if have[f.VersionID] {
				continue
			}
			have[f.VersionID] = true
			var id int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
				(file_version_id, plugin_name, status, priority, retry_count, updated_at)
				VALUES (?, ?, 'QUEUED', ?, 0, ?) RETURNING id`, f.VersionID, plugin, ScanPriority(now.Sub(f.ModTime)), ts).Scan(&id); err != nil {
				return fmt.Errorf("queue version %d: %w", f.VersionID, err)
			}
			ids = append(ids, id)
			n++
		}
		reused, err = db.reuseJobs(ctx, tx, now, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("backfill %s: %w", plugin, err)
	}
	db.reuse.Report(reused)
	return n, nil
}

// versionsWithJobs returns the file versions that have a job of plugin.
func versionsWithJobs(ctx context.Context, tx *sql.Tx, plugin string) (map[int64]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT file_version_id FROM cf_processing_queue
		WHERE plugin_name = ? AND file_version_id IS NOT NULL`, plugin)
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

// PluginRerun queues again, once per file version, the plugin's COMPLETED
// jobs that ended before its ACTIVE manifest was deployed and have no job
// since (RerunPick): the files the previous version processed, run by the
// current one. The queue records no manifest per job, so "ran under an
// earlier version" is read from the times. The old jobs are kept; new
// QUEUED ones are inserted with their priority. dryRun only counts. A plugin
// without an ACTIVE manifest is job.ErrNotFound.
func (db *DB) PluginRerun(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.BackfillResult, error) {
	plugin, err := CheckPluginName(plugin)
	if err != nil {
		return job.BackfillResult{}, err
	}
	res := job.BackfillResult{Plugin: plugin, DryRun: dryRun}
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		res.Matched, res.Queued = 0, 0
		var deployed nullTime
		err := tx.QueryRowContext(ctx, `SELECT COALESCE(deployed_at, created_at) FROM cf_plugin_manifest
			WHERE plugin_name = ? AND status = 'ACTIVE' ORDER BY `+manifestNewestFirst+` LIMIT 1`, plugin).Scan(&deployed)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("plugin %q has no ACTIVE manifest: %w", plugin, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if !deployed.Valid {
			return nil // no deployment time: nothing is known to predate it
		}
		rows, err := tx.QueryContext(ctx, `SELECT file_version_id, COALESCE(status, 'QUEUED'), COALESCE(priority, 0), end_time
			FROM cf_processing_queue q WHERE plugin_name = ? AND file_version_id IS NOT NULL
			  AND NOT EXISTS (SELECT 1 FROM sentinel_shadow_jobs s WHERE s.job_id = q.id) -- a shadow run's (shadow.go)
			ORDER BY id`, plugin)
		if err != nil {
			return err
		}
		var past []PastJob
		for rows.Next() {
			var j PastJob
			var end nullTime
			if err := rows.Scan(&j.FileVersionID, &j.Status, &j.Priority, &end); err != nil {
				rows.Close()
				return err
			}
			j.EndTime = end.Time
			past = append(past, j)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		pick := RerunPick(past, deployed.Time)
		res.Matched = int64(len(pick))
		if dryRun {
			return nil
		}
		ts := formatTime(now)
		for _, v := range SortedVersions(pick) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cf_processing_queue
				(file_version_id, plugin_name, status, priority, retry_count, updated_at)
				VALUES (?, ?, 'QUEUED', ?, 0, ?)`, v, plugin, pick[v], ts); err != nil {
				return fmt.Errorf("queue version %d: %w", v, err)
			}
			res.Queued++
		}
		return nil
	})
	if err != nil {
		return job.BackfillResult{}, fmt.Errorf("rerun %s: %w", plugin, err)
	}
	return res, nil
}
