// Package api holds the JSON documents of the Sentinel's operator HTTP API
// (/api/v1): the HTTP layer (internal/httpapi) encodes them and the casparian
// CLI decodes them, so the two cannot drift apart. Field names are
// snake_case like the wire protocol's; optional fields are omitted when
// empty. These types are the API's contract.
//
// It is a leaf: it imports only the standard library.
package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Job is one job.
type Job struct {
	ID              int64               `json:"id"`
	Status          string              `json:"status"`
	Plugin          string              `json:"plugin"`
	FileVersionID   int64               `json:"file_version_id"`
	FilePath        string              `json:"file_path,omitempty"`
	Priority        int64               `json:"priority"`
	RetryCount      int64               `json:"retry_count"`
	Attempt         int64               `json:"attempt"`
	Worker          string              `json:"worker,omitempty"` // claimed_by: the worker holding or last holding it
	ClaimTime       *time.Time          `json:"claim_time,omitempty"`
	EndTime         *time.Time          `json:"end_time,omitempty"`
	UpdatedAt       *time.Time          `json:"updated_at,omitempty"`
	ResultSummary   string              `json:"result_summary,omitempty"`
	ErrorMessage    string              `json:"error_message,omitempty"`
	Metrics         map[string]int64    `json:"metrics,omitempty"`
	Artifacts       []map[string]string `json:"artifacts,omitempty"`
	ConfigOverrides json.RawMessage     `json:"config_overrides,omitempty"`
	CancelRequested bool                `json:"cancel_requested,omitempty"`
	// Attempts is the job's history, oldest first (GET /api/v1/jobs/{id}
	// only): every attempt that ended without completing, then the latest.
	Attempts []Attempt `json:"attempts,omitempty"`
	// Dispatch is the DISPATCH this job gets, assembled from the rows as
	// they are now: what was sent unless the plugin's manifest, its topics
	// or the job's overrides changed since the claim (GET /api/v1/jobs/{id}
	// only). The plugin's source is left out; source_bytes is its size.
	Dispatch *Dispatch `json:"dispatch,omitempty"`
	// Warning is set on an enqueue's answer when no connected worker can
	// run the plugin: the job is queued and waits for one.
	Warning string `json:"warning,omitempty"`
}

// Dispatch is a job's DISPATCH without the plugin's source. Reason, when
// set, says why the job cannot be dispatched now.
type Dispatch struct {
	PluginName    string         `json:"plugin_name"`
	FilePath      string         `json:"file_path"`
	FileVersionID int64          `json:"file_version_id"`
	EnvHash       string         `json:"env_hash"`
	ArtifactHash  string         `json:"artifact_hash,omitempty"`
	SourceBytes   int            `json:"source_bytes"`
	Sinks         []DispatchSink `json:"sinks"`
	Reason        string         `json:"reason,omitempty"`
}

// DispatchSink is where one topic's rows go.
type DispatchSink struct {
	Topic     string `json:"topic"`
	URI       string `json:"uri"`
	Mode      string `json:"mode"`
	SchemaDef string `json:"schema_def,omitempty"`
}

// Attempt is one claim of a job and how it ended: outcome RUNNING (not
// ended), COMPLETED, FAILED, SKIPPED or REQUEUED.
type Attempt struct {
	Attempt   int64      `json:"attempt"`
	Worker    string     `json:"worker,omitempty"`
	ClaimTime *time.Time `json:"claim_time,omitempty"`
	EndTime   *time.Time `json:"end_time,omitempty"`
	Outcome   string     `json:"outcome"`
	Message   string     `json:"message,omitempty"`
}

// JobList is a page of jobs in the order asked for (newest first by
// default). Total counts the jobs that match, from the cursor (after, or
// before_id) on when one was given. NextCursor, set when more jobs follow,
// is the after of the next page.
type JobList struct {
	Jobs       []Job  `json:"jobs"`
	Total      int64  `json:"total"`
	Limit      int    `json:"limit"`
	Offset     int    `json:"offset"`
	Sort       string `json:"sort"`  // id, priority, updated or ended
	Order      string `json:"order"` // asc or desc
	NextCursor string `json:"next_cursor,omitempty"`
}

