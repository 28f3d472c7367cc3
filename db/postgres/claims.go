package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Claims and conclusions: JobsBatch with exactly the semantics of package
// db's (db/claims.go). The rules are package db's (db.CheckBatch,
// db.RunClaims, db.PlanConclusion, db.Assembler); the SQL is this file's.
//
// What PostgreSQL changes is concurrency. SQLite has one writer at a time;
// here several Sentinels (and the pool's connections) run batches at once:
//
//   - A claim is UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED
//     LIMIT n) RETURNING …: rows another transaction is claiming or
//     concluding are skipped, not waited for, so two claimers never get the
//     same job and never queue behind each other.
//   - A conclusion is guarded exactly as on SQLite (status = 'RUNNING' AND
//     claimed_by AND attempt); a Requeue or Abort first reads retry_count
//     and the cancel mark with FOR UPDATE under the same guard, so a
//     concurrent JobCancel either happens before (and is seen) or waits.

// SetSentinelID names the lease (sentinel_lease.id) this process claims
// through: every claim records it in sentinel_id, so that crash recovery
// requeues only the jobs of Sentinels whose lease expired. "" (the default)
// stores NULL. Call it before the first claim.
func (d *DB) SetSentinelID(id string) { d.sentinelID = id }

// claimGuard is the WHERE clause of every change to a claimed job, on $1
// (id), $2 (worker) and $3 (attempt). COALESCE lets legacy RUNNING rows
// (NULL claimed_by and attempt) match Worker "" and Attempt 0.
const claimGuard = `id = $1 AND status = 'RUNNING' AND COALESCE(claimed_by, '') = $2 AND COALESCE(attempt, 0) = $3`

// recordAttemptSQL keeps an attempt that ended without completing
// (sentinel_job_attempts, migration 0012); $4–$6 are end_time, outcome and
// message. See db's recordAttemptSQL.
const recordAttemptSQL = `INSERT INTO sentinel_job_attempts (job_id, attempt, worker, claim_time, end_time, outcome, message)
	SELECT id, COALESCE(attempt, 0), claimed_by, claim_time, $4, $5, $6
	FROM cf_processing_queue WHERE ` + claimGuard + `
	ON CONFLICT (job_id, attempt) DO UPDATE SET worker = excluded.worker, claim_time = excluded.claim_time,
		end_time = excluded.end_time, outcome = excluded.outcome, message = excluded.message`

// The statements of a conclusion; $1–$3 are the claim (claimGuard).
const (
	completeSQL = `UPDATE cf_processing_queue SET
		status = 'COMPLETED', result_summary = $4, end_time = $5, metrics_json = $6,
		artifacts_json = $7, next_run_at = NULL, updated_at = $8
	WHERE ` + claimGuard
	failSQL = `UPDATE cf_processing_queue SET
		status = 'FAILED', error_message = $4, end_time = $5, next_run_at = NULL, updated_at = $6
	WHERE ` + claimGuard
	skipSQL = `UPDATE cf_processing_queue SET
		status = 'SKIPPED', error_message = $4, end_time = $5, next_run_at = NULL, updated_at = $6
	WHERE ` + claimGuard
	requeueSQL = `UPDATE cf_processing_queue SET
		status = 'QUEUED', retry_count = $4, claimed_by = NULL, next_run_at = $5,
		error_message = $6, end_time = NULL, updated_at = $7
	WHERE ` + claimGuard
	retriesSQL = `SELECT COALESCE(retry_count, 0), cancel_requested_at IS NOT NULL,
		(SELECT s.max_retries FROM sentinel_plugin_settings s WHERE s.plugin_name = cf_processing_queue.plugin_name)
		FROM cf_processing_queue WHERE ` + claimGuard + ` FOR UPDATE OF cf_processing_queue`
)

