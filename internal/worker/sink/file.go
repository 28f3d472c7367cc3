package sink

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"unicode/utf8"
)

// fileSink writes CSV (a header row, then one record per row) or JSONL (one
// object per line, keys in column order) to a staging file beside the
// target. Commit renames it into place; appending to a non-empty target
// writes target + new rows to a second temporary file and renames that,
// so readers only ever see the old or the new content. That rewrite leaves
// out the rows of an earlier run of the same job (their _job_id is the
// job's), so it reads the whole target, twice: an append costs O(target
// size), not O(new rows). Large append targets are better split (one file
// per input or per day) or written to SQLite.
type fileSink struct {
	spec   Spec
	schema Schema
	csv    bool
	job    string // the job id as written in JobColumn; "" without that column

	stage     string
	f         *os.File
	w         *bufio.Writer
	cw        *csv.Writer
	record    []string
	line      []byte
	keys      [][]byte // JSONL: the encoded `"name":` of each column
	headerLen int64    // CSV: bytes of the header at the start of the staging file
	closed    bool
}

func openFile(spec Spec, schema Schema) (*fileSink, error) {
	s := &fileSink{spec: spec, schema: schema, csv: spec.Target.Kind == KindCSV}
	if schema.index(JobColumn) >= 0 {
		s.job = strconv.FormatInt(spec.JobID, 10)
	}
	if err := spec.Target.confined(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(spec.Target.Path), 0o755); err != nil {
		return nil, err
	}
	if spec.Mode == ModeError {
		if full, err := s.otherRows(); err != nil {
			return nil, err
		} else if full {
			return nil, ErrTargetNotEmpty
		}
	}
	s.stage = stagingName(spec.Target.Path, spec.JobID)
	f, err := os.OpenFile(s.stage, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	s.f = f
	s.w = bufio.NewWriterSize(f, 64<<10)
	if s.csv {
		var hdr bytes.Buffer
		hw := csv.NewWriter(&hdr)
		_ = hw.Write(schema.Names())
		hw.Flush()
		s.headerLen = int64(hdr.Len())
		_, _ = s.w.Write(hdr.Bytes())
		s.cw = csv.NewWriter(s.w)
		s.record = make([]string, len(schema))
	} else {
		for _, c := range schema {
			s.keys = append(s.keys, append(appendJSONString(nil, c.Name), ':'))
		}
	}
	return s, nil
}

func (s *fileSink) URI() string { return s.spec.Target.URI() }

func (s *fileSink) Write(rows [][]any) error {
	for _, row := range rows {
		if s.csv {
			for i, v := range row {
				s.record[i] = formatText(v)
			}
			if err := s.cw.Write(s.record); err != nil {
				return fmt.Errorf("write %s: %w", s.stage, err)
			}
			continue
		}
		s.line = append(s.line[:0], '{')
		for i, v := range row {
			if i > 0 {
				s.line = append(s.line, ',')
			}
			s.line = append(s.line, s.keys[i]...)
			s.line = appendJSONValue(s.line, v)
		}
		s.line = append(s.line, '}', '\n')
		if _, err := s.w.Write(s.line); err != nil {
			return fmt.Errorf("write %s: %w", s.stage, err)
		}
	}
	return nil
}

func (s *fileSink) Finish() error {
	if s.closed {
		return errors.New("finish: sink already closed")
	}
	if s.cw != nil {
		s.cw.Flush()
		if err := s.cw.Error(); err != nil {
			return fmt.Errorf("write %s: %w", s.stage, err)
		}
	}
	return s.closeStage()
}

// closeStage flushes, fsyncs and closes the staging file once.
func (s *fileSink) closeStage() error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.w.Flush()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", s.stage, err)
	}
	return nil
}

func (s *fileSink) Commit() error {
	return commitFile(s.spec, s.stage, s.URI(), s.otherRows, s.merge)
}

