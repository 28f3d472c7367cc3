package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Every in-process message of the actor tree is declared here, always sent
// and matched as a pointer. Each comment names the sender and the receiver.

// Peer names a connected ZeroMQ peer: its opaque identity and the printable
// key the rest of the system (and the database's claimed_by) uses for it.
type Peer struct {
	Key      string
	Identity []byte
}

// --- router goroutine → socket actor ---

// FramesReceived carries one raw multipart message read by the ROUTER.
type FramesReceived struct{ In transport.Inbound }

// --- socket actor → supervisor ---

// IdentifyReceived is a decoded IDENTIFY.
type IdentifyReceived struct {
	From  Peer
	Hello *transport.Identify
}

// HeartbeatReceived is a decoded HEARTBEAT from a worker.
type HeartbeatReceived struct {
	From Peer
	Beat *transport.Heartbeat
}

// ConcludeReceived is a decoded CONCLUDE (job receipt).
type ConcludeReceived struct {
	From    Peer
	JobID   int64
	Receipt *transport.Conclude
}

// ErrReceived is a decoded ERR sent by a worker.
type ErrReceived struct {
	From  Peer
	JobID int64
	Err   *transport.Err
}

// OtherReceived is any other valid message from a peer (opcodes a worker
// should not send); it still proves the peer is alive.
type OtherReceived struct {
	From  Peer
	Op    transport.Opcode
	JobID int64
}

// EnvReadyReceived is a decoded ENV_READY: the worker has an environment.
// Routed like the other worker messages.
type EnvReadyReceived struct {
	From  Peer
	Ready *transport.EnvReady
}

// DeployReceived is a decoded DEPLOY from a publish tool. The supervisor
// hands it to the deployer whether or not the peer ever identified.
type DeployReceived struct {
	From   Peer
	Deploy *transport.Deploy
}

// DispatchFailed says a DISPATCH could not be queued for sending (the
// outbound queue was full); the worker actor requeues the job.
type DispatchFailed struct {
	To    Peer
	JobID int64
}

// --- any actor → socket actor ---

// SendMessage asks the socket actor to encode and send one message.
type SendMessage struct {
	To      Peer
	Op      transport.Opcode
	JobID   int64
	Payload any // a transport payload struct, or nil for an empty payload
}

// --- worker actor → dispatcher ---

// WorkerAvailable announces a worker's full capacity: sent when the worker
// actor starts (after it has rebuilt its running jobs), on re-IDENTIFY and in
// answer to CapacityRequest. It replaces whatever the dispatcher knew.
type WorkerAvailable struct {
	Worker  string
	PID     *actor.PID
	Plugins []string
	Slots   int
	Running int
}

// SlotsFreed tells the dispatcher that N of a worker's jobs ended. Deltas,
// not totals, so that they commute with AssignJobs in flight.
type SlotsFreed struct {
	Worker string
	N      int
}

// --- supervisor → dispatcher ---

// WorkerGone removes a worker from dispatching.
type WorkerGone struct{ Worker string }

// WorkerDraining says whether an operator drained a worker: the dispatcher
// claims nothing for a draining worker, whose running jobs finish. The
// supervisor sends it on every change and again after a CapacityRequest,
// so that a restarted dispatcher learns it anew.
type WorkerDraining struct {
	Worker   string
	Draining bool
}

// --- dispatcher → supervisor → every worker actor ---

// CapacityRequest asks every worker actor to send WorkerAvailable again; a
// restarted dispatcher rebuilds its view this way.
type CapacityRequest struct{}

// --- dispatcher → queue actor (request) ---

// ClaimJobs asks the queue actor to claim jobs for workers with free slots.
// At is when the dispatcher asked; it starts the dispatch latency clock.
type ClaimJobs struct {
	Requests []job.ClaimRequest
	At       time.Time
}

// --- queue actor → dispatcher (response to ClaimJobs) ---

// JobsClaimed is the result of ClaimJobs. Err set means nothing was claimed.
type JobsClaimed struct {
	Claims    []JobClaim
	Failed    int // claimed but impossible to dispatch; already FAILED
	Requested int
	Err       error
}

