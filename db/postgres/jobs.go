package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// The operators' side of the job path: the same methods, with the same
// meaning and errors, as package db's (db/jobs.go); the rules both share
// (what a submission must hold, which source root a path is under, how a
// receipt is read) are package db's.
//
// Times: claim_time and end_time are the original's TIMESTAMP WITHOUT TIME
// ZONE and hold UTC; our columns are TIMESTAMPTZ. Every time comes from the
// caller's now, as on SQLite.

// inTx runs fn in a transaction, and again (twice at most) when PostgreSQL
// broke a deadlock or a serialization failure by aborting it: fn must start
// over from nothing each time.
func (d *DB) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for try := 0; ; try++ {
		err := pgx.BeginFunc(ctx, d.pool, fn)
		var pgErr *pgconn.PgError
		if err != nil && try < 2 && errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") {
			continue
		}
		return err
	}
}

// jobInfoSelect reads a job.Info; scanJobInfo scans its columns in order.
const jobInfoSelect = `SELECT
	q.id, q.file_version_id, q.plugin_name, q.status::text, q.priority, q.retry_count, q.attempt,
	q.claimed_by, q.worker_host, q.error_message, q.result_summary,
	q.claim_time, q.end_time, q.metrics_json, q.artifacts_json, q.config_overrides,
	q.updated_at, q.cancel_requested_at IS NOT NULL, r.path, l.rel_path
FROM cf_processing_queue q
LEFT JOIN cf_file_version v ON v.id = q.file_version_id
LEFT JOIN cf_file_location l ON l.id = v.location_id
LEFT JOIN cf_source_root r ON r.id = l.source_root_id`

func scanJobInfo(row pgx.Row) (job.Info, error) {
	var (
		j                                         job.Info
		fv, prio, retries, attempt                *int64
		plugin, status, by, host, errMsg, summary *string
		overrides, root, rel                      *string
		metrics, artifacts                        sql.NullString
		claimed, ended, updated                   *time.Time
	)
	err := row.Scan(&j.ID, &fv, &plugin, &status, &prio, &retries, &attempt,
		&by, &host, &errMsg, &summary,
		&claimed, &ended, &metrics, &artifacts, &overrides,
		&updated, &j.CancelRequested, &root, &rel)
	if err != nil {
		return job.Info{}, err
	}
	j.FileVersionID = deref(fv)
	j.PluginName = deref(plugin)
	j.Status = job.Status(orDefault(deref(status), string(job.StatusQueued)))
	j.Priority, j.RetryCount, j.Attempt = deref(prio), deref(retries), deref(attempt)
	j.ClaimedBy, j.WorkerHost = deref(by), deref(host)
	j.ErrorMessage, j.ResultSummary = deref(errMsg), deref(summary)
	j.ClaimTime, j.EndTime, j.UpdatedAt = utc(claimed), utc(ended), utc(updated)
	j.ConfigOverrides = deref(overrides)
	j.Metrics, j.Artifacts = db.DecodeReceipt(metrics, artifacts)
	if deref(root) != "" && deref(rel) != "" {
		j.FilePath = filepath.Join(*root, *rel)
	}
	return j, nil
}

