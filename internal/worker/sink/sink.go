// Package sink writes a job's rows to the outputs a DISPATCH names: SQLite
// tables, Parquet files, and CSV or JSONL files.
//
// Every sink stages its rows where nobody reads them (a scratch SQLite file,
// a temporary file beside the target) and touches the target only in Commit,
// atomically: a job that fails or is aborted leaves the target as it was.
// Commits to one target are serialized, within the process and, for files,
// across processes on the same host (flock), so two jobs appending to the
// same file never lose each other's rows.
//
// Commit is idempotent per job: delivery is at least once, so a job may run
// twice (its receipt lost, the Sentinel killed before it recorded it), and
// the second run's Commit replaces the rows the first one left, those whose
// JobColumn holds the job's id, in the same transaction or rename.
package sink

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/casparian/sentinel/internal/confine"
)

// Modes of a sink, as in a DISPATCH SinkConfig. An empty mode is ModeAppend.
const (
	// ModeAppend adds the job's rows to what the target holds, in place of
	// any the same job wrote before.
	ModeAppend = "append"
	// ModeReplace makes the job's rows the target's whole content.
	ModeReplace = "replace"
	// ModeError fails the job when the target holds rows of another job
	// (or rows it cannot attribute).
	ModeError = "error"
)

// JobColumn is the lineage column holding the id of the job that wrote a
// row. When a sink's schema has it, Commit first removes the target's rows
// of the same job (Spec.JobID), so a job that runs again does not write its
// rows twice, and ModeError does not count them as the target's content.
const JobColumn = "_job_id"

// ErrTargetNotEmpty is returned (wrapped) by Open or Commit in ModeError when
// the target already holds rows (other than the job's own, see JobColumn).
var ErrTargetNotEmpty = errors.New("target exists and is not empty")

// Type is the type of a column. Plugins' values are converted to one of these
// before they reach a sink, so sinks only ever see nil, int64, float64, bool
// and string.
type Type uint8

// The column types.
const (
	String Type = iota
	Int64
	Float64
	Bool
)

// String returns the type's name as the docs and error messages use it.
func (t Type) String() string {
	switch t {
	case Int64:
		return "int64"
	case Float64:
		return "float64"
	case Bool:
		return "bool"
	default:
		return "string"
	}
}

// Column is one column of a sink's schema. Required columns never hold nil
// (the lineage columns); the others are nullable.
type Column struct {
	Name     string
	Type     Type
	Required bool
}

// Schema is the ordered columns of every row a sink receives.
type Schema []Column

