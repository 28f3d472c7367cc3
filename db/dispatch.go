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
	"time"

	"github.com/casparian/sentinel/job"
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

// ActiveManifest is the part of a plugin's newest ACTIVE cf_plugin_manifest
// a dispatch needs, as stored (an empty EnvHash means systemEnvHash).
type ActiveManifest struct {
	SourceCode, EnvHash, ArtifactHash string
}

// FileLink is what following a file version to its source root found; the
// LEFT JOINs of the lookup say which link is missing.
type FileLink struct {
	VersionFound         bool  // the version exists
	LocationID, RootID   int64 // 0 when the link is missing
	HasLocation, HasRoot bool
	RootPath, RelPath    string
}

// ClaimedJob is one just-claimed job as a backend's claim statement returned
// it: the input of Assembler.Dispatch.
type ClaimedJob struct {
	Ref             job.Ref
	FileVersionID   int64
	HasFileVersion  bool
	Plugin          string
	Priority        int64
	RetryCount      int64
	ConfigOverrides string
	// RootPath and RelPath locate the file, read by the claim statement
	// itself; Located is false when a link is missing (the assembler then
	// asks its DispatchSource which, for the job's error message).
	RootPath, RelPath string
	Located           bool
	// JobTimeout is the plugin's job timeout (ClaimTimeout): 0 for the
	// global one, negative for none.
	JobTimeout time.Duration
	// EnqueuedAt is the row's enqueued_at; zero when NULL.
	EnqueuedAt time.Time
	// ManifestID is the manifest a shadow job runs instead of the ACTIVE
	// one (shadow.go); 0 for every other job.
	ManifestID int64
}

// DispatchSource is what the assembler reads from a backend, inside the
// claim's transaction. Each backend keeps its own SQL; the assembler keeps
// the rules (docs/PROTOCOL.md §4.2), so that both backends dispatch alike.
type DispatchSource interface {
	// FileLink follows the version to its location and source root.
	FileLink(ctx context.Context, versionID int64) (FileLink, error)
	// ActiveManifest returns the plugin's newest ACTIVE manifest; ok is
	// false when there is none.
	ActiveManifest(ctx context.Context, plugin string) (m ActiveManifest, ok bool, err error)
	// TopicSinks returns the plugin's cf_topic_config rows in id order, as
	// stored (an empty Mode means append).
	TopicSinks(ctx context.Context, plugin string) ([]Sink, error)
	// Manifest returns the manifest with that id, whatever its status (a
	// shadow job's); ok is false when there is none.
	Manifest(ctx context.Context, id int64) (m ActiveManifest, ok bool, err error)
}

// Assembler builds the Dispatch of each job claimed in one claim call.
// Manifests, topic configs and the sink guard's verdicts are looked up once
// per call.
type Assembler struct {
	src       DispatchSource
	refuse    func(uri string) string
	manifests map[string]*ActiveManifest // nil value: the plugin has no ACTIVE manifest
	byID      map[int64]*ActiveManifest  // shadow jobs' manifests; nil value: none with that id
	topics    map[string][]Sink
	refusals  map[string]string // refuse's verdict by sink URI
}

// NewAssembler returns an assembler reading from src. refuse says why a
// sink URI must not be written ("" = allowed); nil allows every sink.
func NewAssembler(src DispatchSource, refuse func(uri string) string) *Assembler {
	return &Assembler{src: src, refuse: refuse, manifests: make(map[string]*ActiveManifest),
		topics: make(map[string][]Sink), refusals: make(map[string]string)}
}

// sqliteSource is SQLite's DispatchSource: the assembler's statements
// (assemblerQueries, prepared by the caller) bound to the claim's
// transaction.
type sqliteSource struct {
	filePath, manifestOf, topicsOf *sql.Stmt
	tx                             *sql.Tx // for Manifest, which only shadow jobs need
}

// newAssembler binds the assembler's statements to tx.
func (db *DB) newAssembler(ctx context.Context, tx *sql.Tx) (*Assembler, error) {
	src := &sqliteSource{tx: tx}
	for _, b := range []struct {
		st **sql.Stmt
		q  string
	}{{&src.filePath, filePathSQL}, {&src.manifestOf, manifestSQL}, {&src.topicsOf, topicSinksSQL}} {
		st, err := db.txStmt(ctx, tx, b.q)
		if err != nil {
			return nil, err
		}
		*b.st = st
	}
	return NewAssembler(src, db.guard.sinkNamesDatabase), nil
}

