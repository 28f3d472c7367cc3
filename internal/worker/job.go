package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/confine"
	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/internal/worker/sink"
	"github.com/casparian/sentinel/transport"
)

// Lineage columns the runtime appends to every row of every topic. Sinks
// key their per-job idempotence on ColumnJobID.
const (
	ColumnJobID         = sink.JobColumn
	ColumnFileVersionID = "_file_version_id"
)

const (
	// sampleRows is how many rows of a topic are held back to infer its
	// schema when early rows have nulls; the schema is fixed earlier once
	// every column has shown a value.
	sampleRows = 1000
	// batchRows is how many rows go to a sink per Write.
	batchRows = 1000
)

// execute runs one job and returns its receipt. It never panics and never
// leaves staged output behind: anything but SUCCESS aborts every sink.
func (w *Worker) execute(ctx context.Context, id int64, d *transport.Dispatch, log zerolog.Logger) transport.Conclude {
	start := time.Now()
	em, size, err := w.process(ctx, id, d, log)
	if pe := (*panicError)(nil); errors.As(err, &pe) {
		log.Error().Str("panic", fmt.Sprint(pe.value)).Bytes("stack", pe.stack).Msg("plugin panicked")
	}
	metrics := map[string]int64{"bytes": size}
	var r transport.Conclude
	switch {
	case ctx.Err() != nil && (err != nil || em == nil || !em.committed):
		r = transport.Conclude{Status: transport.StatusAborted, ErrorMessage: context.Cause(ctx).Error()}
	case err != nil:
		r = transport.Conclude{Status: transport.StatusFailed, ErrorMessage: err.Error()}
	default:
		metrics["rows"] = em.rows
		r = transport.Conclude{Status: transport.StatusSuccess, Artifacts: em.artifacts()}
	}
	metrics["duration_ms"] = time.Since(start).Milliseconds()
	r.Metrics = metrics
	ev := log.Info()
	if r.Status != transport.StatusSuccess {
		ev = log.Warn().Str("error", r.ErrorMessage)
	}
	ev.Str("status", r.Status).Int64("rows", metrics["rows"]).Int64("duration_ms", metrics["duration_ms"]).Msg("job concluded")
	return r
}