// index returns the position of the column named name, or -1.
func (s Schema) index(name string) int {
	for i, c := range s {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Names returns the column names in order.
func (s Schema) Names() []string {
	names := make([]string, len(s))
	for i, c := range s {
		names[i] = c.Name
	}
	return names
}

// Sink is one output of one job. The runtime calls Write any number of times,
// then Finish and Commit on success, or Abort on failure. Abort may be called
// after any step, more than once, and removes everything staged.
type Sink interface {
	// Write stages rows; each row holds one value per schema column.
	Write(rows [][]any) error
	// Finish completes the staged data (flush, close, fsync) without
	// touching the target, so every sink of a job can be made ready before
	// any of them commits.
	Finish() error
	// Commit promotes the staged rows into the target according to the
	// mode, atomically.
	Commit() error
	// Abort discards the staged rows.
	Abort()
	// URI is the absolute URI of the target, as reported in artifacts.
	URI() string
}

// Kind is the kind of target a URI names.
type Kind uint8

// The target kinds.
const (
	KindSQLite Kind = iota + 1
	KindParquet
	KindCSV
	KindJSONL
)

// Target is a parsed sink URI with its path made absolute.
type Target struct {
	Kind  Kind
	Path  string // absolute file path, symbolic links and ".." resolved
	Table string // KindSQLite only
	// Root is the folder Path must stay in (the worker's --output-dir,
	// resolved). Open and Commit check again that the target's folder still
	// resolves inside it, so a link planted meanwhile is refused too. ""
	// (a Target built by hand) checks nothing.
	Root string
}

// URI renders the target as an absolute URI (sqlite:///abs/x.db/table,
// parquet:///abs/x.parquet, file:///abs/x.csv).
func (t Target) URI() string {
	switch t.Kind {
	case KindSQLite:
		return "sqlite://" + t.Path + "/" + t.Table
	case KindParquet:
		return "parquet://" + t.Path
	default:
		return "file://" + t.Path
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Parse reads a sink URI. Paths are relative to baseDir (the worker's
// --output-dir; parquet://output/csv.parquet, the Sentinel's default) or
// absolute (sqlite:///data/out.db/rows); either way the path, with ".." and
// symbolic links resolved (through its longest existing prefix for a file
// not written yet), must lie under baseDir, or the sink is refused before
// anything is written. Percent-escapes in the path are decoded, as in file
// URIs.
//
//	sqlite://<path to database file>/<table>
//	parquet://<path>.parquet
//	file://<path>.csv | file://<path>.jsonl (also .ndjson)
func Parse(uri, baseDir string) (Target, error) {
	scheme, rest, table, err := confine.SinkFile(uri)
	if err != nil {
		return Target{}, err
	}
	var t Target
	switch scheme {
	case "sqlite":
		if !identRE.MatchString(table) {
			return Target{}, fmt.Errorf("sink uri %q: want sqlite://<path to .db file>/<table>, the table a plain identifier", uri)
		}
		t.Kind, t.Table = KindSQLite, table
	case "parquet":
		t.Kind = KindParquet
	case "file":
		switch strings.ToLower(filepath.Ext(rest)) {
		case ".csv":
			t.Kind = KindCSV
		case ".jsonl", ".ndjson":
			t.Kind = KindJSONL
		default:
			return Target{}, fmt.Errorf("sink uri %q: a file sink must end in .csv or .jsonl", uri)
		}
	default:
		return Target{}, fmt.Errorf("sink uri %q: unknown scheme %q (want sqlite, parquet or file)", uri, scheme)
	}
	if t.Path, t.Root, err = resolve(rest, baseDir); err != nil {
		return Target{}, fmt.Errorf("sink %s: %w", uri, err)
	}
	return t, nil
}

// resolve returns where path leads, under base, and base resolved.
func resolve(p, baseDir string) (path, root string, err error) {
	base, err := filepath.Abs(baseDir)
	if err != nil {
		return "", "", fmt.Errorf("output directory: %w", err)
	}
	if !filepath.IsAbs(p) {
		// Not joined (which cleans): ".." must meet the links before it.
		p = base + string(filepath.Separator) + p
	}
	if path, err = confine.Check(p, []string{base}, "--output-dir"); err != nil {
		return "", "", err
	}
	if root, err = confine.Resolve(base); err != nil {
		return "", "", fmt.Errorf("output directory: %w", err)
	}
	return path, root, nil
}

// confined checks, just before a sink creates or promotes files, that the
// target's folder still resolves inside its root: a folder replaced by a
// link to elsewhere since Parse is refused.
func (t Target) confined() error {
	if t.Root == "" {
		return nil
	}
	if _, err := confine.Check(filepath.Dir(t.Path), []string{t.Root}, "--output-dir"); err != nil {
		return fmt.Errorf("sink %s: %w", t.URI(), err)
	}
	return nil
}

// CheckMode returns the mode with "" read as ModeAppend, or an error for an
// unknown mode.
func CheckMode(mode string) (string, error) {
	switch mode {
	case "", ModeAppend:
		return ModeAppend, nil
	case ModeReplace, ModeError:
		return mode, nil
	}
	return "", fmt.Errorf("unknown sink mode %q (want append, replace or error)", mode)
}

// Spec is what Open needs to know about one output.
type Spec struct {
	Target Target
	Mode   string // append, replace or error ("" = append)
	// JobID names the staging files, so a leftover says whose it was, and
	// is the value of JobColumn whose rows Commit replaces.
	JobID int64
}

// Open prepares a sink for schema. In ModeError it fails at once when the
// target already holds rows, so a job does not do its work for nothing (the
// check is repeated at Commit, which is what counts).
func Open(spec Spec, schema Schema) (Sink, error) {
	mode, err := CheckMode(spec.Mode)
	if err != nil {
		return nil, err
	}
	spec.Mode = mode
	if len(schema) == 0 {
		return nil, errors.New("open sink: empty schema")
	}
	seen := make(map[string]bool, len(schema))
	for _, c := range schema {
		if c.Name == "" || seen[c.Name] {
			return nil, fmt.Errorf("open sink: empty or duplicate column name %q", c.Name)
		}
		seen[c.Name] = true
	}
	var s Sink
	switch spec.Target.Kind {
	case KindSQLite:
		s, err = openSQLite(spec, schema)
	case KindParquet:
		s, err = openParquet(spec, schema)
	case KindCSV, KindJSONL:
		s, err = openFile(spec, schema)
	default:
		err = fmt.Errorf("unknown target kind %d", spec.Target.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("open sink %s: %w", spec.Target.URI(), err)
	}
	return s, nil
}

// stagingName returns a fresh name beside path for the staging data of job,
// so that a rename into place stays on one file system.
func stagingName(path string, jobID int64) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return path + ".tmp-" + strconv.FormatInt(jobID, 10) + "-" + hex.EncodeToString(b[:])
}
