package db

import (
	"context"
	"fmt"
	"strings"

	"github.com/casparian/sentinel/job"
)

// completeManySQL completes n claims in one statement. Arguments: the time
// (end_time and updated_at), then per claim its id, worker, attempt,
// summary, metrics and artifacts (JSON text or NULL) and output key
// (outputKeys: NULL when nothing is recorded). The guard is
// claimGuard's; RETURNING names the jobs it changed, and the others are
// stale. One statement instead of one per job saves the per-statement work
// of database/sql and the driver (binding, stepping, resetting). The unary
// + keeps the planner off the status indexes, so it looks each job up by
// its id.
func completeManySQL(n int) string {
	return `WITH c(id, worker, attempt, summary, metrics, artifacts, okey) AS (VALUES (?2, ?, ?, ?, ?, ?, ?)` +
		strings.Repeat(", (?, ?, ?, ?, ?, ?, ?)", n-1) + `)
	UPDATE cf_processing_queue SET
		status = 'COMPLETED', result_summary = c.summary, end_time = ?1,
		metrics_json = c.metrics, artifacts_json = c.artifacts, output_key = c.okey, next_run_at = NULL, updated_at = ?1
	FROM c
	WHERE cf_processing_queue.id = c.id AND +cf_processing_queue.status = 'RUNNING'
		AND COALESCE(cf_processing_queue.claimed_by, '') = c.worker AND COALESCE(cf_processing_queue.attempt, 0) = c.attempt
	RETURNING cf_processing_queue.id`
}

// completeChunks are the sizes completeManySQL is prepared for; a batch is
// cut into the largest that fit, and what is left is completed one by one.
var completeChunks = []int{64, 8}

// minCompleteMany is the fewest completions worth one statement: below it
// the JSON costs more than the statements it saves.
const minCompleteMany = 8

// manyCompletable returns the indexes of the conclusions applyComplete may
// apply: completions of jobs no other conclusion of the batch names, so
// that applying them first, apart from the rest, cannot change what any
// conclusion does (the others keep their order among themselves). Nil when
// there are too few.
func manyCompletable(cs []job.Conclusion) []int {
	n := 0
	seen := make(map[int64]int, len(cs)) // job → conclusions naming it
	for _, c := range cs {
		seen[c.Ref.JobID]++
		if c.Kind == job.ConcludeComplete {
			n++
		}
	}
	if n < minCompleteMany {
		return nil
	}
	out := make([]int, 0, n)
	for i, c := range cs {
		if c.Kind == job.ConcludeComplete && seen[c.Ref.JobID] == 1 {
			out = append(out, i)
		}
	}
	if len(out) < minCompleteMany {
		return nil
	}
	return out
}

// applyComplete applies the completions cs[i] for i in idx with
// completeManySQL, in chunks, and records each outcome in out; completions
// left over (fewer than the smallest chunk) are left for apply.
func (s *concludeStmts) applyComplete(ctx context.Context, ts string, cs []job.Conclusion, keys []any, idx []int, out []job.Outcome) error {
	for _, size := range completeChunks {
		for len(idx) >= size {
			if err := s.completeChunk(ctx, ts, cs, keys, idx[:size], out); err != nil {
				return err
			}
			idx = idx[size:]
		}
	}
	return nil
}

// keyAt is the output key of conclusion i (keys is nil while lineage is
// off).
func keyAt(keys []any, i int) any {
	if keys == nil {
		return nil
	}
	return keys[i]
}

// completeChunk completes cs[i] for i in idx with one statement.
func (s *concludeStmts) completeChunk(ctx context.Context, ts string, cs []job.Conclusion, keys []any, idx []int, out []job.Outcome) error {
	args := make([]any, 0, 1+7*len(idx))
	args = append(args, ts)
	for _, i := range idx {
		c := cs[i]
		step, err := PlanConclusion(c, 0, false)
		if err != nil {
			return fmt.Errorf("job %d: %w", c.Ref.JobID, err)
		}
		args = append(args, c.Ref.JobID, c.Ref.Worker, c.Ref.Attempt, step.Message, step.Metrics, step.Artifacts, keyAt(keys, i))
	}
	st, err := s.db.txStmt(ctx, s.tx, completeManySQL(len(idx)))
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("complete %d jobs: %w", len(idx), err)
	}
	defer rows.Close()
	done := make(map[int64]bool, len(idx))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("complete %d jobs: %w", len(idx), err)
		}
		done[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("complete %d jobs: %w", len(idx), err)
	}
	for _, i := range idx {
		out[i] = job.OutcomeStale
		if done[cs[i].Ref.JobID] {
			out[i] = job.OutcomeCompleted
		}
	}
	return nil
}
