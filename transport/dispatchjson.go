package transport

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendJSON appends the DISPATCH payload as JSON, with the same fields,
// order and meaning as encoding/json gives (sinks as [] when there are none,
// an empty sink mode as "append", artifact_hash left out when empty). A
// DISPATCH goes out for every job, and encoding/json spent most of its time
// on the nested MarshalJSON methods and re-checking what they returned.
func (m *Dispatch) appendJSON(b []byte) []byte {
	b = append(b, `{"plugin_name":`...)
	b = appendJSONString(b, m.PluginName)
	b = append(b, `,"file_path":`...)
	b = appendJSONString(b, m.FilePath)
	b = append(b, `,"sinks":[`...)
	for i, s := range m.Sinks {
		if i > 0 {
			b = append(b, ',')
		}
		mode := s.Mode
		if mode == "" {
			mode = ModeAppend
		}
		b = append(b, `{"topic":`...)
		b = appendJSONString(b, s.Topic)
		b = append(b, `,"uri":`...)
		b = appendJSONString(b, s.URI)
		b = append(b, `,"mode":`...)
		b = appendJSONString(b, mode)
		if s.SchemaDef != "" {
			b = append(b, `,"schema_def":`...)
			b = appendJSONString(b, s.SchemaDef)
		}
		b = append(b, '}')
	}
	b = append(b, `],"file_version_id":`...)
	b = strconv.AppendInt(b, m.FileVersionID, 10)
	b = append(b, `,"env_hash":`...)
	b = appendJSONString(b, m.EnvHash)
	b = append(b, `,"source_code":`...)
	b = appendJSONString(b, m.SourceCode)
	if m.ArtifactHash != "" {
		b = append(b, `,"artifact_hash":`...)
		b = appendJSONString(b, m.ArtifactHash)
	}
	return append(b, '}')
}

// appendJSON appends the CONCLUDE payload as JSON, byte for byte what
// encoding/json writes (metrics and artifacts as {} and [] when empty, map
// keys sorted, error_message left out when empty). Every job's receipt is
// one; the worker encodes it and the Sentinel's tests compare.
func (m *Conclude) appendJSON(b []byte) []byte {
	b = append(b, `{"status":`...)
	b = appendJSONString(b, m.Status)
	b = append(b, `,"metrics":{`...)
	keys := make([]string, 0, len(m.Metrics))
	for k := range m.Metrics {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = strconv.AppendInt(b, m.Metrics[k], 10)
	}
	b = append(b, `},"artifacts":[`...)
	for i, a := range m.Artifacts {
		if i > 0 {
			b = append(b, ',')
		}
		if a == nil {
			b = append(b, "null"...)
			continue
		}
		keys = keys[:0]
		for k := range a {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for j, k := range keys {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, a[k])
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if m.ErrorMessage != "" {
		b = append(b, `,"error_message":`...)
		b = appendJSONString(b, m.ErrorMessage)
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json writes
// one: control characters (\n, \r, \t, \b and \f short), quote and
// backslash escaped; <, > and & as
// \u003c, \u003e and \u0026; U+2028 and U+2029 escaped; each byte of
// invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
