package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// Claim is a job claimed for a worker, ready to send.
type Claim struct {
	Ref        job.Ref
	Priority   int64
	RetryCount int64
	Dispatch   Dispatch
	// JobTimeout overrides --job-timeout for this job: the plugin's
	// setting (sentinel_plugin_settings.job_timeout_ms) when the job was
	// claimed. 0 means the global one; negative, no timeout.
	JobTimeout time.Duration
	// EnqueuedAt is when the job was enqueued (or retried by an operator),
	// for the enqueue-to-start latency; zero when unknown (a row another
	// tool inserted before migration 0008).
	EnqueuedAt time.Time
	// Shadow: a shadow job, running its shadow manifest (shadow.go).
	Shadow bool
}

// ClaimFailure is a job that was claimed but whose dispatch could not be
// assembled; it is already FAILED with Reason.
type ClaimFailure struct {
	Ref    job.Ref
	Reason string
}

// claimedRow is what the claim statement returns for one job.
type claimedRow struct {
	ref             job.Ref
	fileVersionID   sql.NullInt64
	plugin          sql.NullString
	priority        sql.NullInt64
	retryCount      sql.NullInt64
	configOverrides sql.NullString
	// location is the file's root path and rel_path joined by a NUL byte,
	// read by the claim statement itself; NULL when a link is missing (the
	// assembler then finds out which).
	location sql.NullString
	// timeoutMS is the plugin's job_timeout_ms.
	timeoutMS sql.NullInt64
	// enqueuedMS is enqueued_at, unix ms.
	enqueuedMS sql.NullInt64
	// manifestID is the manifest a shadow job runs (read only while a
	// shadow run is RUNNING); NULL for every other job.
	manifestID sql.NullInt64
	// hasOutputs: the row still held the outputs of an earlier completion
	// (another tool set it QUEUED again); the claim keeps them.
	hasOutputs bool
}

// normaliseNullsSQL gives rows other tools inserted with NULLs their
// defaults. The WHERE clause is exactly that of the partial index
// ix_cf_queue_nulls, so with nothing to fix it costs one empty index lookup.
const normaliseNullsSQL = `UPDATE cf_processing_queue SET
	status      = COALESCE(status, 'QUEUED'),
	priority    = COALESCE(priority, 0),
	retry_count = COALESCE(retry_count, 0)
WHERE status IS NULL OR priority IS NULL OR retry_count IS NULL`

// JobsClaim claims jobs for several workers in one transaction. For each
// request one UPDATE … WHERE id IN (SELECT … ORDER BY priority DESC, id LIMIT ?)
// RETURNING statement moves up to Limit QUEUED jobs that are due and whose
// plugin the worker runs to RUNNING, bound to the worker with a new attempt
// number. A plugin no request names is never selected, so it never blocks the
// others. Later requests cannot take what earlier ones took. Requests with
// Prefer first claim those plugins' jobs, all before any ordinary claim; the
// ordinary claim then takes what is left of Limit.
//
// Each claimed job's Dispatch is then assembled in the same transaction; a
// job whose dispatch cannot be assembled (no ACTIVE manifest, broken file
// chain, invalid config_overrides) is set FAILED with the reason and returned
// in the failures, never left RUNNING. Claims come back per request, highest
// priority first, then oldest.
func (db *DB) JobsClaim(ctx context.Context, now time.Time, reqs []job.ClaimRequest) ([]Claim, []ClaimFailure, error) {
	res, err := db.JobsBatch(ctx, now, nil, reqs)
	if err != nil {
		return nil, nil, err
	}
	return res.Claims, res.Failures, nil
}

// BatchResult is what JobsBatch did: one job.Outcome per conclusion, in order,
// then the claims and the claimed jobs that failed assembly.
type BatchResult struct {
	Outcomes []job.Outcome
	Claims   []Claim
	Failures []ClaimFailure
	// Chained: some completion's artifacts wait for the chain step
	// (sentinel_chain_pending).
	Chained bool
}

