package db

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// The rules of the job path that do not depend on the database: what a
// conclusion does, in which order claims are made, what a submission must
// hold. SQLite (this package) and PostgreSQL (db/postgres) each keep their own
// SQL and call these, so that the two backends cannot drift apart.

// CancelledMessage is the error_message of a job an operator cancelled.
const CancelledMessage = cancelledMessage

// CheckBatch refuses a JobsBatch call before anything is written: a claim
// request without a worker, or a conclusion of an unknown kind.
func CheckBatch(cs []job.Conclusion, reqs []job.ClaimRequest) error {
	for _, r := range reqs {
		if r.Worker == "" {
			return errors.New("claim jobs: empty worker identity")
		}
	}
	for i, c := range cs {
		if c.Kind < job.ConcludeComplete || c.Kind > job.ConcludeAbort {
			return fmt.Errorf("conclude jobs: conclusion %d (job %d): unknown kind %d", i, c.Ref.JobID, int(c.Kind))
		}
	}
	return nil
}

// AnyClaimable reports whether some request can claim anything at all, so
// that an idle dispatcher does not open write transactions for nothing.
func AnyClaimable(reqs []job.ClaimRequest) bool { return anyClaimable(reqs) }

// PluginFilter returns the distinct non-empty plugin names, or any=true when
// the list contains "*". The result may be names itself: callers must not
// modify it.
func PluginFilter(names []string) (plugins []string, anyPlugin bool) { return pluginFilter(names) }

// RunClaims runs a backend's claim statement (claimFor, one request at a
// time, inside the batch's transaction) in the order every backend uses:
// first the Prefer claims of every request, then each request's ordinary
// claim for what is left of its Limit. Once a request comes back short, the
// queue holds nothing more (claimable by this transaction) for its plugins
// and exclusions, so other requests with the same ones are not run: a
// thousand idle workers cost one statement, not a thousand. claimFor is
// never called with a request that cannot claim anything.
func RunClaims(reqs []job.ClaimRequest, claimFor func(job.ClaimRequest) ([]ClaimedJob, error)) ([]ClaimedJob, error) {
	canClaim := func(r job.ClaimRequest) bool {
		plugins, anyPlugin := pluginFilter(r.Plugins)
		return r.Limit > 0 && (anyPlugin || len(plugins) > 0)
	}
	var rows []ClaimedJob
	preferred := make([]int, len(reqs))
	for i, r := range reqs {
		if len(r.Prefer) == 0 || r.Limit <= 0 {
			continue
		}
		p := job.ClaimRequest{Worker: r.Worker, Plugins: r.Prefer, Limit: r.Limit, Exclude: r.Exclude}
		if !canClaim(p) {
			continue
		}
		got, err := claimFor(p)
		if err != nil {
			return nil, err
		}
		preferred[i] = len(got)
		rows = append(rows, got...)
	}
	exhausted := map[string]bool{}
	for i, r := range reqs {
		r.Limit -= preferred[i]
		key := pluginSetKey(r.Plugins) + "\x01" + pluginSetKey(r.Exclude)
		if !canClaim(r) || exhausted[key] {
			continue
		}
		got, err := claimFor(r)
		if err != nil {
			return nil, err
		}
		if len(got) < r.Limit {
			exhausted[key] = true
		}
		rows = append(rows, got...)
	}
	return rows, nil
}

// SortClaimed puts one claim statement's rows in claim order, highest
// priority first, then oldest: RETURNING gives no order.
func SortClaimed(rows []ClaimedJob) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Priority != rows[j].Priority {
			return rows[i].Priority > rows[j].Priority
		}
		return rows[i].Ref.JobID < rows[j].Ref.JobID
	})
}

// ConclusionStep is the change a conclusion makes to a job whose claim
// still holds.
type ConclusionStep struct {
	// Outcome is the job's new state: OutcomeCompleted, OutcomeFailed,
	// OutcomeRequeued or OutcomeSkipped (never OutcomeStale: whether the
	// claim holds is the guarded UPDATE's to find out).
	Outcome job.Outcome
	// Message is the result_summary of a completed job and the
	// error_message otherwise.
	Message string
	// Metrics and Artifacts are the JSON texts to store on completion,
	// nil for NULL.
	Metrics, Artifacts any
	// RetryCount and NextRunAt (zero = now) are a requeued job's.
	RetryCount int64
	NextRunAt  time.Time
}

// ConclusionNeedsState reports whether PlanConclusion needs the job's retry
// count and cancel mark, read under the claim's guard; Complete and Fail do
// not.
func ConclusionNeedsState(k job.ConclusionKind) bool {
	return k == job.ConcludeRequeue || k == job.ConcludeAbort
}