// JobClaim is one claimed job with its DISPATCH payload ready to send.
// RequestedAt is ClaimJobs.At, for the dispatch latency.
type JobClaim struct {
	Ref         job.Ref
	RetryCount  int64
	Dispatch    *transport.Dispatch
	RequestedAt time.Time
	// JobTimeout is the plugin's job timeout (db.Claim.JobTimeout): 0 for
	// --job-timeout, negative for none.
	JobTimeout time.Duration
	// Shadow: a shadow run's job (db.Claim.Shadow); its completion
	// records no lineage.
	Shadow bool
}

// --- dispatcher → worker actor ---

// AssignJobs hands claimed jobs to the worker actor that must send them.
type AssignJobs struct{ Claims []JobClaim }

// --- worker actor / dispatcher / supervisor → queue actor ---

// ConcludeJob records how one claimed job ended. The queue actor batches
// these into one transaction.
//
// The queue actor sets MaxRetries from the configuration; senders leave it
// zero.
type ConcludeJob struct {
	job.Conclusion
	// CurrentClaim: the receipt came from a worker not registered (yet), for
	// example right after a Sentinel restart; apply it to whatever claim
	// Ref.Worker holds on the job now, so the restart loses no receipt.
	CurrentClaim bool
}

// RequeueWorkerJobs requeues every RUNNING job claimed by Worker (it was
// lost). Sent by the supervisor when a worker actor terminates.
type RequeueWorkerJobs struct {
	Worker string
	Reason string
}

// RequeueOrphans requeues RUNNING jobs whose claimant is not among the
// connected workers: jobs of a previous run nobody re-claimed, and claims that
// raced with a worker's removal. Sent by the supervisor on a timer.
type RequeueOrphans struct{ Connected map[string]bool }

// --- worker actor → queue actor (request) / queue actor → worker actor ---

// RunningJobsQuery asks for the RUNNING claims of one worker.
type RunningJobsQuery struct{ Worker string }

// RunningJobs answers RunningJobsQuery.
type RunningJobs struct {
	Jobs []job.Running
	Err  error
}

// --- database listener (notify.go) → queue actor ---

// QueueNotified says the database heard of jobs inserted by some process
// (PostgreSQL's NOTIFY): check the queue now rather than at the next poll.
type QueueNotified struct{}

// --- queue actor → dispatcher ---

// QueueChanged says claimable jobs may exist that did not before: another
// process wrote the queue, or a backoff expired.
type QueueChanged struct{}

// --- timers → the actor that armed them ---

// tick is a timer firing inside one actor; gen tells a stale timer of a
// previous incarnation from the current one.
type tick struct{ gen uint64 }

// releasePID is sent by the supervisor to a worker actor that has just
// stopped, so to nobody: sending through the stopped actor's own *PID makes
// protoactor drop the process that PID had cached. The same *PID stays in the
// supervisor's children set (protoactor keeps removed entries in the set's
// spare capacity), and with the cache it would keep the whole stopped actor
// (mailbox, state, logger) alive: about 3 KB per worker that ever connected.
type releasePID struct{}

// IgnoreDeadLetterLogging keeps releasePID out of protoactor's dead-letter log.
func (*releasePID) IgnoreDeadLetterLogging() {}

// writeBatch is sent by the queue actor to itself; by the time it is
// processed, every conclusion and claim request queued before it is in the
// batch.
type writeBatch struct{}

// chainStep is sent by the queue actor to itself: look for artifacts
// waiting to be chained (queue_chain.go).
type chainStep struct{}

// chainsLooked is sent by the chain step's goroutine to the queue actor:
// the pending artifacts, each checked against the source roots and hashed,
// or refused.
type chainsLooked struct {
	Inputs []job.ChainInput
}

// --- Sentinel (cmd, tests, the database watch) → actors ---

// StopDispatching makes the dispatcher claim nothing more (graceful stop).
type StopDispatching struct{}

// RunningCountQuery asks the queue actor how many jobs are RUNNING; a
// graceful stop polls it while draining.
type RunningCountQuery struct{}

// RunningCount answers RunningCountQuery.
type RunningCount struct {
	N   int64
	Err error
}

