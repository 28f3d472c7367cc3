package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/casparian/sentinel/job"
)

// Lineage of file outputs, stale outputs and reuse (issue #20), read from
// sentinel_lineage (migration 0016: the job rows and sentinel_outputs). The
// shared rules are in lineagepath.go.

// Lineage is recorded by the completion itself (migration 0016): the
// completing UPDATE stores output_key, the id of the (artifact_hash,
// sinks_hash) pair in sentinel_output_keys, on the job row, whose
// metrics_json and artifacts_json already hold the rest. sentinel_lineage
// reads those rows and the kept ones in sentinel_outputs as one table.

const (
	// outputKeySQL and outputKeyAddSQL find or add a pair's key.
	outputKeySQL    = `SELECT id FROM sentinel_output_keys WHERE artifact_hash = ? AND sinks_hash = ?`
	outputKeyAddSQL = `INSERT INTO sentinel_output_keys (artifact_hash, sinks_hash) VALUES (?, ?) RETURNING id`
	// activeHashSQL reads a plugin's ACTIVE manifest's artifact_hash:
	// what a receipt without one (a plugin with no manifest, a worker not
	// registered yet) records; activeHashOfJobsSQL reads it by job (a
	// JSON array of ids), for conclusions that do not name their plugin.
	activeHashSQL = `SELECT COALESCE(m.artifact_hash, '') FROM cf_plugin_manifest m
		WHERE m.plugin_name = ? AND m.status = 'ACTIVE' ORDER BY ` + manifestNewestFirst + ` LIMIT 1`
	activeHashOfJobsSQL = `SELECT q.id, COALESCE((SELECT m.artifact_hash FROM cf_plugin_manifest m
		WHERE m.plugin_name = q.plugin_name AND m.status = 'ACTIVE' ORDER BY ` + manifestNewestFirst + ` LIMIT 1), '')
		FROM cf_processing_queue q WHERE q.id IN (SELECT value FROM json_each(?))`
)

// outputPair is the part of a result's reuse key a completion knows.
type outputPair struct{ artifactHash, sinksHash string }

// outputKeys returns the output_key each conclusion's completion stores:
// the key of its pair of hashes for a completion, nil for the rest, for
// shadow runs (whose outputs are not the plugin's) and for all while
// lineage is off (then the result is nil). A pair seen for the first time
// is added in the conclusions' transaction, so a batch rolled back takes
// its new keys with it.
func (s *concludeStmts) outputKeys(ctx context.Context, cs []job.Conclusion) ([]any, error) {
	if !s.db.lineage.Load() {
		return nil, nil
	}
	keys := make([]any, len(cs))
	byJob, err := s.activeHashes(ctx, cs)
	if err != nil {
		return nil, err
	}
	byPlugin := map[string]string{}
	ids := map[outputPair]int64{}
	for i, c := range cs {
		if c.Kind != job.ConcludeComplete || c.Shadow {
			continue
		}
		pair := outputPair{c.ArtifactHash, c.SinksHash}
		if pair.artifactHash == "" && c.Plugin != "" {
			h, ok := byPlugin[c.Plugin]
			if !ok {
				if err := s.queryRow(ctx, activeHashSQL, &h, c.Plugin); err != nil && !errors.Is(err, sql.ErrNoRows) {
					return nil, fmt.Errorf("manifest of %s: %w", c.Plugin, err)
				}
				byPlugin[c.Plugin] = h
			}
			pair.artifactHash = h
		} else if pair.artifactHash == "" {
			pair.artifactHash = byJob[c.Ref.JobID]
		}
		id, ok := ids[pair]
		if !ok {
			err := s.queryRow(ctx, outputKeySQL, &id, pair.artifactHash, pair.sinksHash)
			if errors.Is(err, sql.ErrNoRows) {
				err = s.queryRow(ctx, outputKeyAddSQL, &id, pair.artifactHash, pair.sinksHash)
			}
			if err != nil {
				return nil, fmt.Errorf("key of outputs: %w", err)
			}
			ids[pair] = id
		}
		keys[i] = id
	}
	return keys, nil
}