// JobsBatch applies conclusions and then claims jobs in one transaction,
// as package db's JobsBatch: one db.Outcome per conclusion in order (stale
// when the claim no longer holds, and then nothing changed), then the
// claims per request in claim order, and the claimed jobs whose dispatch
// could not be assembled (already FAILED with the reason). Jobs the
// conclusions requeue can be claimed by the same call when they are due.
func (d *DB) JobsBatch(ctx context.Context, now time.Time, cs []job.Conclusion, reqs []job.ClaimRequest) (db.BatchResult, error) {
	if err := db.CheckBatch(cs, reqs); err != nil {
		return db.BatchResult{}, err
	}
	claiming := db.AnyClaimable(reqs)
	if len(cs) == 0 && !claiming {
		return db.BatchResult{}, nil
	}
	// The subscribed topics (chain.go), cached: without a subscription a
	// completion sends nothing for chaining.
	var topics map[string]bool
	if len(cs) > 0 {
		var err error
		if topics, err = d.chainTopics(ctx); err != nil {
			return db.BatchResult{}, fmt.Errorf("jobs batch: %w", err)
		}
	}
	shadow := false
	if claiming {
		// While a shadow run is RUNNING, the claim statement also returns
		// the manifest each shadow job runs (db/shadowpath.go).
		var err error
		if shadow, err = d.shadow.Active(ctx, d.readShadowActive); err != nil {
			return db.BatchResult{}, fmt.Errorf("jobs batch: %w", err)
		}
	}
	var res db.BatchResult
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		res = db.BatchResult{} // a retried transaction starts over
		var err error
		var paused map[string]bool
		if res.Outcomes, paused, err = conclude(ctx, tx, now, cs, claiming, d.lineage.Load()); err != nil {
			return fmt.Errorf("conclude jobs: %w", err)
		}
		if res.Chained, err = markChains(ctx, tx, now, cs, res.Outcomes, topics); err != nil {
			return fmt.Errorf("conclude jobs: %w", err)
		}
		if claiming {
			if res.Claims, res.Failures, err = d.claim(ctx, tx, now, db.WithoutPaused(reqs, paused), shadow); err != nil {
				return fmt.Errorf("claim jobs: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return db.BatchResult{}, fmt.Errorf("jobs batch: %w", err)
	}
	return res, nil
}

// conclude applies the conclusions in tx in two round trips whatever their
// number: one pipeline reads the state of those that need it
// (db.ConclusionNeedsState), one applies every guarded UPDATE. Each UPDATE
// checks the guard again, so a conclusion repeated in one batch is stale
// the second time, as on SQLite. When the batch goes on to claim, the
// second pipeline also carries what the claim needs first
// (claimSettingsSQL, normaliseNullsSQL, and the paused plugins it returns
// for db.WithoutPaused), saving it round trips.
func conclude(ctx context.Context, tx pgx.Tx, now time.Time, cs []job.Conclusion, claiming, lineage bool) ([]job.Outcome, map[string]bool, error) {
	type state struct {
		retries    int64
		cancelled  bool
		found      bool
		maxRetries *int64 // the plugin's, overriding the conclusion's
	}
	states := make([]state, len(cs))
	var reads pgx.Batch
	for i, c := range cs {
		if !db.ConclusionNeedsState(c.Kind) {
			continue
		}
		reads.Queue(retriesSQL, c.Ref.JobID, c.Ref.Worker, c.Ref.Attempt).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&states[i].retries, &states[i].cancelled, &states[i].maxRetries)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			states[i].found = err == nil
			return err
		})
	}
	if reads.Len() > 0 {
		if err := tx.SendBatch(ctx, &reads).Close(); err != nil {
			return nil, nil, err
		}
	}

	out := make([]job.Outcome, len(cs))
	var writes pgx.Batch
	end := now.UTC() // end_time is TIMESTAMP WITHOUT TIME ZONE
	for i, c := range cs {
		if db.ConclusionNeedsState(c.Kind) && !states[i].found {
			out[i] = job.OutcomeStale
			continue
		}
		step, err := db.PlanConclusion(db.WithPluginRetries(c, states[i].maxRetries), states[i].retries, states[i].cancelled)
		if err != nil {
			return nil, nil, fmt.Errorf("job %d: %w", c.Ref.JobID, err)
		}
		guard := []any{c.Ref.JobID, c.Ref.Worker, c.Ref.Attempt}
		if step.Outcome != job.OutcomeCompleted {
			// Before the UPDATE, under its guard: it records exactly the
			// attempts the UPDATE ends.
			writes.Queue(recordAttemptSQL, append(guard, end, db.AttemptOutcome(step.Outcome), step.Message)...)
		}
		var q *pgx.QueuedQuery
		switch step.Outcome {
		case job.OutcomeCompleted:
			q = writes.Queue(completeSQL, append(guard, step.Message, end, step.Metrics, step.Artifacts, now)...)
		case job.OutcomeSkipped:
			q = writes.Queue(skipSQL, append(guard, step.Message, end, now)...)
		case job.OutcomeRequeued:
			var next *time.Time
			if !step.NextRunAt.IsZero() {
				next = &step.NextRunAt
			}
			q = writes.Queue(requeueSQL, append(guard, step.RetryCount, next, step.Message, now)...)
		default:
			q = writes.Queue(failSQL, append(guard, step.Message, end, now)...)
		}
		o := step.Outcome
		q.Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() == 0 {
				out[i] = job.OutcomeStale
			} else {
				out[i] = o
			}
			return nil
		})
	}
	if lineage {
		queueOutputs(&writes, cs, now) // lineage (outputs.go), after the completions
	}
	var paused map[string]bool
	if claiming {
		writes.Queue(claimSettingsSQL)
		writes.Queue(normaliseNullsSQL)
		writes.Queue(db.PausedPluginsSQL).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var name string
				if err := rows.Scan(&name); err != nil {
					return err
				}
				if paused == nil {
					paused = map[string]bool{}
				}
				paused[name] = true
			}
			return rows.Err()
		})
	}
	if writes.Len() > 0 {
		if err := tx.SendBatch(ctx, &writes).Close(); err != nil {
			return nil, nil, err
		}
	}
	if len(cs) == 0 {
		return nil, paused, nil
	}
	return out, paused, nil
}

