package sink

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// parquetSink writes a Parquet file (Snappy, one nullable leaf per column,
// lineage columns required) to a staging file beside the target. Commit
// renames it into place; appending to a non-empty target rewrites the
// target's rows, without those of an earlier run of the same job, followed
// by the new ones into a second temporary file, after checking that both
// have the same columns. Parquet cannot be appended to in place, so an
// append costs O(target size): large append targets are better split (one
// file per input or per day) or written to SQLite.
type parquetSink struct {
	spec   Spec
	schema Schema
	pq     *parquet.Schema
	jobCol int // index of JobColumn in schema, or -1

	stage  string
	f      *os.File
	w      *parquet.Writer
	rows   []parquet.Row
	closed bool
}

func openParquet(spec Spec, schema Schema) (*parquetSink, error) {
	s := &parquetSink{spec: spec, schema: schema, pq: parquetSchema(schema), jobCol: schema.index(JobColumn)}
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
	s.w = s.newWriter(f)
	return s, nil
}

// parquetRowGroupRows bounds a row group: the writer holds a row group's
// pages in memory until it is flushed, so an unbounded one would hold the
// whole output.
const parquetRowGroupRows = 128 << 10

func (s *parquetSink) newWriter(f *os.File) *parquet.Writer {
	return parquet.NewWriter(f, s.pq, parquet.Compression(&parquet.Snappy), parquet.MaxRowsPerRowGroup(parquetRowGroupRows))
}

// orderedGroup keeps the columns in the order the plugin emitted them; a
// plain parquet.Group sorts them by name. parquet-go itself uses the same
// construction for its variant groups.
type orderedGroup struct {
	parquet.Group
	order []string
}

func (g orderedGroup) Fields() []parquet.Field {
	byName := make(map[string]parquet.Field, len(g.order))
	for _, f := range g.Group.Fields() {
		byName[f.Name()] = f
	}
	out := make([]parquet.Field, len(g.order))
	for i, name := range g.order {
		out[i] = byName[name]
	}
	return out
}

func parquetSchema(schema Schema) *parquet.Schema {
	g := orderedGroup{Group: parquet.Group{}, order: schema.Names()}
	for _, c := range schema {
		var n parquet.Node
		switch c.Type {
		case Int64:
			n = parquet.Int(64)
		case Float64:
			n = parquet.Leaf(parquet.DoubleType)
		case Bool:
			n = parquet.Leaf(parquet.BooleanType)
		default:
			n = parquet.String()
		}
		if c.Required {
			n = parquet.Required(n)
		} else {
			n = parquet.Optional(n)
		}
		g.Group[c.Name] = n
	}
	return parquet.NewSchema("row", g)
}

func (s *parquetSink) URI() string { return s.spec.Target.URI() }

func (s *parquetSink) Write(rows [][]any) error {
	s.rows = s.rows[:0]
	for _, row := range rows {
		pr := make(parquet.Row, len(row))
		for i, v := range row {
			def := 1
			if s.schema[i].Required {
				def = 0
			}
			var pv parquet.Value
			switch v := v.(type) {
			case nil:
				if s.schema[i].Required {
					return fmt.Errorf("column %s is required but got null", s.schema[i].Name)
				}
				pr[i] = parquet.NullValue().Level(0, 0, i)
				continue
			case int64:
				pv = parquet.Int64Value(v)
			case float64:
				pv = parquet.DoubleValue(v)
			case bool:
				pv = parquet.BooleanValue(v)
			case string:
				pv = parquet.ByteArrayValue([]byte(v))
			default:
				return fmt.Errorf("column %s: unsupported value %T", s.schema[i].Name, v)
			}
			pr[i] = pv.Level(0, def, i)
		}
		s.rows = append(s.rows, pr)
	}
	if _, err := s.w.WriteRows(s.rows); err != nil {
		return fmt.Errorf("write %s: %w", s.stage, err)
	}
	return nil
}

