package transport

import (
	"encoding/json"
	"fmt"
)

// The JSON payloads of protocol v4 (docs/PROTOCOL.md §4). Field names are the wire
// contract shared with the Python and Rust peers. Optional fields carry
// omitempty so that old peers never see fields they do not know; required
// fields never do, because pydantic peers refuse a message that lacks one.
// Types whose required fields are slices or maps marshal nil as [] or {} for
// the same reason.

// Sink modes of a SinkConfig (docs/PROTOCOL.md §4.2).
const (
	ModeAppend  = "append"
	ModeReplace = "replace"
	ModeError   = "error"
)

// Worker statuses a HEARTBEAT may report. Any string is accepted on decode,
// since liveness matters more than the label; these are what we send.
const (
	HeartbeatIdle  = "IDLE"
	HeartbeatAlive = "ALIVE"
	HeartbeatBusy  = "BUSY"
)

// Job receipt statuses of a CONCLUDE. Unlike heartbeat statuses these drive
// job state, so anything else is rejected.
const (
	StatusSuccess  = "SUCCESS"
	StatusFailed   = "FAILED"
	StatusRejected = "REJECTED"
	StatusAborted  = "ABORTED"
)

// MaxCapabilities caps the capabilities one IDENTIFY may announce, so a
// hostile or broken worker cannot make the dispatcher index an unbounded list.
const MaxCapabilities = 1024

// SinkConfig tells a worker where one output topic of a job goes. An empty
// Mode means ModeAppend on both decode and encode, because rows written by
// other tools may leave cf_topic_config.mode NULL.
type SinkConfig struct {
	Topic     string `json:"topic"`
	URI       string `json:"uri"`
	Mode      string `json:"mode"`
	SchemaDef string `json:"schema_def,omitempty"`
}

// sinkConfigJSON has SinkConfig's fields without its methods, so the methods
// below can use the default encoding without recursing.
type sinkConfigJSON SinkConfig

// MarshalJSON writes an empty Mode as "append": old workers validate the mode
// against the three known values and would refuse "".
func (s SinkConfig) MarshalJSON() ([]byte, error) {
	if s.Mode == "" {
		s.Mode = ModeAppend
	}
	return json.Marshal(sinkConfigJSON(s))
}

// UnmarshalJSON reads an omitted or null mode as "append", the protocol's
// default, so callers never have to remember it.
func (s *SinkConfig) UnmarshalJSON(b []byte) error {
	var w sinkConfigJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.Mode == "" {
		w.Mode = ModeAppend
	}
	*s = SinkConfig(w)
	return nil
}

func (s SinkConfig) validate() error {
	switch s.Mode {
	case "", ModeAppend, ModeReplace, ModeError:
		return nil
	}
	return fmt.Errorf("sink %q: mode %q: %w", s.Topic, s.Mode, ErrPayload)
}

// Identify is the IDENTIFY payload: a worker announcing itself and the
// plugins it can run ("*" means any). MaxConcurrentJobs and Version are Go
// extensions; old workers omit them.
type Identify struct {
	Capabilities      []string `json:"capabilities"`
	WorkerID          string   `json:"worker_id,omitempty"`
	MaxConcurrentJobs int      `json:"max_concurrent_jobs,omitempty"`
	Version           string   `json:"version,omitempty"`
}

// Slots returns how many jobs the worker may run at once. Workers that
// predate max_concurrent_jobs omit it and ran one job at a time.
func (m Identify) Slots() int {
	if m.MaxConcurrentJobs <= 0 {
		return 1
	}
	return m.MaxConcurrentJobs
}

type identifyJSON Identify

// MarshalJSON always writes capabilities, as [] when there are none.
func (m Identify) MarshalJSON() ([]byte, error) {
	if m.Capabilities == nil {
		m.Capabilities = []string{}
	}
	return json.Marshal(identifyJSON(m))
}

func (m Identify) validate() error {
	if m.MaxConcurrentJobs < 0 {
		return fmt.Errorf("max_concurrent_jobs %d is negative: %w", m.MaxConcurrentJobs, ErrPayload)
	}
	if len(m.Capabilities) > MaxCapabilities {
		return fmt.Errorf("%d capabilities, limit %d: %w", len(m.Capabilities), MaxCapabilities, ErrPayload)
	}
	for i, c := range m.Capabilities {
		if c == "" {
			return fmt.Errorf("capabilities[%d] is empty: %w", i, ErrPayload)
		}
	}
	return nil
}

// Dispatch is the DISPATCH payload: everything a worker needs to run one job
// without asking back. EnvHash is a lockfile SHA-256 or "system".
type Dispatch struct {
	PluginName    string       `json:"plugin_name"`
	FilePath      string       `json:"file_path"`
	Sinks         []SinkConfig `json:"sinks"`
	FileVersionID int64        `json:"file_version_id"`
	EnvHash       string       `json:"env_hash"`
	SourceCode    string       `json:"source_code"`
	ArtifactHash  string       `json:"artifact_hash,omitempty"`
}

