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

// Lineage of file outputs, stale outputs and reuse (issue #20), as package
// db's (db/outputs.go, db/reuse.go), in sentinel_outputs (migration 0011).

// activeHashOf is the ACTIVE manifest's artifact_hash of the plugin named
// by the SQL expression plugin.
func activeHashOf(plugin string) string {
	return `(SELECT m.artifact_hash FROM cf_plugin_manifest m WHERE m.plugin_name = ` + plugin + ` AND m.status = 'ACTIVE'
			ORDER BY COALESCE(m.deployed_at, m.created_at) DESC NULLS LAST, m.id DESC LIMIT 1)`
}

// recordOutputsSQL writes the lineage of the jobs a batch completed, one row
// per artifact, as SQLite's. It goes in the same pipeline as the
// completions, after them, so it costs no round trip; it cannot see their
// outcomes, so it takes the jobs that are COMPLETED with this batch's
// updated_at ($4): a stale or repeated receipt completed nothing now.
// Arguments: job ids, artifact hashes and sinks hashes (arrays), the time.
var recordOutputsSQL = `INSERT INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index, plugin_name,
		artifact_hash, sinks_hash, topic, uri, row_count, byte_count, created_at)
	SELECT q.file_version_id, q.id, COALESCE(q.attempt, 0), COALESCE(a.ord - 1, -1), q.plugin_name,
		COALESCE(NULLIF(c.artifact_hash, ''), ` + activeHashOf("q.plugin_name") + `, ''),
		c.sinks_hash, a.value ->> 'topic', a.value ->> 'uri',
		COALESCE(CASE WHEN a.value ->> 'rows' ~ '^[0-9]{1,18}$' THEN (a.value ->> 'rows')::bigint END,
			CASE WHEN COALESCE(jsonb_array_length(q.artifacts_json::jsonb), 0) <= 1 THEN (q.metrics_json::jsonb ->> 'rows')::bigint END),
		COALESCE(CASE WHEN a.value ->> 'bytes' ~ '^[0-9]{1,18}$' THEN (a.value ->> 'bytes')::bigint END,
			CASE WHEN COALESCE(jsonb_array_length(q.artifacts_json::jsonb), 0) <= 1 THEN (q.metrics_json::jsonb ->> 'bytes')::bigint END),
		$4
	FROM unnest($1::bigint[], $2::text[], $3::text[]) AS c(id, artifact_hash, sinks_hash)
	JOIN cf_processing_queue q ON q.id = c.id AND q.status = 'COMPLETED' AND q.updated_at = $4
		AND q.file_version_id IS NOT NULL
	LEFT JOIN LATERAL jsonb_array_elements(COALESCE(q.artifacts_json::jsonb, '[]'::jsonb)) WITH ORDINALITY AS a(value, ord) ON true`

// queueOutputs adds the lineage statement for the completions among cs to
// the batch b, after their UPDATEs; now is the batch's updated_at.
func queueOutputs(b *pgx.Batch, cs []job.Conclusion, now time.Time) {
	var ids []int64
	var arts, sinks []string
	seen := map[int64]bool{}
	for _, c := range cs {
		if c.Kind != job.ConcludeComplete || c.Shadow || seen[c.Ref.JobID] {
			continue
		}
		seen[c.Ref.JobID] = true
		ids, arts, sinks = append(ids, c.Ref.JobID), append(arts, c.ArtifactHash), append(sinks, c.SinksHash)
	}
	if len(ids) > 0 {
		b.Queue(recordOutputsSQL, ids, arts, sinks, now)
	}
}