func (s *parquetSink) Finish() error {
	if s.closed {
		return errors.New("finish: sink already closed")
	}
	s.closed = true
	err := s.w.Close()
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

func (s *parquetSink) Commit() error {
	return commitFile(s.spec, s.stage, s.URI(), s.otherRows, s.merge)
}

// merge rewrites the target's rows, without this job's earlier ones, and the
// staged rows into a new file and renames it over the target.
func (s *parquetSink) merge() error {
	old, oldFile, err := openParquetFile(s.spec.Target.Path)
	if err != nil {
		return err
	}
	defer func() { _ = oldFile.Close() }() // read only: Close loses nothing
	if err := sameColumns(old.Schema(), s.pq); err != nil {
		return fmt.Errorf("cannot append to %s: %w (use mode replace to change the columns)", s.spec.Target.Path, err)
	}
	staged, stagedFile, err := openParquetFile(s.stage)
	if err != nil {
		return err
	}
	defer func() { _ = stagedFile.Close() }() // read only: Close loses nothing

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
	w := s.newWriter(out)
	if err := s.copyOthers(w, old); err != nil {
		return fmt.Errorf("merge into %s: %w", s.spec.Target.Path, err)
	}
	r := parquet.NewReader(staged)
	_, err = parquet.CopyRows(w, r)
	_ = r.Close()
	if err != nil {
		return fmt.Errorf("merge into %s: %w", s.spec.Target.Path, err)
	}
	if err := w.Close(); err != nil {
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

func (s *parquetSink) Abort() {
	if !s.closed {
		s.closed = true
		_ = s.w.Close()
		_ = s.f.Close()
	}
	_ = os.Remove(s.stage)
}

func openParquetFile(path string) (*parquet.File, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return pf, f, nil
}

// copyOthers writes the rows of src to w, leaving out this job's. Row groups
// whose statistics show no row of the job are copied without a look at each
// row's job column.
func (s *parquetSink) copyOthers(w *parquet.Writer, src *parquet.File) error {
	for _, rg := range src.RowGroups() {
		r := parquet.NewRowGroupReader(rg)
		var err error
		if s.jobCol < 0 || s.groupHasJob(rg) == noRows {
			_, err = parquet.CopyRows(w, r)
		} else {
			err = s.copyFiltered(w, r)
		}
		_ = r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *parquetSink) copyFiltered(w *parquet.Writer, r parquet.Rows) error {
	buf := make([]parquet.Row, 1024)
	for {
		n, err := r.ReadRows(buf)
		keep := buf[:0]
		for _, row := range buf[:n] {
			if row[s.jobCol].Int64() != s.spec.JobID {
				keep = append(keep, row)
			}
		}
		if _, werr := w.WriteRows(keep); werr != nil {
			return werr
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// What the statistics of a row group's job column tell about this job.
const (
	noRows   = iota // none of the group's rows is the job's
	allRows         // every row is the job's
	someRows        // some may be: read them
)

// groupHasJob reads the min and max of the group's JobColumn.
func (s *parquetSink) groupHasJob(rg parquet.RowGroup) int {
	cc, ok := rg.ColumnChunks()[s.jobCol].(interface {
		Bounds() (min, max parquet.Value, ok bool)
	})
	if !ok {
		return someRows
	}
	lo, hi, ok := cc.Bounds()
	switch {
	case !ok || lo.IsNull() || hi.IsNull():
		return someRows
	case lo.Int64() > s.spec.JobID || hi.Int64() < s.spec.JobID:
		return noRows
	case lo.Int64() == s.spec.JobID && hi.Int64() == s.spec.JobID:
		return allRows
	}
	return someRows
}

// otherRows reports whether the target is a Parquet file with rows that are
// not this job's. An empty file has none; a file that is not Parquet, or has
// other columns, counts as another's, so that nothing overwrites data it
// cannot read.
func (s *parquetSink) otherRows() (bool, error) {
	path := s.spec.Target.Path
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if st.Size() == 0 {
		return false, nil
	}
	pf, f, err := openParquetFile(path)
	if err != nil {
		return true, nil
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	if pf.NumRows() == 0 {
		return false, nil
	}
	if s.jobCol < 0 || sameColumns(pf.Schema(), s.pq) != nil {
		return true, nil
	}
	for _, rg := range pf.RowGroups() {
		if rg.NumRows() == 0 {
			continue
		}
		switch s.groupHasJob(rg) {
		case allRows:
			continue
		case noRows:
			return true, nil
		}
		r := parquet.NewRowGroupReader(rg)
		buf := make([]parquet.Row, 1024)
		for {
			n, err := r.ReadRows(buf)
			for _, row := range buf[:n] {
				if row[s.jobCol].Int64() != s.spec.JobID {
					_ = r.Close()
					return true, nil
				}
			}
			if err != nil {
				_ = r.Close()
				if !errors.Is(err, io.EOF) {
					return true, nil
				}
				break
			}
		}
	}
	return false, nil
}

// sameColumns compares two flat schemas by column name, physical type and
// repetition.
func sameColumns(have, want *parquet.Schema) error {
	describe := func(s *parquet.Schema) []string {
		var out []string
		for _, f := range s.Fields() {
			rep := "required"
			if f.Optional() {
				rep = "optional"
			}
			out = append(out, f.Name()+" "+f.Type().String()+" "+rep)
		}
		return out
	}
	h, w := describe(have), describe(want)
	if !slices.Equal(h, w) {
		return fmt.Errorf("it has columns [%s], the job writes [%s]", strings.Join(h, ", "), strings.Join(w, ", "))
	}
	return nil
}
