package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/casparian/sentinel/internal/worker/plugin"
)

// maxLine bounds one stdout line, so a module that never writes a newline
// cannot make the worker buffer without end.
const maxLine = 16 << 20

// rowWriter is the module's stdout. It splits what the module writes into
// lines and turns each into a row:
//
//	{"topic": "output", "row": {"word": "the", "count": 12}}
//
// "topic" may be left out (it is then "output"); "row" is an object whose
// members are the columns. Blank lines are skipped. The first row of a
// topic fixes its columns and their order; later rows may list them in any
// order and leave some out (null), but may not add new ones.
//
// The first bad line, or the first row the sinks refuse, is kept in err and
// stops the module through stop. wazero calls Write from the goroutine that
// runs the module, so it needs no lock.
type rowWriter struct {
	emit    plugin.Emitter
	stop    func(error)
	pending []byte
	line    int
	topics  map[string]*topicColumns
	err     error
}

// topicColumns is the column order a topic's first row fixed.
type topicColumns struct {
	index map[string]int
	row   plugin.Row // reused for every row of the topic
}

func newRowWriter(emit plugin.Emitter, stop func(error)) *rowWriter {
	return &rowWriter{emit: emit, stop: stop, topics: map[string]*topicColumns{}}
}

// Write implements io.Writer.
func (w *rowWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.pending)+len(p) > maxLine {
				return 0, w.fail(fmt.Errorf("output line %d: longer than %d MiB", w.line+1, maxLine>>20))
			}
			w.pending = append(w.pending, p...)
			break
		}
		text := p[:i]
		if len(w.pending) > 0 {
			w.pending = append(w.pending, text...)
			text = w.pending
		}
		p = p[i+1:]
		err := w.handle(text)
		w.pending = w.pending[:0]
		if err != nil {
			return 0, w.fail(err)
		}
	}
	return n, nil
}

// finish handles a last line that had no newline.
func (w *rowWriter) finish() {
	if w.err == nil && len(w.pending) > 0 {
		if err := w.handle(w.pending); err != nil {
			_ = w.fail(err) // fail keeps err in w.err, where the caller reads it
		}
		w.pending = nil
	}
}

func (w *rowWriter) fail(err error) error {
	w.err = err
	w.stop(err)
	return err
}

// handle turns one line into a row and emits it.
func (w *rowWriter) handle(text []byte) error {
	w.line++
	text = bytes.TrimSpace(text)
	if len(text) == 0 {
		return nil
	}
	topic, fields, err := parseLine(text)
	if err != nil {
		return fmt.Errorf("output line %d: %w (want {\"topic\": \"output\", \"row\": {...}})", w.line, err)
	}
	tc := w.topics[topic]
	if tc == nil {
		tc = &topicColumns{index: make(map[string]int, len(fields))}
		for i, f := range fields {
			if _, dup := tc.index[f.key]; dup {
				return fmt.Errorf("output line %d: column %q appears twice", w.line, f.key)
			}
			tc.index[f.key] = i
			tc.row.Columns = append(tc.row.Columns, f.key)
		}
		tc.row.Values = make([]any, len(fields))
		w.topics[topic] = tc
	}
	clear(tc.row.Values)
	seen := make([]bool, len(tc.row.Columns))
	for _, f := range fields {
		i, ok := tc.index[f.key]
		if !ok {
			return fmt.Errorf("output line %d: column %q is not in topic %q's first row (%s)",
				w.line, f.key, topic, strings.Join(tc.row.Columns, ", "))
		}
		if seen[i] {
			return fmt.Errorf("output line %d: column %q appears twice", w.line, f.key)
		}
		seen[i] = true
		v, err := f.value()
		if err != nil {
			return fmt.Errorf("output line %d, column %q: %w", w.line, f.key, err)
		}
		tc.row.Values[i] = v
	}
	return w.emit.Emit(topic, tc.row)
}

// field is one member of a row object.
type field struct {
	key string
	raw json.RawMessage
}

// parseLine reads {"topic": ..., "row": {...}}, keeping the row's members
// in order (a map would lose it).
func parseLine(text []byte) (topic string, fields []field, err error) {
	members, err := objectMembers(text)
	if err != nil {
		return "", nil, err
	}
	topic = plugin.OutputTopic
	var row json.RawMessage
	for _, m := range members {
		switch m.key {
		case "topic":
			if err := json.Unmarshal(m.raw, &topic); err != nil || topic == "" {
				return "", nil, errors.New(`"topic" is not a non-empty string`)
			}
		case "row":
			row = m.raw
		default:
			return "", nil, fmt.Errorf("unknown key %q", m.key)
		}
	}
	if row == nil {
		return "", nil, errors.New(`no "row"`)
	}
	if row[0] != '{' {
		return "", nil, errors.New(`"row" is not an object`)
	}
	if fields, err = objectMembers(row); err != nil {
		return "", nil, err
	}
	if len(fields) == 0 {
		return "", nil, errors.New(`"row" is empty`)
	}
	return topic, fields, nil
}

// objectMembers splits one JSON object into its members, in order.
func objectMembers(text []byte) ([]field, error) {
	members, err := plugin.ObjectMembers(text, nil)
	if err != nil {
		return nil, err
	}
	out := make([]field, len(members))
	for i, m := range members {
		out[i] = field{key: m.Key, raw: m.Raw}
	}
	return out, nil
}

// value converts a JSON value to a row value: null, bool, string, int64
// for integers that fit, float64 for other numbers, and compact JSON text
// for objects and arrays.
func (f field) value() (any, error) {
	switch f.raw[0] {
	case 'n':
		return nil, nil
	case 't', 'f':
		return f.raw[0] == 't', nil
	case '"':
		var s string
		err := json.Unmarshal(f.raw, &s)
		return s, err
	case '{', '[':
		var b bytes.Buffer
		err := json.Compact(&b, f.raw)
		return b.String(), err
	}
	if i, err := strconv.ParseInt(string(f.raw), 10, 64); err == nil {
		return i, nil
	}
	x, err := strconv.ParseFloat(string(f.raw), 64)
	if err != nil {
		return nil, fmt.Errorf("number %s is out of range", f.raw)
	}
	return x, nil
}

// capture keeps the start and the end of what is written to it: the
// module's stderr. The start usually says what went wrong (a Go module's
// "fatal error: out of memory"), the end what it did last; the middle of a
// long dump is dropped.
type capture struct {
	mu      sync.Mutex
	head    []byte // the first headKept bytes
	tail    []byte // the last tailKept bytes after head
	dropped bool   // bytes between head and tail were dropped
}

const (
	headKept = 1 << 10
	tailKept = 4 << 10
)

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if room := headKept - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	c.tail = append(c.tail, p...)
	if over := len(c.tail) - tailKept; over > 0 {
		c.tail = append(c.tail[:0], c.tail[over:]...)
		c.dropped = true
	}
	return n, nil
}

// String returns what was kept; short is for an error message: at most
// headShown bytes of the start and tailShown of the end.
func (c *capture) String() string { return c.text(headKept, tailKept) }

func (c *capture) short() string { return c.text(headShown, tailShown) }

const (
	headShown = 400
	tailShown = 600
)

func (c *capture) text(headMax, tailMax int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := len(c.head) + len(c.tail)
	var s string
	if !c.dropped && all <= headMax+tailMax {
		s = string(c.head) + string(c.tail)
	} else {
		both := append(append([]byte{}, c.head...), c.tail...)
		s = string(both[:headMax]) + " … " + string(both[len(both)-tailMax:])
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, ""))
}
