package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Reuse instead of re-running (issue #20): a job about to be queued for a
// file version whose content the same manifest already processed into the
// same sinks, from another version (a copy, a rename, a revert), is linked
// to that result at once. It is done where jobs are inserted, never in the
// claim: the claim is the hot path, and a job linked at enqueue time is never
// claimed, so no DISPATCH is sent for it. A job queued again for a version
// that already has a result of the same manifest (an operator's explicit
// run) runs.

// OnReuse sets the function told of each reused job's plugin, after commit.
func (db *DB) OnReuse(f func(plugin string)) { db.reuse.Set(f) }

// SetLineage turns recording outputs with each completion (output_key on
// the job row, outputs.go) and reusing earlier results at enqueue on or
// off. Off until set; the Sentinel sets it from --lineage (on by default).
func (db *DB) SetLineage(on bool) { db.lineage.Store(on) }

const (
	// reuseCandidateSQL reads, in one statement for all the jobs just
	// inserted (a JSON array of ids), what the reuse key of each needs: its
	// plugin and overrides, its input's content hash and path; only for
	// jobs whose content another version has some output of already
	// (ix_cf_file_version_content, then sentinel_outputs' primary key and
	// ix_cf_queue_output_version), so that new content, the scanner's
	// usual case, costs nothing more. The two halves of sentinel_lineage
	// are named apart: SQLite does not push a correlated term into the
	// view, and would read all of it.
	reuseCandidateSQL = `SELECT q.id, COALESCE(q.plugin_name, ''), COALESCE(q.config_overrides, ''), v.id, v.content_hash,
		r.path || char(0) || l.rel_path
		FROM cf_processing_queue q
		JOIN cf_file_version v ON v.id = q.file_version_id
		LEFT JOIN cf_file_location l ON l.id = v.location_id
		LEFT JOIN cf_source_root r ON r.id = l.source_root_id
		WHERE q.id IN (SELECT value FROM json_each(?)) AND q.status = 'QUEUED'
		  AND EXISTS (SELECT 1 FROM cf_file_version w WHERE w.content_hash = v.content_hash AND w.id <> v.id
			AND (EXISTS (SELECT 1 FROM sentinel_outputs o WHERE o.file_version_id = w.id)
			  OR EXISTS (SELECT 1 FROM cf_processing_queue d WHERE d.file_version_id = w.id
				AND d.output_key IS NOT NULL)))
		ORDER BY q.id`
	// reusePluginSQL reads a plugin's ACTIVE manifest and reuse setting.
	reusePluginSQL = `SELECT m.artifact_hash, m.source_code,
		(SELECT s.reuse FROM sentinel_plugin_settings s WHERE s.plugin_name = m.plugin_name)
		FROM cf_plugin_manifest m WHERE m.plugin_name = ? AND m.status = 'ACTIVE'
		ORDER BY ` + manifestNewestFirst + ` LIMIT 1`
	// reuseSourceSQL finds the newest result with the same key from
	// another file version (ix_cf_file_version_content, then the outputs'
	// primary key).
	reuseSourceSQL = `SELECT o.job_id, o.attempt, COALESCE(o.reused_from_job, o.job_id), o.file_version_id
		FROM sentinel_lineage o
		WHERE o.file_version_id IN (SELECT w.id FROM cf_file_version w WHERE w.content_hash = ?1 AND w.id <> ?5)
		  AND o.artifact_hash = ?2 AND o.sinks_hash = ?3 AND o.plugin_name = ?4
		ORDER BY o.job_id DESC, o.attempt DESC LIMIT 1`
	// reuseOwnSQL tells whether the version itself already has a result of
	// the plugin's manifest: queueing it again is an explicit re-run.
	reuseOwnSQL = `SELECT EXISTS (SELECT 1 FROM sentinel_lineage
		WHERE file_version_id = ? AND plugin_name = ? AND artifact_hash = ?)`
	reuseCompleteSQL = `UPDATE cf_processing_queue SET
		status = 'COMPLETED', result_summary = ?, end_time = ?, next_run_at = NULL, output_key = NULL,
		metrics_json = (SELECT s.metrics_json FROM cf_processing_queue s WHERE s.id = ?),
		artifacts_json = (SELECT s.artifacts_json FROM cf_processing_queue s WHERE s.id = ?),
		updated_at = ?
		WHERE id = ? AND status = 'QUEUED'`
	// reuseCopySQL links the reused job to the earlier outputs: copies of
	// the earlier attempt's rows under the new job and version (one
	// attempt: a job run again has the outputs of each).
	reuseCopySQL = `INSERT INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index, plugin_name,
		artifact_hash, sinks_hash, topic, uri, row_count, byte_count, reused_from_job, created_at)
		SELECT ?, ?, 0, artifact_index, plugin_name, artifact_hash, sinks_hash, topic, uri,
			row_count, byte_count, ?, ?
		FROM sentinel_lineage WHERE file_version_id = ? AND job_id = ? AND attempt = ?`
)

// reusePlugin is what reuseJobs knows of a plugin.
type reusePlugin struct {
	ok           bool // an ACTIVE manifest, and reuse allowed
	artifactHash string
	sinks        []Sink
}

// reuseJobs links each of the just-inserted QUEUED jobs ids that has an
// earlier result with its key to that result, in tx, and returns the
// plugin of each job it linked (for ReuseReporter, after commit).
func (db *DB) reuseJobs(ctx context.Context, tx *sql.Tx, now time.Time, ids []int64) ([]string, error) {
	if !db.lineage.Load() {
		return nil, nil
	}
	if len(ids) == 0 {
		return nil, nil
	}
	arg, _ := json.Marshal(ids) // numbers: cannot fail
	rows, err := tx.QueryContext(ctx, reuseCandidateSQL, string(arg))
	if err != nil {
		return nil, fmt.Errorf("reuse jobs: %w", err)
	}
	type candidate struct {
		id, version                int64
		plugin, overrides, content string
		path                       sql.NullString
	}
	var cands []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.plugin, &c.overrides, &c.version, &c.content, &c.path); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reuse jobs: %w", err)
		}
		cands = append(cands, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reuse jobs: %w", err)
	}
	plugins := map[string]*reusePlugin{}
	ts := formatTime(now)
	var reused []string
	for _, c := range cands {
		id, plugin, overrides, content, version, path := c.id, c.plugin, c.overrides, c.content, c.version, c.path
		p, err := db.reusePlugin(ctx, tx, plugins, plugin)
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		filePath := locatedPath(path)
		if !p.ok || content == "" || filePath == "" {
			continue
		}
		sinks, err := ResolveSinks(plugin, p.sinks, overrides, filePath)
		if err != nil {
			continue // the claim will fail it with the reason
		}
		var own bool
		if err := tx.QueryRowContext(ctx, reuseOwnSQL, version, plugin, p.artifactHash).Scan(&own); err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		if own {
			continue
		}
		var srcJob, srcAttempt, origin, srcVersion int64
		err = tx.QueryRowContext(ctx, reuseSourceSQL, content, p.artifactHash, SinksHash(sinks), plugin, version).
			Scan(&srcJob, &srcAttempt, &origin, &srcVersion)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, reuseCompleteSQL, ReusedSummary(origin), ts, srcJob, srcJob, ts, id)
		if err != nil {
			return nil, fmt.Errorf("reuse job %d: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, reuseCopySQL, version, id, origin, ts, srcVersion, srcJob, srcAttempt); err != nil {
			return nil, fmt.Errorf("reuse job %d: link outputs of job %d: %w", id, srcJob, err)
		}
		reused = append(reused, plugin)
	}
	return reused, nil
}