// claimSettingsSQL steers the claim statements' plans for the rest of the
// transaction. Every claim must walk a partial claim index in claim order
// and stop at its LIMIT. But the planner, on a queue it has no statistics
// for (a fresh database, a deep queue bulk-inserted since the last
// ANALYZE), believes the queue is small and prefers to collect every QUEUED
// row through another index and sort them: 20 ms instead of 1 ms per claim
// with 50,000 jobs queued, and growing with the queue. Making sorts
// expensive leaves the ordered index walk as the cheap plan; SQLite's claim
// names its index (INDEXED BY) for the same reason. Nothing else in the
// transaction needs a sort large enough to matter (a plugin's manifests and
// topics), and a sort still happens where no index can replace it.
//
// JIT goes off with it: a disabled sort that cannot be avoided (the
// manifest lookup's) gets a cost of ten billion, far above jit_above_cost,
// and compiling that statement took 45 ms of every claim.
const claimSettingsSQL = `SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)`

// normaliseNullsSQL gives rows other tools inserted with NULLs their
// defaults (the partial index ix_cf_queue_nulls finds them). Rows another
// transaction holds are left for the next claim.
const normaliseNullsSQL = `UPDATE cf_processing_queue SET
	status      = COALESCE(status, 'QUEUED'),
	priority    = COALESCE(priority, 0),
	retry_count = COALESCE(retry_count, 0)
WHERE id IN (
	SELECT id FROM cf_processing_queue
	WHERE status IS NULL OR priority IS NULL OR retry_count IS NULL
	FOR UPDATE SKIP LOCKED)`

// claimFailSQL fails a just-claimed job whose dispatch could not be
// assembled; $1–$3 are the claim.
const claimFailSQL = `UPDATE cf_processing_queue SET
		status = 'FAILED', error_message = $4, end_time = $5, updated_at = $6
	WHERE ` + claimGuard