// process runs the plugin over the file into staged sinks and commits them.
// The emitter is returned so the caller can read what was written.
func (w *Worker) process(ctx context.Context, id int64, d *transport.Dispatch, log zerolog.Logger) (*emitter, int64, error) {
	// One check for every runner, built-in or WebAssembly, before a module
	// is even compiled or anything opens the file.
	if _, err := confine.Check(d.FilePath, w.opts.InputRoots, "--input-root"); err != nil {
		return nil, 0, fmt.Errorf("input %w; not read", err)
	}
	p, err := w.pluginFor(d, log)
	if err != nil {
		return nil, 0, err
	}
	// Every sink is parsed, and confined to --output-dir, before the plugin
	// runs: a refused one fails the job with nothing written.
	routes, err := w.routes(d.Sinks)
	if err != nil {
		return nil, 0, err
	}
	if err := w.delay(ctx); err != nil {
		return nil, 0, err
	}
	st, err := os.Stat(d.FilePath)
	if err != nil {
		return nil, 0, fmt.Errorf("input file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("input file %s is not a regular file", d.FilePath)
	}
	in := plugin.Input{Path: d.FilePath, Size: st.Size(), JobID: id, FileVersionID: d.FileVersionID, SourceCode: d.SourceCode}
	em := &emitter{jobID: id, fileVersionID: d.FileVersionID, routes: routes, topics: map[string]*topicWriter{}}
	err = runPlugin(ctx, p, in, em)
	if err == nil {
		err = em.err // a sink error the plugin swallowed
	}
	if ctx.Err() != nil {
		em.abort()
		return em, st.Size(), context.Cause(ctx)
	}
	if err != nil {
		em.abort()
		return em, st.Size(), fmt.Errorf("%s: %w", p.Name(), err)
	}
	if err := em.commit(ctx); err != nil {
		return em, st.Size(), err
	}
	return em, st.Size(), nil
}

// delay waits Options.JobDelay, or until the job is cancelled.
func (w *Worker) delay(ctx context.Context) error {
	if w.opts.JobDelay <= 0 {
		return nil
	}
	t := time.NewTimer(w.opts.JobDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// panicError is a plugin's panic. The receipt says what panicked; the
// stack goes to the log, not into the queue's error_message.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("plugin panicked: %v", e.value) }

// runPlugin calls p.Run and turns a panic into an error: a broken plugin
// fails its job, not the worker.
func runPlugin(ctx context.Context, p plugin.Plugin, in plugin.Input, em plugin.Emitter) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return p.Run(ctx, in, em)
}

// route is one sink a topic goes to.
type route struct {
	target sink.Target
	mode   string
}

// routes parses the DISPATCH's sinks by topic, before the plugin runs, so a
// misconfigured sink fails the job without doing its work.
func (w *Worker) routes(sinks []transport.SinkConfig) (map[string][]route, error) {
	out := make(map[string][]route, len(sinks))
	seen := map[string]string{}
	for _, sc := range sinks {
		if sc.Topic == "" {
			return nil, fmt.Errorf("sink %q has no topic", sc.URI)
		}
		t, err := sink.Parse(sc.URI, w.opts.OutputDir)
		if err != nil {
			return nil, err
		}
		mode, err := sink.CheckMode(sc.Mode)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", sc.URI, err)
		}
		if other, dup := seen[t.URI()]; dup {
			return nil, fmt.Errorf("topics %q and %q both write to %s", other, sc.Topic, t.URI())
		}
		seen[t.URI()] = sc.Topic
		out[sc.Topic] = append(out[sc.Topic], route{target: t, mode: mode})
	}
	return out, nil
}

// emitter receives a plugin's rows, fixes each topic's schema, adds the
// lineage columns and feeds the topic's sinks.
type emitter struct {
	jobID, fileVersionID int64
	routes               map[string][]route
	topics               map[string]*topicWriter
	order                []*topicWriter // by first emit, for artifacts
	rows                 int64
	err                  error // first failure; every later Emit returns it
	committed            bool
}

// topicWriter is one topic's state within a job.
type topicWriter struct {
	name    string
	routes  []route
	columns []string
	sample  [][]any     // rows held back until the schema is known
	typed   []bool      // which columns have shown a value in the sample
	untyped int         // columns still without a value
	schema  sink.Schema // nil until fixed; without the lineage columns
	sinks   []sink.Sink
	batch   [][]any
	// rows and content describe what the topic wrote, for the receipt's
	// artifacts: a shadow run's comparison reads them (artifactFacts).
	rows    int64
	content hash.Hash // SHA-256 of the rows' values, without the lineage columns
}

func (e *emitter) Emit(topic string, row plugin.Row) error {
	if e.err != nil {
		return e.err
	}
	if err := e.emit(topic, row); err != nil {
		e.err = err
		return err
	}
	return nil
}

func (e *emitter) emit(topic string, row plugin.Row) error {
	tw := e.topics[topic]
	if tw == nil {
		routes := e.routes[topic]
		if len(routes) == 0 {
			return fmt.Errorf("no sink is configured for topic %q (add one to the plugin's cf_topic_config or the job's config_overrides)", topic)
		}
		if err := checkColumns(row.Columns); err != nil {
			return fmt.Errorf("topic %q: %w", topic, err)
		}
		tw = &topicWriter{name: topic, routes: routes, columns: slices.Clone(row.Columns),
			typed: make([]bool, len(row.Columns)), untyped: len(row.Columns)}
		e.topics[topic] = tw
		e.order = append(e.order, tw)
	} else if !slices.Equal(tw.columns, row.Columns) {
		return fmt.Errorf("topic %q: a row has columns %q, the first row had %q", topic, row.Columns, tw.columns)
	}
	if len(row.Values) != len(tw.columns) {
		return fmt.Errorf("topic %q: a row has %d values for %d columns", topic, len(row.Values), len(tw.columns))
	}
	values := make([]any, len(tw.columns), len(tw.columns)+2)
	for i, v := range row.Values {
		nv, err := normalize(v)
		if err != nil {
			return fmt.Errorf("topic %q, column %s: %w", topic, tw.columns[i], err)
		}
		values[i] = nv
	}
	e.rows++
	if tw.schema == nil {
		tw.sample = append(tw.sample, values)
		for i, v := range values {
			if v != nil && !tw.typed[i] {
				tw.typed[i] = true
				tw.untyped--
			}
		}
		if tw.untyped == 0 || len(tw.sample) >= sampleRows {
			return e.fix(tw)
		}
		return nil
	}
	return e.add(tw, values)
}

// fix settles a topic's schema from its sample, opens its sinks and writes
// the sample.
func (e *emitter) fix(tw *topicWriter) error {
	tw.schema = inferSchema(tw.columns, tw.sample)
	full := append(slices.Clone(tw.schema),
		sink.Column{Name: ColumnJobID, Type: sink.Int64, Required: true},
		sink.Column{Name: ColumnFileVersionID, Type: sink.Int64, Required: true})
	for _, r := range tw.routes {
		s, err := sink.Open(sink.Spec{Target: r.target, Mode: r.mode, JobID: e.jobID}, full)
		if err != nil {
			return err
		}
		tw.sinks = append(tw.sinks, s)
	}
	sample := tw.sample
	tw.sample = nil
	for _, values := range sample {
		if err := e.add(tw, values); err != nil {
			return err
		}
	}
	return nil
}

// add converts values to the schema, appends the lineage and batches them.
func (e *emitter) add(tw *topicWriter, values []any) error {
	for i, v := range values {
		cv, err := conform(tw.schema[i].Type, v)
		if err != nil {
			return fmt.Errorf("topic %q, column %s: %w", tw.name, tw.columns[i], err)
		}
		values[i] = cv
	}
	tw.hashRow(values)
	tw.batch = append(tw.batch, append(values, e.jobID, e.fileVersionID))
	if len(tw.batch) >= batchRows {
		return tw.flush()
	}
	return nil
}

func (tw *topicWriter) flush() error {
	if len(tw.batch) == 0 {
		return nil
	}
	for _, s := range tw.sinks {
		if err := s.Write(tw.batch); err != nil {
			return fmt.Errorf("topic %q: %s: %w", tw.name, s.URI(), err)
		}
	}
	tw.batch = tw.batch[:0]
	return nil
}

// commit finishes every sink, then commits them one by one. Finishing all
// first means a failure to write any of them leaves every target untouched;
// only a failure in the commits themselves can leave some targets committed,
// and the error says which.
func (e *emitter) commit(ctx context.Context) error {
	fail := func(err error) error {
		e.abort()
		return err
	}
	for _, tw := range e.order {
		if tw.schema == nil {
			if err := e.fix(tw); err != nil {
				return fail(err)
			}
		}
		if err := tw.flush(); err != nil {
			return fail(err)
		}
	}
	for _, tw := range e.order {
		for _, s := range tw.sinks {
			if err := s.Finish(); err != nil {
				return fail(fmt.Errorf("topic %q: %s: %w", tw.name, s.URI(), err))
			}
		}
	}
	if ctx.Err() != nil {
		return fail(context.Cause(ctx))
	}
	var done []string
	for _, tw := range e.order {
		for _, s := range tw.sinks {
			if err := s.Commit(); err != nil {
				err = fmt.Errorf("topic %q: %w", tw.name, err)
				if len(done) > 0 {
					err = fmt.Errorf("%w (already committed: %s)", err, strings.Join(done, ", "))
				}
				return fail(err)
			}
			done = append(done, s.URI())
		}
	}
	e.committed = true
	return nil
}

// abort discards every sink's staged rows.
func (e *emitter) abort() {
	for _, tw := range e.order {
		for _, s := range tw.sinks {
			s.Abort()
		}
	}
}

// artifacts lists the committed outputs: one per sink, with its topic and
// URI, and what the topic wrote (docs/PROTOCOL.md): "rows", "schema" (the
// columns as name:type, without the lineage columns) and "content_hash"
// (SHA-256 of the rows' values in order, without the lineage columns, so
// that two runs over the same file that wrote the same rows match).
func (e *emitter) artifacts() []map[string]string {
	var out []map[string]string
	for _, tw := range e.order {
		schema := make([]string, len(tw.schema))
		for i, c := range tw.schema {
			schema[i] = c.Name + ":" + c.Type.String()
		}
		var sum string
		if tw.content != nil {
			sum = hex.EncodeToString(tw.content.Sum(nil))
		}
		for _, s := range tw.sinks {
			out = append(out, map[string]string{"topic": tw.name, "uri": s.URI(),
				"rows": strconv.FormatInt(tw.rows, 10), "schema": strings.Join(schema, ","), "content_hash": sum})
		}
	}
	return out
}

// hashRow counts a row and adds its values to the topic's content hash:
// each value as a type byte and its text, NUL-terminated.
func (tw *topicWriter) hashRow(values []any) {
	if tw.content == nil {
		tw.content = sha256.New()
	}
	tw.rows++
	var buf []byte
	for _, v := range values {
		switch v := v.(type) {
		case nil:
			buf = append(buf, 'n')
		case string:
			buf = append(append(buf, 's'), v...)
		case bool:
			buf = strconv.AppendBool(append(buf, 'b'), v)
		case int64:
			buf = strconv.AppendInt(append(buf, 'i'), v, 10)
		case float64:
			buf = strconv.AppendFloat(append(buf, 'f'), v, 'g', -1, 64)
		default:
			buf = fmt.Appendf(append(buf, '?'), "%v", v)
		}
		buf = append(buf, 0)
	}
	buf = append(buf, '\n')
	tw.content.Write(buf)
}

func checkColumns(cols []string) error {
	if len(cols) == 0 {
		return errors.New("a row has no columns")
	}
	seen := make(map[string]bool, len(cols))
	for _, c := range cols {
		switch {
		case c == "":
			return errors.New("a column name is empty")
		case c == ColumnJobID || c == ColumnFileVersionID:
			return fmt.Errorf("column name %s is reserved for lineage", c)
		case seen[c]:
			return fmt.Errorf("column %q appears twice", c)
		}
		seen[c] = true
	}
	return nil
}

// normalize maps the Go types a plugin may emit onto the four sink types.
func normalize(v any) (any, error) {
	switch v := v.(type) {
	case nil, string, bool, int64, float64:
		return v, nil
	case int:
		return int64(v), nil
	case int8:
		return int64(v), nil
	case int16:
		return int64(v), nil
	case int32:
		return int64(v), nil
	case uint8:
		return int64(v), nil
	case uint16:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	case float32:
		return float64(v), nil
	case []byte:
		return string(v), nil
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), nil
	}
	return nil, fmt.Errorf("unsupported value type %T", v)
}

