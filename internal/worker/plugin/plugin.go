// Package plugin is the worker's plugin interface and its built-in plugins.
//
// A plugin reads the one file a job names and emits rows to named topics;
// the worker runtime routes each topic to the sinks the DISPATCH configured
// and adds the lineage columns. Plugins know nothing about sinks, staging or
// the protocol.
package plugin

import (
	"context"
	"io"
	"os"
	"sort"
)

// OutputTopic is the topic every DISPATCH has a sink for; the built-in
// plugins emit only to it.
const OutputTopic = "output"

// Row is one row: column names and values, in the same order. Values are
// nil, string, bool, any signed integer, float32 or float64.
//
// All rows one job emits to one topic must have the same columns in the same
// order, and each column's values one type (nil aside): the first rows fix
// the topic's schema. The emitter copies what it needs before Emit returns,
// so a plugin may reuse the Row's slices for the next row.
type Row struct {
	Columns []string
	Values  []any
}

// Emitter receives a plugin's rows.
type Emitter interface {
	// Emit sends row to topic. An error (no sink for the topic, a row
	// that does not fit the topic's schema, a failing sink) should end the
	// plugin's Run with that error.
	Emit(topic string, row Row) error
}

// Input is the file a job runs over.
type Input struct {
	// Path is the absolute path from the DISPATCH.
	Path string
	// Size is the file's size when the job started.
	Size int64
	// JobID and FileVersionID identify the job and the file version; the
	// runtime already adds them to every row as lineage.
	JobID, FileVersionID int64
	// SourceCode is the plugin artifact the DISPATCH carried. Built-in
	// plugins ignore it.
	SourceCode string
}

// Open opens the input for reading. The reader fails with ctx's error once
// ctx is cancelled, so a plugin that reads through it stops promptly on
// ABORT without checking ctx itself.
func (in Input) Open(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(in.Path)
	if err != nil {
		return nil, err
	}
	return &ctxReader{ctx: ctx, f: f}, nil
}

type ctxReader struct {
	ctx context.Context
	f   *os.File
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.f.Read(p)
}

func (r *ctxReader) Close() error { return r.f.Close() }

// Plugin turns one input file into rows.
type Plugin interface {
	// Name is the plugin_name DISPATCH messages use, and the capability
	// the worker advertises.
	Name() string
	// Run reads in and emits rows. It returns an error for input it cannot
	// process (the job then FAILS with the error's text, so make it say
	// where: "line 3: ..."), and should return promptly once ctx is
	// cancelled. Run may be called for several jobs at once.
	Run(ctx context.Context, in Input, emit Emitter) error
}

// Builtins returns the built-in plugins: csv, jsonl, text_stats, checksum.
func Builtins() []Plugin {
	return []Plugin{CSV{}, JSONL{}, TextStats{}, Checksum{}}
}

// Names returns the names of plugins, sorted.
func Names(plugins []Plugin) []string {
	names := make([]string, len(plugins))
	for i, p := range plugins {
		names[i] = p.Name()
	}
	sort.Strings(names)
	return names
}