// JobsBatch applies conclusions (as JobsConclude) and then claims jobs (as
// JobsClaim) in one transaction: under load the Sentinel writes each burst of
// receipts and the claim that refills the freed slots with one commit. Jobs
// the conclusions requeue can be claimed by the same call when they are due.
func (db *DB) JobsBatch(ctx context.Context, now time.Time, cs []job.Conclusion, reqs []job.ClaimRequest) (BatchResult, error) {
	if err := CheckBatch(cs, reqs); err != nil {
		return BatchResult{}, err
	}
	filterPaused, shadow := false, false
	if len(reqs) > 0 {
		// Read before the transaction, on a reader: the claim statements
		// must be prepared before it begins, and their shapes depend on
		// the requests. While some plugin is paused, a pause committed
		// meanwhile is still honoured by the statements themselves
		// (pausedFilter). While none is, the statements leave the test out
		// (a lookup per claimed job): pauses are written by this process's
		// queue actor, the one caller of JobsBatch, which forgets the cache
		// when it writes one; another process's pause counts within
		// pausedFresh.
		paused, err := db.pausedPlugins(ctx)
		if err != nil {
			return BatchResult{}, fmt.Errorf("jobs batch: %w", err)
		}
		reqs = WithoutPaused(reqs, paused)
		filterPaused = len(paused) > 0
		// While a shadow run is RUNNING, the claim statement also returns
		// the manifest each shadow job runs (shadow.go); else it is the
		// plain one.
		if shadow, err = db.shadow.Active(ctx, db.readShadowActive); err != nil {
			return BatchResult{}, fmt.Errorf("jobs batch: %w", err)
		}
	}
	claiming := anyClaimable(reqs)
	if len(cs) == 0 && !claiming {
		return BatchResult{}, nil
	}
	// The subscribed topics (chain.go), cached like the paused plugins:
	// without a subscription a completion runs no statement for chaining.
	var topics map[string]bool
	if len(cs) > 0 {
		var err error
		if topics, err = db.chainTopics(ctx); err != nil {
			return BatchResult{}, fmt.Errorf("jobs batch: %w", err)
		}
	}
	var queries []string
	if len(cs) > 0 {
		queries = append(queries, concludeQueries...)
	}
	if claiming {
		queries = append(queries, normaliseNullsSQL, claimFailSQL)
		queries = append(queries, assemblerQueries...)
		// One statement per shape (plugin and exclusion counts), however
		// many workers share it.
		shapes := map[[2]int]bool{}
		for _, r := range reqs {
			if plugins, anyPlugin := pluginFilter(r.Plugins); anyPlugin || len(plugins) > 0 {
				shapes[[2]int{len(plugins), len(r.Exclude)}] = true
			}
			if prefer, _ := pluginFilter(r.Prefer); len(prefer) > 0 {
				shapes[[2]int{len(prefer), len(r.Exclude)}] = true
			}
		}
		for shape := range shapes {
			queries = append(queries, claimSQLFor(shape[0], shape[1], filterPaused, shadow))
		}
	}
	if err := db.prepareWriter(ctx, queries...); err != nil {
		return BatchResult{}, fmt.Errorf("jobs batch: %w", err)
	}
	var res BatchResult
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res = BatchResult{} // a retried transaction starts over
		var err error
		if res.Outcomes, err = db.conclude(ctx, tx, now, cs); err != nil {
			return fmt.Errorf("conclude jobs: %w", err)
		}
		if res.Chained, err = db.markChains(ctx, tx, formatTime(now), cs, res.Outcomes, topics); err != nil {
			return fmt.Errorf("conclude jobs: %w", err)
		}
		if claiming {
			if res.Claims, res.Failures, err = db.claim(ctx, tx, now, reqs, filterPaused, shadow); err != nil {
				return fmt.Errorf("claim jobs: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return BatchResult{}, fmt.Errorf("jobs batch: %w", err)
	}
	return res, nil
}

// claim runs the claim statements and assembles the dispatches in tx.
func (db *DB) claim(ctx context.Context, tx *sql.Tx, now time.Time, reqs []job.ClaimRequest, filterPaused, shadow bool) ([]Claim, []ClaimFailure, error) {
	normalise, err := db.txStmt(ctx, tx, normaliseNullsSQL)
	if err != nil {
		return nil, nil, err
	}
	if _, err := normalise.ExecContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("normalise nulls: %w", err)
	}
	rows, err := RunClaims(reqs, func(r job.ClaimRequest) ([]ClaimedJob, error) {
		return db.claimFor(ctx, tx, now, r, filterPaused, shadow)
	})
	if err != nil {
		return nil, nil, err
	}
	if len(rows) == 0 {
		return nil, nil, nil
	}
	asm, err := db.newAssembler(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	fail, err := db.txStmt(ctx, tx, claimFailSQL)
	if err != nil {
		return nil, nil, err
	}
	var claims []Claim
	var failures []ClaimFailure
	for _, row := range rows {
		d, reason, err := asm.Dispatch(ctx, row)
		if err != nil {
			return nil, nil, err
		}
		if reason != "" {
			if err := claimFail(ctx, fail, now, row.Ref, reason); err != nil {
				return nil, nil, err
			}
			failures = append(failures, ClaimFailure{Ref: row.Ref, Reason: reason})
			continue
		}
		claims = append(claims, Claim{
			Ref:        row.Ref,
			Priority:   row.Priority,
			RetryCount: row.RetryCount,
			Dispatch:   d,
			JobTimeout: row.JobTimeout,
			EnqueuedAt: row.EnqueuedAt,
			Shadow:     row.ManifestID != 0,
		})
	}
	return claims, failures, nil
}

// anyClaimable reports whether some request can claim anything at all, so
// that an idle dispatcher does not open write transactions for nothing.
func anyClaimable(reqs []job.ClaimRequest) bool {
	for _, r := range reqs {
		if plugins, anyPlugin := pluginFilter(r.Plugins); r.Limit > 0 && (anyPlugin || len(plugins) > 0) {
			return true
		}
	}
	return false
}

// claimFor runs the claim statement for one request.
func (db *DB) claimFor(ctx context.Context, tx *sql.Tx, now time.Time, r job.ClaimRequest, filterPaused, shadow bool) ([]ClaimedJob, error) {
	plugins, anyPlugin := pluginFilter(r.Plugins)
	if r.Limit <= 0 || (!anyPlugin && len(plugins) == 0) {
		return nil, nil
	}
	ts := formatTime(now)
	args := []any{r.Worker, r.Worker, ts, ts, unixMillis(now)}
	for _, p := range plugins {
		args = append(args, p)
	}
	for _, p := range r.Exclude {
		args = append(args, p)
	}
	args = append(args, r.Limit)
	st, err := db.txStmt(ctx, tx, claimSQLFor(len(plugins), len(r.Exclude), filterPaused, shadow))
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
	}
	defer rows.Close()
	var out []ClaimedJob
	var rerun []job.Ref // rows that held an earlier completion's outputs
	for rows.Next() {
		c := claimedRow{ref: job.Ref{Worker: r.Worker}}
		dest := []any{&c.ref.JobID, &c.ref.Attempt, &c.fileVersionID, &c.plugin,
			&c.priority, &c.retryCount, &c.configOverrides, &c.location, &c.timeoutMS, &c.enqueuedMS, &c.hasOutputs}
		if shadow {
			dest = append(dest, &c.manifestID)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
		}
		if c.hasOutputs {
			rerun = append(rerun, c.ref)
		}
		out = append(out, c.claimed())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
	}
	if err := keepOutputsOfRerun(ctx, tx, rerun); err != nil {
		return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
	}
	SortClaimed(out)
	return out, nil
}

// claimed converts the row to the assembler's input.
func (c claimedRow) claimed() ClaimedJob {
	root, rel, ok := strings.Cut(c.location.String, "\x00")
	return ClaimedJob{
		Ref:             c.ref,
		FileVersionID:   c.fileVersionID.Int64,
		HasFileVersion:  c.fileVersionID.Valid,
		Plugin:          c.plugin.String,
		Priority:        c.priority.Int64,
		RetryCount:      c.retryCount.Int64,
		ConfigOverrides: c.configOverrides.String,
		RootPath:        root,
		RelPath:         rel,
		Located:         c.location.Valid && ok,
		JobTimeout:      ClaimTimeout(nullInt(c.timeoutMS)),
		EnqueuedAt:      unixMillisTime(c.enqueuedMS),
		ManifestID:      c.manifestID.Int64,
	}
}

// unixMillisTime is a nullable unix-ms column as a time; zero when NULL.
func unixMillisTime(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return time.UnixMilli(ms.Int64).UTC()
}

// claimSQL is the claim statement for a worker running nPlugins named
// plugins, or any plugin when nPlugins is 0, except nExclude plugins.
// Arguments: worker (claimed_by), worker (worker_host), claim_time,
// updated_at, now in unix ms, the plugin names, the excluded names, the limit.
// It returns the claimed rows with their file's location, their plugin's
// job timeout and enqueued_at (claimedRow): subqueries in RETURNING save the
// assembler a statement per job, and the enqueue time a read afterwards.
// With filterPaused, jobs of paused plugins are skipped (pausedFilter).
func claimSQL(nPlugins, nExclude int, filterPaused bool) string {
	return claimSQLFor(nPlugins, nExclude, filterPaused, false)
}

// claimSQLFor is claimSQL, with shadow the claimed rows' last column is
// the manifest a shadow job runs (sentinel_shadow_jobs; NULL for others).
func claimSQLFor(nPlugins, nExclude int, filterPaused, shadow bool) string {
	returning := ""
	if shadow {
		returning = shadowManifestColumn
	}
	// LIMIT ? + 0: SQLite reads a bare "LIMIT ?" at prepare time and then
	// prepares the statement again whenever the bound limit changes, which
	// it does on nearly every claim; an expression is left to run time.
	//
	// INDEXED BY: without statistics the planner prefers the original
	// schema's (status, priority, id) index and then sorts every QUEUED row
	// by id. The partial claim indexes hand rows out in claim order, so the
	// LIMIT stops the scan early. One plugin seeks its own range; several
	// (or any) walk the queue in order and filter.
	index, filter := "ix_cf_queue_claimable_any", ""
	switch {
	case nPlugins == 1:
		index, filter = "ix_cf_queue_claimable", " AND plugin_name = ?"
	case nPlugins > 1:
		filter = " AND plugin_name IN (?" + strings.Repeat(", ?", nPlugins-1) + ")"
	}
	if nExclude > 0 {
		filter += " AND plugin_name NOT IN (?" + strings.Repeat(", ?", nExclude-1) + ")"
	}
	if filterPaused {
		filter += pausedFilter
	}
	return `UPDATE cf_processing_queue SET
		status = 'RUNNING', claimed_by = ?, worker_host = ?, claim_time = ?,
		attempt = COALESCE(attempt, 0) + 1, updated_at = ?
	WHERE id IN (
		SELECT id FROM cf_processing_queue INDEXED BY ` + index + `
		WHERE status = 'QUEUED' AND (next_run_at IS NULL OR next_run_at <= ?)` + filter + `
		ORDER BY priority DESC, id
		LIMIT ? + 0)
	RETURNING id, attempt, file_version_id, plugin_name, priority, retry_count, config_overrides,
		(SELECT r.path || char(0) || l.rel_path
		FROM cf_file_version v
		JOIN cf_file_location l ON l.id = v.location_id
		JOIN cf_source_root r ON r.id = l.source_root_id
		WHERE v.id = cf_processing_queue.file_version_id),
		(SELECT s.job_timeout_ms FROM sentinel_plugin_settings s WHERE s.plugin_name = cf_processing_queue.plugin_name),
		enqueued_at, output_key IS NOT NULL` + returning
}

// shadowManifestColumn is the claim statement's extra column while a shadow
// run is RUNNING.
const shadowManifestColumn = `,
		(SELECT j.manifest_id FROM sentinel_shadow_jobs j WHERE j.job_id = cf_processing_queue.id)`

// pluginSetKey names the set of plugins a request can run: "*" for any
// plugin, else the sorted distinct names.
func pluginSetKey(names []string) string {
	plugins, anyPlugin := pluginFilter(names)
	switch {
	case anyPlugin:
		return "*"
	case len(plugins) == 1:
		return plugins[0]
	}
	sort.Strings(plugins)
	return strings.Join(plugins, "\x00")
}

// pluginFilter returns the distinct non-empty plugin names, or any=true when
// the list contains "*". The result may be names itself: callers must not
// modify it.
func pluginFilter(names []string) (plugins []string, anyPlugin bool) {
	if len(names) == 1 && names[0] != "*" && names[0] != "" {
		return names, false // the common case, without allocating
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "*" {
			return nil, true
		}
		if n != "" && !seen[n] {
			seen[n] = true
			plugins = append(plugins, n)
		}
	}
	return plugins, false
}

// claimFailSQL fails a just-claimed job. Arguments: reason, end_time,
// updated_at, then the claim (id, claimed_by, attempt).
const claimFailSQL = `UPDATE cf_processing_queue SET
		status = 'FAILED', error_message = ?, end_time = ?, updated_at = ?
	WHERE id = ? AND status = 'RUNNING' AND claimed_by = ? AND attempt = ?`

// claimFail marks a just-claimed job FAILED because its dispatch could not be
// assembled; st is claimFailSQL bound to the claim's transaction.
func claimFail(ctx context.Context, st *sql.Stmt, now time.Time, ref job.Ref, reason string) error {
	ts := formatTime(now)
	_, err := st.ExecContext(ctx, reason, ts, ts, ref.JobID, ref.Worker, ref.Attempt)
	if err != nil {
		return fmt.Errorf("fail job %d: %w", ref.JobID, err)
	}
	return nil
}

// Default messages for conclusions that carry none.
const (
	defaultSuccessSummary = "Success"
	defaultFailureMessage = "failed (no reason given)"
	defaultRequeueReason  = "requeued (no reason given)"
	// cancelledMessage is the error_message of a job an operator cancelled.
	cancelledMessage = "cancelled by operator"
)

// claimGuard is the WHERE clause every state change of a claimed job uses: the
// job must still be RUNNING under the same worker and attempt. COALESCE lets
// legacy RUNNING rows (NULL claimed_by and attempt) match Worker "" and
// Attempt 0.
const claimGuard = `id = ? AND status = 'RUNNING' AND COALESCE(claimed_by, '') = ? AND COALESCE(attempt, 0) = ?`

// JobsConclude applies many conclusions in one transaction — one commit per
// burst of receipts is the point. Every change is guarded (WHERE id = ? AND
// status = 'RUNNING' AND claimed_by = ? AND attempt = ?): a conclusion whose claim no longer holds (late, duplicate, wrong worker or
// attempt, job no longer RUNNING) yields job.OutcomeStale and changes nothing, so
// a FAILED job can never become COMPLETED. It returns one job.Outcome per input,
// in order.
func (db *DB) JobsConclude(ctx context.Context, now time.Time, cs []job.Conclusion) ([]job.Outcome, error) {
	res, err := db.JobsBatch(ctx, now, cs, nil)
	if err != nil {
		return nil, err
	}
	return res.Outcomes, nil
}

// conclude applies the conclusions in tx.
func (db *DB) conclude(ctx context.Context, tx *sql.Tx, now time.Time, cs []job.Conclusion) ([]job.Outcome, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	out := make([]job.Outcome, len(cs))
	st := &concludeStmts{db: db, tx: tx}
	ts := formatTime(now)
	// Lineage (outputs.go): the key each completion stores.
	keys, err := st.outputKeys(ctx, cs)
	if err != nil {
		return nil, err
	}
	many := manyCompletable(cs)
	if many != nil {
		if err := st.applyComplete(ctx, ts, cs, keys, many, out); err != nil {
			return nil, err
		}
	}
	for i, c := range cs {
		if out[i] != 0 {
			continue // completed above
		}
		o, err := st.apply(ctx, ts, c, keyAt(keys, i))
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", c.Ref.JobID, err)
		}
		out[i] = o
	}
	return out, nil
}

