package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// jobInfoSelect reads a job.Info; scanJobInfo scans its columns in order.
const jobInfoSelect = `SELECT
	q.id, q.file_version_id, q.plugin_name, q.status, q.priority, q.retry_count, q.attempt,
	q.claimed_by, q.worker_host, q.error_message, q.result_summary,
	q.claim_time, q.end_time, q.metrics_json, q.artifacts_json, q.config_overrides,
	q.updated_at, q.cancel_requested_at IS NOT NULL, r.path, l.rel_path
FROM cf_processing_queue q
LEFT JOIN cf_file_version v ON v.id = q.file_version_id
LEFT JOIN cf_file_location l ON l.id = v.location_id
LEFT JOIN cf_source_root r ON r.id = l.source_root_id`

func scanJobInfo(row interface{ Scan(...any) error }) (job.Info, error) {
	var (
		j                                         job.Info
		fv, prio, retries, attempt                sql.NullInt64
		plugin, status, by, host, errMsg, summary sql.NullString
		metrics, artifacts, overrides, root, rel  sql.NullString
		claimed, ended, updated                   nullTime
	)
	err := row.Scan(&j.ID, &fv, &plugin, &status, &prio, &retries, &attempt,
		&by, &host, &errMsg, &summary,
		&claimed, &ended, &metrics, &artifacts, &overrides,
		&updated, &j.CancelRequested, &root, &rel)
	if err != nil {
		return job.Info{}, err
	}
	j.FileVersionID = fv.Int64
	j.PluginName = plugin.String
	j.Status = job.Status(orDefault(status.String, string(job.StatusQueued)))
	j.Priority, j.RetryCount, j.Attempt = prio.Int64, retries.Int64, attempt.Int64
	j.ClaimedBy, j.WorkerHost = by.String, host.String
	j.ErrorMessage, j.ResultSummary = errMsg.String, summary.String
	j.ClaimTime, j.EndTime, j.UpdatedAt = claimed.Time, ended.Time, updated.Time
	j.ConfigOverrides = overrides.String
	j.Metrics, j.Artifacts = DecodeReceipt(metrics, artifacts)
	if root.String != "" && rel.String != "" {
		j.FilePath = filepath.Join(root.String, rel.String)
	}
	return j, nil
}

// JobsList returns one page of the jobs that match f, in f's order (newest
// first by default), and the number that match in all (from f's cursor on,
// when it has one).
func (db *DB) JobsList(ctx context.Context, f job.Filter) (job.Page, error) {
	f, err := f.Paged()
	if err != nil {
		return job.Page{}, err
	}
	cond, args := JobFilterSQL(f, SQLite)
	if cond != "" {
		cond = " WHERE " + cond
	}
	from := `cf_processing_queue q`
	if NeedsLocation(f) {
		from += JobLocationJoins
	}
	var page job.Page
	if err := db.reader.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+from+cond, args...).Scan(&page.Total); err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	rows, err := db.reader.QueryContext(ctx, jobInfoSelect+cond+JobOrderSQL(f)+` LIMIT ? OFFSET ?`,
		append(args, f.Limit, f.Offset)...)
	if err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		j, err := scanJobInfo(rows)
		if err != nil {
			return job.Page{}, fmt.Errorf("list jobs: %w", err)
		}
		page.Jobs = append(page.Jobs, j)
	}
	if err := rows.Err(); err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	return page, nil
}

// jobGetSQL reads one job: JobGet runs it often (the API, the tests'
// waits), so it is prepared once (readerStmt).
const jobGetSQL = jobInfoSelect + ` WHERE q.id = ?`

