package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// Lineage of file outputs, stale outputs and reuse (issue #20), in
// sentinel_outputs (migration 0011). The shared rules are in lineagepath.go.

// recordOutputsSQL writes the lineage of n outputs of the jobs a batch
// completed in one statement. Arguments: the time, then per output the job,
// its index in the receipt's artifacts (-1: the job reported none), the
// manifest's artifact_hash and the sinks hash from the DISPATCH, topic, URI,
// rows and bytes (outputRows). The rest comes from the rows the batch has
// just written. An empty
// artifact_hash (a receipt from a worker not registered yet) records the
// ACTIVE manifest's. The values are bound, not parsed out of JSON in the
// statement: modernc's SQLite spent as much on the JSON functions as on the
// rows. The input's content hash is not copied onto the row (migration
// 0015): it is its version's, read through file_version_id.
func recordOutputsSQL(n int) string {
	return `WITH c(job_id, artifact_index, artifact_hash, sinks_hash, topic, uri, row_count, byte_count) AS
		(VALUES (?2, ?, ?, ?, ?, ?, ?, ?)` + strings.Repeat(", (?, ?, ?, ?, ?, ?, ?, ?)", n-1) + `)
	INSERT INTO sentinel_outputs (file_version_id, job_id, attempt, artifact_index, plugin_name,
		artifact_hash, sinks_hash, topic, uri, row_count, byte_count, created_at)
	SELECT q.file_version_id, q.id, COALESCE(q.attempt, 0), c.artifact_index, COALESCE(q.plugin_name, ''),
		COALESCE(NULLIF(c.artifact_hash, ''), (SELECT m.artifact_hash FROM cf_plugin_manifest m
			WHERE m.plugin_name = q.plugin_name AND m.status = 'ACTIVE' ORDER BY ` + manifestNewestFirst + ` LIMIT 1), ''),
		c.sinks_hash, c.topic, c.uri, c.row_count, c.byte_count, ?1
	FROM c
	JOIN cf_processing_queue q ON q.id = c.job_id
	WHERE q.file_version_id IS NOT NULL`
}

// outputChunks are the sizes recordOutputsSQL is prepared for; the outputs
// of a batch go in the largest chunks that fit, the rest one by one.
var outputChunks = []int{64, 8, 1}

// outputRow is one output of a completed job, as recordOutputsSQL binds it.
type outputRow struct {
	jobID, index            int64
	artifactHash, sinksHash string
	topic, uri              any // string, or nil
	rowCount, byteCount     any // int64, or nil
}

// outputRows lists the outputs of the conclusions whose outcome is
// job.OutcomeCompleted: one per artifact of the receipt (none reported: one
// with index -1). Rows and bytes are the artifact's own "rows" and "bytes"
// when they are whole numbers, else the job's metrics when the job has at
// most one artifact.
func outputRows(cs []job.Conclusion, out []job.Outcome) []outputRow {
	var rows []outputRow
	for i, c := range cs {
		if out[i] != job.OutcomeCompleted || c.Shadow {
			continue
		}
		metric := func(name string) any {
			if v, ok := c.Metrics[name]; ok && len(c.Artifacts) <= 1 {
				return v
			}
			return nil
		}
		if len(c.Artifacts) == 0 {
			rows = append(rows, outputRow{jobID: c.Ref.JobID, index: -1, artifactHash: c.ArtifactHash, sinksHash: c.SinksHash,
				rowCount: metric("rows"), byteCount: metric("bytes")})
			continue
		}
		for n, a := range c.Artifacts {
			r := outputRow{jobID: c.Ref.JobID, index: int64(n), artifactHash: c.ArtifactHash, sinksHash: c.SinksHash,
				rowCount: metric("rows"), byteCount: metric("bytes")}
			if v, ok := a["topic"]; ok {
				r.topic = v
			}
			if v, ok := a["uri"]; ok {
				r.uri = v
			}
			if v, ok := wholeNumber(a, "rows"); ok {
				r.rowCount = v
			}
			if v, ok := wholeNumber(a, "bytes"); ok {
				r.byteCount = v
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// wholeNumber reads an artifact's key as a whole number. An absent key is
// not parsed: ParseInt's error allocates, and most artifacts carry no rows.
func wholeNumber(a map[string]string, key string) (int64, bool) {
	text, ok := a[key]
	if !ok || text == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(text, 10, 64)
	return v, err == nil
}

// recordOutputs writes the lineage of the conclusions whose outcome is
// job.OutcomeCompleted, in the conclusions' transaction.
func (s *concludeStmts) recordOutputs(ctx context.Context, ts string, cs []job.Conclusion, out []job.Outcome) error {
	if !s.db.lineage.Load() {
		return nil
	}
	rows := outputRows(cs, out)
	for _, size := range outputChunks {
		for len(rows) >= size {
			args := make([]any, 0, 1+8*size)
			args = append(args, ts)
			for _, r := range rows[:size] {
				args = append(args, r.jobID, r.index, r.artifactHash, r.sinksHash, r.topic, r.uri, r.rowCount, r.byteCount)
			}
			st, err := s.db.txStmt(ctx, s.tx, recordOutputsSQL(size))
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("record %d outputs: %w", size, err)
			}
			rows = rows[size:]
		}
	}
	return nil
}

// outputColumns are the columns scanOutput reads from a sentinel_outputs
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

// latestOutputs is sentinel_outputs with, per row, its file (loc) and the
// newest job of the same file and plugin: an output a later job of its file
// and plugin superseded is history, never stale. A window, not an index:
// staleness is read by operators, and every index is written by every
// completion.
const latestOutputs = `(SELECT o.*, v.location_id AS loc,
			MAX(o.job_id) OVER (PARTITION BY v.location_id, o.plugin_name) AS newest
		FROM sentinel_outputs o JOIN cf_file_version v ON v.id = o.file_version_id
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
	rows, err := db.reader.QueryContext(ctx, `SELECT `+outputColumns+` FROM sentinel_outputs o
		WHERE o.file_version_id IN (`+chainVersionsSQL+`) ORDER BY o.job_id, o.artifact_index`, versionID)
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
	rows, err := db.reader.QueryContext(ctx, `SELECT `+outputColumns+` FROM sentinel_outputs o
		WHERE o.uri = ? ORDER BY o.job_id DESC, o.artifact_index LIMIT ?`, uri, limit)
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
		WHERE o.job_id = o.newest ORDER BY o.job_id, o.artifact_index`, plugin)
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
