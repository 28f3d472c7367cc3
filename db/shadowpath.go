package db

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/casparian/sentinel/job"
)

// Shadow runs (issue #20 part 5): the rules both backends share. The tables
// are sentinel_shadow_runs and sentinel_shadow_jobs (migration 0014); each
// backend keeps its SQL in its shadow.go.
//
// A shadow job is an ordinary cf_processing_queue row of the plugin, so any
// worker that runs the plugin can take it. Two things set it apart:
//   - its config_overrides send every sink of the plugin to a shadow sink
//     (ShadowURI), written when it is queued: whoever claims it, with
//     whichever manifest, never writes the base version's outputs;
//   - sentinel_shadow_jobs names the manifest it runs. A claim reads that
//     only while some shadow run is RUNNING (ShadowFlag): with none, the
//     claim statement is the one it always was.

// ShadowPriority is the priority of shadow jobs: below anything the
// scanner, backfills or operators queue in practice, so shadow work only
// takes slots nothing else wants.
const ShadowPriority = -1_000_000

// ShadowFilesDefault is how many file versions a shadow run covers when
// the deploy does not say: the newest the base version completed.
const ShadowFilesDefault = 1000

// ShadowFresh is how long ShadowFlag trusts what it read. A shadow run
// this process starts, promotes or discards is seen at once; one another
// Sentinel (PostgreSQL) starts is seen within ShadowFresh, and its jobs are
// due only ShadowDelay after they are queued, so no Sentinel claims them
// with the plain claim statement.
const ShadowFresh = time.Second

// ShadowDelay is how long after a shadow run begins its jobs become due.
const ShadowDelay = 2 * ShadowFresh

// shadowDir is the folder, next to each sink's file, that holds the shadow
// runs' outputs: <dir>/_shadow/run-<id>/<file>.
const shadowDir = "_shadow"

// Shadow manifest status: a manifest stored by a shadow deploy, never the
// one ordinary jobs run (they run the ACTIVE one). It fits
// cf_plugin_manifest.status (VARCHAR(8)).
const ManifestShadow = "SHADOW"

// ShadowSkippedMessage is the error_message of the shadow jobs still QUEUED
// when their run is promoted or discarded.
const ShadowSkippedMessage = "shadow run ended (promoted or discarded)"

// ShadowURI returns where a shadow run writes what uri would receive: the
// same file name in the folder _shadow/run-<id> next to it (for sqlite://,
// the same table in such a database file). It stays below the sink's own
// folder, so a worker's --output-dir confinement holds for both.
func ShadowURI(uri string, runID int64) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri // not a sink URI; the worker refuses it as it would the original
	}
	var table string
	if strings.EqualFold(scheme, "sqlite") {
		if i := strings.LastIndexByte(rest, '/'); i > 0 {
			rest, table = rest[:i], rest[i:]
		}
	}
	dir, file := "", rest
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		dir, file = rest[:i+1], rest[i+1:]
	}
	return fmt.Sprintf("%s://%s%s/run-%d/%s%s", scheme, dir, shadowDir, runID, file, table)
}

// ShadowOverrides returns the config_overrides of a shadow job of run
// runID: every sink the base job had (the plugin's topics, the base job's
// own overrides, the default output) sent to its ShadowURI.
func ShadowOverrides(plugin string, configured []Sink, baseOverrides string, runID int64) (string, error) {
	overrides, err := parseOverrides(baseOverrides)
	if err != nil {
		overrides = nil // the base job ran, so this cannot happen; its topics' defaults apply
	}
	byTopic := map[string][]overrideSink{}
	for _, s := range mergeSinks(plugin, configured, overrides) {
		o := overrideSink{URI: ShadowURI(s.URI, runID), Mode: orDefault(s.Mode, SinkModeAppend)}
		if s.SchemaDef != "" {
			b, err := json.Marshal(s.SchemaDef)
			if err != nil {
				return "", err
			}
			o.SchemaDef = b
		}
		byTopic[s.Topic] = append(byTopic[s.Topic], o)
	}
	b, err := json.Marshal(byTopic)
	if err != nil {
		return "", fmt.Errorf("shadow overrides: %w", err)
	}
	return string(b), nil
}

// ShadowFlag caches whether any shadow run is RUNNING, for the claim path:
// while none is, claims use the plain statement (nothing more per claim).
type ShadowFlag struct {
	mu     sync.Mutex
	active bool
	until  time.Time
}

// Active returns whether some shadow run is RUNNING, reading it with read
// when what it knows is older than ShadowFresh.
func (f *ShadowFlag) Active(ctx context.Context, read func(context.Context) (bool, error)) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Before(f.until) {
		return f.active, nil
	}
	active, err := read(ctx)
	if err != nil {
		return false, fmt.Errorf("shadow runs: %w", err)
	}
	f.active, f.until = active, now.Add(ShadowFresh)
	return active, nil
}

// Forget makes the next Active read again: this process started or ended a
// shadow run.
func (f *ShadowFlag) Forget() {
	f.mu.Lock()
	f.until = time.Time{}
	f.mu.Unlock()
}

