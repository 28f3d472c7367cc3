// Package job is the vocabulary the Sentinel's packages share: a job and its
// status, a claim of a job by a worker, how a claim is concluded, the
// catalogue a job is made from, and the errors a request can end with. db
// stores these nouns, actors moves them between actors, and the HTTP API and
// the CLI show them; declaring them once here lets each of those packages use
// them without importing another (db and actors never meet outside the queue
// actor, and the HTTP layer never imports db).
//
// It is a leaf: it imports only the standard library, and holds little
// behaviour beyond naming values: what a page of a listing is, so that every
// backend agrees on it.
package job

import (
	"errors"
	"fmt"
	"time"
)

// Errors a request can end with; callers test them with errors.Is. They
// blame the request, not the database: the HTTP API answers them with 404,
// 400 and 409.
var (
	// ErrNotFound is returned when a row asked for by key (a job, a file, a
	// plugin, an environment) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid marks a request whose input is wrong; the message says how.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict marks an operation the row's current state does not
	// allow, such as cancelling a COMPLETED job.
	ErrConflict = errors.New("conflict")
	// ErrUnknownPlugin marks a job submitted for a plugin that has no
	// ACTIVE manifest: nothing could run it (the HTTP API answers 422).
	ErrUnknownPlugin = errors.New("unknown plugin")
)

// Status is a job's status: the status column of cf_processing_queue.
type Status string

// The statuses a job can have. NULL, written by other tools, reads as
// StatusQueued.
const (
	// StatusPending is a job recorded but not yet released to run; the
	// Sentinel never claims it.
	StatusPending Status = "PENDING"
	// StatusQueued is a job waiting for a worker.
	StatusQueued Status = "QUEUED"
	// StatusRunning is a job claimed by a worker (see Ref).
	StatusRunning Status = "RUNNING"
	// StatusCompleted is a job whose worker reported success.
	StatusCompleted Status = "COMPLETED"
	// StatusFailed is a job that ended without success; its error message
	// says why.
	StatusFailed Status = "FAILED"
	// StatusSkipped is a job cancelled before it ran, or cancelled while it
	// ran and then ended.
	StatusSkipped Status = "SKIPPED"
)

// Statuses lists every status in the order a job moves through them.
var Statuses = []Status{StatusPending, StatusQueued, StatusRunning, StatusCompleted, StatusFailed, StatusSkipped}

// Finished reports whether s is a status a job ends in: COMPLETED, FAILED
// or SKIPPED.
func (s Status) Finished() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusSkipped
}

// Job is one queue row as operators see it. NULLs read as the column's
// default: status QUEUED, numbers 0, text "", times zero.
type Job struct {
	ID, FileVersionID                                  int64
	PluginName                                         string
	Status                                             Status
	Priority, RetryCount, Attempt                      int64
	ClaimedBy, WorkerHost, ErrorMessage, ResultSummary string
	ClaimTime, EndTime                                 time.Time
	Metrics                                            map[string]int64
	Artifacts                                          []map[string]string
	ConfigOverrides                                    string
}

// Info is a job as the operator API shows it: the row, where its file is,
// and whether an operator cancelled it while it ran.
type Info struct {
	Job
	// FilePath is the source root's path joined with the location's
	// rel_path; "" when the chain from the version is broken.
	FilePath        string
	CancelRequested bool
	UpdatedAt       time.Time
	// Attempts is the job's history, oldest first: every attempt that
	// ended FAILED, REQUEUED or SKIPPED, then the latest one as the row
	// holds it (RUNNING, or how it ended) unless that is already listed.
	// Only a single job's read (JobGet) fills it.
	Attempts []Attempt
	// Dispatch is the DISPATCH this job gets, assembled from the rows as
	// they are now (the plugin's ACTIVE manifest, its topics, the job's
	// overrides): what was sent, unless those changed since the claim.
	// Only JobGet fills it.
	Dispatch *DispatchView
}

// DispatchView is a job's DISPATCH as an operator reads it: every field but
// the plugin's source, of which only the size is given. Reason, when set,
// says why the job cannot be dispatched now; the other fields are then
// what could be assembled.
type DispatchView struct {
	PluginName, FilePath  string
	FileVersionID         int64
	EnvHash, ArtifactHash string
	SourceBytes           int
	Sinks                 []DispatchSink
	Reason                string
}

// DispatchSink is one output of a DISPATCH: where a topic's rows go.
type DispatchSink struct {
	Topic, URI, Mode, SchemaDef string
}

// Attempt is one claim of a job by a worker and how it ended.
type Attempt struct {
	Attempt   int64
	Worker    string
	ClaimTime time.Time
	EndTime   time.Time // zero while it runs
	// Outcome is the status the attempt left the job in: RUNNING (not
	// ended), COMPLETED, FAILED, SKIPPED, or REQUEUED (QUEUED again for
	// another attempt).
	Outcome string
	// Message is the result summary of a completion, else the reason.
	Message string
}

// OutcomeRequeuedName is Attempt.Outcome for an attempt whose job was
// queued again.
const OutcomeRequeuedName = "REQUEUED"