// reusePlugin reads (once per call of reuseJobs) whether plugin's jobs may
// be reused, and its artifact_hash and configured sinks.
func (db *DB) reusePlugin(ctx context.Context, tx *sql.Tx, cache map[string]*reusePlugin, plugin string) (*reusePlugin, error) {
	if p, ok := cache[plugin]; ok {
		return p, nil
	}
	p := &reusePlugin{}
	cache[plugin] = p
	var hash, source sql.NullString
	var setting sql.NullInt64
	err := tx.QueryRowContext(ctx, reusePluginSQL, plugin).Scan(&hash, &source, &setting)
	if errors.Is(err, sql.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	var allow *bool
	if setting.Valid {
		b := setting.Int64 != 0
		allow = &b
	}
	if hash.String == "" || !ReuseAllowed(allow, source.String) {
		return p, nil
	}
	rows, err := tx.QueryContext(ctx, topicSinksSQL, plugin)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var topic, uri, mode, schema sql.NullString
		if err := rows.Scan(&topic, &uri, &mode, &schema); err != nil {
			return nil, err
		}
		p.sinks = append(p.sinks, Sink{Topic: topic.String, URI: uri.String, Mode: mode.String, SchemaDef: schema.String})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	p.ok, p.artifactHash = true, hash.String
	return p, nil
}