// JobGet returns one job with its file path, or job.ErrNotFound. Malformed
// metrics or artifacts JSON written by another tool reads as none rather
// than an error.
func (db *DB) JobGet(ctx context.Context, id int64) (job.Info, error) {
	st, err := db.readerStmt(ctx, jobGetSQL)
	if err != nil {
		return job.Info{}, fmt.Errorf("job %d: %w", id, err)
	}
	j, err := scanJobInfo(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return job.Info{}, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return job.Info{}, fmt.Errorf("job %d: %w", id, err)
	}
	recorded, err := db.jobAttempts(ctx, id)
	if err != nil {
		return job.Info{}, err
	}
	j.Attempts = job.WithLatestAttempt(recorded, j.Job)
	if j.Dispatch, err = db.jobDispatch(ctx, j.Job); err != nil {
		return job.Info{}, err
	}
	return j, nil
}

// JobEnqueue's statements (prepareWriter).
const (
	versionExistsSQL = `SELECT 1 FROM cf_file_version WHERE id = ?`
	jobEnqueueSQL    = `INSERT INTO cf_processing_queue
		(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at, enqueued_at)
		VALUES (?, ?, ?, 'QUEUED', ?, 0, ?, ?) RETURNING id`
)

// JobEnqueue validates s and inserts a QUEUED job, returning its id. An
// unknown file is job.ErrNotFound; bad input (no or both file references, no
// plugin, config_overrides a dispatch could not use or with a sink naming the
// database) is job.ErrInvalid, so the operator hears about it now rather than
// when the job fails at dispatch. A plugin without an ACTIVE manifest is
// accepted: it may be deployed later.
func (db *DB) JobEnqueue(ctx context.Context, s job.Submission) (int64, error) {
	overridden, err := CheckSubmission(s)
	if err != nil {
		return 0, err
	}
	for _, sinks := range overridden {
		if err := db.checkSinks(sinks); err != nil {
			return 0, fmt.Errorf("submit job: config_overrides: %w", err)
		}
	}
	var overrides any
	if strings.TrimSpace(s.ConfigOverrides) != "" {
		overrides = s.ConfigOverrides
	}
	// Jobs are often enqueued one after another (the API, scripts, the
	// tests' seeding): prepared once on the writer, these statements are
	// not parsed again for each.
	if err := db.prepareWriter(ctx, versionExistsSQL, jobEnqueueSQL); err != nil {
		return 0, fmt.Errorf("submit job: %w", err)
	}
	var id int64
	var reused []string
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		fv := s.FileVersionID
		if s.FilePath != "" {
			var err error
			if fv, err = versionAtPath(ctx, tx, s.FilePath); err != nil {
				return err
			}
		} else {
			exists, err := db.txStmt(ctx, tx, versionExistsSQL)
			if err != nil {
				return err
			}
			var one int
			err = exists.QueryRowContext(ctx, fv).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("file version %d: %w", fv, job.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		at := time.Now()
		now := formatTime(at)
		// The queue's plugin_name is a foreign key of cf_plugin_config.
		if err := pluginConfigEnsure(ctx, tx, strings.TrimSpace(s.Plugin), now); err != nil {
			return err
		}
		insert, err := db.txStmt(ctx, tx, jobEnqueueSQL)
		if err != nil {
			return err
		}
		if err := insert.QueryRowContext(ctx,
			fv, strings.TrimSpace(s.Plugin), overrides, s.Priority, now, unixMillis(at)).Scan(&id); err != nil {
			return err
		}
		reused, err = db.reuseJobs(ctx, tx, at, []int64{id})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("submit job: %w", err)
	}
	db.reuse.Report(reused)
	return id, nil
}

// versionAtPath returns the current version of the file at an absolute path,
// looked up under the active source root that contains it most closely.
func versionAtPath(ctx context.Context, tx *sql.Tx, abs string) (int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, path FROM cf_source_root WHERE COALESCE(active, 1) = 1`)
	if err != nil {
		return 0, err
	}
	var roots []job.SourceRoot
	for rows.Next() {
		var r job.SourceRoot
		if err := rows.Scan(&r.ID, &r.Path); err != nil {
			rows.Close()
			return 0, err
		}
		roots = append(roots, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	rootID, rel, ok := SourceRootFor(roots, abs)
	if !ok {
		return 0, fmt.Errorf("file %q is under no active source root: %w", filepath.Clean(abs), job.ErrNotFound)
	}
	var fv sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT current_version_id FROM cf_file_location
		WHERE source_root_id = ? AND rel_path = ? ORDER BY id LIMIT 1`, rootID, rel).Scan(&fv)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !fv.Valid) {
		return 0, fmt.Errorf("file %q has no recorded version (not scanned yet?): %w", abs, job.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fv.Int64, nil
}

// JobCancel cancels a job: QUEUED or PENDING becomes SKIPPED at once; RUNNING
// is marked cancel-requested (so it can never be requeued) and reported with
// its claim so the caller can send ABORT. Cancelling a SKIPPED job again is
// a no-op; a COMPLETED or FAILED job is job.ErrConflict.
func (db *DB) JobCancel(ctx context.Context, now time.Time, id int64) (job.CancelResult, error) {
	var out job.CancelResult
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var status, by sql.NullString
		var attempt sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT status, claimed_by, attempt FROM cf_processing_queue WHERE id = ?`, id).
			Scan(&status, &by, &attempt)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		out.Previous = job.Status(orDefault(status.String, string(job.StatusQueued)))
		ts := formatTime(now)
		switch out.Previous {
		case job.StatusQueued, job.StatusPending:
			_, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				status = 'SKIPPED', error_message = ?, end_time = ?, next_run_at = NULL,
				claimed_by = NULL, updated_at = ?
			WHERE id = ? AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING')`, cancelledMessage, ts, ts, id)
			out.Status = job.StatusSkipped
			return err
		case job.StatusRunning:
			_, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				cancel_requested_at = COALESCE(cancel_requested_at, ?), updated_at = ?
			WHERE id = ? AND status = 'RUNNING'`, ts, ts, id)
			out.Status = job.StatusRunning
			out.Claim = job.Ref{JobID: id, Worker: by.String, Attempt: attempt.Int64}
			return err
		case job.StatusSkipped:
			out.Status = job.StatusSkipped
			return nil
		}
		return fmt.Errorf("job %d is %s; only QUEUED, PENDING or RUNNING jobs can be cancelled: %w",
			id, out.Previous, job.ErrConflict)
	})
	if err != nil {
		return job.CancelResult{}, fmt.Errorf("cancel job: %w", err)
	}
	return out, nil
}

// JobsBulk retries or cancels every job f selects (its Limit, Offset and
// BeforeID are ignored: a bulk action covers the whole filter), or with
// dryRun only counts them. A retry acts on the FAILED ones, as JobRetry; a
// cancel skips the QUEUED and PENDING ones and marks the RUNNING ones, as
// JobCancel, returning those so that their workers can be told to abort.
func (db *DB) JobsBulk(ctx context.Context, now time.Time, action job.BulkAction, f job.Filter, dryRun bool) (job.BulkResult, error) {
	if err := CheckBulk(action); err != nil {
		return job.BulkResult{}, err
	}
	f.Limit, f.Offset, f.BeforeID, f.After = 0, 0, 0, nil
	cond, args := JobFilterSQL(f, SQLite)
	if cond != "" {
		cond = " AND " + cond
	}
	selected := `SELECT q.id FROM cf_processing_queue q` + JobLocationJoins + ` WHERE `
	out := job.BulkResult{Action: action}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(now)
		if action == job.BulkRetry {
			in := selected + `q.status = 'FAILED'` + cond
			if dryRun {
				return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+in+`)`, args...).Scan(&out.Matched)
			}
			res, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				status = 'QUEUED', retry_count = 0, claimed_by = NULL, worker_host = NULL,
				claim_time = NULL, end_time = NULL, next_run_at = NULL, error_message = NULL,
				result_summary = NULL, metrics_json = NULL, artifacts_json = NULL,
				cancel_requested_at = NULL, updated_at = ?, enqueued_at = ?
			WHERE status = 'FAILED' AND id IN (`+in+`)`, append([]any{ts, unixMillis(now)}, args...)...)
			if err != nil {
				return err
			}
			out.Changed, err = res.RowsAffected()
			out.Matched = out.Changed
			return err
		}
		waiting := selected + `COALESCE(q.status, 'QUEUED') IN ('QUEUED', 'PENDING')` + cond
		running := selected + `q.status = 'RUNNING' AND q.cancel_requested_at IS NULL` + cond
		if dryRun {
			return tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM (`+waiting+`)) + (SELECT COUNT(*) FROM (`+running+`))`,
				append(append([]any{}, args...), args...)...).Scan(&out.Matched)
		}
		res, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
			status = 'SKIPPED', error_message = ?, end_time = ?, next_run_at = NULL,
			claimed_by = NULL, updated_at = ?
		WHERE COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING') AND id IN (`+waiting+`)`,
			append([]any{cancelledMessage, ts, ts}, args...)...)
		if err != nil {
			return err
		}
		if out.Changed, err = res.RowsAffected(); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `UPDATE cf_processing_queue SET
			cancel_requested_at = ?, updated_at = ?
		WHERE status = 'RUNNING' AND cancel_requested_at IS NULL AND id IN (`+running+`)
		RETURNING id, claimed_by, attempt`, append([]any{ts, ts}, args...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var by sql.NullString
			var attempt sql.NullInt64
			if err := rows.Scan(&id, &by, &attempt); err != nil {
				return err
			}
			out.Running = append(out.Running, job.CancelResult{Previous: job.StatusRunning, Status: job.StatusRunning,
				Claim: job.Ref{JobID: id, Worker: by.String, Attempt: attempt.Int64}})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		out.Changed += int64(len(out.Running))
		out.Matched = out.Changed
		return nil
	})
	if err != nil {
		return job.BulkResult{}, fmt.Errorf("bulk %s: %w", action, err)
	}
	return out, nil
}