// WorkersQuery asks the supervisor for the connected workers.
type WorkersQuery struct{}

// WorkersList answers WorkersQuery.
type WorkersList struct{ Workers []string }

// crash makes the target actor panic; Sentinel.InjectPanic sends it, so tests
// can prove that supervision restarts each actor kind without losing a job.
// target is "supervisor", "queue", "dispatcher", "socket", "scanner" or a
// worker key.
type crash struct{ target string }

// --- queue actor → supervisor → worker actor ---

// AbortJob tells the worker actor holding a RUNNING job that an operator
// cancelled it: send ABORT. The job ends SKIPPED when the worker concludes
// ABORTED, and can no longer be requeued (the database holds the cancel).
type AbortJob struct{ Ref job.Ref }

// --- Sentinel (HTTP handlers) → supervisor → worker actors ---

// WorkerPIDsQuery asks the supervisor for the worker actors, so that the
// caller can ask each for its WorkerInfo.
type WorkerPIDsQuery struct{}

// WorkerPIDs answers WorkerPIDsQuery, by worker key, with the keys an
// operator drained.
type WorkerPIDs struct {
	ByKey    map[string]*actor.PID
	Draining map[string]bool
}

// WorkerInfoQuery asks one worker actor to describe its worker.
type WorkerInfoQuery struct{}

// WorkerInfo answers WorkerInfoQuery: what the worker said about itself and
// what the Sentinel knows of it.
type WorkerInfo struct {
	ID           string // the identity key (claimed_by)
	Name         string // the worker_id it sent in IDENTIFY, if any
	Version      string
	Capabilities []string
	Slots        int
	Running      []int64 // job ids, ascending
	LastSeen     time.Time
	Ready        bool // its RUNNING jobs were rebuilt; it can take jobs
	// KeyFingerprint names the CURVE key the worker connected with; "" for
	// a plaintext connection.
	KeyFingerprint string
	// Draining: an operator drained the worker; it gets no new jobs. Set by
	// Sentinel.WorkersInfo from the supervisor's answer.
	Draining bool
}

// --- Sentinel (HTTP handlers) → supervisor (request) ---

// DrainWorker drains (Drain) or undrains a worker: a draining worker gets no
// new jobs and its running ones finish. The drain is kept by the worker's
// key while this Sentinel runs, so a drained worker that reconnects under
// the same identity stays drained until it is undrained. Draining a worker
// that is not connected is job.ErrNotFound; undraining one that is not
// drained changes nothing. Answered with an *OperatorReply (no Value).
type DrainWorker struct {
	Worker string
	Drain  bool
}

// DisconnectWorker makes the Sentinel forget a connected worker now, as if
// it had timed out: its worker actor stops, its RUNNING jobs are requeued,
// and the worker is sent ERR "unknown worker, send IDENTIFY", so that a
// live worker identifies again (with no jobs). An unknown worker is
// job.ErrNotFound. Answered with an *OperatorReply (no Value).
type DisconnectWorker struct{ Worker string }

// --- Sentinel (HTTP handlers) → queue actor (request) ---
//
// Each operator request is answered with an *OperatorReply whose Value has
// the type named in the request's comment.

// OperatorReply answers every operator request. Err wraps job.ErrNotFound,
// job.ErrInvalid or job.ErrConflict when the request, not the database, is
// at fault.
type OperatorReply struct {
	Value any
	Err   error
}

// JobsQuery asks for one page of jobs. Value: job.Page.
type JobsQuery struct{ Filter job.Filter }

// JobQuery asks for one job. Value: job.Info.
type JobQuery struct{ ID int64 }

// EnqueueJob inserts a job for a plugin with an ACTIVE manifest (else
// job.ErrUnknownPlugin). Value: int64, the new job's id.
type EnqueueJob struct{ Submission job.Submission }

// BulkJobs retries or cancels every job Filter selects (its paging is
// ignored), or with DryRun counts them. Value: job.BulkResult.
type BulkJobs struct {
	Action job.BulkAction
	Filter job.Filter
	DryRun bool
}

