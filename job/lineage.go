package job

import "time"

// Output is one artifact of a COMPLETED attempt, with where it came from: a
// sentinel_outputs row (issue #20's lineage). A job that reported no
// artifact has one Output with an empty URI.
type Output struct {
	JobID         int64
	Attempt       int64
	FileVersionID int64
	Plugin        string
	// ArtifactHash is the manifest that ran ("" when unknown).
	ArtifactHash string
	// ContentHash is the input file version's content hash.
	ContentHash string
	Topic, URI  string
	// Rows and Bytes are nil when neither the artifact nor the job's
	// metrics gave them.
	Rows, Bytes *int64
	// ReusedFromJob is the job whose outputs these are, when this job was
	// reused instead of run; 0 otherwise.
	ReusedFromJob int64
	CreatedAt     time.Time
	// FilePath is the input's root path joined with its rel_path, "" when
	// a link is missing.
	FilePath string
	// Stale: a newer version of the file exists, or the plugin's ACTIVE
	// manifest is another one (computed when read).
	Stale bool
	// StaleReason says which, when Stale.
	StaleReason string
	// Chain, for an output of a chained job, says where its input (an
	// artifact of another job) came from; nil otherwise.
	Chain *ChainOrigin
}

// Stale reasons.
const (
	StaleNewerFile     = "newer file version"
	StaleNewerManifest = "newer plugin manifest"
)

// RerunStaleResult is what a rerun of stale outputs did, or with DryRun
// would do: Queued jobs (Matched stale file × plugin pairs for a dry run;
// Reused of the queued ones were linked to an earlier result at once).
type RerunStaleResult struct {
	Plugin  string
	DryRun  bool
	Matched int64
	Queued  int64
	Reused  int64
}