// CheckShadowName refuses an empty plugin or version (job.ErrInvalid).
func CheckShadowName(plugin, version string) error {
	switch {
	case strings.TrimSpace(plugin) == "":
		return fmt.Errorf("shadow: plugin name is required: %w", job.ErrInvalid)
	case strings.TrimSpace(version) == "":
		return fmt.Errorf("shadow: version is required: %w", job.ErrInvalid)
	}
	return nil
}

// ShadowPair is one file version of a shadow run as a backend read it: the
// base job's results (copied when the run began) and the shadow job's.
type ShadowPair struct {
	FileVersionID, BaseJobID, ShadowJobID int64
	FilePath                              string
	BaseArtifacts, BaseMetrics            string // JSON as stored; "" for none
	ShadowStatus                          job.Status
	ShadowFound                           bool // the shadow job's row still exists
	ShadowArtifacts, ShadowMetrics        string
}

// topicResult is what a worker reported of one topic of one job.
type topicResult struct {
	rows            *int64
	schema, content string
}

// topicResults reads a receipt's artifacts (JSON list of string maps) and
// metrics per topic: an artifact's "rows", "schema" and "content_hash"; the
// job's "rows" metric stands in for the rows when the job has one topic.
// Several sinks of one topic carry the same data: the first one counts.
func topicResults(artifacts, metrics string) map[string]topicResult {
	var arts []map[string]string
	_ = json.Unmarshal([]byte(artifacts), &arts)
	var ms map[string]json.Number
	_ = json.Unmarshal([]byte(metrics), &ms)
	out := map[string]topicResult{}
	for _, a := range arts {
		topic := a["topic"]
		if _, seen := out[topic]; seen {
			continue
		}
		r := topicResult{schema: a["schema"], content: a["content_hash"]}
		if n, err := strconv.ParseInt(a["rows"], 10, 64); err == nil {
			r.rows = &n
		}
		out[topic] = r
	}
	if n, err := ms["rows"].Int64(); err == nil {
		switch len(out) {
		case 0:
			out[outputTopic] = topicResult{rows: &n}
		case 1:
			for t, r := range out {
				if r.rows == nil {
					r.rows = &n
					out[t] = r
				}
			}
		}
	}
	return out
}

// CompareShadow compares the pairs of a shadow run, per file version and
// topic: rows, schema and content hash where both workers reported them.
func CompareShadow(run job.ShadowRun, pairs []ShadowPair) job.ShadowComparison {
	c := job.ShadowComparison{Run: run, Files: []job.ShadowFileDiff{}}
	for _, p := range pairs {
		f := job.ShadowFileDiff{FileVersionID: p.FileVersionID, FilePath: p.FilePath, BaseJobID: p.BaseJobID,
			ShadowJobID: p.ShadowJobID, ShadowStatus: p.ShadowStatus}
		c.Summary.Files++
		switch {
		case !p.ShadowFound:
			f.Verdict = ShadowVerdict(job.ShadowMissingShadow, &c.Summary)
		case p.ShadowStatus == job.StatusQueued || p.ShadowStatus == job.StatusRunning || p.ShadowStatus == job.StatusPending:
			f.Verdict = ShadowVerdict(job.ShadowPending, &c.Summary)
		case p.ShadowStatus != job.StatusCompleted:
			f.Verdict = ShadowVerdict(job.ShadowMissingShadow, &c.Summary)
		case p.BaseArtifacts == "" && p.BaseMetrics == "":
			f.Verdict = ShadowVerdict(job.ShadowMissingBase, &c.Summary)
		default:
			c.Summary.Compared++
			f.Topics = compareTopics(topicResults(p.BaseArtifacts, p.BaseMetrics),
				topicResults(p.ShadowArtifacts, p.ShadowMetrics), run)
			verdict := job.ShadowIdentical
			for _, t := range f.Topics {
				if len(t.Differences) > 0 {
					verdict = job.ShadowDiffering
				}
			}
			f.Verdict = ShadowVerdict(verdict, &c.Summary)
		}
		c.Files = append(c.Files, f)
	}
	return c
}

// ShadowVerdict counts verdict in s and returns it.
func ShadowVerdict(verdict string, s *job.ShadowSummary) string {
	switch verdict {
	case job.ShadowIdentical:
		s.Identical++
	case job.ShadowDiffering:
		s.Differing++
	case job.ShadowMissingBase:
		s.MissingBase++
	case job.ShadowMissingShadow:
		s.MissingShadow++
	case job.ShadowPending:
		s.Pending++
	}
	return verdict
}