// PruneJobs deletes the finished jobs Prune selects, at most Limit of them
// (0: all), or with DryRun counts them all. Value: job.PruneResult.
type PruneJobs struct {
	Prune  job.Prune
	Limit  int
	DryRun bool
}

// QueueAgesQuery asks when the oldest due QUEUED job of each plugin was
// enqueued. Value: []job.QueueAge.
type QueueAgesQuery struct{}

// AddBuiltin registers a built-in plugin of the sample worker: an ACTIVE
// manifest (unless it has one) and the subscription tags. Value: int, the
// rows changed (0: it was registered already).
type AddBuiltin struct {
	Name      string
	Subscribe []string
}

// CancelJob cancels a job; a RUNNING one is aborted through its worker
// actor. Value: job.CancelResult.
type CancelJob struct{ ID int64 }

// RetryJob puts a FAILED job back to QUEUED. Value: nil.
type RetryJob struct{ ID int64 }

// CountsQuery counts jobs by status. Value: map[job.Status]int64.
type CountsQuery struct{}

// PluginsQuery lists the plugins. Value: []job.Plugin.
type PluginsQuery struct{}

// EnvironmentsQuery lists the plugin environments with the manifests that
// name them. Value: []job.Environment.
type EnvironmentsQuery struct{}

// SubscribePlugin adds file tags to a plugin's subscriptions. Value:
// []string, the plugin's tags after it.
type SubscribePlugin struct {
	Plugin string
	Tags   []string
}

// SourcesQuery lists the source roots. Value: []job.SourceRoot.
type SourcesQuery struct{}

// AddSource adds (or reactivates) a source root. Value: job.SourceRoot.
type AddSource struct{ Path string }

// RoutesQuery lists the routing rules. Value: []job.RoutingRule.
type RoutesQuery struct{}

// SentinelsQuery lists the Sentinels whose lease is live. Value:
// []db.LeaseOwner.
type SentinelsQuery struct{}

// AddRoute adds a routing rule. Value: int64, its id.
type AddRoute struct {
	Pattern, Tag string
	Priority     int64
}

// HealthQuery asks the queue actor to touch the database. Value: nil.
type HealthQuery struct{}

// PausePlugin pauses (Pause) or resumes a plugin; resuming tells the
// dispatcher the queue changed. Value: job.PluginSettings.
type PausePlugin struct {
	Plugin string
	Pause  bool
}

// SetPluginSettings changes a plugin's job timeout and max retries. Value:
// job.PluginSettings.
type SetPluginSettings struct {
	Plugin string
	Update job.PluginSettingsUpdate
}

// BackfillPlugin queues a job of Plugin for every current file version its
// subscriptions match (by applied_tags and the routing rules' tags now)
// that has none, or with DryRun counts them. Value: job.BackfillResult.
type BackfillPlugin struct {
	Plugin string
	DryRun bool
}

// RerunPlugin queues again the Plugin's jobs that completed before its
// ACTIVE manifest was deployed, or with DryRun counts them. Value:
// job.BackfillResult.
type RerunPlugin struct {
	Plugin string
	DryRun bool
}

// OutputsQuery asks for lineage (issue #20): the outputs of FileVersionID,
// or where URI's outputs came from, or with Stale the stale outputs of
// Plugin ("" all). Value: []job.Output.
type OutputsQuery struct {
	FileVersionID int64
	URI           string
	Stale         bool
	Plugin        string
}

// RerunStale queues a job per current file version × plugin whose newest
// output is stale (Plugin "" for all), or with DryRun counts them. Value:
// job.RerunStaleResult.
type RerunStale struct {
	Plugin string
	DryRun bool
}

// TopicSubscriptionsQuery asks for a plugin's topic subscriptions
// (chaining, issue #20). Value: job.TopicSubscriptions.
type TopicSubscriptionsQuery struct {
	Plugin string
}

// SubscribeTopic subscribes Plugin to Topic ("PRODUCER:TOPIC"), refusing a
// cycle, or with Remove unsubscribes it. Value: job.TopicSubscriptions.
type SubscribeTopic struct {
	Plugin, Topic string
	Remove        bool
}