// JobRetry puts a FAILED job back to QUEUED, to run as soon as a worker can.
// It is a fresh start decided by an operator, so retry_count goes back to 0
// (otherwise a job that failed for exhausting its retries would fail again at
// the first fault) and the previous error, receipt and cancel mark are
// cleared. attempt is kept: it is the fencing token, and a receipt of an
// earlier attempt must stay stale. Any other status is job.ErrConflict.
func (db *DB) JobRetry(ctx context.Context, now time.Time, id int64) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(now)
		res, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
			status = 'QUEUED', retry_count = 0, claimed_by = NULL, worker_host = NULL,
			claim_time = NULL, end_time = NULL, next_run_at = NULL, error_message = NULL,
			result_summary = NULL, metrics_json = NULL, artifacts_json = NULL,
			cancel_requested_at = NULL, updated_at = ?, enqueued_at = ?
		WHERE id = ? AND status = 'FAILED'`, ts, unixMillis(now), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var status sql.NullString
		err = tx.QueryRowContext(ctx, `SELECT status FROM cf_processing_queue WHERE id = ?`, id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("job %d is %s; only FAILED jobs can be retried: %w",
			id, orDefault(status.String, string(job.StatusQueued)), job.ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("retry job: %w", err)
	}
	return nil
}

// JobsEnqueueBulk inserts n QUEUED jobs for one file version and plugin in a
// single transaction. Benchmarks and load tests use it to build deep queues
// quickly; one commit per job would dominate the set-up time.
func (db *DB) JobsEnqueueBulk(ctx context.Context, fileVersionID int64, plugin string, priority int64, n int) error {
	return db.writeTx(ctx, func(tx *sql.Tx) error {
		at := time.Now()
		ts := formatTime(at)
		if err := pluginConfigEnsure(ctx, tx, plugin, ts); err != nil {
			return fmt.Errorf("bulk enqueue: %w", err)
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at, enqueued_at)
			VALUES (?, ?, 'QUEUED', ?, 0, ?, ?)`)
		if err != nil {
			return fmt.Errorf("bulk enqueue: %w", err)
		}
		defer st.Close()
		for i := 0; i < n; i++ {
			if _, err := st.ExecContext(ctx, fileVersionID, plugin, priority, ts, unixMillis(at)); err != nil {
				return fmt.Errorf("bulk enqueue: %w", err)
			}
		}
		return nil
	})
}