// WithLatestAttempt returns the recorded attempts with the latest one, as
// the job's row holds it, appended unless the records already have it or
// the job was never claimed (or is QUEUED again: its last attempt is then
// in the records).
func WithLatestAttempt(recorded []Attempt, j Job) []Attempt {
	if j.Attempt <= 0 || j.Status == StatusQueued || j.Status == StatusPending {
		return recorded
	}
	for _, a := range recorded {
		if a.Attempt == j.Attempt {
			return recorded
		}
	}
	latest := Attempt{Attempt: j.Attempt, Worker: j.ClaimedBy, ClaimTime: j.ClaimTime, Outcome: string(j.Status)}
	switch j.Status {
	case StatusRunning:
	case StatusCompleted:
		latest.EndTime, latest.Message = j.EndTime, j.ResultSummary
	default:
		latest.EndTime, latest.Message = j.EndTime, j.ErrorMessage
	}
	return append(recorded, latest)
}

// Bounds of one page of jobs (Filter.Limit).
const (
	// DefaultLimit is the page size when the filter names none.
	DefaultLimit = 50
	// MaxLimit caps the page size, so one request cannot read the whole
	// queue into memory.
	MaxLimit = 1000
)

// Filter selects one page of jobs, newest first unless Sort says otherwise.
type Filter struct {
	Status Status // "" = any; QUEUED includes rows whose status is NULL
	Plugin string // "" = any
	// Path and Error, when set, keep the jobs whose file path (source root
	// and relative path) or error message contains them, ignoring case.
	Path, Error string
	// BeforeID, when set, keeps the jobs older than that id: the next page
	// after a page whose last job it is (keyset paging, cheaper than Offset
	// deep into a large queue).
	BeforeID int64
	// Sort orders the page ("" = SortID), descending (newest, highest,
	// latest first) unless Ascending.
	Sort      Sort
	Ascending bool
	// After, when set, keeps the jobs after that cursor in the order of
	// Sort (whose it must be): the next page after the page it ends.
	After  *Cursor
	Limit  int // 0 = DefaultLimit; at most MaxLimit
	Offset int
}

// Paged returns f with its page size and order settled (DefaultLimit for
// 0, at most MaxLimit; SortID for no sort), or ErrInvalid for a negative
// limit or offset, an unknown sort, or a cursor of another order. Every
// backend lists jobs through it, so they agree on what a page is.
func (f Filter) Paged() (Filter, error) {
	if f.Limit < 0 || f.Offset < 0 || f.BeforeID < 0 {
		return f, fmt.Errorf("list jobs: limit and offset must not be negative: %w", ErrInvalid)
	}
	if err := f.checkOrder(); err != nil {
		return f, err
	}
	f.Sort = f.sort()
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	f.Limit = min(f.Limit, MaxLimit)
	return f, nil
}

// Page is one page of jobs and how many jobs match the filter in all.
type Page struct {
	Jobs  []Info
	Total int64
}

// Submission is a job to enqueue. The file is named either by its version
// id or by its absolute path under an active source root (its current
// version is used).
type Submission struct {
	FileVersionID   int64
	FilePath        string
	Plugin          string
	Priority        int64
	ConfigOverrides string // JSON {topic: sink | [sinks]}; "" = none
}

// CancelResult is what cancelling a job did.
type CancelResult struct {
	// Previous is the status the job had.
	Previous Status
	// Status is the job's status now: SKIPPED, or RUNNING when its worker
	// must be told to ABORT (the job becomes SKIPPED when it concludes
	// ABORTED or would be requeued).
	Status Status
	// Claim is the claim of a RUNNING job, naming the worker to abort.
	Claim Ref
}

// BulkAction is what a bulk request does to the jobs a filter selects.
type BulkAction string

const (
	// BulkRetry puts the FAILED jobs back to QUEUED, as a retry of each.
	BulkRetry BulkAction = "retry"
	// BulkCancel cancels the jobs that are not finished: QUEUED and PENDING
	// become SKIPPED at once; RUNNING ones are marked, their workers sent
	// ABORT, and they become SKIPPED when they conclude.
	BulkCancel BulkAction = "cancel"
)

// BulkResult is what a bulk action found and did: Matched jobs could be
// acted on (FAILED for a retry; QUEUED, PENDING or RUNNING for a cancel),
// Changed were (0 for a dry run). Running lists the RUNNING jobs a cancel
// marked, whose workers the Sentinel must abort.
type BulkResult struct {
	Action  BulkAction
	Matched int64
	Changed int64
	Running []CancelResult
}

// Prune says which finished jobs a prune deletes: COMPLETED jobs that ended
// before CompletedBefore, FAILED and SKIPPED ones (a failure or a cancel:
// both are kept for the operator to look into, so they share one retention)
// that ended before FailedBefore. A zero time deletes none of that kind. A
// job without an end_time, and a job in any other status, is never pruned.
type Prune struct {
	CompletedBefore, FailedBefore time.Time
}

// PruneResult counts the jobs a prune deleted (or, for a dry run, would
// delete): Completed the COMPLETED ones, Failed the FAILED and SKIPPED ones.
type PruneResult struct {
	Completed, Failed int64
}

// Total is the number of jobs of both kinds.
func (r PruneResult) Total() int64 { return r.Completed + r.Failed }

// QueueAge is the oldest QUEUED job of one plugin that is due (its
// next_run_at, if any, has passed): when it was enqueued.
type QueueAge struct {
	Plugin     string
	EnqueuedAt time.Time
}
