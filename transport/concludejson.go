package transport

import "strconv"

// decodeConclude parses a CONCLUDE payload without reflection when it is in
// the plain form workers send: one JSON object whose keys are exactly
// "status", "metrics", "artifacts" and "error_message", each at most once;
// strings of printable ASCII without escapes; metrics whole numbers that fit
// an int64; artifacts objects of strings. Anything else (other keys, other
// spellings, escapes, non-ASCII, null, floats, duplicate keys, malformed
// JSON) returns ok=false, and the caller decodes with encoding/json, whose
// result and errors stay the reference. Where ok is true the result is
// exactly what json.Unmarshal gives (FuzzConcludeDecode checks it): a CONCLUDE
// arrives for every job, and encoding/json's reflection was a few per cent
// of the Sentinel's CPU.
func decodeConclude(b []byte) (m *Conclude, ok bool) {
	d := plainJSON{b: b}
	m = &Conclude{}
	if !d.byte('{') {
		return nil, false
	}
	var seen [4]bool
	if d.peek() == '}' {
		d.i++
		return m, d.end()
	}
	for {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return nil, false
		}
		var field int
		switch key {
		case "status":
			field = 0
			m.Status, ok = d.str()
		case "metrics":
			field = 1
			m.Metrics, ok = d.metrics()
		case "artifacts":
			field = 2
			m.Artifacts, ok = d.artifacts()
		case "error_message":
			field = 3
			m.ErrorMessage, ok = d.str()
		default:
			return nil, false
		}
		if !ok || seen[field] {
			return nil, false
		}
		seen[field] = true
		switch d.next() {
		case ',':
		case '}':
			return m, d.end()
		default:
			return nil, false
		}
	}
}

// plainJSON reads the plain subset of JSON decodeConclude accepts.
type plainJSON struct {
	b []byte
	i int
}

func (d *plainJSON) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (d *plainJSON) peek() byte {
	d.skipSpace()
	if d.i == len(d.b) {
		return 0
	}
	return d.b[d.i]
}

// next consumes and returns the next byte after white space, 0 at the end.
func (d *plainJSON) next() byte {
	c := d.peek()
	if c != 0 {
		d.i++
	}
	return c
}

// byte consumes c after white space.
func (d *plainJSON) byte(c byte) bool { return d.next() == c }

// end reports whether only white space is left.
func (d *plainJSON) end() bool { return d.peek() == 0 && d.i == len(d.b) }

// str reads a string of printable ASCII without escapes.
func (d *plainJSON) str() (string, bool) {
	if !d.byte('"') {
		return "", false
	}
	start := d.i
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			s := known(d.b[start:d.i])
			d.i++
			return s, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return "", false
		}
	}
	return "", false
}

// int reads a JSON integer (no fraction or exponent) that fits an int64.
func (d *plainJSON) int() (int64, bool) {
	d.skipSpace()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	switch n := d.i - digits; {
	case n == 0, n > 1 && d.b[digits] == '0':
		return 0, false // no digits, or a leading zero (not JSON)
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return 0, false // a fraction: encoding/json refuses it for an int64
		}
	}
	v, err := strconv.ParseInt(string(d.b[start:d.i]), 10, 64)
	return v, err == nil
}

// metrics reads an object of integers, as encoding/json fills a
// map[string]int64: a new map, a repeated key keeping its last value.
func (d *plainJSON) metrics() (map[string]int64, bool) { return object(d, d.int) }

// artifacts reads an array of objects of strings, as encoding/json fills a
// []map[string]string.
func (d *plainJSON) artifacts() ([]map[string]string, bool) {
	if !d.byte('[') {
		return nil, false
	}
	out := []map[string]string{}
	if d.peek() == ']' {
		d.i++
		return out, true
	}
	for {
		a, ok := d.stringObject()
		if !ok {
			return nil, false
		}
		out = append(out, a)
		switch d.next() {
		case ',':
		case ']':
			return out, true
		default:
			return nil, false
		}
	}
}

// stringObject reads an object of strings into a new map.
func (d *plainJSON) stringObject() (map[string]string, bool) { return object(d, d.str) }

// object reads a JSON object whose values value reads into a new map, a
// repeated key keeping its last value (as encoding/json fills a map).
func object[V any](d *plainJSON, value func() (V, bool)) (map[string]V, bool) {
	if !d.byte('{') {
		return nil, false
	}
	out := make(map[string]V)
	if d.peek() == '}' {
		d.i++
		return out, true
	}
	for {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return nil, false
		}
		v, ok := value()
		if !ok {
			return nil, false
		}
		out[key] = v
		switch d.next() {
		case ',':
		case '}':
			return out, true
		default:
			return nil, false
		}
	}
}

// known returns b as a string, without allocating for the words nearly every
// CONCLUDE repeats (its keys, statuses, metric and artifact keys, the default topic).
func known(b []byte) string {
	switch string(b) { // compared without a copy
	case StatusSuccess:
		return StatusSuccess
	case StatusFailed:
		return StatusFailed
	case "status":
		return "status"
	case "metrics":
		return "metrics"
	case "artifacts":
		return "artifacts"
	case "rows":
		return "rows"
	case "bytes":
		return "bytes"
	case "size_bytes":
		return "size_bytes"
	case "topic":
		return "topic"
	case "uri":
		return "uri"
	case "output":
		return "output"
	}
	return string(b)
}