// outputColumns are what scanOutput reads of a sentinel_outputs row o.
var outputColumns = `o.job_id, o.attempt, o.file_version_id, o.plugin_name, o.artifact_hash,
		COALESCE((SELECT v.content_hash FROM cf_file_version v WHERE v.id = o.file_version_id), ''),
		COALESCE(o.topic, ''), COALESCE(o.uri, ''), o.row_count, o.byte_count,
		COALESCE(o.reused_from_job, 0), o.created_at,
		(SELECT r.path || '/' || l.rel_path FROM cf_file_version v JOIN cf_file_location l ON l.id = v.location_id
			JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = o.file_version_id),
		(SELECT l.current_version_id::bigint FROM cf_file_version v
			JOIN cf_file_location l ON l.id = v.location_id WHERE v.id = o.file_version_id),
		` + activeHashOf("o.plugin_name")

// latestOutputs is sentinel_outputs with the newest job of each row's file
// and plugin, as SQLite's.
const latestOutputs = `(SELECT o.*, v.location_id AS loc,
			MAX(o.job_id) OVER (PARTITION BY v.location_id, o.plugin_name) AS newest
		FROM sentinel_outputs o JOIN cf_file_version v ON v.id = o.file_version_id
		WHERE v.location_id IS NOT NULL AND ($1 = '' OR o.plugin_name = $1))`

func scanOutputs(rows pgx.Rows) ([]job.Output, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (job.Output, error) {
		var o job.Output
		var created *time.Time
		var path, active *string
		var current *int64
		if err := row.Scan(&o.JobID, &o.Attempt, &o.FileVersionID, &o.Plugin, &o.ArtifactHash, &o.ContentHash,
			&o.Topic, &o.URI, &o.Rows, &o.Bytes, &o.ReusedFromJob, &created, &path, &current, &active); err != nil {
			return o, err
		}
		o.CreatedAt = utc(created)
		if path != nil {
			o.FilePath = db.CleanJoin(*path)
		}
		db.MarkStale(&o, current, deref(active))
		return o, nil
	})
}

