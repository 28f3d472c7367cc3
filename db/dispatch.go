package db

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// DefaultOutputURIFormat is the URI of the `output` sink a dispatch gets when
// neither the plugin's cf_topic_config nor the job's config_overrides names a
// topic "output" (every DISPATCH must carry one). The %s is the plugin name,
// so plugins never share a default file; the worker resolves the relative
// path against its own output directory.
const DefaultOutputURIFormat = "parquet://output/%s.parquet"

// Sink modes. NULL or "" in cf_topic_config means SinkModeAppend.
const (
	// SinkModeAppend adds the job's rows to what the sink holds.
	SinkModeAppend = "append"
	// SinkModeReplace replaces what the sink holds.
	SinkModeReplace = "replace"
	// SinkModeError fails the job if the sink already holds data.
	SinkModeError = "error"
)

// outputTopic is the topic every dispatch includes.
const outputTopic = "output"

// systemEnvHash is the env_hash of a manifest without its own environment.
const systemEnvHash = "system"

// manifest is the part of the newest ACTIVE cf_plugin_manifest a dispatch
// needs.
type manifest struct {
	sourceCode, envHash, artifactHash string
}

// The assembler's queries. filePathSQL uses LEFT JOINs so that a missing
// link is reported precisely instead of as "no rows".
const (
	filePathSQL = `SELECT l.id, r.id, r.path, l.rel_path
	FROM cf_file_version v
	LEFT JOIN cf_file_location l ON l.id = v.location_id
	LEFT JOIN cf_source_root r ON r.id = l.source_root_id
	WHERE v.id = ?`
	manifestSQL = `SELECT source_code, env_hash, artifact_hash
	FROM cf_plugin_manifest
	WHERE plugin_name = ? AND status = 'ACTIVE'
	ORDER BY ` + manifestNewestFirst + `
	LIMIT 1`
	topicSinksSQL = `SELECT topic_name, uri, mode, schema_json
	FROM cf_topic_config WHERE plugin_name = ? ORDER BY id`
)

// manifestNewestFirst orders manifests newest first: by deployment time,
// else creation time (the original tools may leave deployed_at NULL), compared
// as instants since the text forms differ ("2024-01-02T…Z" from us,
// "2024-01-02 …" from CURRENT_TIMESTAMP and the Python tools); a NULL or equal
// time goes by id, the later insert first.
const manifestNewestFirst = `julianday(COALESCE(deployed_at, created_at)) DESC, id DESC`

// assemblerQueries are prepared before a claim's transaction begins.
var assemblerQueries = []string{filePathSQL, manifestSQL, topicSinksSQL}

// assembler builds the Dispatch of each job claimed in one JobsClaim call.
// Manifests and topic configs are looked up once per plugin per call.
type assembler struct {
	filePath, manifestOf, topicsOf *sql.Stmt
	manifests                      map[string]*manifest // nil value: the plugin has no ACTIVE manifest
	topics                         map[string][]Sink
	guard                          sinkGuard
	refusals                       map[string]string // sinkGuard's verdict by sink URI
}

// newAssembler binds the assembler's statements (assemblerQueries, prepared
// by the caller) to tx.
func (db *DB) newAssembler(ctx context.Context, tx *sql.Tx) (*assembler, error) {
	a := &assembler{manifests: make(map[string]*manifest), topics: make(map[string][]Sink),
		guard: db.guard, refusals: make(map[string]string)}
	for _, b := range []struct {
		st **sql.Stmt
		q  string
	}{{&a.filePath, filePathSQL}, {&a.manifestOf, manifestSQL}, {&a.topicsOf, topicSinksSQL}} {
		st, err := db.txStmt(ctx, tx, b.q)
		if err != nil {
			return nil, err
		}
		*b.st = st
	}
	return a, nil
}