// The statements of JobsConclude. Each UPDATE's last three arguments are the
// claim (claimGuard); so are the arguments of retriesSQL.
const (
	completeSQL = `UPDATE cf_processing_queue SET
		status = 'COMPLETED', result_summary = ?, end_time = ?, metrics_json = ?,
		artifacts_json = ?, output_key = ?, next_run_at = NULL, updated_at = ?
	WHERE ` + claimGuard
	failSQL = `UPDATE cf_processing_queue SET
		status = 'FAILED', error_message = ?, end_time = ?, next_run_at = NULL, updated_at = ?
	WHERE ` + claimGuard
	retriesSQL = `SELECT COALESCE(retry_count, 0), cancel_requested_at IS NOT NULL,
		(SELECT s.max_retries FROM sentinel_plugin_settings s WHERE s.plugin_name = cf_processing_queue.plugin_name)
		FROM cf_processing_queue WHERE ` + claimGuard
	skipSQL = `UPDATE cf_processing_queue SET
		status = 'SKIPPED', error_message = ?, end_time = ?, next_run_at = NULL, updated_at = ?
	WHERE ` + claimGuard
	requeueSQL = `UPDATE cf_processing_queue SET
		status = 'QUEUED', retry_count = ?, claimed_by = NULL, next_run_at = ?,
		error_message = ?, end_time = NULL, updated_at = ?
	WHERE ` + claimGuard
)

