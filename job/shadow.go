package job

import "time"

// Shadow runs (issue #20 part 5): a new version of a plugin, deployed with
// --shadow, is stored with status SHADOW while the ACTIVE version keeps
// serving, and runs at a low priority over the file versions the ACTIVE
// version completed, into shadow sinks; the two are then compared from what
// the workers reported, and the new version promoted or discarded.

// Shadow run states.
const (
	ShadowRunning   = "RUNNING"
	ShadowPromoted  = "PROMOTED"
	ShadowDiscarded = "DISCARDED"
)

// ShadowRun is one shadow run: Version of Plugin over what BaseVersion (the
// version ACTIVE when the run began) completed.
type ShadowRun struct {
	ID             int64      `json:"id"`
	Plugin         string     `json:"plugin"`
	Version        string     `json:"version"`
	ManifestID     int64      `json:"manifest_id"`
	BaseVersion    string     `json:"base_version"`
	BaseManifestID int64      `json:"base_manifest_id"`
	State          string     `json:"state"`
	Jobs           int64      `json:"jobs"` // shadow jobs queued when the run began
	CreatedAt      time.Time  `json:"created_at"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
}

// ShadowEnd is what promoting or discarding a shadow run did.
type ShadowEnd struct {
	Run ShadowRun `json:"run"`
	// Cancelled is how many shadow jobs were still QUEUED and are now
	// SKIPPED.
	Cancelled int64 `json:"cancelled"`
	// Superseded is how many ACTIVE manifests a promotion superseded.
	Superseded int64 `json:"superseded"`
	// EnvHash is the promoted manifest's environment.
	EnvHash string `json:"env_hash,omitempty"`
}

// Verdicts of one file version in a comparison.
const (
	ShadowIdentical     = "identical"
	ShadowDiffering     = "differing"
	ShadowMissingBase   = "missing_base"   // no completed job of the base version to compare with
	ShadowMissingShadow = "missing_shadow" // the shadow job failed, was skipped or is gone
	ShadowPending       = "pending"        // the shadow job is QUEUED or RUNNING
)

// ShadowComparison compares a shadow run's results with the base version's,
// per file version both ran.
type ShadowComparison struct {
	Run     ShadowRun        `json:"run"`
	Summary ShadowSummary    `json:"summary"`
	Files   []ShadowFileDiff `json:"files"`
}

// ShadowSummary counts the file versions of a comparison by verdict.
type ShadowSummary struct {
	Files         int64 `json:"files"`    // file versions in the run
	Compared      int64 `json:"compared"` // both sides have results
	Identical     int64 `json:"identical"`
	Differing     int64 `json:"differing"`
	MissingBase   int64 `json:"missing_base"`
	MissingShadow int64 `json:"missing_shadow"`
	Pending       int64 `json:"pending"`
}

// ShadowFileDiff is one file version of a comparison.
type ShadowFileDiff struct {
	FileVersionID int64             `json:"file_version_id"`
	FilePath      string            `json:"file_path,omitempty"`
	BaseJobID     int64             `json:"base_job_id"`
	ShadowJobID   int64             `json:"shadow_job_id"`
	ShadowStatus  Status            `json:"shadow_status"`
	Verdict       string            `json:"verdict"`
	Topics        []ShadowTopicDiff `json:"topics,omitempty"`
}

// ShadowTopicDiff compares one topic's output of a file version: the rows,
// the schema and the content hash each side's worker reported (nil or ""
// when it reported none).
type ShadowTopicDiff struct {
	Topic         string `json:"topic"`
	BaseRows      *int64 `json:"base_rows"`
	ShadowRows    *int64 `json:"shadow_rows"`
	BaseSchema    string `json:"base_schema,omitempty"`
	ShadowSchema  string `json:"shadow_schema,omitempty"`
	BaseContent   string `json:"base_content_hash,omitempty"`
	ShadowContent string `json:"shadow_content_hash,omitempty"`
	// Differences says what differs, one phrase each ("rows 4 → 2");
	// empty when nothing known differs.
	Differences []string `json:"differences,omitempty"`
}