// dispatch assembles the Dispatch of one claimed job (docs/PROTOCOL.md
// §4.2 says where each field comes from). A job that cannot be dispatched yields a reason
// for its error_message; err is only for database failures.
func (a *assembler) dispatch(ctx context.Context, row claimedRow) (d Dispatch, reason string, err error) {
	plugin := row.plugin.String
	d.PluginName = plugin
	d.FileVersionID = row.fileVersionID.Int64

	if !row.fileVersionID.Valid {
		return d, "dispatch: job has no file_version_id", nil
	}
	if d.FilePath = locatedPath(row.location); d.FilePath == "" {
		// A missing link or a path to refuse: find out which, for the
		// job's error message.
		d.FilePath, reason, err = a.path(ctx, row.fileVersionID.Int64)
		if err != nil || reason != "" {
			return d, reason, err
		}
	}

	m, err := a.manifest(ctx, plugin)
	if err != nil {
		return d, "", err
	}
	if m == nil {
		return d, fmt.Sprintf("dispatch: no ACTIVE manifest for plugin %q", plugin), nil
	}
	d.SourceCode, d.EnvHash, d.ArtifactHash = m.sourceCode, m.envHash, m.artifactHash

	sinks, err := a.topicSinks(ctx, plugin)
	if err != nil {
		return d, "", err
	}
	overrides, err := parseOverrides(row.configOverrides.String)
	if err != nil {
		return d, "dispatch: " + err.Error(), nil
	}
	d.Sinks = expandFilePlaceholders(mergeSinks(plugin, sinks, overrides), d.FilePath)
	for _, s := range d.Sinks {
		if reason := a.refusal(s.URI); reason != "" {
			return d, fmt.Sprintf("dispatch: topic %q: %s", s.Topic, reason), nil
		}
	}
	return d, "", nil
}

// refusal is the sink guard's verdict on uri, asked once per claim.
func (a *assembler) refusal(uri string) string {
	r, ok := a.refusals[uri]
	if !ok {
		r = a.guard.sinkNamesDatabase(uri)
		a.refusals[uri] = r
	}
	return r
}

// Placeholders a sink URI may contain, replaced at dispatch by names
// derived from the input file, with every character other than ASCII
// letters, digits and '_' turned into '_' (so they are also valid SQLite
// table names). They give each input file its own output, so files whose
// columns differ never meet in one table: with mode replace,
// "sqlite://output/casparian.db/{file_stem}" keeps one table per file, and a
// new version of the file replaces its table. Workers receive the expanded
// URI and need not know the placeholders.
const (
	// FileStemPlaceholder is the file's name without its extension:
	// "2026-01 orders.csv" → "2026_01_orders".
	FileStemPlaceholder = "{file_stem}"
	// FileNamePlaceholder is the whole file name, for outputs that
	// files of several types share: "orders.csv" → "orders_csv".
	FileNamePlaceholder = "{file_name}"
)

// expandFilePlaceholders returns sinks with the file placeholders expanded for the
// file at path. The slice is copied only when a URI changes.
func expandFilePlaceholders(sinks []Sink, path string) []Sink {
	var out []Sink
	for i, s := range sinks {
		if !strings.Contains(s.URI, FileStemPlaceholder) && !strings.Contains(s.URI, FileNamePlaceholder) {
			continue
		}
		if out == nil {
			out = slices.Clone(sinks)
		}
		base := filepath.Base(path)
		stem := strings.TrimSuffix(base, filepath.Ext(base))
		if stem == "" { // a name that is all extension (".env") keeps it
			stem = base
		}
		out[i].URI = strings.NewReplacer(FileStemPlaceholder, identifier(stem),
			FileNamePlaceholder, identifier(base)).Replace(s.URI)
	}
	if out == nil {
		return sinks
	}
	return out
}

// identifier replaces every byte that is not an ASCII letter, digit or '_'
// with '_'.
func identifier(name string) string {
	b := []byte(name)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			b[i] = '_'
		}
	}
	return string(b)
}