// OutputsOfVersion returns the lineage of a file version, as package db's.
func (d *DB) OutputsOfVersion(ctx context.Context, versionID int64) ([]job.Output, error) {
	var one int
	err := d.pool.QueryRow(ctx, `SELECT 1 FROM cf_file_version WHERE id = $1`, versionID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("file version %d: %w", versionID, job.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	// With the outputs of the versions chained from it (chain.go).
	rows, err := d.pool.Query(ctx, `SELECT `+outputColumns+` FROM sentinel_outputs o
		WHERE o.file_version_id IN (`+chainVersionsSQL+`) ORDER BY o.job_id, o.attempt, o.artifact_index`, versionID)
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	out, err := scanOutputs(rows)
	if err == nil {
		err = d.chainOrigins(ctx, out)
	}
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	return out, nil
}

// OutputProvenance returns where the outputs written to uri came from, as
// package db's.
func (d *DB) OutputProvenance(ctx context.Context, uri string, limit int) ([]job.Output, error) {
	uri, err := db.CheckOutputURI(uri)
	if err != nil {
		return nil, err
	}
	rows, err := d.pool.Query(ctx, `SELECT `+outputColumns+` FROM sentinel_outputs o
		WHERE o.uri = $1 ORDER BY o.job_id DESC, o.attempt DESC, o.artifact_index LIMIT $2`, uri, limit)
	if err != nil {
		return nil, fmt.Errorf("provenance of %s: %w", uri, err)
	}
	out, err := scanOutputs(rows)
	if err == nil {
		err = d.chainOrigins(ctx, out) // chain.go
	}
	if err != nil {
		return nil, fmt.Errorf("provenance of %s: %w", uri, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no recorded output has uri %q: %w", uri, job.ErrNotFound)
	}
	return out, nil
}

// OutputsStale returns the stale outputs no later job superseded, as
// package db's.
func (d *DB) OutputsStale(ctx context.Context, plugin string) ([]job.Output, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+outputColumns+` FROM `+latestOutputs+` o
		WHERE o.job_id = o.newest ORDER BY o.job_id, o.attempt, o.artifact_index`, plugin)
	if err != nil {
		return nil, fmt.Errorf("stale outputs: %w", err)
	}
	all, err := scanOutputs(rows)
	if err != nil {
		return nil, fmt.Errorf("stale outputs: %w", err)
	}
	return db.StaleOnly(all), nil
}

// staleRerunSQL lists what OutputsRerunStale queues, as SQLite's.
var staleRerunSQL = `SELECT DISTINCT l.current_version_id::bigint, o.plugin_name
	FROM ` + latestOutputs + ` o
	JOIN cf_file_location l ON l.id = o.loc
	WHERE o.job_id = o.newest AND l.current_version_id IS NOT NULL AND l.missing_since IS NULL
	  AND (l.current_version_id <> o.file_version_id
	    OR (o.artifact_hash <> '' AND o.artifact_hash <> COALESCE(` + activeHashOf("o.plugin_name") + `, o.artifact_hash)))
	  AND NOT EXISTS (SELECT 1 FROM cf_processing_queue q WHERE q.file_version_id = l.current_version_id
	    AND q.plugin_name = o.plugin_name AND q.status IN ('QUEUED', 'RUNNING'))
	ORDER BY 1, 2`

// OutputsRerunStale queues a job per stale current file version × plugin,
// as package db's.
func (d *DB) OutputsRerunStale(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.RerunStaleResult, error) {
	res := job.RerunStaleResult{Plugin: plugin, DryRun: dryRun}
	var reused []string
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		res.Matched, res.Queued, res.Reused, reused = 0, 0, 0, nil
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, staleRerunSQL, plugin)
		if err != nil {
			return err
		}
		type pick struct {
			version int64
			plugin  string
		}
		picks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pick, error) {
			var p pick
			err := row.Scan(&p.version, &p.plugin)
			return p, err
		})
		if err != nil {
			return err
		}
		res.Matched = int64(len(picks))
		if dryRun {
			return nil
		}
		var ids []int64
		for _, p := range picks {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO cf_processing_queue
				(file_version_id, plugin_name, status, priority, retry_count, updated_at)
				VALUES ($1, $2, 'QUEUED', 0, 0, $3) RETURNING id`, p.version, p.plugin, now).Scan(&id); err != nil {
				return fmt.Errorf("queue version %d: %w", p.version, err)
			}
			ids = append(ids, id)
		}
		res.Queued = int64(len(ids))
		if reused, err = d.reuseJobs(ctx, tx, now, ids); err != nil {
			return err
		}
		res.Reused = int64(len(reused))
		return nil
	})
	if err != nil {
		return job.RerunStaleResult{}, fmt.Errorf("rerun stale outputs: %w", err)
	}
	d.reuse.Report(reused)
	return res, nil
}

// OnReuse sets the function told of each reused job's plugin, after commit.
func (d *DB) OnReuse(f func(plugin string)) { d.reuse.Set(f) }

// SetLineage turns lineage and reuse on or off; see db.DB.SetLineage.
func (d *DB) SetLineage(on bool) { d.lineage.Store(on) }

// reuseJobs links the just-inserted QUEUED jobs ids that have an earlier
// result with their key to it, as package db's reuseJobs.
// reuseJobs is reuseJobsIn while lineage is on (SetLineage), else nothing.
func (d *DB) reuseJobs(ctx context.Context, tx pgx.Tx, now time.Time, ids []int64) ([]string, error) {
	if !d.lineage.Load() {
		return nil, nil
	}
	return reuseJobsIn(ctx, tx, now, ids)
}

func reuseJobsIn(ctx context.Context, tx pgx.Tx, now time.Time, ids []int64) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	type plug struct {
		ok    bool
		hash  string
		sinks []db.Sink
	}
	plugins := map[string]*plug{}
	var reused []string
	for _, id := range ids {
		var plugin, overrides, content string
		var version int64
		var path *string
		err := tx.QueryRow(ctx, `SELECT q.plugin_name, COALESCE(q.config_overrides, ''), v.id, v.content_hash,
			r.path || '/' || l.rel_path
			FROM cf_processing_queue q
			JOIN cf_file_version v ON v.id = q.file_version_id
			LEFT JOIN cf_file_location l ON l.id = v.location_id
			LEFT JOIN cf_source_root r ON r.id = l.source_root_id
			WHERE q.id = $1 AND q.status = 'QUEUED'`, id).Scan(&plugin, &overrides, &version, &content, &path)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		p, ok := plugins[plugin]
		if !ok {
			p = &plug{}
			plugins[plugin] = p
			var hash, source *string
			var setting *bool
			err := tx.QueryRow(ctx, `SELECT m.artifact_hash, m.source_code,
				(SELECT s.reuse FROM sentinel_plugin_settings s WHERE s.plugin_name = m.plugin_name)
				FROM cf_plugin_manifest m WHERE m.plugin_name = $1 AND m.status = 'ACTIVE'
				ORDER BY COALESCE(m.deployed_at, m.created_at) DESC NULLS LAST, m.id DESC LIMIT 1`, plugin).Scan(&hash, &source, &setting)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return nil, fmt.Errorf("reuse job %d: %w", id, err)
			}
			if err == nil && deref(hash) != "" && db.ReuseAllowed(setting, deref(source)) {
				src := pgSource{tx: tx}
				if p.sinks, err = src.TopicSinks(ctx, plugin); err != nil {
					return nil, fmt.Errorf("reuse job %d: %w", id, err)
				}
				p.ok, p.hash = true, deref(hash)
			}
		}
		if !p.ok || content == "" || path == nil {
			continue
		}
		sinks, err := db.ResolveSinks(plugin, p.sinks, overrides, db.CleanJoin(*path))
		if err != nil {
			continue
		}
		var own bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sentinel_outputs
			WHERE file_version_id = $1 AND plugin_name = $2 AND artifact_hash = $3)`, version, plugin, p.hash).Scan(&own); err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		if own {
			continue
		}
		var srcJob, srcAttempt, origin, srcVersion int64
		err = tx.QueryRow(ctx, `SELECT o.job_id, o.attempt, COALESCE(o.reused_from_job, o.job_id), o.file_version_id
			FROM cf_file_version w JOIN sentinel_outputs o ON o.file_version_id = w.id
			WHERE w.content_hash = $1 AND w.id <> $5
			  AND o.artifact_hash = $2 AND o.sinks_hash = $3 AND o.plugin_name = $4
			ORDER BY o.job_id DESC, o.attempt DESC LIMIT 1`, content, p.hash, db.SinksHash(sinks), plugin, version).
			Scan(&srcJob, &srcAttempt, &origin, &srcVersion)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		tag, err := tx.Exec(ctx, `UPDATE cf_processing_queue SET
			status = 'COMPLETED', result_summary = $1, end_time = $2, next_run_at = NULL,
			metrics_json = (SELECT s.metrics_json FROM cf_processing_queue s WHERE s.id = $3),
			artifacts_json = (SELECT s.artifacts_json FROM cf_processing_queue s WHERE s.id = $3),
			updated_at = $4
			WHERE id = $5 AND status = 'QUEUED'`, db.ReusedSummary(origin), now.UTC(), srcJob, now, id)
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index, plugin_name,
			artifact_hash, sinks_hash, topic, uri, row_count, byte_count, reused_from_job, created_at)
			SELECT $1, $2, 0, artifact_index, plugin_name, artifact_hash, sinks_hash, topic, uri,
				row_count, byte_count, $3, $4
			FROM sentinel_outputs WHERE file_version_id = $5 AND job_id = $6 AND attempt = $7`,
			version, id, origin, now, srcVersion, srcJob, srcAttempt); err != nil {
			return nil, fmt.Errorf("reuse job %d: link outputs of job %d: %w", id, srcJob, err)
		}
		reused = append(reused, plugin)
	}
	return reused, nil
}
