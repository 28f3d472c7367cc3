package job

import (
	"fmt"
	"time"
)

// WorkerKey names a connected worker: the printable form of its ZeroMQ
// identity, stored in claimed_by. It is an alias, not a defined type, on
// purpose: the actor tree keys its maps and messages by plain strings, and a
// defined type would only add conversions at every one of them; the name
// says what such a string is.
type WorkerKey = string

// Ref names one claim of one job: a state change applies only while the job
// is RUNNING with this worker and attempt (fencing).
//
// A RUNNING row written by an older Casparian Sentinel has no claimed_by and
// no attempt; it is reported with Worker "" and Attempt 0, and that ref
// concludes it. A claim never hands out such a ref.
type Ref struct {
	JobID   int64
	Worker  WorkerKey
	Attempt int64
}

// ClaimRequest asks for up to Limit QUEUED jobs that Worker can run.
type ClaimRequest struct {
	Worker  WorkerKey // stored in claimed_by and worker_host
	Plugins []string  // plugin names the worker runs; containing "*" means any plugin
	Limit   int
	// Exclude names plugins not to claim for this worker even though it
	// runs them (it failed to prepare their environment recently).
	Exclude []string
	// Prefer names plugins to claim for this worker before any request's
	// ordinary claim (it has their environment ready); they count against
	// Limit.
	Prefer []string
}

// Running is one RUNNING job's claim with what the Sentinel needs to rebuild
// its state after a restart: the retry count (for backoff) and when it was
// claimed (for the job timeout).
type Running struct {
	Ref        Ref
	RetryCount int64
	ClaimTime  time.Time
}

// ConclusionKind says what a Conclusion does to its job.
type ConclusionKind int

// The kinds of Conclusion.
const (
	// ConcludeComplete marks the job COMPLETED.
	ConcludeComplete ConclusionKind = iota + 1
	// ConcludeFail marks the job FAILED for good.
	ConcludeFail
	// ConcludeRequeue puts the job back to QUEUED, or FAILED past
	// MaxRetries. A job an operator cancelled becomes SKIPPED instead: a
	// cancel is terminal.
	ConcludeRequeue
	// ConcludeAbort records a worker's ABORTED receipt: SKIPPED when an
	// operator cancelled the job, FAILED with the message otherwise.
	ConcludeAbort
)

// String returns the kind's name for logs.
func (k ConclusionKind) String() string {
	switch k {
	case ConcludeComplete:
		return "complete"
	case ConcludeFail:
		return "fail"
	case ConcludeRequeue:
		return "requeue"
	case ConcludeAbort:
		return "abort"
	}
	return fmt.Sprintf("ConclusionKind(%d)", int(k))
}

// Conclusion is how one claimed job ended, to apply to the job while the
// claim (Ref) still holds.
type Conclusion struct {
	Ref  Ref
	Kind ConclusionKind
	// Message is the result_summary for Complete (default "Success"), the
	// error_message for Fail, and the reason kept in error_message for
	// Requeue.
	Message string
	// Metrics is stored as metrics_json on Complete.
	Metrics map[string]int64
	// Artifacts is stored as artifacts_json on Complete.
	Artifacts []map[string]string
	// MaxRetries bounds Requeue: when retry_count+1 would exceed it the job
	// becomes FAILED with "<reason> (gave up after N retries)" instead.
	// Zero (or less) means the first requeue already gives up.
	MaxRetries int
	// NextRunAt is when a requeued job may be claimed again (zero = now).
	NextRunAt time.Time
	// Plugin is the job's plugin, for the per-plugin metrics and the
	// lineage's manifest; "" when the sender does not know it (a job
	// adopted after a restart).
	Plugin string
	// ArtifactHash is the artifact_hash of the manifest the DISPATCH
	// carried, recorded with a completion's lineage (sentinel_outputs).
	// Empty when the sender does not know it (a receipt from a worker not
	// registered yet): the lineage then records the plugin's ACTIVE
	// manifest's hash at the time of the conclusion.
	ArtifactHash string
	// SinksHash is the hash of the DISPATCH's resolved sinks (db.SinksHash),
	// the third part of a result's reuse key. Empty when unknown: such a
	// result is never reused.
	SinksHash string
	// Shadow marks a shadow job's completion (a shadow run's, issue #20
	// part 5): it records no lineage, so its outputs never stand for the
	// file's current result (staleness, reuse, rerun-stale).
	Shadow bool
}

// Outcome is what a Conclusion did.
type Outcome int

// The outcomes of a Conclusion.
const (
	// OutcomeCompleted means the job is now COMPLETED.
	OutcomeCompleted Outcome = iota + 1
	// OutcomeFailed means the job is now FAILED (Fail, or Requeue over
	// MaxRetries).
	OutcomeFailed
	// OutcomeRequeued means the job is QUEUED again.
	OutcomeRequeued
	// OutcomeStale means the claim no longer held; nothing changed.
	OutcomeStale
	// OutcomeSkipped means the job is now SKIPPED: an operator cancelled
	// it while it ran, and it ended aborted or would have been requeued.
	OutcomeSkipped
)

// String returns the outcome's name for logs and metrics.
func (o Outcome) String() string {
	switch o {
	case OutcomeCompleted:
		return "completed"
	case OutcomeFailed:
		return "failed"
	case OutcomeRequeued:
		return "requeued"
	case OutcomeStale:
		return "stale"
	case OutcomeSkipped:
		return "skipped"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}