// path follows version -> location -> source root and joins the root's path
// with the location's rel_path.
func (a *assembler) path(ctx context.Context, versionID int64) (path, reason string, err error) {
	var locID, rootID sql.NullInt64
	var root, rel sql.NullString
	err = a.filePath.QueryRowContext(ctx, versionID).Scan(&locID, &rootID, &root, &rel)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Sprintf("dispatch: file version %d not found", versionID), nil
	case err != nil:
		return "", "", fmt.Errorf("file path of version %d: %w", versionID, err)
	case !locID.Valid:
		return "", fmt.Sprintf("dispatch: file version %d has no file location", versionID), nil
	case !rootID.Valid:
		return "", fmt.Sprintf("dispatch: file location %d of version %d has no source root", locID.Int64, versionID), nil
	case root.String == "" || rel.String == "":
		return "", fmt.Sprintf("dispatch: file location %d has an empty root path or rel_path", locID.Int64), nil
	}
	// A rel_path that climbs out of its root ("../../etc/passwd") would
	// send a worker to read a file nobody registered.
	if !filepath.IsLocal(strings.TrimLeft(rel.String, "/")) {
		return "", fmt.Sprintf("dispatch: rel_path %q of file location %d leaves its source root", rel.String, locID.Int64), nil
	}
	return filepath.Join(root.String, rel.String), "", nil
}

// locatedPath returns the file path from a claimed row's location (root and
// rel_path joined by NUL), or "" when the location is missing or fails a
// check of path (which then says why).
func locatedPath(location sql.NullString) string {
	root, rel, ok := strings.Cut(location.String, "\x00")
	if !location.Valid || !ok || root == "" || rel == "" || !filepath.IsLocal(strings.TrimLeft(rel, "/")) {
		return ""
	}
	return filepath.Join(root, rel)
}

// manifest returns the newest ACTIVE manifest of plugin, or nil if there is
// none.
func (a *assembler) manifest(ctx context.Context, plugin string) (*manifest, error) {
	if m, ok := a.manifests[plugin]; ok {
		return m, nil
	}
	var src, env, artifact sql.NullString
	err := a.manifestOf.QueryRowContext(ctx, plugin).Scan(&src, &env, &artifact)
	var m *manifest
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("manifest of %q: %w", plugin, err)
	default:
		m = &manifest{
			sourceCode:   src.String,
			envHash:      orDefault(env.String, systemEnvHash),
			artifactHash: artifact.String,
		}
	}
	a.manifests[plugin] = m
	return m, nil
}