// concludeQueries are prepared before a JobsConclude transaction begins.
var concludeQueries = []string{completeSQL, completeManySQL(completeChunks[0]), completeManySQL(completeChunks[1]),
	failSQL, retriesSQL, skipSQL, requeueSQL, recordAttemptSQL,
	outputKeySQL, outputKeyAddSQL, activeHashSQL, activeHashOfJobsSQL}

// concludeStmts binds each statement of a JobsConclude batch to its
// transaction once, on first use.
type concludeStmts struct {
	db                                     *DB
	tx                                     *sql.Tx
	complete, fail, retries, requeue, skip *sql.Stmt
	attempt                                *sql.Stmt // recordAttemptSQL
}

func (s *concludeStmts) bind(ctx context.Context, p **sql.Stmt, q string) (*sql.Stmt, error) {
	if *p == nil {
		st, err := s.db.txStmt(ctx, s.tx, q)
		if err != nil {
			return nil, err
		}
		*p = st
	}
	return *p, nil
}

// apply applies c; a completion stores outputKey (outputKeys).
func (s *concludeStmts) apply(ctx context.Context, ts string, c job.Conclusion, outputKey any) (job.Outcome, error) {
	guard := []any{c.Ref.JobID, c.Ref.Worker, c.Ref.Attempt}
	// Abort and Requeue depend on whether an operator cancelled the job:
	// read that and the retry count under the same guard (the transaction
	// holds the write lock, so neither can change before the UPDATE).
	var retries int64
	var cancelled bool
	var maxRetries sql.NullInt64 // the plugin's, overriding c.MaxRetries
	if ConclusionNeedsState(c.Kind) {
		st, err := s.bind(ctx, &s.retries, retriesSQL)
		if err != nil {
			return 0, err
		}
		switch err := st.QueryRowContext(ctx, guard...).Scan(&retries, &cancelled, &maxRetries); {
		case errors.Is(err, sql.ErrNoRows):
			return job.OutcomeStale, nil
		case err != nil:
			return 0, err
		}
	}
	step, err := PlanConclusion(WithPluginRetries(c, nullInt(maxRetries)), retries, cancelled)
	if err != nil {
		return 0, err
	}
	switch step.Outcome {
	case job.OutcomeCompleted:
		st, err := s.bind(ctx, &s.complete, completeSQL)
		if err != nil {
			return 0, err
		}
		res, err := st.ExecContext(ctx, append([]any{step.Message, ts, step.Metrics, step.Artifacts, outputKey, ts}, guard...)...)
		return outcomeOf(res, err, job.OutcomeCompleted)
	case job.OutcomeSkipped:
		st, err := s.bind(ctx, &s.skip, skipSQL)
		if err != nil {
			return 0, err
		}
		if err := s.recordAttempt(ctx, ts, step.Outcome, step.Message, guard); err != nil {
			return 0, err
		}
		res, err := st.ExecContext(ctx, append([]any{step.Message, ts, ts}, guard...)...)
		return outcomeOf(res, err, job.OutcomeSkipped)
	case job.OutcomeRequeued:
		st, err := s.bind(ctx, &s.requeue, requeueSQL)
		if err != nil {
			return 0, err
		}
		if err := s.recordAttempt(ctx, ts, step.Outcome, step.Message, guard); err != nil {
			return 0, err
		}
		var next any
		if !step.NextRunAt.IsZero() {
			next = unixMillis(step.NextRunAt)
		}
		res, err := st.ExecContext(ctx, append([]any{step.RetryCount, next, step.Message, ts}, guard...)...)
		return outcomeOf(res, err, job.OutcomeRequeued)
	}
	return s.failed(ctx, ts, step.Message, guard, job.OutcomeFailed)
}