// JobsCountByStatus counts queue rows per status; NULL status counts as
// QUEUED.
func (db *DB) JobsCountByStatus(ctx context.Context) (map[job.Status]int64, error) {
	rows, err := db.reader.QueryContext(ctx,
		`SELECT COALESCE(status, 'QUEUED'), COUNT(*) FROM cf_processing_queue GROUP BY 1`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	counts := make(map[job.Status]int64)
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count jobs: %w", err)
		}
		counts[job.Status(s)] += n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return counts, nil
}

// JobsCountWithStatus counts the rows with one status through the status
// index, without reading the others; JobsCountByStatus reads every row.
func (db *DB) JobsCountWithStatus(ctx context.Context, status job.Status) (int64, error) {
	var n int64
	err := db.reader.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM cf_processing_queue WHERE status = ?`, string(status)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s jobs: %w", status, err)
	}
	return n, nil
}

// nextRunSQL finds the earliest future next_run_at. INDEXED BY: left to
// itself the planner picks a (status, …) index and reads every QUEUED row;
// the partial index answers in one seek.
const nextRunSQL = `SELECT MIN(next_run_at)
	FROM cf_processing_queue INDEXED BY ix_cf_queue_next_run
	WHERE status = 'QUEUED' AND next_run_at IS NOT NULL AND next_run_at > ?`

// JobsNextRunAt returns the earliest next_run_at after now among QUEUED jobs
// (ok=false if none), so the dispatcher can sleep until a backed-off job is
// due instead of polling.
func (db *DB) JobsNextRunAt(ctx context.Context, now time.Time) (time.Time, bool, error) {
	var next sql.NullInt64
	st, err := db.readerStmt(ctx, nextRunSQL)
	if err == nil {
		err = st.QueryRowContext(ctx, unixMillis(now)).Scan(&next)
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next run at: %w", err)
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(next.Int64).UTC(), true, nil
}

// jsonOrNull encodes v, or returns NULL when null is true.
func jsonOrNull(v any, null bool) (any, error) {
	if null {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// JobsFinishedBulk inserts n jobs for one file version and plugin that
// already ended with status (COMPLETED, FAILED or SKIPPED) at ended, in one
// statement. Benchmarks and tests of retention use it to build a backlog of
// old finished jobs quickly.
func (db *DB) JobsFinishedBulk(ctx context.Context, fileVersionID int64, plugin string, status job.Status, ended time.Time, n int) error {
	if !status.Finished() {
		return fmt.Errorf("bulk finished jobs: status %s is not a finished one: %w", status, job.ErrInvalid)
	}
	return db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(ended)
		if err := pluginConfigEnsure(ctx, tx, plugin, ts); err != nil {
			return fmt.Errorf("bulk finished jobs: %w", err)
		}
		_, err := tx.ExecContext(ctx, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
			INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, attempt, claim_time, end_time, updated_at, enqueued_at)
			SELECT ?, ?, ?, 0, 0, 1, ?, ?, ?, ? FROM c`,
			n, fileVersionID, plugin, string(status), ts, ts, ts, unixMillis(ended))
		if err != nil {
			return fmt.Errorf("bulk finished jobs: %w", err)
		}
		return nil
	})
}