// activeHashes reads, in one statement, the ACTIVE manifest's hash of the
// plugin of each completion that carries neither an artifact hash nor its
// plugin's name, by job.
func (s *concludeStmts) activeHashes(ctx context.Context, cs []job.Conclusion) (map[int64]string, error) {
	var need []int64
	for _, c := range cs {
		if c.Kind == job.ConcludeComplete && !c.Shadow && c.ArtifactHash == "" && c.Plugin == "" {
			need = append(need, c.Ref.JobID)
		}
	}
	if len(need) == 0 {
		return nil, nil
	}
	arg, _ := json.Marshal(need) // numbers: cannot fail
	st, err := s.db.txStmt(ctx, s.tx, activeHashOfJobsSQL)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, string(arg))
	if err != nil {
		return nil, fmt.Errorf("manifests of outputs: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]string, len(need))
	for rows.Next() {
		var id int64
		var hash string
		if err := rows.Scan(&id, &hash); err != nil {
			return nil, fmt.Errorf("manifests of outputs: %w", err)
		}
		out[id] = hash
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("manifests of outputs: %w", err)
	}
	return out, nil
}

// keepOutputsSQL copies the outputs a job row holds to sentinel_outputs as
// those of the attempt before the claim that just took it, and
// clearOutputKeySQL clears its key: the claim's new attempt has none yet.
const (
	keepOutputsSQL = `INSERT OR IGNORE INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index,
		plugin_name, artifact_hash, sinks_hash, topic, uri, row_count, byte_count, reused_from_job, created_at)
	SELECT file_version_id, job_id, ?, artifact_index, plugin_name, artifact_hash, sinks_hash,
		topic, uri, row_count, byte_count, reused_from_job, COALESCE(created_at, '')
	FROM sentinel_job_outputs WHERE job_id = ? AND file_version_id IS NOT NULL`
	clearOutputKeySQL = `UPDATE cf_processing_queue SET output_key = NULL WHERE id = ?`
)

// keepOutputsOfRerun keeps the outputs of the claimed jobs refs whose rows
// still held those of an earlier completion: another tool set a COMPLETED
// job QUEUED again (our conclusions never do). Rare, so not prepared.
func keepOutputsOfRerun(ctx context.Context, tx *sql.Tx, refs []job.Ref) error {
	for _, r := range refs {
		if _, err := tx.ExecContext(ctx, keepOutputsSQL, r.Attempt-1, r.JobID); err != nil {
			return fmt.Errorf("keep outputs of job %d: %w", r.JobID, err)
		}
		if _, err := tx.ExecContext(ctx, clearOutputKeySQL, r.JobID); err != nil {
			return fmt.Errorf("keep outputs of job %d: %w", r.JobID, err)
		}
	}
	return nil
}

// queryRow runs the prepared query q in the conclusions' transaction and
// scans its one row into dest.
func (s *concludeStmts) queryRow(ctx context.Context, q string, dest any, args ...any) error {
	st, err := s.db.txStmt(ctx, s.tx, q)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dest)
}

// outputColumns are the columns scanOutput reads from a sentinel_lineage
// row o: the row, the input's path, its location's current version and the
// plugin's ACTIVE artifact_hash (for MarkStale).
const outputColumns = `o.job_id, o.attempt, o.file_version_id, o.plugin_name, o.artifact_hash,
		COALESCE((SELECT v.content_hash FROM cf_file_version v WHERE v.id = o.file_version_id), ''),
		COALESCE(o.topic, ''), COALESCE(o.uri, ''), o.row_count, o.byte_count,
		COALESCE(o.reused_from_job, 0), o.created_at,
		(SELECT r.path || char(0) || l.rel_path FROM cf_file_version v
			JOIN cf_file_location l ON l.id = v.location_id
			JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = o.file_version_id),
		(SELECT l.current_version_id FROM cf_file_version v
			JOIN cf_file_location l ON l.id = v.location_id WHERE v.id = o.file_version_id),
		(SELECT m.artifact_hash FROM cf_plugin_manifest m
			WHERE m.plugin_name = o.plugin_name AND m.status = 'ACTIVE' ORDER BY ` + manifestNewestFirst + ` LIMIT 1)`