// Dispatch assembles the Dispatch of one claimed job (docs/PROTOCOL.md
// §4.2 says where each field comes from). A job that cannot be dispatched
// yields a reason for its error_message; err is only for database failures.
func (a *Assembler) Dispatch(ctx context.Context, row ClaimedJob) (d Dispatch, reason string, err error) {
	plugin := row.Plugin
	d.PluginName = plugin
	d.FileVersionID = row.FileVersionID

	if !row.HasFileVersion {
		return d, "dispatch: job has no file_version_id", nil
	}
	if d.FilePath = joinLocated(row.RootPath, row.RelPath, row.Located); d.FilePath == "" {
		// A missing link or a path to refuse: find out which, for the
		// job's error message.
		link, err := a.src.FileLink(ctx, row.FileVersionID)
		if err != nil {
			return d, "", fmt.Errorf("file path of version %d: %w", row.FileVersionID, err)
		}
		if d.FilePath, reason = link.path(row.FileVersionID); reason != "" {
			return d, reason, nil
		}
	}

	var m *ActiveManifest
	if row.ManifestID != 0 {
		if m, err = a.manifestByID(ctx, row.ManifestID); err != nil {
			return d, "", err
		}
		if m == nil {
			return d, fmt.Sprintf("dispatch: shadow manifest %d of plugin %q not found", row.ManifestID, plugin), nil
		}
	} else if m, err = a.manifest(ctx, plugin); err != nil {
		return d, "", err
	}
	if m == nil {
		return d, fmt.Sprintf("dispatch: no ACTIVE manifest for plugin %q", plugin), nil
	}
	d.SourceCode, d.EnvHash, d.ArtifactHash = m.SourceCode, orDefault(m.EnvHash, systemEnvHash), m.ArtifactHash

	sinks, err := a.topicSinks(ctx, plugin)
	if err != nil {
		return d, "", err
	}
	overrides, err := parseOverrides(row.ConfigOverrides)
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

// refusal is the guard's verdict on uri, asked once per claim.
func (a *Assembler) refusal(uri string) string {
	if a.refuse == nil {
		return ""
	}
	r, ok := a.refusals[uri]
	if !ok {
		r = a.refuse(uri)
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

// FileLink follows version -> location -> source root.
func (s *sqliteSource) FileLink(ctx context.Context, versionID int64) (FileLink, error) {
	var locID, rootID sql.NullInt64
	var root, rel sql.NullString
	err := s.filePath.QueryRowContext(ctx, versionID).Scan(&locID, &rootID, &root, &rel)
	if errors.Is(err, sql.ErrNoRows) {
		return FileLink{}, nil
	}
	if err != nil {
		return FileLink{}, err
	}
	return FileLink{VersionFound: true, LocationID: locID.Int64, HasLocation: locID.Valid,
		RootID: rootID.Int64, HasRoot: rootID.Valid, RootPath: root.String, RelPath: rel.String}, nil
}

// path joins the root's path with the location's rel_path, or says why it
// cannot.
func (l FileLink) path(versionID int64) (path, reason string) {
	switch {
	case !l.VersionFound:
		return "", fmt.Sprintf("dispatch: file version %d not found", versionID)
	case !l.HasLocation:
		return "", fmt.Sprintf("dispatch: file version %d has no file location", versionID)
	case !l.HasRoot:
		return "", fmt.Sprintf("dispatch: file location %d of version %d has no source root", l.LocationID, versionID)
	case l.RootPath == "" || l.RelPath == "":
		return "", fmt.Sprintf("dispatch: file location %d has an empty root path or rel_path", l.LocationID)
	}
	// A rel_path that climbs out of its root ("../../etc/passwd") would
	// send a worker to read a file nobody registered.
	if !filepath.IsLocal(strings.TrimLeft(l.RelPath, "/")) {
		return "", fmt.Sprintf("dispatch: rel_path %q of file location %d leaves its source root", l.RelPath, l.LocationID)
	}
	return filepath.Join(l.RootPath, l.RelPath), ""
}

// locatedPath returns the file path from SQLite's claimed location (root and
// rel_path joined by a NUL byte), or "" when the location is missing or
// fails a check of FileLink.path (which then says why).
func locatedPath(location sql.NullString) string {
	root, rel, ok := strings.Cut(location.String, "\x00")
	return joinLocated(root, rel, location.Valid && ok)
}

// joinLocated returns root joined with rel, or "" when the location is
// missing, empty or leaves its root.
func joinLocated(root, rel string, located bool) string {
	if !located || root == "" || rel == "" || !filepath.IsLocal(strings.TrimLeft(rel, "/")) {
		return ""
	}
	return filepath.Join(root, rel)
}

// manifest returns the newest ACTIVE manifest of plugin, or nil if there is
// none.
func (a *Assembler) manifest(ctx context.Context, plugin string) (*ActiveManifest, error) {
	if m, ok := a.manifests[plugin]; ok {
		return m, nil
	}
	m, ok, err := a.src.ActiveManifest(ctx, plugin)
	if err != nil {
		return nil, fmt.Errorf("manifest of %q: %w", plugin, err)
	}
	var p *ActiveManifest
	if ok {
		p = &m
	}
	a.manifests[plugin] = p
	return p, nil
}

// manifestByID returns the manifest with id, or nil if there is none.
func (a *Assembler) manifestByID(ctx context.Context, id int64) (*ActiveManifest, error) {
	if m, ok := a.byID[id]; ok {
		return m, nil
	}
	m, ok, err := a.src.Manifest(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("manifest %d: %w", id, err)
	}
	var p *ActiveManifest
	if ok {
		p = &m
	}
	if a.byID == nil {
		a.byID = map[int64]*ActiveManifest{}
	}
	a.byID[id] = p
	return p, nil
}

// Manifest reads the manifest with id, whatever its status. Only shadow
// jobs ask, so it is not prepared with the claim's statements.
func (s *sqliteSource) Manifest(ctx context.Context, id int64) (ActiveManifest, bool, error) {
	var src, env, artifact sql.NullString
	err := s.tx.QueryRowContext(ctx, `SELECT source_code, env_hash, artifact_hash FROM cf_plugin_manifest WHERE id = ?`,
		id).Scan(&src, &env, &artifact)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ActiveManifest{}, false, nil
	case err != nil:
		return ActiveManifest{}, false, err
	}
	return ActiveManifest{SourceCode: src.String, EnvHash: env.String, ArtifactHash: artifact.String}, true, nil
}

// ActiveManifest reads the newest ACTIVE manifest of plugin.
func (s *sqliteSource) ActiveManifest(ctx context.Context, plugin string) (ActiveManifest, bool, error) {
	var src, env, artifact sql.NullString
	err := s.manifestOf.QueryRowContext(ctx, plugin).Scan(&src, &env, &artifact)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ActiveManifest{}, false, nil
	case err != nil:
		return ActiveManifest{}, false, err
	}
	return ActiveManifest{SourceCode: src.String, EnvHash: env.String, ArtifactHash: artifact.String}, true, nil
}

// topicSinks returns the plugin's cf_topic_config rows as sinks, in id
// order, with the default mode filled in.
func (a *Assembler) topicSinks(ctx context.Context, plugin string) ([]Sink, error) {
	if s, ok := a.topics[plugin]; ok {
		return s, nil
	}
	sinks, err := a.src.TopicSinks(ctx, plugin)
	if err != nil {
		return nil, fmt.Errorf("topics of %q: %w", plugin, err)
	}
	for i := range sinks {
		sinks[i].Mode = orDefault(sinks[i].Mode, SinkModeAppend)
	}
	a.topics[plugin] = sinks
	return sinks, nil
}

// TopicSinks reads the plugin's cf_topic_config rows.
func (s *sqliteSource) TopicSinks(ctx context.Context, plugin string) ([]Sink, error) {
	rows, err := s.topicsOf.QueryContext(ctx, plugin)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var sinks []Sink
	for rows.Next() {
		var topic, uri, mode, schema sql.NullString
		if err := rows.Scan(&topic, &uri, &mode, &schema); err != nil {
			return nil, err
		}
		sinks = append(sinks, Sink{Topic: topic.String, URI: uri.String, Mode: mode.String, SchemaDef: schema.String})
	}
	return sinks, rows.Err()
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