// merge writes the target's content, without this job's earlier rows,
// followed by the staged rows to a new temporary file and renames it over
// the target.
func (s *fileSink) merge() error {
	if s.csv {
		if err := s.checkHeader(); err != nil {
			return err
		}
	}
	old, err := os.Open(s.spec.Target.Path)
	if err != nil {
		return err
	}
	defer func() { _ = old.Close() }() // read only: Close loses nothing
	st, err := old.Stat()
	if err != nil {
		return err
	}
	var drop []span
	err = s.scan(old, st.Size(), func(start, end int64, ours bool) bool {
		if ours {
			drop = dropSpan(drop, start, end)
		}
		return true
	})
	if err != nil {
		return err
	}
	staged, err := os.Open(s.stage)
	if err != nil {
		return err
	}
	defer func() { _ = staged.Close() }() // read only: Close loses nothing
	if _, err := staged.Seek(s.headerLen, io.SeekStart); err != nil {
		return err
	}
	tmp := stagingName(s.spec.Target.Path, s.spec.JobID)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = out.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := copyExcept(out, old, st.Size(), drop); err != nil {
		return err
	}
	if _, err := io.Copy(out, staged); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.spec.Target.Path); err != nil {
		return err
	}
	ok = true
	_ = os.Remove(s.stage)
	return nil
}

// checkHeader refuses to append to a CSV whose header differs from ours:
// the rows would land under the wrong column names.
func (s *fileSink) checkHeader() error {
	f, err := os.Open(s.spec.Target.Path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	hdr, err := r.Read()
	if err != nil {
		return fmt.Errorf("read header of %s: %w", s.spec.Target.Path, err)
	}
	if !slices.Equal(hdr, s.schema.Names()) {
		return fmt.Errorf("cannot append: %s has columns %q, the job writes %q (use mode replace to change them)",
			s.spec.Target.Path, hdr, s.schema.Names())
	}
	return nil
}

func (s *fileSink) Abort() {
	if !s.closed {
		s.closed = true
		_ = s.f.Close()
	}
	_ = os.Remove(s.stage)
}

// otherRows reports whether the target holds a row that is not this job's:
// a JSONL line that is not blank, a CSV record after the header. Content it
// cannot read counts as another's, so nothing overwrites it.
func (s *fileSink) otherRows() (bool, error) {
	f, err := os.Open(s.spec.Target.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	others := false
	err = s.scan(f, st.Size(), func(_, _ int64, ours bool) bool {
		others = !ours
		return !others
	})
	return others, err
}

// scan calls fn with the byte span of every record in f (size bytes) and
// whether it is a row of this job, until fn returns false. The CSV header
// is no record, nor is a blank JSONL line. From the first CSV record that
// does not parse, the rest of the file is one record that is not ours.
func (s *fileSink) scan(f *os.File, size int64, fn func(start, end int64, ours bool) bool) error {
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 64<<10)
	if s.csv {
		r := csv.NewReader(br)
		r.FieldsPerRecord = -1
		r.ReuseRecord = true
		hdr, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			fn(0, size, false)
			return nil
		}
		col := -1
		if s.job != "" {
			col = slices.Index(hdr, JobColumn)
		}
		for {
			start := r.InputOffset()
			rec, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				fn(start, size, false)
				return nil
			}
			if !fn(start, r.InputOffset(), col >= 0 && col < len(rec) && rec[col] == s.job) {
				return nil
			}
		}
	}
	var (
		line []byte
		at   int64
	)
	for {
		line = line[:0]
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			line = append(line, chunk...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if len(line) > 0 {
			start := at
			at += int64(len(line))
			if len(bytes.TrimSpace(line)) > 0 && !fn(start, at, s.ownsLine(line)) {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ownsLine reports whether a JSONL line is an object whose JobColumn is
// this job's id. Most lines of a big target are other jobs' and do not even
// contain the id's digits; only the rest are decoded.
func (s *fileSink) ownsLine(line []byte) bool {
	if s.job == "" || !bytes.Contains(line, []byte(s.job)) {
		return false
	}
	var row struct {
		Job json.Number `json:"_job_id"` // JobColumn
	}
	if json.Unmarshal(line, &row) != nil {
		return false
	}
	return row.Job.String() == s.job
}

// formatText renders a value for a CSV field; nil is the empty field.
func formatText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

// appendJSONValue appends v as JSON. NaN and ±Inf have no JSON form and are
// written as null.
func appendJSONValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendJSONString(b, v)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, v, 'g', -1, 64)
	case bool:
		return strconv.AppendBool(b, v)
	}
	return appendJSONString(b, fmt.Sprint(v))
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