// PlanConclusion decides what c does to its job, given the job's retry count
// and whether an operator cancelled it (both only needed when
// ConclusionNeedsState): Complete completes; Fail fails; a cancelled job
// that is aborted or requeued is skipped (a cancel is terminal); Abort
// otherwise fails; Requeue requeues with one more retry, or fails once
// retry_count+1 would exceed MaxRetries.
func PlanConclusion(c job.Conclusion, retries int64, cancelled bool) (ConclusionStep, error) {
	switch c.Kind {
	case job.ConcludeComplete:
		metrics, err := jsonOrNull(c.Metrics, c.Metrics == nil)
		if err != nil {
			return ConclusionStep{}, fmt.Errorf("encode metrics: %w", err)
		}
		artifacts, err := jsonOrNull(c.Artifacts, c.Artifacts == nil)
		if err != nil {
			return ConclusionStep{}, fmt.Errorf("encode artifacts: %w", err)
		}
		return ConclusionStep{Outcome: job.OutcomeCompleted, Message: orDefault(c.Message, defaultSuccessSummary),
			Metrics: metrics, Artifacts: artifacts}, nil
	case job.ConcludeFail:
		return ConclusionStep{Outcome: job.OutcomeFailed, Message: orDefault(c.Message, defaultFailureMessage)}, nil
	case job.ConcludeAbort, job.ConcludeRequeue:
	default:
		return ConclusionStep{}, fmt.Errorf("unknown conclusion kind %d", int(c.Kind))
	}
	if cancelled {
		msg := cancelledMessage
		if c.Message != "" {
			msg += " (" + c.Message + ")"
		}
		return ConclusionStep{Outcome: job.OutcomeSkipped, Message: msg}, nil
	}
	if c.Kind == job.ConcludeAbort {
		return ConclusionStep{Outcome: job.OutcomeFailed, Message: orDefault(c.Message, defaultFailureMessage)}, nil
	}
	reason := orDefault(c.Message, defaultRequeueReason)
	if retries+1 > int64(c.MaxRetries) {
		return ConclusionStep{Outcome: job.OutcomeFailed,
			Message: fmt.Sprintf("%s (gave up after %d retries)", reason, retries)}, nil
	}
	return ConclusionStep{Outcome: job.OutcomeRequeued, Message: reason, RetryCount: retries + 1, NextRunAt: c.NextRunAt}, nil
}

// CheckSubmission validates what a submission holds by itself (a plugin,
// exactly one file reference, an absolute path, config_overrides a dispatch
// can use) and returns the parsed overrides. Errors wrap job.ErrInvalid.
func CheckSubmission(s job.Submission) (map[string][]Sink, error) {
	switch {
	case strings.TrimSpace(s.Plugin) == "":
		return nil, fmt.Errorf("submit job: plugin is required: %w", job.ErrInvalid)
	case s.FileVersionID == 0 && s.FilePath == "":
		return nil, fmt.Errorf("submit job: give file_version_id or file_path: %w", job.ErrInvalid)
	case s.FileVersionID != 0 && s.FilePath != "":
		return nil, fmt.Errorf("submit job: give file_version_id or file_path, not both: %w", job.ErrInvalid)
	case s.FileVersionID < 0:
		return nil, fmt.Errorf("submit job: file_version_id must be positive: %w", job.ErrInvalid)
	case s.FilePath != "" && !filepath.IsAbs(s.FilePath):
		return nil, fmt.Errorf("submit job: file_path %q must be absolute: %w", s.FilePath, job.ErrInvalid)
	}
	overridden, err := parseOverrides(s.ConfigOverrides)
	if err != nil {
		return nil, fmt.Errorf("submit job: %v: %w", err, job.ErrInvalid)
	}
	return overridden, nil
}

// SourceRootFor picks, among the active source roots, the one that contains
// the absolute path abs most closely, and returns its id and the path
// relative to it (with forward slashes, as rel_path is stored); ok is false
// when no root contains abs.
func SourceRootFor(roots []job.SourceRoot, abs string) (rootID int64, rel string, ok bool) {
	abs = filepath.Clean(abs)
	best := -1
	for _, root := range roots {
		r, err := filepath.Rel(filepath.Clean(root.Path), abs)
		if err != nil || !filepath.IsLocal(r) {
			continue
		}
		if len(root.Path) > best {
			best, rootID, rel = len(root.Path), root.ID, filepath.ToSlash(r)
		}
	}
	return rootID, rel, best >= 0
}

// DecodeReceipt reads metrics_json and artifacts_json; malformed JSON
// written by another tool reads as none.
func DecodeReceipt(metrics, artifacts sql.NullString) (map[string]int64, []map[string]string) {
	var m map[string]int64
	var a []map[string]string
	if metrics.Valid && json.Unmarshal([]byte(metrics.String), &m) != nil {
		m = nil
	}
	if artifacts.Valid && json.Unmarshal([]byte(artifacts.String), &a) != nil {
		a = nil
	}
	return m, a
}