// latestOutputs is sentinel_lineage with, per row, its file (loc) and the
// newest job of the same file and plugin: an output a later job of its file
// and plugin superseded is history, never stale. A window, not an index:
// staleness is read by operators, and every index is written by every
// completion.
const latestOutputs = `(SELECT o.*, v.location_id AS loc,
			MAX(o.job_id) OVER (PARTITION BY v.location_id, o.plugin_name) AS newest
		FROM sentinel_lineage o JOIN cf_file_version v ON v.id = o.file_version_id
		WHERE v.location_id IS NOT NULL AND (?1 = '' OR o.plugin_name = ?1))`

func scanOutputs(rows *sql.Rows) ([]job.Output, error) {
	defer rows.Close()
	var out []job.Output
	for rows.Next() {
		var o job.Output
		var created nullTime
		var path, active sql.NullString
		var rowCount, byteCount, current sql.NullInt64
		if err := rows.Scan(&o.JobID, &o.Attempt, &o.FileVersionID, &o.Plugin, &o.ArtifactHash, &o.ContentHash,
			&o.Topic, &o.URI, &rowCount, &byteCount, &o.ReusedFromJob, &created, &path, &current, &active); err != nil {
			return nil, err
		}
		o.Rows, o.Bytes, o.CreatedAt = nullInt(rowCount), nullInt(byteCount), created.Time
		o.FilePath = locatedPath(path)
		MarkStale(&o, nullInt(current), active.String)
		out = append(out, o)
	}
	return out, rows.Err()
}