// compareTopics lists every topic either side wrote, by name, with what
// differs.
func compareTopics(base, shadow map[string]topicResult, run job.ShadowRun) []job.ShadowTopicDiff {
	names := make([]string, 0, len(base)+len(shadow))
	for t := range base {
		names = append(names, t)
	}
	for t := range shadow {
		if _, ok := base[t]; !ok {
			names = append(names, t)
		}
	}
	sort.Strings(names)
	out := make([]job.ShadowTopicDiff, 0, len(names))
	for _, t := range names {
		b, inBase := base[t]
		s, inShadow := shadow[t]
		d := job.ShadowTopicDiff{Topic: t, BaseRows: b.rows, ShadowRows: s.rows, BaseSchema: b.schema,
			ShadowSchema: s.schema, BaseContent: b.content, ShadowContent: s.content}
		switch {
		case !inBase:
			d.Differences = append(d.Differences, fmt.Sprintf("topic only written by v%s", run.Version))
		case !inShadow:
			d.Differences = append(d.Differences, fmt.Sprintf("topic only written by v%s", run.BaseVersion))
		default:
			if b.rows != nil && s.rows != nil && *b.rows != *s.rows {
				d.Differences = append(d.Differences, fmt.Sprintf("rows %d → %d", *b.rows, *s.rows))
			}
			if b.schema != "" && s.schema != "" && b.schema != s.schema {
				d.Differences = append(d.Differences, fmt.Sprintf("schema %s → %s", b.schema, s.schema))
			}
			if b.content != "" && s.content != "" && b.content != s.content {
				d.Differences = append(d.Differences, "content differs")
			}
		}
		out = append(out, d)
	}
	return out
}

// ShadowFiles is the number of file versions a shadow run covers: n, or
// ShadowFilesDefault when n is not positive.
func ShadowFiles(n int) int {
	if n <= 0 {
		return ShadowFilesDefault
	}
	return n
}

// ShadowNoBase refuses a shadow deploy of a plugin without an ACTIVE
// version: there is nothing to compare with.
func ShadowNoBase(plugin string) error {
	return &DeployConflict{Reason: fmt.Sprintf("%s has no ACTIVE version to shadow; deploy it without --shadow", plugin)}
}

// ShadowAlreadyRunning refuses a second shadow run of a plugin.
func ShadowAlreadyRunning(plugin, version string) error {
	return &DeployConflict{Reason: fmt.Sprintf("a shadow run of %s v%s is RUNNING; promote or discard it first", plugin, version)}
}

// ShadowOverStored says whether a shadow deploy may reuse the stored
// manifest a with the same artifact: only the same plugin and version, not
// ACTIVE (a version set aside before, shadowed again).
func ShadowOverStored(d Deployment, a StoredArtifact) error {
	switch {
	case a.Plugin != d.Plugin || a.Version != d.Version:
		return &DeployConflict{Reason: fmt.Sprintf("this artifact is already stored as %s v%s (manifest %d)",
			a.Plugin, a.Version, a.ID)}
	case a.Status == "ACTIVE":
		return &DeployConflict{Reason: fmt.Sprintf("%s v%s is the ACTIVE version; there is nothing to shadow", d.Plugin, d.Version)}
	}
	return nil
}

// ShadowRunMissing says why plugin's version (over baseVersion, if given)
// has no shadow run: the plugin or a version is unknown (job.ErrNotFound),
// or they exist but were never shadowed. versions are the plugin's stored
// versions.
func ShadowRunMissing(plugin, version, baseVersion string, versions []string) error {
	switch {
	case len(versions) == 0:
		return fmt.Errorf("plugin %q has no stored version: %w", plugin, job.ErrNotFound)
	case !slices.Contains(versions, version):
		return fmt.Errorf("%s has no version %q (it has %s): %w", plugin, version, strings.Join(versions, ", "), job.ErrNotFound)
	case baseVersion != "" && !slices.Contains(versions, baseVersion):
		return fmt.Errorf("%s has no version %q (it has %s): %w", plugin, baseVersion, strings.Join(versions, ", "), job.ErrNotFound)
	case baseVersion != "":
		return fmt.Errorf("%s v%s was never shadowed over v%s (casparian publish --shadow): %w", plugin, version, baseVersion, job.ErrNotFound)
	}
	return fmt.Errorf("%s v%s was never shadowed (casparian publish --shadow): %w", plugin, version, job.ErrNotFound)
}

// ShadowNotRunning refuses to promote or discard a run that has ended.
func ShadowNotRunning(r job.ShadowRun) error {
	return fmt.Errorf("the shadow run of %s v%s has ended (%s): %w", r.Plugin, r.Version, r.State, job.ErrConflict)
}

// ShadowComparisonOf compares run's pairs (CompareShadow), or refuses
// (job.ErrConflict) when no shadow job has completed yet: there is
// nothing to compare.
func ShadowComparisonOf(run job.ShadowRun, pairs []ShadowPair) (job.ShadowComparison, error) {
	c := CompareShadow(run, pairs)
	if s := c.Summary; s.Compared+s.MissingBase == 0 {
		return job.ShadowComparison{}, fmt.Errorf("the shadow run of %s v%s has no results yet (%d file versions: %d pending, %d failed or skipped): %w",
			run.Plugin, run.Version, s.Files, s.Pending, s.MissingShadow, job.ErrConflict)
	}
	return c, nil
}

// JoinLocated returns root joined with rel, or "" when either is empty or
// rel leaves root (as the claim path checks a file's location).
func JoinLocated(root, rel string) string { return joinLocated(root, rel, true) }