// MarshalJSON always writes sinks, as [] when there are none (see
// appendJSON).
func (m Dispatch) MarshalJSON() ([]byte, error) {
	return m.appendJSON(nil), nil
}

func (m Dispatch) validate() error {
	for _, s := range m.Sinks {
		if err := s.validate(); err != nil {
			return err
		}
	}
	return nil
}

// Heartbeat is the HEARTBEAT payload, sent both ways. Status is one of the
// Heartbeat* constants but is not enforced; the job counts are what the
// Sentinel uses to reconcile what a worker is running.
type Heartbeat struct {
	Status         string  `json:"status"`
	CurrentJobID   *int64  `json:"current_job_id,omitempty"`
	ActiveJobCount int     `json:"active_job_count"`
	ActiveJobIDs   []int64 `json:"active_job_ids"`
}

type heartbeatJSON Heartbeat

// MarshalJSON always writes active_job_ids, as [] when there are none.
func (m Heartbeat) MarshalJSON() ([]byte, error) {
	if m.ActiveJobIDs == nil {
		m.ActiveJobIDs = []int64{}
	}
	return json.Marshal(heartbeatJSON(m))
}

// validate rejects only a negative count, which would otherwise read as
// spare capacity; everything else in a heartbeat is accepted as sent.
func (m Heartbeat) validate() error {
	if m.ActiveJobCount < 0 {
		return fmt.Errorf("active_job_count %d is negative: %w", m.ActiveJobCount, ErrPayload)
	}
	return nil
}

// Conclude is the CONCLUDE payload (the job receipt). Metrics hold counts
// such as "rows" and "size_bytes"; each artifact is a small string map such
// as {"topic": "output", "uri": "..."}.
type Conclude struct {
	Status       string              `json:"status"`
	Metrics      map[string]int64    `json:"metrics"`
	Artifacts    []map[string]string `json:"artifacts"`
	ErrorMessage string              `json:"error_message,omitempty"`
}

// MarshalJSON always writes metrics and artifacts, as {} and [] when empty
// (see appendJSON).
func (m Conclude) MarshalJSON() ([]byte, error) {
	return m.appendJSON(nil), nil
}

func (m Conclude) validate() error {
	switch m.Status {
	case StatusSuccess, StatusFailed, StatusRejected, StatusAborted:
		return nil
	}
	return fmt.Errorf("conclude status %q: %w", m.Status, ErrPayload)
}

// Err is the ERR payload, sent both ways; the header's job_id names the
// affected job, or is 0.
type Err struct {
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
}

func (m Err) validate() error { return nil }

// PrepareEnv is the PREPARE_ENV payload: provision the environment of a
// lockfile before a job needs it.
type PrepareEnv struct {
	EnvHash         string `json:"env_hash"`
	LockfileContent string `json:"lockfile_content"`
	PythonVersion   string `json:"python_version,omitempty"`
}

func (m PrepareEnv) validate() error { return nil }

// EnvReady is the ENV_READY payload: the worker has the environment; Cached
// says it already existed.
type EnvReady struct {
	EnvHash         string `json:"env_hash"`
	InterpreterPath string `json:"interpreter_path"`
	Cached          bool   `json:"cached"`
}

func (m EnvReady) validate() error { return nil }

// Deploy is the DEPLOY payload a publish tool sends. Hashes and the signature
// are verified by the receiver, not here: the codec only checks shape.
type Deploy struct {
	PluginName         string   `json:"plugin_name"`
	Version            string   `json:"version"`
	SourceCode         string   `json:"source_code"`
	LockfileContent    string   `json:"lockfile_content"`
	EnvHash            string   `json:"env_hash"`
	ArtifactHash       string   `json:"artifact_hash"`
	Signature          string   `json:"signature"`
	PublisherName      string   `json:"publisher_name"`
	PublisherEmail     string   `json:"publisher_email,omitempty"`
	AzureOID           string   `json:"azure_oid,omitempty"`
	SystemRequirements []string `json:"system_requirements,omitempty"`
	// Shadow (an extension; absent means false) asks for a shadow deploy:
	// the version is stored without becoming ACTIVE and runs at a low
	// priority over what the ACTIVE version processed, into shadow sinks.
	// ShadowFiles bounds how many file versions (0: the Sentinel's
	// default). Neither is covered by the signature, which names the
	// artifact: they choose how a verified artifact is rolled out.
	Shadow      bool `json:"shadow,omitempty"`
	ShadowFiles int  `json:"shadow_files,omitempty"`
}

// validate requires a name and version: without them the manifest cannot
// be stored or superseded, and the reply could not say what was deployed.
func (m Deploy) validate() error {
	if m.PluginName == "" {
		return fmt.Errorf("deploy: plugin_name is empty: %w", ErrPayload)
	}
	if m.Version == "" {
		return fmt.Errorf("deploy %s: version is empty: %w", m.PluginName, ErrPayload)
	}
	return nil
}

// Ack is the ACK payload, the reply to a DEPLOY.
type Ack struct {
	Success  bool   `json:"success"`
	Message  string `json:"message"`
	PluginID *int64 `json:"plugin_id,omitempty"`
}

func (m Ack) validate() error { return nil }