// topicSinks returns the plugin's cf_topic_config rows as sinks, in id order.
func (a *assembler) topicSinks(ctx context.Context, plugin string) ([]Sink, error) {
	if s, ok := a.topics[plugin]; ok {
		return s, nil
	}
	rows, err := a.topicsOf.QueryContext(ctx, plugin)
	if err != nil {
		return nil, fmt.Errorf("topics of %q: %w", plugin, err)
	}
	defer rows.Close()
	var sinks []Sink
	for rows.Next() {
		var topic, uri, mode, schema sql.NullString
		if err := rows.Scan(&topic, &uri, &mode, &schema); err != nil {
			return nil, fmt.Errorf("topics of %q: %w", plugin, err)
		}
		sinks = append(sinks, Sink{
			Topic:     topic.String,
			URI:       uri.String,
			Mode:      orDefault(mode.String, SinkModeAppend),
			SchemaDef: schema.String,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("topics of %q: %w", plugin, err)
	}
	a.topics[plugin] = sinks
	return sinks, nil
}

// overrideSink is one sink object in config_overrides. The topic is the
// map key; a "topic" field inside the object is ignored.
type overrideSink struct {
	URI       string          `json:"uri"`
	Mode      string          `json:"mode"`
	SchemaDef json.RawMessage `json:"schema_def"`
}

// parseOverrides reads a job's config_overrides, `{topic: sink | [sinks]}`.
// Empty text, JSON null and {} mean no overrides. A topic mapped to null or
// [] has its sinks removed.
func parseOverrides(text string) (map[string][]Sink, error) {
	raw := bytes.TrimSpace([]byte(text))
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var byTopic map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byTopic); err != nil {
		return nil, fmt.Errorf("invalid config_overrides: %v", err)
	}
	out := make(map[string][]Sink, len(byTopic))
	for topic, v := range byTopic {
		v = bytes.TrimSpace(v)
		var objs []overrideSink
		switch {
		case bytes.Equal(v, []byte("null")):
		case len(v) > 0 && v[0] == '[':
			if err := json.Unmarshal(v, &objs); err != nil {
				return nil, fmt.Errorf("invalid config_overrides topic %q: %v", topic, err)
			}
		case len(v) > 0 && v[0] == '{':
			var o overrideSink
			if err := json.Unmarshal(v, &o); err != nil {
				return nil, fmt.Errorf("invalid config_overrides topic %q: %v", topic, err)
			}
			objs = []overrideSink{o}
		default:
			return nil, fmt.Errorf("invalid config_overrides topic %q: want a sink object or a list of them", topic)
		}
		sinks := make([]Sink, 0, len(objs))
		for _, o := range objs {
			s, err := o.sink(topic)
			if err != nil {
				return nil, fmt.Errorf("invalid config_overrides topic %q: %v", topic, err)
			}
			sinks = append(sinks, s)
		}
		out[topic] = sinks
	}
	return out, nil
}

func (o overrideSink) sink(topic string) (Sink, error) {
	if o.URI == "" {
		return Sink{}, errors.New("sink has no uri")
	}
	mode := orDefault(o.Mode, SinkModeAppend)
	switch mode {
	case SinkModeAppend, SinkModeReplace, SinkModeError:
	default:
		return Sink{}, fmt.Errorf("unknown mode %q", mode)
	}
	// schema_def is a string on the wire; a JSON object is accepted too
	// and passed on as its text, since that is what the string would hold.
	var schema string
	sd := bytes.TrimSpace(o.SchemaDef)
	switch {
	case len(sd) == 0 || bytes.Equal(sd, []byte("null")):
	case sd[0] == '"':
		if err := json.Unmarshal(sd, &schema); err != nil {
			return Sink{}, fmt.Errorf("schema_def: %v", err)
		}
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, sd); err != nil {
			return Sink{}, fmt.Errorf("schema_def: %v", err)
		}
		schema = buf.String()
	}
	return Sink{Topic: topic, URI: o.URI, Mode: mode, SchemaDef: schema}, nil
}

// mergeSinks applies overrides to the configured sinks: an overridden topic's
// sinks are replaced where the topic first appears, topics only in the
// overrides follow in name order, and a default output sink is appended when
// no sink is named "output".
func mergeSinks(plugin string, configured []Sink, overrides map[string][]Sink) []Sink {
	out := make([]Sink, 0, len(configured)+len(overrides)+1)
	placed := make(map[string]bool, len(overrides))
	for _, s := range configured {
		repl, ok := overrides[s.Topic]
		if !ok {
			out = append(out, s)
			continue
		}
		if !placed[s.Topic] {
			placed[s.Topic] = true
			out = append(out, repl...)
		}
	}
	extra := make([]string, 0, len(overrides))
	for topic := range overrides {
		if !placed[topic] {
			extra = append(extra, topic)
		}
	}
	sort.Strings(extra)
	for _, topic := range extra {
		out = append(out, overrides[topic]...)
	}
	for _, s := range out {
		if s.Topic == outputTopic {
			return out
		}
	}
	return append(out, Sink{
		Topic: outputTopic,
		URI:   fmt.Sprintf(DefaultOutputURIFormat, plugin),
		Mode:  SinkModeAppend,
	})
}

// Sink is one output of a dispatch.
type Sink struct {
	Topic, URI, Mode, SchemaDef string
}

// Dispatch is everything a DISPATCH message carries.
type Dispatch struct {
	PluginName, FilePath string
	Sinks                []Sink
	FileVersionID        int64
	EnvHash              string
	SourceCode           string
	ArtifactHash         string
}