// JobsList returns one page of the jobs that match f, in f's order, and the
// number that match in all (from f's cursor on), as package db's JobsList.
func (d *DB) JobsList(ctx context.Context, f job.Filter) (job.Page, error) {
	f, err := f.Paged()
	if err != nil {
		return job.Page{}, err
	}
	cond, args := db.JobFilterSQL(f, dialect)
	if cond != "" {
		cond = " WHERE " + cond
	}
	from := `cf_processing_queue q`
	if db.NeedsLocation(f) {
		from += db.JobLocationJoins
	}
	var page job.Page
	if err := d.pool.QueryRow(ctx, `SELECT COUNT(*) FROM `+from+cond, args...).Scan(&page.Total); err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	q := jobInfoSelect + cond + db.JobOrderSQL(f) + fmt.Sprintf(` LIMIT $%d OFFSET $%d`, len(args)+1, len(args)+2)
	rows, err := d.pool.Query(ctx, q, append(args, f.Limit, f.Offset)...)
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

// placeholder is PostgreSQL's n-th argument.
func placeholder(n int) string { return fmt.Sprintf("$%d", n) }

// dialect is PostgreSQL's db.Dialect: timestamptz columns compare with
// time.Time arguments.
var dialect = db.Dialect{Placeholder: placeholder, StatusText: "q.status::text",
	Time: func(t time.Time) any { return t }}

// JobsBulk retries or cancels every job f selects, or with dryRun counts
// them, as package db's JobsBulk.
func (d *DB) JobsBulk(ctx context.Context, now time.Time, action job.BulkAction, f job.Filter, dryRun bool) (job.BulkResult, error) {
	if err := db.CheckBulk(action); err != nil {
		return job.BulkResult{}, err
	}
	f.Limit, f.Offset, f.BeforeID, f.After = 0, 0, 0, nil
	cond, args := db.JobFilterSQL(f, dialect)
	if cond != "" {
		cond = " AND " + cond
	}
	n := len(args)
	selected := `SELECT q.id FROM cf_processing_queue q` + db.JobLocationJoins + ` WHERE `
	out := job.BulkResult{Action: action}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		out = job.BulkResult{Action: action} // a retried transaction starts over
		if action == job.BulkRetry {
			in := selected + `q.status = 'FAILED'` + cond
			if dryRun {
				return tx.QueryRow(ctx, `SELECT COUNT(*) FROM (`+in+`) s`, args...).Scan(&out.Matched)
			}
			tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE cf_processing_queue SET
				status = 'QUEUED', retry_count = 0, claimed_by = NULL, worker_host = NULL,
				claim_time = NULL, end_time = NULL, next_run_at = NULL, error_message = NULL,
				result_summary = NULL, metrics_json = NULL, artifacts_json = NULL,
				cancel_requested_at = NULL, updated_at = $%d, enqueued_at = $%d
			WHERE status = 'FAILED' AND id IN (`+in+`)`, n+1, n+1), append(args, now)...)
			if err != nil {
				return err
			}
			out.Changed, out.Matched = tag.RowsAffected(), tag.RowsAffected()
			return nil
		}
		waiting := selected + `COALESCE(q.status, 'QUEUED') IN ('QUEUED', 'PENDING')` + cond
		running := selected + `q.status = 'RUNNING' AND q.cancel_requested_at IS NULL` + cond
		if dryRun {
			return tx.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM (`+waiting+`) w) + (SELECT COUNT(*) FROM (`+running+`) r)`,
				args...).Scan(&out.Matched)
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE cf_processing_queue SET
			status = 'SKIPPED', error_message = $%d, end_time = $%d, next_run_at = NULL,
			claimed_by = NULL, updated_at = $%d
		WHERE COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING') AND id IN (`+waiting+`)`, n+1, n+2, n+3),
			append(args, db.CancelledMessage, now.UTC(), now)...)
		if err != nil {
			return err
		}
		out.Changed = tag.RowsAffected()
		rows, err := tx.Query(ctx, fmt.Sprintf(`UPDATE cf_processing_queue SET
			cancel_requested_at = $%d, updated_at = $%d
		WHERE status = 'RUNNING' AND cancel_requested_at IS NULL AND id IN (`+running+`)
		RETURNING id, claimed_by, attempt`, n+1, n+1), append(args, now)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var by *string
			var attempt *int64
			if err := rows.Scan(&id, &by, &attempt); err != nil {
				return err
			}
			out.Running = append(out.Running, job.CancelResult{Previous: job.StatusRunning, Status: job.StatusRunning,
				Claim: job.Ref{JobID: id, Worker: deref(by), Attempt: deref(attempt)}})
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

// JobGet returns one job with its file path, or job.ErrNotFound.
func (d *DB) JobGet(ctx context.Context, id int64) (job.Info, error) {
	j, err := scanJobInfo(d.pool.QueryRow(ctx, jobInfoSelect+` WHERE q.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return job.Info{}, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return job.Info{}, fmt.Errorf("job %d: %w", id, err)
	}
	recorded, err := d.jobAttempts(ctx, id)
	if err != nil {
		return job.Info{}, err
	}
	j.Attempts = job.WithLatestAttempt(recorded, j.Job)
	if j.Dispatch, err = d.jobDispatch(ctx, j.Job); err != nil {
		return job.Info{}, err
	}
	return j, nil
}

// jobDispatch assembles job j's DISPATCH in a read-only transaction.
func (d *DB) jobDispatch(ctx context.Context, j job.Job) (*job.DispatchView, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only: nothing to keep
	// A shadow job's manifest (shadow.go).
	var manifestID int64
	if err := tx.QueryRow(ctx, `SELECT manifest_id FROM sentinel_shadow_jobs WHERE job_id = $1`, j.ID).
		Scan(&manifestID); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
	}
	return db.DispatchView(ctx, db.NewAssembler(pgSource{tx}, nil), j, manifestID)
}

// jobAttempts reads a job's recorded attempts, oldest first.
func (d *DB) jobAttempts(ctx context.Context, id int64) ([]job.Attempt, error) {
	rows, err := d.pool.Query(ctx, `SELECT attempt, worker, claim_time, end_time, outcome, message
		FROM sentinel_job_attempts WHERE job_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	defer rows.Close()
	var out []job.Attempt
	for rows.Next() {
		var (
			a           job.Attempt
			worker, msg *string
			claimed     *time.Time
		)
		if err := rows.Scan(&a.Attempt, &worker, &claimed, &a.EndTime, &a.Outcome, &msg); err != nil {
			return nil, fmt.Errorf("attempts of job %d: %w", id, err)
		}
		if worker != nil {
			a.Worker = *worker
		}
		if msg != nil {
			a.Message = *msg
		}
		if claimed != nil {
			a.ClaimTime = *claimed
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	return out, nil
}

// JobEnqueue validates s (db.CheckSubmission) and inserts a QUEUED job,
// returning its id; an unknown file is job.ErrNotFound. A plugin without an
// ACTIVE manifest is accepted: it may be deployed later. No sink can name
// the database here (it is not a file), so unlike SQLite's there is no sink
// guard.
func (d *DB) JobEnqueue(ctx context.Context, s job.Submission) (int64, error) {
	if _, err := db.CheckSubmission(s); err != nil {
		return 0, err
	}
	var overrides *string
	if strings.TrimSpace(s.ConfigOverrides) != "" {
		overrides = &s.ConfigOverrides
	}
	plugin := strings.TrimSpace(s.Plugin)
	var id int64
	var reused []string
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		fv := s.FileVersionID
		if s.FilePath != "" {
			var err error
			if fv, err = versionAtPath(ctx, tx, s.FilePath); err != nil {
				return err
			}
		} else {
			var one int
			err := tx.QueryRow(ctx, `SELECT 1 FROM cf_file_version WHERE id = $1`, fv).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("file version %d: %w", fv, job.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		now := time.Now()
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at)
			VALUES ($1, $2, $3, 'QUEUED', $4, 0, $5) RETURNING id`,
			fv, plugin, overrides, s.Priority, now).Scan(&id); err != nil {
			return err
		}
		var err error
		reused, err = d.reuseJobs(ctx, tx, now, []int64{id}) // outputs.go
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("submit job: %w", err)
	}
	d.reuse.Report(reused)
	return id, nil
}

// pluginConfigEnsure inserts the plugin's cf_plugin_config row if it has
// none: the queue's plugin_name is a foreign key of it.
func pluginConfigEnsure(ctx context.Context, tx pgx.Tx, plugin string, now time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters, last_updated)
		VALUES ($1, '', '{}', $2) ON CONFLICT (plugin_name) DO NOTHING`, plugin, now.UTC())
	if err != nil {
		return fmt.Errorf("ensure plugin config: %w", err)
	}
	return nil
}

// versionAtPath returns the current version of the file at an absolute path,
// looked up under the active source root that contains it most closely.
func versionAtPath(ctx context.Context, tx pgx.Tx, abs string) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT id, path FROM cf_source_root WHERE COALESCE(active, 1) = 1`)
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
	rootID, rel, ok := db.SourceRootFor(roots, abs)
	if !ok {
		return 0, fmt.Errorf("file %q is under no active source root: %w", filepath.Clean(abs), job.ErrNotFound)
	}
	var fv *int64
	err = tx.QueryRow(ctx, `SELECT current_version_id FROM cf_file_location
		WHERE source_root_id = $1 AND rel_path = $2 ORDER BY id LIMIT 1`, rootID, rel).Scan(&fv)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && fv == nil) {
		return 0, fmt.Errorf("file %q has no recorded version (not scanned yet?): %w", filepath.Clean(abs), job.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return *fv, nil
}

// JobsEnqueueBulk inserts n QUEUED jobs for one file version and plugin in
// one statement, for benchmarks and load tests.
func (d *DB) JobsEnqueueBulk(ctx context.Context, fileVersionID int64, plugin string, priority int64, n int) error {
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		now := time.Now()
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at)
			SELECT $1, $2, 'QUEUED', $3, 0, $4 FROM generate_series(1, $5::int)`,
			fileVersionID, plugin, priority, now, n)
		return err
	})
	if err != nil {
		return fmt.Errorf("bulk enqueue: %w", err)
	}
	return nil
}

// JobCancel cancels a job: QUEUED or PENDING becomes SKIPPED at once; RUNNING
// is marked cancel-requested (so it can never be requeued) and reported with
// its claim so the caller can send ABORT. Cancelling a SKIPPED job again is
// a no-op; a COMPLETED or FAILED job is job.ErrConflict. The row is locked
// first, so a conclusion of the same job waits for the cancel and then sees
// it.
func (d *DB) JobCancel(ctx context.Context, now time.Time, id int64) (job.CancelResult, error) {
	var out job.CancelResult
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		out = job.CancelResult{}
		var status, by *string
		var attempt *int64
		err := tx.QueryRow(ctx, `SELECT status::text, claimed_by, attempt FROM cf_processing_queue WHERE id = $1 FOR UPDATE`, id).
			Scan(&status, &by, &attempt)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		out.Previous = job.Status(orDefault(deref(status), string(job.StatusQueued)))
		switch out.Previous {
		case job.StatusQueued, job.StatusPending:
			_, err := tx.Exec(ctx, `UPDATE cf_processing_queue SET
				status = 'SKIPPED', error_message = $2, end_time = $3, next_run_at = NULL,
				claimed_by = NULL, updated_at = $4
			WHERE id = $1 AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING')`,
				id, db.CancelledMessage, now.UTC(), now)
			out.Status = job.StatusSkipped
			return err
		case job.StatusRunning:
			_, err := tx.Exec(ctx, `UPDATE cf_processing_queue SET
				cancel_requested_at = COALESCE(cancel_requested_at, $2), updated_at = $2
			WHERE id = $1 AND status = 'RUNNING'`, id, now)
			out.Status = job.StatusRunning
			out.Claim = job.Ref{JobID: id, Worker: deref(by), Attempt: deref(attempt)}
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

// JobRetry puts a FAILED job back to QUEUED with retry_count 0 and the
// previous error, receipt and cancel mark cleared; attempt is kept (it is
// the fencing token). Any other status is job.ErrConflict.
func (d *DB) JobRetry(ctx context.Context, now time.Time, id int64) error {
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE cf_processing_queue SET
			status = 'QUEUED', retry_count = 0, claimed_by = NULL, worker_host = NULL,
			claim_time = NULL, end_time = NULL, next_run_at = NULL, error_message = NULL,
			result_summary = NULL, metrics_json = NULL, artifacts_json = NULL,
			cancel_requested_at = NULL, updated_at = $2, enqueued_at = $2
		WHERE id = $1 AND status = 'FAILED'`, id, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		var status *string
		err = tx.QueryRow(ctx, `SELECT status::text FROM cf_processing_queue WHERE id = $1`, id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("job %d is %s; only FAILED jobs can be retried: %w",
			id, orDefault(deref(status), string(job.StatusQueued)), job.ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("retry job: %w", err)
	}
	return nil
}

// JobsCountByStatus counts queue rows per status; NULL status counts as
// QUEUED.
func (d *DB) JobsCountByStatus(ctx context.Context) (map[job.Status]int64, error) {
	rows, err := d.pool.Query(ctx,
		`SELECT COALESCE(status, 'QUEUED')::text, COUNT(*) FROM cf_processing_queue GROUP BY 1`)
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
// index, as package db's does: NULL status is not counted, and a status
// that is not one of job.Statuses counts 0 (the enum would refuse it).
func (d *DB) JobsCountWithStatus(ctx context.Context, status job.Status) (int64, error) {
	if !slices.Contains(job.Statuses, status) {
		return 0, nil
	}
	var n int64
	err := d.pool.QueryRow(ctx, `SELECT COUNT(*) FROM cf_processing_queue WHERE status = $1`, string(status)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s jobs: %w", status, err)
	}
	return n, nil
}

// JobsNextRunAt returns the earliest next_run_at after now among QUEUED jobs
// (ok=false if none), through the partial index ix_cf_queue_next_run.
func (d *DB) JobsNextRunAt(ctx context.Context, now time.Time) (time.Time, bool, error) {
	var next *time.Time
	err := d.pool.QueryRow(ctx, `SELECT MIN(next_run_at) FROM cf_processing_queue
		WHERE status = 'QUEUED' AND next_run_at > $1`, now).Scan(&next)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next run at: %w", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return next.UTC(), true, nil
}

// JobsRunning returns RUNNING jobs, oldest first.
//
// For one worker, they are the jobs it holds, and this Sentinel adopts
// them: the worker is talking to it (it identified here, or sent a
// conclusion), so its jobs are claimed through this Sentinel's lease from
// now on, and no leader requeues them when the Sentinel they were claimed
// through dies.
//
// For worker "", they are the jobs this Sentinel answers for: those claimed
// through its lease and, when it leads, those whose Sentinel is gone (its
// lease expired more than a TTL ago, time for their workers to fail over
// and be adopted) or unknown (claimed without a lease). Without a lease of
// its own (a tool, a test) it lists them all.
func (d *DB) JobsRunning(ctx context.Context, worker job.WorkerKey) ([]job.Running, error) {
	q := `SELECT id, claimed_by, attempt, retry_count, claim_time FROM cf_processing_queue q WHERE status = 'RUNNING'`
	var args []any
	switch {
	case worker != "":
		if d.sentinelID != "" {
			if _, err := d.pool.Exec(ctx, `UPDATE cf_processing_queue SET sentinel_id = $2
				WHERE status = 'RUNNING' AND claimed_by = $1 AND sentinel_id IS DISTINCT FROM $2`,
				worker, d.sentinelID); err != nil {
				return nil, fmt.Errorf("adopt running jobs of %s: %w", worker, err)
			}
		}
		q += ` AND claimed_by = $1`
		args = append(args, worker)
	case d.sentinelID != "":
		q += ` AND (sentinel_id = $1 OR ($2 AND (sentinel_id IS NULL OR NOT EXISTS (
			SELECT 1 FROM sentinel_lease l WHERE l.id = q.sentinel_id
			AND l.expires_at > now() - $3::bigint * interval '1 microsecond'))))`
		args = append(args, d.sentinelID, d.leading.Load(), d.orphanGrace.Microseconds())
	}
	rows, err := d.pool.Query(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("running jobs: %w", err)
	}
	defer rows.Close()
	var out []job.Running
	for rows.Next() {
		var (
			id               int64
			by               *string
			attempt, retries *int64
			claimed          *time.Time
		)
		if err := rows.Scan(&id, &by, &attempt, &retries, &claimed); err != nil {
			return nil, fmt.Errorf("running jobs: %w", err)
		}
		out = append(out, job.Running{
			Ref:        job.Ref{JobID: id, Worker: deref(by), Attempt: deref(attempt)},
			RetryCount: deref(retries),
			ClaimTime:  utc(claimed),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("running jobs: %w", err)
	}
	return out, nil
}

// deref returns *p, or the zero value for nil (a NULL column).
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// utc returns *t in UTC, or the zero time for NULL.
func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// JobsFinishedBulk inserts n jobs for one file version and plugin that
// already ended with status at ended, in one statement, for benchmarks and
// tests of retention.
func (d *DB) JobsFinishedBulk(ctx context.Context, fileVersionID int64, plugin string, status job.Status, ended time.Time, n int) error {
	if !status.Finished() {
		return fmt.Errorf("bulk finished jobs: status %s is not a finished one: %w", status, job.ErrInvalid)
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if err := pluginConfigEnsure(ctx, tx, plugin, ended); err != nil {
			return err
		}
		end := ended.UTC() // end_time and claim_time are TIMESTAMP WITHOUT TIME ZONE
		_, err := tx.Exec(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, attempt, claim_time, end_time, updated_at, enqueued_at)
			SELECT $1, $2, $3, 0, 0, 1, $4, $4, $5, $5 FROM generate_series(1, $6::int)`,
			fileVersionID, plugin, string(status), end, ended, n)
		return err
	})
	if err != nil {
		return fmt.Errorf("bulk finished jobs: %w", err)
	}
	return nil
}