// EnqueueRequest asks for a job: the file by file_version_id or by file_path
// (absolute, under an active source root), the plugin, and optionally a
// priority and config_overrides ({topic: sink | [sinks]}).
type EnqueueRequest struct {
	FileVersionID   int64           `json:"file_version_id,omitempty"`
	FilePath        string          `json:"file_path,omitempty"`
	Plugin          string          `json:"plugin"`
	Priority        int64           `json:"priority,omitempty"`
	ConfigOverrides json.RawMessage `json:"config_overrides,omitempty"`
}

// CancelResponse says what a cancel did.
type CancelResponse struct {
	Job            Job    `json:"job"`
	PreviousStatus string `json:"previous_status"`
	// AbortSent: the job was RUNNING; its worker was told to ABORT and the
	// job becomes SKIPPED when the worker confirms.
	AbortSent bool `json:"abort_sent"`
}

// Worker is one connected worker.
type Worker struct {
	ID           string    `json:"id"`
	Name         string    `json:"name,omitempty"`
	Version      string    `json:"version,omitempty"`
	Capabilities []string  `json:"capabilities"`
	Slots        int       `json:"slots"`
	Busy         int       `json:"busy"`
	RunningJobs  []int64   `json:"running_jobs"`
	LastSeen     time.Time `json:"last_seen"`
	Ready        bool      `json:"ready"`
	// KeyFingerprint names the CURVE key the worker connected with; empty
	// for a plaintext connection.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// Draining: an operator drained the worker; it gets no new jobs and
	// its running ones finish.
	Draining bool `json:"draining,omitempty"`
}

// WorkerList lists the connected workers.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// WorkerActionResult answers POST /api/v1/workers/{id}/drain, /undrain and
// /disconnect: the worker and what it is now.
type WorkerActionResult struct {
	Worker string `json:"worker"`
	Action string `json:"action"` // drain, undrain or disconnect
	// Draining is set by drain and undrain: whether the worker is drained
	// now. A disconnect leaves a drain as it was.
	Draining     *bool `json:"draining,omitempty"`
	Disconnected bool  `json:"disconnected,omitempty"`
}

// Manifest is one stored version of a plugin.
type Manifest struct {
	ID           int64      `json:"id"`
	Version      string     `json:"version"`
	Status       string     `json:"status"`
	EnvHash      string     `json:"env_hash"`
	ArtifactHash string     `json:"artifact_hash,omitempty"`
	DeployedAt   *time.Time `json:"deployed_at,omitempty"`
}

// Plugin is one plugin: the manifest a dispatch uses and every version.
type Plugin struct {
	Name             string         `json:"name"`
	SubscriptionTags []string       `json:"subscription_tags"`
	Active           *Manifest      `json:"active"`
	Versions         []Manifest     `json:"versions"`
	Settings         PluginSettings `json:"settings"`
}

// PluginSettings are a plugin's own settings. A paused plugin's QUEUED jobs
// are not dispatched; its RUNNING ones finish.
type PluginSettings struct {
	Paused   bool       `json:"paused"`
	PausedAt *time.Time `json:"paused_at,omitempty"`
	// JobTimeout overrides --job-timeout ("5m"; "0s": none); absent, the
	// global one holds.
	JobTimeout string `json:"job_timeout,omitempty"`
	// MaxRetries overrides --max-retries; absent, the global one holds.
	MaxRetries *int `json:"max_retries,omitempty"`
	// Reuse turns reuse of earlier results on or off; absent, the
	// default (on for built-ins and WebAssembly).
	Reuse *bool `json:"reuse,omitempty"`
}

// PluginSettingsRequest changes a plugin's settings; an absent field is
// left as it is.
type PluginSettingsRequest struct {
	// JobTimeout is a duration ("5m"; "0" for none), or "default" for
	// --job-timeout.
	JobTimeout *string `json:"job_timeout,omitempty"`
	// MaxRetries is a count, or -1 for --max-retries.
	MaxRetries *int `json:"max_retries,omitempty"`
	// Reuse is "on", "off" or "default".
	Reuse *string `json:"reuse,omitempty"`
}

