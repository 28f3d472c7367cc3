package plugin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// maxJSONLine bounds one JSONL line, so a file without newlines cannot make
// the worker buffer all of it.
const maxJSONLine = 64 << 20

// JSONL reads one JSON object per line and emits one row per object to
// "output".
//
// The columns are every top-level key of the file, in the order they first
// appear; an object without a key has null there. A first pass fixes each
// column's type: int64 if every value is an integral number, float64 if
// every value is a number, bool, or string (strings, mixed types, and nested
// objects or arrays, which are kept as their JSON text). Blank lines are
// skipped. A line that is not a JSON object fails the job with its number.
type JSONL struct{}

// Name implements Plugin.
func (JSONL) Name() string { return "jsonl" }

// Run implements Plugin.
func (JSONL) Run(ctx context.Context, in Input, emit Emitter) error {
	var (
		names []string
		index = map[string]int{}
		kinds []jsonKind
	)
	err := eachObject(ctx, in, func(_ int, fields []jsonField) error {
		for _, f := range fields {
			i, ok := index[f.key]
			if !ok {
				i = len(names)
				index[f.key] = i
				names = append(names, f.key)
				kinds = append(kinds, jsonNull)
			}
			kinds[i] = kinds[i].merge(f.kind)
		}
		return nil
	})
	if err != nil {
		return err
	}
	row := Row{Columns: names, Values: make([]any, len(names))}
	return eachObject(ctx, in, func(line int, fields []jsonField) error {
		clear(row.Values)
		for _, f := range fields {
			i, ok := index[f.key]
			if !ok {
				return fmt.Errorf("line %d: key %q was not there in the first pass (file changed while reading?)", line, f.key)
			}
			v, err := f.value(kinds[i])
			if err != nil {
				return fmt.Errorf("line %d, key %q: %w", line, f.key, err)
			}
			row.Values[i] = v
		}
		return emit.Emit(OutputTopic, row)
	})
}

// jsonKind is the type of one value, or of a column as the join of its
// values' types.
type jsonKind uint8

const (
	jsonNull jsonKind = iota
	jsonInt
	jsonFloat
	jsonBool
	jsonString // strings, nested values, and columns of mixed types
)

func (k jsonKind) merge(v jsonKind) jsonKind {
	switch {
	case v == jsonNull || k == v:
		return k
	case k == jsonNull:
		return v
	case (k == jsonInt && v == jsonFloat) || (k == jsonFloat && v == jsonInt):
		return jsonFloat
	}
	return jsonString
}

// jsonField is one top-level member of an object.
type jsonField struct {
	key  string
	raw  json.RawMessage
	kind jsonKind
}

func classify(raw json.RawMessage) jsonKind {
	switch raw[0] {
	case 'n':
		return jsonNull
	case 't', 'f':
		return jsonBool
	case '"', '{', '[':
		return jsonString
	}
	if bytes.ContainsAny(raw, ".eE") {
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return jsonString // out of float64 range: keep the digits as text
		}
		return jsonFloat
	}
	if _, err := strconv.ParseInt(string(raw), 10, 64); err != nil {
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return jsonString
		}
		return jsonFloat // too big for int64
	}
	return jsonInt
}

// value converts the field to the column's kind.
func (f jsonField) value(col jsonKind) (any, error) {
	if f.kind == jsonNull {
		return nil, nil
	}
	switch col {
	case jsonInt:
		return strconv.ParseInt(string(f.raw), 10, 64)
	case jsonFloat:
		return strconv.ParseFloat(string(f.raw), 64)
	case jsonBool:
		return f.raw[0] == 't', nil
	}
	if f.raw[0] == '"' {
		var s string
		err := json.Unmarshal(f.raw, &s)
		return s, err
	}
	if f.raw[0] == '{' || f.raw[0] == '[' {
		var b bytes.Buffer
		if err := json.Compact(&b, f.raw); err != nil {
			return nil, err
		}
		return b.String(), nil
	}
	return string(f.raw), nil // a number or bool in a string column
}

// eachObject calls fn with the members of each non-blank line's object, in
// order, with the 1-based line number.
func eachObject(ctx context.Context, in Input, fn func(line int, fields []jsonField) error) error {
	f, err := in.Open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxJSONLine)
	var members []ObjectMember
	var fields []jsonField
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		members, err = ObjectMembers(text, members[:0])
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		fields = fields[:0]
		for _, m := range members {
			fields = append(fields, jsonField{key: m.Key, raw: m.Raw, kind: classify(m.Raw)})
		}
		if err := fn(line, fields); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d MiB", line+1, maxJSONLine>>20)
		}
		return err
	}
	return nil
}

// ObjectMember is one member of a JSON object, its value as written.
type ObjectMember struct {
	Key string
	Raw json.RawMessage
}

// ObjectMembers appends the members of the JSON object that is the whole of
// text to dst, keeping their order (encoding/json's maps would lose it). It
// is shared by the jsonl plugin and the rows of deployed plugins.
func ObjectMembers(text []byte, dst []ObjectMember) ([]ObjectMember, error) {
	if len(text) == 0 || text[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("invalid JSON: object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		dst = append(dst, ObjectMember{Key: key, Raw: raw})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid JSON: more than one value on the line")
	}
	return dst, nil
}