// claim runs the claim statements (in db.RunClaims's order) and assembles
// the dispatches in tx; conclude has normalised the NULLs.
func (d *DB) claim(ctx context.Context, tx pgx.Tx, now time.Time, reqs []job.ClaimRequest, shadow bool) ([]db.Claim, []db.ClaimFailure, error) {
	rows, err := db.RunClaims(reqs, func(r job.ClaimRequest) ([]db.ClaimedJob, error) {
		return d.claimFor(ctx, tx, now, r, shadow)
	})
	if err != nil || len(rows) == 0 {
		return nil, nil, err
	}
	asm := db.NewAssembler(pgSource{tx}, nil)
	var claims []db.Claim
	var failures []db.ClaimFailure
	for _, row := range rows {
		disp, reason, err := asm.Dispatch(ctx, row)
		if err != nil {
			return nil, nil, err
		}
		if reason != "" {
			_, err := tx.Exec(ctx, claimFailSQL, row.Ref.JobID, row.Ref.Worker, row.Ref.Attempt, reason, now.UTC(), now)
			if err != nil {
				return nil, nil, fmt.Errorf("fail job %d: %w", row.Ref.JobID, err)
			}
			failures = append(failures, db.ClaimFailure{Ref: row.Ref, Reason: reason})
			continue
		}
		claims = append(claims, db.Claim{Ref: row.Ref, Priority: row.Priority, RetryCount: row.RetryCount, Dispatch: disp,
			JobTimeout: row.JobTimeout, EnqueuedAt: row.EnqueuedAt, Shadow: row.ManifestID != 0})
	}
	return claims, failures, nil
}

// claimFor runs the claim statement for one request (db.RunClaims never
// passes one that cannot claim).
func (d *DB) claimFor(ctx context.Context, tx pgx.Tx, now time.Time, r job.ClaimRequest, shadow bool) ([]db.ClaimedJob, error) {
	plugins, anyPlugin := db.PluginFilter(r.Plugins)
	var sentinel *string
	if d.sentinelID != "" {
		sentinel = &d.sentinelID
	}
	args := []any{r.Worker, now.UTC(), now, sentinel, r.Limit}
	var filter string
	switch {
	case anyPlugin:
	case len(plugins) == 1:
		args = append(args, plugins[0])
		filter = ` AND plugin_name = $6`
	default:
		args = append(args, plugins)
		filter = ` AND plugin_name = ANY($6::text[])`
	}
	if len(r.Exclude) > 0 {
		args = append(args, r.Exclude)
		filter += fmt.Sprintf(` AND NOT (plugin_name = ANY($%d::text[]))`, len(args))
	}
	q := claimSQL(filter)
	if shadow {
		q += shadowManifestColumn
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
	}
	defer rows.Close()
	var out []db.ClaimedJob
	for rows.Next() {
		c := db.ClaimedJob{Ref: job.Ref{Worker: r.Worker}}
		var (
			fv, prio, retries *int64
			plugin, overrides *string
			location          []*string
			timeoutMS         *int64
			enqueued          *time.Time
			manifestID        *int64
		)
		dest := []any{&c.Ref.JobID, &c.Ref.Attempt, &fv, &plugin, &prio, &retries, &overrides, &location, &timeoutMS, &enqueued}
		if shadow {
			dest = append(dest, &manifestID)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
		}
		c.FileVersionID, c.HasFileVersion = deref(fv), fv != nil
		c.Plugin, c.Priority, c.RetryCount = deref(plugin), deref(prio), deref(retries)
		c.ConfigOverrides = deref(overrides)
		c.JobTimeout = db.ClaimTimeout(timeoutMS)
		if enqueued != nil {
			c.EnqueuedAt = enqueued.UTC()
		}
		c.ManifestID = deref(manifestID)
		if len(location) == 2 && location[0] != nil && location[1] != nil {
			c.RootPath, c.RelPath, c.Located = *location[0], *location[1], true
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim for %s: %w", r.Worker, err)
	}
	db.SortClaimed(out)
	return out, nil
}

// claimSQL is the claim statement with a plugin filter ("" = any plugin).
// Arguments: $1 the worker (claimed_by, and worker_host cut to the
// original's 100 characters), $2 claim_time (UTC, without zone), $3 now
// (updated_at, and the due test of next_run_at), $4 sentinel_id, $5 the
// limit, then the filter's. The inner SELECT walks a partial claim index
// (ix_cf_queue_claimable for one plugin, ix_cf_queue_claimable_any
// otherwise) in claim order, skipping rows other transactions hold, and
// stops at the limit; jobs of paused plugins are skipped (pausedFilter).
// RETURNING carries the file's root path and rel_path (NULL when a link is
// missing), which saves the assembler a statement per job, and the
// plugin's job timeout and enqueued_at (the enqueue-to-start latency).
func claimSQL(filter string) string {
	return `UPDATE cf_processing_queue SET
		status = 'RUNNING', claimed_by = $1::text, worker_host = left($1::text, 100), claim_time = $2,
		attempt = COALESCE(attempt, 0) + 1, updated_at = $3, sentinel_id = $4
	WHERE id IN (
		SELECT id FROM cf_processing_queue
		WHERE status = 'QUEUED' AND COALESCE(next_run_at, '-infinity') <= $3` + filter + pausedFilter + `
		ORDER BY priority DESC, id
		LIMIT $5
		FOR UPDATE SKIP LOCKED)
	RETURNING id, attempt, file_version_id, plugin_name, priority, retry_count, config_overrides,
		(SELECT ARRAY[r.path::text, l.rel_path::text]
		FROM cf_file_version v
		JOIN cf_file_location l ON l.id = v.location_id
		JOIN cf_source_root r ON r.id = l.source_root_id
		WHERE v.id = cf_processing_queue.file_version_id),
		(SELECT s.job_timeout_ms FROM sentinel_plugin_settings s WHERE s.plugin_name = cf_processing_queue.plugin_name),
		enqueued_at`
}

// shadowManifestColumn ends the claim statement's RETURNING while a shadow
// run is RUNNING: the manifest a shadow job runs (NULL for other jobs).
const shadowManifestColumn = `,
		(SELECT j.manifest_id FROM sentinel_shadow_jobs j WHERE j.job_id = cf_processing_queue.id)`

// pgSource is the assembler's DispatchSource inside a claim's transaction.
type pgSource struct{ tx pgx.Tx }

// FileLink follows version -> location -> source root; the LEFT JOINs say
// which link is missing.
func (s pgSource) FileLink(ctx context.Context, versionID int64) (db.FileLink, error) {
	var locID, rootID *int64
	var root, rel *string
	err := s.tx.QueryRow(ctx, `SELECT l.id, r.id, r.path, l.rel_path
		FROM cf_file_version v
		LEFT JOIN cf_file_location l ON l.id = v.location_id
		LEFT JOIN cf_source_root r ON r.id = l.source_root_id
		WHERE v.id = $1`, versionID).Scan(&locID, &rootID, &root, &rel)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.FileLink{}, nil
	}
	if err != nil {
		return db.FileLink{}, err
	}
	return db.FileLink{VersionFound: true, LocationID: deref(locID), HasLocation: locID != nil,
		RootID: deref(rootID), HasRoot: rootID != nil, RootPath: deref(root), RelPath: deref(rel)}, nil
}

