package db

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/casparian/sentinel/job"
)

// The rules of lineage, staleness and reuse (issue #20) that do not depend
// on the database, shared by SQLite (outputs.go) and PostgreSQL.

// SinksHash is the third part of a result's reuse key: the SHA-256 (hex) of
// the resolved sinks a DISPATCH carries (topic, URI after placeholder
// expansion, mode, schema), in order. The worker actor hashes the sinks it
// dispatched, the enqueue path the sinks a new job would get; equal hashes
// mean the job would write the same outputs the same way.
func SinksHash(sinks []Sink) string {
	rows := make([][4]string, len(sinks))
	for i, s := range sinks {
		rows[i] = [4]string{s.Topic, s.URI, orDefault(s.Mode, SinkModeAppend), s.SchemaDef}
	}
	b, _ := json.Marshal(rows) // strings only: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ResolveSinks returns the sinks a job of plugin for the file at path
// would be dispatched with: the plugin's configured sinks (in id order, as
// TopicSinks reads them), the job's config_overrides, the default output
// sink and the file placeholders, exactly as the assembler resolves them.
func ResolveSinks(plugin string, configured []Sink, overrides, path string) ([]Sink, error) {
	o, err := parseOverrides(overrides)
	if err != nil {
		return nil, err
	}
	c := make([]Sink, len(configured))
	for i, s := range configured {
		s.Mode = orDefault(s.Mode, SinkModeAppend)
		c[i] = s
	}
	return expandFilePlaceholders(mergeSinks(plugin, c, o), path), nil
}

// wasmBase64Magic is how the base64 of a WebAssembly module ("\0asm")
// starts.
const wasmBase64Magic = "AGFzbQ"

// Deterministic reports whether a manifest's source_code runs the same way
// on the same input every time, so that its results may be reused by
// default: built-ins ("builtin:NAME") and WebAssembly modules (sandboxed,
// no clock or network). Other plugins (Python environments) may read the
// world, so reuse is off for them unless an operator turns it on.
func Deterministic(sourceCode string) bool {
	s := strings.TrimSpace(sourceCode)
	return strings.HasPrefix(s, "builtin:") || strings.HasPrefix(s, wasmBase64Magic)
}

// ReuseAllowed decides whether a plugin's jobs may be reused: the setting
// (sentinel_plugin_settings.reuse) when set, else Deterministic.
func ReuseAllowed(setting *bool, sourceCode string) bool {
	if setting != nil {
		return *setting
	}
	return Deterministic(sourceCode)
}

// MarkStale sets o.Stale and o.StaleReason: a newer version of its file
// (current is the location's current_version_id, nil when unknown) or an
// ACTIVE manifest other than the one that ran (active "" when the plugin
// has none, which is not counted as newer; an output whose manifest is
// unknown is not stale by manifest either).
func MarkStale(o *job.Output, current *int64, active string) {
	o.Stale, o.StaleReason = false, ""
	switch {
	case current != nil && o.FileVersionID != 0 && *current != o.FileVersionID:
		o.Stale, o.StaleReason = true, job.StaleNewerFile
	case active != "" && o.ArtifactHash != "" && !strings.EqualFold(active, o.ArtifactHash):
		o.Stale, o.StaleReason = true, job.StaleNewerManifest
	}
}

// ReusedSummary is the result_summary of a job linked to job src's result
// instead of run.
func ReusedSummary(src int64) string {
	return "reused from job " + itoa(src)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, job.ErrInvalid)...)
}

// CleanJoin cleans a file path a backend joined with "/" from a root and a
// rel_path.
func CleanJoin(p string) string { return filepath.Clean(p) }

// CheckOutputURI validates a provenance query's uri.
func CheckOutputURI(uri string) (string, error) {
	u := strings.TrimSpace(uri)
	switch {
	case u == "":
		return "", invalidf("uri is required")
	case len(u) > 4096:
		return "", invalidf("uri is longer than 4096 bytes")
	case !strings.Contains(u, ":"):
		return "", invalidf("uri %q is not a sink URI (want scheme:…, e.g. parquet://output/x.parquet)", u)
	}
	return u, nil
}

// ReuseReporter passes the plugin of each reused job, once its transaction
// has committed, to the function the Sentinel set (for
// casparian_jobs_reused_total). Safe for concurrent use; the zero value
// reports nowhere.
type ReuseReporter struct {
	mu sync.Mutex
	f  func(plugin string)
}

// Set sets the function; nil stops reporting.
func (r *ReuseReporter) Set(f func(plugin string)) {
	r.mu.Lock()
	r.f = f
	r.mu.Unlock()
}

// Report reports one reused job per entry of plugins.
func (r *ReuseReporter) Report(plugins []string) {
	if len(plugins) == 0 {
		return
	}
	r.mu.Lock()
	f := r.f
	r.mu.Unlock()
	if f == nil {
		return
	}
	for _, p := range plugins {
		f(p)
	}
}

// ReuseNotifier is a Store that reports the jobs it linked to an earlier
// result instead of queueing them (both backends are).
type ReuseNotifier interface {
	OnReuse(f func(plugin string))
}

// StaleOnly keeps the outputs marked stale, in order (both backends'
// OutputsStale).
func StaleOnly(all []job.Output) []job.Output {
	out := all[:0]
	for _, o := range all {
		if o.Stale {
			out = append(out, o)
		}
	}
	return out
}
