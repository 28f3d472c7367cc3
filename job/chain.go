package job

import "time"

// Chaining by topic (issue #20 part 4): a plugin subscribed to another
// plugin's output topic gets a job for each artifact of that topic, on a
// file version that stands for the artifact's file.

// TopicSubscription is one row of cf_plugin_subscription: Plugin gets a job
// for every artifact Producer reports on ProducerTopic. Topic is the stored
// topic_name, "PRODUCER:TOPIC".
type TopicSubscription struct {
	Plugin        string
	Topic         string
	Producer      string
	ProducerTopic string
	Active        bool
}

// TopicSubscriptions is a plugin's topic subscriptions, with, for the
// answer to a change, whether the Sentinel records lineage (--lineage):
// without it chained jobs run but no output is recorded to show where
// they came from.
type TopicSubscriptions struct {
	Plugin        string
	Subscriptions []TopicSubscription
	// Changed is false when the request found what it asked for already
	// there (subscribe) or already gone (unsubscribe).
	Changed bool
	Lineage bool
}

// PendingChain is one artifact of a completed job that subscribers wait
// for (a sentinel_chain_pending row), with what the chain needs of its job.
type PendingChain struct {
	JobID, Attempt, Index int64
	Topic, URI            string
	// Producer is the job's plugin, FileVersionID its input, Priority its
	// priority (the chained jobs get the same).
	Producer      string
	FileVersionID int64
	Priority      int64
}

// ChainWork is what the chain step reads: the pending artifacts, oldest
// first, and the ACTIVE source roots an artifact's file must lie in.
type ChainWork struct {
	Pending []PendingChain
	Roots   []SourceRoot
}

// ChainInput is one pending artifact after the Sentinel looked at its
// file: refused (Refused names why, nothing is chained), or found inside
// root RootID at RelPath with this content.
type ChainInput struct {
	Pending PendingChain
	Refused string
	Detail  string // for the log: the error behind a refusal
	RootID  int64
	RelPath string // slash-separated, relative to the root
	Hash    string // SHA-256 hex of the content
	Size    int64
	ModTime time.Time
}

// The reasons an artifact is not chained (ChainInput.Refused).
const (
	// ChainOutsideRoots: the artifact's file lies in no ACTIVE source root.
	ChainOutsideRoots = "outside_roots"
	// ChainNotAFile: the artifact names a table (sqlite://) or a URI the
	// Sentinel does not read as a file.
	ChainNotAFile = "not_a_file"
	// ChainUnreadable: the file is gone or cannot be read.
	ChainUnreadable = "unreadable"
)

// ChainResult is what the chain step recorded.
type ChainResult struct {
	// Jobs are the chained jobs queued, by plugin.
	Jobs map[string][]int64
	// Versions counts new cf_file_version rows made for artifacts.
	Versions int
	// Done counts pending artifacts settled (chained or refused) by this
	// call; ones another Sentinel settled first are not counted.
	Done int
}

// ChainOrigin tells where the input of a chained job came from: the
// artifact ArtifactIndex of job UpstreamJobID (plugin Producer, on topic
// Topic), made from file version UpstreamVersionID, which goes back to
// OriginalVersionID, the first version of the chain (the same when the
// upstream job ran on a file no job wrote).
type ChainOrigin struct {
	UpstreamJobID     int64
	UpstreamAttempt   int64
	ArtifactIndex     int64
	Producer, Topic   string
	UpstreamVersionID int64
	OriginalVersionID int64
	// OriginalPath is the original version's root path and rel_path.
	OriginalPath string
}