// failed marks the claimed job FAILED with msg.
func (s *concludeStmts) failed(ctx context.Context, ts, msg string, guard []any, o job.Outcome) (job.Outcome, error) {
	st, err := s.bind(ctx, &s.fail, failSQL)
	if err != nil {
		return 0, err
	}
	if err := s.recordAttempt(ctx, ts, o, msg, guard); err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, append([]any{msg, ts, ts}, guard...)...)
	return outcomeOf(res, err, o)
}

// outcomeOf turns the result of a guarded UPDATE into its outcome: o when a
// row changed, job.OutcomeStale when the guard matched nothing.
func outcomeOf(res sql.Result, err error, o job.Outcome) (job.Outcome, error) {
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return job.OutcomeStale, nil
	}
	return o, nil
}

// JobsRunning returns the RUNNING jobs, oldest first; worker "" means all
// workers. It is how the Sentinel rebuilds its picture of who runs what after
// a restart.
func (db *DB) JobsRunning(ctx context.Context, worker string) ([]job.Running, error) {
	q := `SELECT id, claimed_by, attempt, retry_count, claim_time FROM cf_processing_queue WHERE status = 'RUNNING'`
	var args []any
	if worker != "" {
		q += ` AND claimed_by = ?`
		args = append(args, worker)
	}
	q += ` ORDER BY id`
	rows, err := db.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("running jobs: %w", err)
	}
	defer rows.Close()
	var out []job.Running
	for rows.Next() {
		var (
			id               int64
			by               sql.NullString
			attempt, retries sql.NullInt64
			claimed          nullTime
		)
		if err := rows.Scan(&id, &by, &attempt, &retries, &claimed); err != nil {
			return nil, fmt.Errorf("running jobs: %w", err)
		}
		out = append(out, job.Running{
			Ref:        job.Ref{JobID: id, Worker: by.String, Attempt: attempt.Int64},
			RetryCount: retries.Int64,
			ClaimTime:  claimed.Time,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("running jobs: %w", err)
	}
	return out, nil
}