func typeOf(v any) sink.Type {
	switch v.(type) {
	case int64:
		return sink.Int64
	case float64:
		return sink.Float64
	case bool:
		return sink.Bool
	}
	return sink.String
}

// inferSchema types each column by the values in the sample: one type if
// they agree, float64 for a mix of integers and floats, string for any other
// mix or when the sample has no value.
func inferSchema(columns []string, sample [][]any) sink.Schema {
	schema := make(sink.Schema, len(columns))
	for i, name := range columns {
		t, seen := sink.String, false
		for _, row := range sample {
			if row[i] == nil {
				continue
			}
			vt := typeOf(row[i])
			switch {
			case !seen:
				t, seen = vt, true
			case t == vt:
			case (t == sink.Int64 && vt == sink.Float64) || (t == sink.Float64 && vt == sink.Int64):
				t = sink.Float64
			default:
				t = sink.String
			}
		}
		schema[i] = sink.Column{Name: name, Type: t}
	}
	return schema
}

// conform converts v to a column of type t: integers widen to float, and
// anything renders into a string column; other mismatches are errors,
// because the sinks already hold the schema.
func conform(t sink.Type, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	vt := typeOf(v)
	switch {
	case vt == t:
		return v, nil
	case t == sink.Float64 && vt == sink.Int64:
		return float64(v.(int64)), nil
	case t == sink.String:
		switch v := v.(type) {
		case int64:
			return strconv.FormatInt(v, 10), nil
		case float64:
			return strconv.FormatFloat(v, 'g', -1, 64), nil
		case bool:
			return strconv.FormatBool(v), nil
		}
	}
	return nil, fmt.Errorf("a %s value in a %s column (the topic's first rows fixed its type)", vt, t)
}