// PluginSettingsResult answers a pause, resume or settings change.
type PluginSettingsResult struct {
	Plugin   string         `json:"plugin"`
	Settings PluginSettings `json:"settings"`
}

// BackfillRequest asks for a backfill or a rerun; DryRun only counts.
// Version is refused: the queue records no manifest per job (a rerun
// re-runs the jobs completed before the ACTIVE manifest's deployment).
type BackfillRequest struct {
	DryRun  bool   `json:"dry_run,omitempty"`
	Version string `json:"version,omitempty"`
}

// BackfillResult answers a BackfillRequest: the files that qualify and the
// jobs queued for them (0 for a dry run).
type BackfillResult struct {
	Plugin  string `json:"plugin"`
	Matched int64  `json:"matched"`
	Queued  int64  `json:"queued"`
	DryRun  bool   `json:"dry_run,omitempty"`
}

// RescanResult answers POST /api/v1/sources/rescan.
type RescanResult struct {
	Started bool `json:"started"`
}

// QueueAges answers GET /api/v1/queue/ages: for each plugin with a due
// QUEUED job, how long the oldest has waited, oldest first.
type QueueAges struct {
	Plugins []QueueAge `json:"plugins"`
}

// QueueAge is how long the oldest due QUEUED job of one plugin has waited.
type QueueAge struct {
	Plugin           string  `json:"plugin"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Environment is one plugin environment (cf_plugin_environment): its hash,
// the size its builder recorded (omitted when none did), its lockfile's
// length, when it was created and when a deploy last named it, and the
// plugin versions whose manifests name it (ActivePlugins: how many of them
// are ACTIVE).
type Environment struct {
	Hash          string            `json:"hash"`
	SizeMB        float64           `json:"size_mb,omitempty"`
	LockfileBytes int64             `json:"lockfile_bytes"`
	CreatedAt     *time.Time        `json:"created_at,omitempty"`
	LastUsed      *time.Time        `json:"last_used,omitempty"`
	ActivePlugins int               `json:"active_plugins"`
	Plugins       []EnvironmentUser `json:"plugins"`
}

// EnvironmentUser is a plugin version that uses an environment.
type EnvironmentUser struct {
	Plugin  string `json:"plugin"`
	Version string `json:"version"`
	Status  string `json:"status"`
}

// EnvironmentList answers GET /api/v1/environments, the most recently used
// first.
type EnvironmentList struct {
	Environments []Environment `json:"environments"`
}

// PluginList lists the plugins.
type PluginList struct {
	Plugins []Plugin `json:"plugins"`
}

// BulkRequest retries or cancels every job of a filter (GET /api/v1/jobs's,
// all pages); DryRun only counts them.
type BulkRequest struct {
	Action string `json:"action"` // "retry" or "cancel"
	Status string `json:"status,omitempty"`
	Plugin string `json:"plugin,omitempty"`
	Path   string `json:"path,omitempty"`
	Error  string `json:"error,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// BulkResult answers a BulkRequest: the jobs it could act on (FAILED ones
// for a retry; QUEUED, PENDING or RUNNING ones for a cancel) and how many
// it changed (0 for a dry run; a RUNNING job is aborted and then SKIPPED).
type BulkResult struct {
	Action  string `json:"action"`
	Matched int64  `json:"matched"`
	Changed int64  `json:"changed"`
	DryRun  bool   `json:"dry_run,omitempty"`
}

// PruneRequest deletes finished jobs: COMPLETED ones that ended more than
// CompletedOlderThan ago, FAILED and SKIPPED ones that ended more than
// FailedOlderThan ago (Go durations such as "720h"; "" or "0" prunes none of
// that kind; at least one must be given). DryRun only counts them.
type PruneRequest struct {
	CompletedOlderThan string `json:"completed_older_than,omitempty"`
	FailedOlderThan    string `json:"failed_older_than,omitempty"`
	DryRun             bool   `json:"dry_run,omitempty"`
}

// PruneResult answers a PruneRequest: the jobs deleted (for a dry run,
// that would be), COMPLETED ones and FAILED or SKIPPED ones.
type PruneResult struct {
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	DryRun    bool  `json:"dry_run,omitempty"`
}

// BuiltinRequest registers a built-in plugin of the sample worker (csv,
// jsonl, text_stats, checksum), optionally subscribed to file tags.
type BuiltinRequest struct {
	Name      string   `json:"name"`
	Subscribe []string `json:"subscribe,omitempty"`
}

// BuiltinAdded answers a BuiltinRequest: the plugin as it is now, and how
// many rows changed (0: it was registered already).
type BuiltinAdded struct {
	Plugin  Plugin `json:"plugin"`
	Changes int    `json:"changes"`
}

// SubscribeRequest adds file tags to a plugin's subscriptions, or (Topic)
// subscribes it to another plugin's topic, "PRODUCER:TOPIC" (chaining).
// One of the two, not both.
type SubscribeRequest struct {
	Tags  []string `json:"tags,omitempty"`
	Topic string   `json:"topic,omitempty"`
}

// TopicSubscription is a plugin's subscription to another plugin's topic:
// each artifact Producer reports on ProducerTopic gets a job of the plugin.
type TopicSubscription struct {
	Topic         string `json:"topic"` // "PRODUCER:TOPIC", as stored
	Producer      string `json:"producer,omitempty"`
	ProducerTopic string `json:"producer_topic,omitempty"`
	Active        bool   `json:"active"`
}

// TopicSubscriptions answers GET /api/v1/plugins/{name}/subscriptions and
// a topic subscribe or unsubscribe. Changed is false when the request
// found it done already. Lineage says whether the Sentinel records
// lineage (--lineage); Warning says what is missing without it.
type TopicSubscriptions struct {
	Plugin        string              `json:"plugin"`
	Subscriptions []TopicSubscription `json:"topic_subscriptions"`
	Changed       bool                `json:"changed"`
	Lineage       bool                `json:"lineage"`
	Warning       string              `json:"warning,omitempty"`
}

// Subscription is a plugin's tags after a subscribe.
type Subscription struct {
	Plugin           string   `json:"plugin"`
	SubscriptionTags []string `json:"subscription_tags"`
}

// Source is one source root.
type Source struct {
	ID     int64  `json:"id"`
	Path   string `json:"path"`
	Type   string `json:"type"`
	Active bool   `json:"active"`
}

// SourceList lists the source roots.
type SourceList struct {
	Sources []Source `json:"sources"`
}

// SourceRequest adds a source root.
type SourceRequest struct {
	Path string `json:"path"`
}

// Route is one routing rule: files matching the pattern get the tag.
type Route struct {
	ID       int64  `json:"id"`
	Pattern  string `json:"pattern"`
	Tag      string `json:"tag"`
	Priority int64  `json:"priority"`
}

// RouteList lists the routing rules.
type RouteList struct {
	Routes []Route `json:"routes"`
}

// Status is the queue and the workers at a glance.
type Status struct {
	Ready    bool             `json:"ready"`
	Endpoint string           `json:"endpoint"`
	Counts   map[string]int64 `json:"counts"`
	Workers  []Worker         `json:"workers"`
	// Sentinel is the Sentinel that answered; Sentinels, every one whose
	// lease on the database is live (several share a PostgreSQL queue).
	Sentinel  Sentinel   `json:"sentinel"`
	Sentinels []Sentinel `json:"sentinels"`
}

// Sentinel is one Sentinel serving the database, as its lease says.
type Sentinel struct {
	ID          string    `json:"id"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	Endpoint    string    `json:"endpoint"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	// Self marks the Sentinel that answered; Leader is known only for it.
	Self   bool `json:"self,omitempty"`
	Leader bool `json:"leader,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	// Reason is set when the request was refused before reaching the API:
	// no_token, bad_token, forbidden, bad_content_type, cross_origin or
	// bad_host (the label of casparian_http_refused_total).
	Reason string `json:"reason,omitempty"`
}

// StatusEvent is the data of each "status" event of GET /api/v1/events: the
// queue, the workers and the last hour's throughput, sent on connect and
// then about every second.
type StatusEvent struct {
	At       time.Time        `json:"at"`
	Ready    bool             `json:"ready"`
	Endpoint string           `json:"endpoint"`
	Counts   map[string]int64 `json:"counts"`
	Workers  []Worker         `json:"workers"`
	// Slots and Busy add up the connected workers' slots and running jobs.
	Slots int `json:"slots"`
	Busy  int `json:"busy"`
	// Throughput is the jobs that ended COMPLETED and FAILED in each of the
	// last 60 minutes, oldest first, the current (partial) minute last.
	Throughput []Minute `json:"throughput"`
	// Error says which part could not be read this time (counts or
	// workers); the other parts are still sent.
	Error string `json:"error,omitempty"`
}

// Minute is what ended in one minute, Start being its first instant.
type Minute struct {
	Start     time.Time `json:"start"`
	Completed int64     `json:"completed"`
	Failed    int64     `json:"failed"`
}

// ParseJobTimeout reads a per-plugin job timeout as the API and the CLI
// take it: a Go duration ("5m", "0" for none), or "default" for
// --job-timeout, which it returns as a negative duration
// (job.PluginSettingsUpdate's "back to the global setting").
func ParseJobTimeout(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "default":
		return -1, nil
	case "0":
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 5m, 0 for none, or default; got %q", s)
	}
	return d, nil
}

// Output is one artifact of a COMPLETED attempt and where it came from
// (lineage, issue #20).
type Output struct {
	JobID         int64  `json:"job_id"`
	Attempt       int64  `json:"attempt"`
	FileVersionID int64  `json:"file_version_id"`
	FilePath      string `json:"file_path,omitempty"`
	ContentHash   string `json:"content_hash,omitempty"`
	Plugin        string `json:"plugin"`
	// ArtifactHash is the manifest that ran.
	ArtifactHash string `json:"artifact_hash"`
	Topic        string `json:"topic,omitempty"`
	// URI is the sink the worker reported; empty when it reported none.
	URI   string `json:"uri,omitempty"`
	Rows  *int64 `json:"rows,omitempty"`
	Bytes *int64 `json:"bytes,omitempty"`
	// ReusedFromJob: this job was linked to that job's result, not run.
	ReusedFromJob int64     `json:"reused_from_job,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	Stale         bool      `json:"stale"`
	StaleReason   string    `json:"stale_reason,omitempty"`
	// Chain: the input was an artifact of another job (chaining by topic).
	Chain *ChainOrigin `json:"chain,omitempty"`
}

// ChainOrigin is where a chained job's input came from: artifact
// ArtifactIndex of job UpstreamJobID (Producer, Topic), made from file
// version UpstreamVersionID, going back to OriginalVersionID.
type ChainOrigin struct {
	UpstreamJobID     int64  `json:"upstream_job_id"`
	UpstreamAttempt   int64  `json:"upstream_attempt"`
	ArtifactIndex     int64  `json:"artifact_index"`
	Producer          string `json:"producer"`
	Topic             string `json:"topic"`
	UpstreamVersionID int64  `json:"upstream_file_version_id"`
	OriginalVersionID int64  `json:"original_file_version_id"`
	OriginalPath      string `json:"original_path,omitempty"`
}

// Outputs answers GET /api/v1/files/{id}/lineage,
// /api/v1/artifacts/provenance and /api/v1/outputs/stale.
type Outputs struct {
	FileVersionID int64    `json:"file_version_id,omitempty"`
	URI           string   `json:"uri,omitempty"`
	Outputs       []Output `json:"outputs"`
}

// RerunStaleRequest asks for POST /api/v1/outputs/stale/rerun; Plugin ""
// means every plugin, DryRun only counts.
type RerunStaleRequest struct {
	Plugin string `json:"plugin,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// RerunStaleResult answers POST /api/v1/outputs/stale/rerun: Matched stale
// file × plugin pairs, Queued jobs, Reused of them linked at once.
type RerunStaleResult struct {
	Plugin  string `json:"plugin,omitempty"`
	Matched int64  `json:"matched"`
	Queued  int64  `json:"queued"`
	Reused  int64  `json:"reused"`
	DryRun  bool   `json:"dry_run,omitempty"`
}
