package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/casparian/sentinel/job"
)

// recordAttemptSQL keeps an attempt that ended without completing
// (sentinel_job_attempts, migration 0012). It runs before the conclusion's
// UPDATE, under the same guard, so it records exactly the claims the UPDATE
// then changes. Arguments: end_time, outcome, message, then the claim.
const recordAttemptSQL = `INSERT OR REPLACE INTO sentinel_job_attempts
		(job_id, attempt, worker, claim_time, end_time, outcome, message)
	SELECT id, COALESCE(attempt, 0), claimed_by, claim_time, ?, ?, ?
	FROM cf_processing_queue WHERE ` + claimGuard

// AttemptOutcome names how an attempt ended, for sentinel_job_attempts (both
// backends).
func AttemptOutcome(o job.Outcome) string {
	switch o {
	case job.OutcomeRequeued:
		return job.OutcomeRequeuedName
	case job.OutcomeSkipped:
		return string(job.StatusSkipped)
	}
	return string(job.StatusFailed)
}

// recordAttempt records the claim guard names as ended with o and msg.
func (s *concludeStmts) recordAttempt(ctx context.Context, ts string, o job.Outcome, msg string, guard []any) error {
	st, err := s.bind(ctx, &s.attempt, recordAttemptSQL)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx, append([]any{ts, AttemptOutcome(o), msg}, guard...)...); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}

// jobAttemptsSQL reads a job's attempts; JobGet runs it with jobGetSQL.
const jobAttemptsSQL = `SELECT attempt, worker, claim_time, end_time, outcome, message
	FROM sentinel_job_attempts WHERE job_id = ? ORDER BY attempt`

// jobAttempts reads a job's recorded attempts, oldest first.
func (db *DB) jobAttempts(ctx context.Context, id int64) ([]job.Attempt, error) {
	st, err := db.readerStmt(ctx, jobAttemptsSQL)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	rows, err := st.QueryContext(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	defer rows.Close()
	var out []job.Attempt
	for rows.Next() {
		var (
			a                job.Attempt
			worker, msg      sql.NullString
			claimed, stopped nullTime
		)
		if err := rows.Scan(&a.Attempt, &worker, &claimed, &stopped, &a.Outcome, &msg); err != nil {
			return nil, fmt.Errorf("attempts of job %d: %w", id, err)
		}
		a.Worker, a.ClaimTime, a.EndTime, a.Message = worker.String, claimed.Time, stopped.Time, msg.String
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	return out, nil
}