// OutputsOfVersion returns the lineage of a file version: every output made
// from it, by which job, attempt and manifest, oldest job first. An unknown
// version is job.ErrNotFound; a version with no output yet has none.
func (db *DB) OutputsOfVersion(ctx context.Context, versionID int64) ([]job.Output, error) {
	var one int
	err := db.reader.QueryRowContext(ctx, `SELECT 1 FROM cf_file_version WHERE id = ?`, versionID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("file version %d: %w", versionID, job.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	// With the outputs of the versions chained from it (chain.go).
	rows, err := db.reader.QueryContext(ctx, `SELECT `+outputColumns+` FROM sentinel_lineage o
		WHERE o.file_version_id IN (`+chainVersionsSQL+`) ORDER BY o.job_id, o.attempt, o.artifact_index`, versionID)
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	out, err := scanOutputs(rows)
	if err == nil {
		err = db.chainOrigins(ctx, out)
	}
	if err != nil {
		return nil, fmt.Errorf("lineage of version %d: %w", versionID, err)
	}
	return out, nil
}

// OutputProvenance returns where the outputs written to uri came from,
// newest job first (at most limit). A URI no lineage names is
// job.ErrNotFound. There is no index on uri (every completion would write
// it): this reads the whole table, which operators ask rarely.
func (db *DB) OutputProvenance(ctx context.Context, uri string, limit int) ([]job.Output, error) {
	uri, err := CheckOutputURI(uri)
	if err != nil {
		return nil, err
	}
	rows, err := db.reader.QueryContext(ctx, `SELECT `+outputColumns+` FROM sentinel_lineage o
		WHERE o.uri = ? ORDER BY o.job_id DESC, o.attempt DESC, o.artifact_index LIMIT ?`, uri, limit)
	if err != nil {
		return nil, fmt.Errorf("provenance of %s: %w", uri, err)
	}
	out, err := scanOutputs(rows)
	if err == nil {
		err = db.chainOrigins(ctx, out) // chain.go
	}
	if err != nil {
		return nil, fmt.Errorf("provenance of %s: %w", uri, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no recorded output has uri %q: %w", uri, job.ErrNotFound)
	}
	return out, nil
}

// OutputsStale returns the stale outputs (MarkStale) that no later job of
// the same file and plugin superseded, of plugin ("" for all), by job.
func (db *DB) OutputsStale(ctx context.Context, plugin string) ([]job.Output, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT `+outputColumns+` FROM `+latestOutputs+` o
		WHERE o.job_id = o.newest ORDER BY o.job_id, o.attempt, o.artifact_index`, plugin)
	if err != nil {
		return nil, fmt.Errorf("stale outputs: %w", err)
	}
	all, err := scanOutputs(rows)
	if err != nil {
		return nil, fmt.Errorf("stale outputs: %w", err)
	}
	return StaleOnly(all), nil
}

// staleRerunSQL lists what OutputsRerunStale queues: the current version
// of each file present in its root × plugin whose newest output is stale
// (the tests of MarkStale), with no QUEUED or RUNNING job of that version
// and plugin.
const staleRerunSQL = `SELECT DISTINCT l.current_version_id, o.plugin_name
	FROM ` + latestOutputs + ` o
	JOIN cf_file_location l ON l.id = o.loc
	WHERE o.job_id = o.newest AND l.current_version_id IS NOT NULL AND l.missing_since IS NULL
	  AND (l.current_version_id <> o.file_version_id
	    OR (o.artifact_hash <> '' AND o.artifact_hash <> COALESCE((SELECT m.artifact_hash FROM cf_plugin_manifest m
	        WHERE m.plugin_name = o.plugin_name AND m.status = 'ACTIVE' ORDER BY ` + manifestNewestFirst + ` LIMIT 1), o.artifact_hash)))
	  AND NOT EXISTS (SELECT 1 FROM cf_processing_queue q WHERE q.file_version_id = l.current_version_id
	    AND q.plugin_name = o.plugin_name AND q.status IN ('QUEUED', 'RUNNING'))
	ORDER BY 1, 2`

// OutputsRerunStale queues one job per current file version × plugin whose
// newest output is stale and that has no QUEUED or RUNNING job, of plugin
// ("" for all), or with dryRun only counts them. The new jobs go through
// reuse like any other (a file reverted to content already processed is
// linked, not run). Old outputs stay as history; the rerun's output
// supersedes them.
func (db *DB) OutputsRerunStale(ctx context.Context, now time.Time, plugin string, dryRun bool) (job.RerunStaleResult, error) {
	res := job.RerunStaleResult{Plugin: plugin, DryRun: dryRun}
	var reused []string
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res.Matched, res.Queued, res.Reused, reused = 0, 0, 0, nil
		rows, err := tx.QueryContext(ctx, staleRerunSQL, plugin)
		if err != nil {
			return err
		}
		type pick struct {
			version int64
			plugin  string
		}
		var picks []pick
		for rows.Next() {
			var p pick
			if err := rows.Scan(&p.version, &p.plugin); err != nil {
				rows.Close()
				return err
			}
			picks = append(picks, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		res.Matched = int64(len(picks))
		if dryRun {
			return nil
		}
		ts := formatTime(now)
		ids := make([]int64, 0, len(picks))
		for _, p := range picks {
			var id int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
				(file_version_id, plugin_name, status, priority, retry_count, updated_at, enqueued_at)
				VALUES (?, ?, 'QUEUED', 0, 0, ?, ?) RETURNING id`, p.version, p.plugin, ts, unixMillis(now)).Scan(&id); err != nil {
				return fmt.Errorf("queue version %d: %w", p.version, err)
			}
			ids = append(ids, id)
		}
		res.Queued = int64(len(ids))
		if reused, err = db.reuseJobs(ctx, tx, now, ids); err != nil {
			return err
		}
		res.Reused = int64(len(reused))
		return nil
	})
	if err != nil {
		return job.RerunStaleResult{}, fmt.Errorf("rerun stale outputs: %w", err)
	}
	db.reuse.Report(reused)
	return res, nil
}