// ShadowRunsQuery asks for the shadow runs of Plugin ("" all), newest
// first (issue #20 part 5). Value: []job.ShadowRun.
type ShadowRunsQuery struct{ Plugin string }

// CompareShadow asks for the comparison of Plugin's shadow run of Version
// over BaseVersion. Value: job.ShadowComparison.
type CompareShadow struct{ Plugin, BaseVersion, Version string }

// EndShadow promotes (Promote) or discards Plugin's RUNNING shadow run of
// Version. Value: job.ShadowEnd.
type EndShadow struct {
	Plugin, Version string
	Promote         bool
}

// --- Sentinel (operator) → scanner ---

// RescanSources asks the scanner to start a pass now, or right after the
// one in progress. Only the leader scans; the Sentinel refuses the request
// on the others.
type RescanSources struct{}

// --- scanner ⇄ queue actor (requests and answers) ---

// ScanStateQuery asks for what a scan pass needs: the active roots with
// their known files, the ignore rules and the routing rules.
type ScanStateQuery struct{ Pass uint64 }

// ScanState answers ScanStateQuery.
type ScanState struct {
	Pass   uint64
	Roots  []ScanRoot
	Ignore []db.IgnoreRule
	Routes []job.RoutingRule
	Err    error
}

// ScanRoot is one active source root and the files the database knows in it.
type ScanRoot struct {
	Root  job.SourceRoot
	Known map[string]db.ScanLocation // by rel_path
}

// RecordScan records hashed files (versions, tags, jobs) in one transaction.
type RecordScan struct {
	Pass  uint64
	Files []db.ScannedFile
}

// ScanRecorded answers RecordScan.
type ScanRecorded struct {
	Pass    uint64
	Records []db.ScanRecord
	Err     error
}

// FinishScan marks the end of a root's pass: which known files were seen and
// which are missing.
type FinishScan struct {
	Pass          uint64
	RootID        int64
	Seen, Missing []int64
}

// ScanFinished answers FinishScan.
type ScanFinished struct {
	Pass uint64
	Err  error
}

// --- scanner goroutines → scanner actor ---

// rootWalked is one source root's listing, made by the walker goroutine.
type rootWalked struct {
	pass   uint64
	rootID int64
	dir    string // where the root resolved to; its files are read there
	files  []walkedFile
	err    error // the root itself could not be read, or is not allowed; nothing is marked missing
}

// fileHashed is a hasher goroutine's result for one file.
type fileHashed struct {
	pass uint64
	task hashTask
	hash string
	err  error
}

// --- deployer → queue actor (request) / queue actor → deployer ---

// StoreDeploy asks the queue actor to store a verified deployment.
type StoreDeploy struct{ Deployment db.Deployment }

// DeployStored answers StoreDeploy. Err wraps job.ErrConflict when the
// deployment clashes with what is stored (the message says how).
type DeployStored struct {
	Result db.DeployResult
	Err    error
}

// --- deployer → supervisor ---

// BroadcastReload asks the supervisor to send RELOAD to every connected
// worker (after a deploy changed a plugin's code).
type BroadcastReload struct{}

// --- deployer → dispatcher ---

// PluginDeployed says a plugin's ACTIVE manifest changed; EnvHash is its
// environment ("" or "system" for none).
type PluginDeployed struct {
	Plugin, EnvHash string
}

// --- worker actor → queue actor (request) / queue actor → worker actor ---

// EnvironmentQuery asks for the lockfile of an environment, for PREPARE_ENV.
type EnvironmentQuery struct{ Hash string }

// Environment answers EnvironmentQuery. Err wraps job.ErrNotFound when the
// environment is not stored.
type Environment struct {
	Hash, Lockfile string
	Err            error
}

// --- worker actor → dispatcher ---

// WorkerEnvs is a worker's environments as the dispatcher needs them: the
// ones it reported ready (jobs needing them go there first) and the ones it
// failed to prepare, with when it may be asked again (jobs needing them are
// not claimed for it until then). It replaces what the dispatcher knew.
type WorkerEnvs struct {
	Worker string
	Ready  []string
	Avoid  map[string]time.Time
}