// ActiveManifest reads the newest ACTIVE manifest: by deployment time, else
// creation time, NULL last, then the later insert.
func (s pgSource) ActiveManifest(ctx context.Context, plugin string) (db.ActiveManifest, bool, error) {
	var src, env, artifact *string
	err := s.tx.QueryRow(ctx, `SELECT source_code, env_hash, artifact_hash
		FROM cf_plugin_manifest
		WHERE plugin_name = $1 AND status = 'ACTIVE'
		ORDER BY COALESCE(deployed_at, created_at) DESC NULLS LAST, id DESC
		LIMIT 1`, plugin).Scan(&src, &env, &artifact)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return db.ActiveManifest{}, false, nil
	case err != nil:
		return db.ActiveManifest{}, false, err
	}
	return db.ActiveManifest{SourceCode: deref(src), EnvHash: deref(env), ArtifactHash: deref(artifact)}, true, nil
}

// TopicSinks reads the plugin's cf_topic_config rows in id order.
func (s pgSource) TopicSinks(ctx context.Context, plugin string) ([]db.Sink, error) {
	rows, err := s.tx.Query(ctx, `SELECT topic_name, uri, mode, schema_json
		FROM cf_topic_config WHERE plugin_name = $1 ORDER BY id`, plugin)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var sinks []db.Sink
	for rows.Next() {
		var topic, uri, mode, schema *string
		if err := rows.Scan(&topic, &uri, &mode, &schema); err != nil {
			return nil, err
		}
		sinks = append(sinks, db.Sink{Topic: deref(topic), URI: deref(uri), Mode: deref(mode), SchemaDef: deref(schema)})
	}
	return sinks, rows.Err()
}
