package plugin

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CSV reads a comma-separated file with a header row and emits one row per
// record to "output", with typed columns.
//
// Column types are inferred from the whole file in a first pass, so they are
// stable however late an odd value appears: a column is int64 if every
// non-empty value is a decimal integer, float64 if every one is a decimal
// number ("1.5", "2e3"), bool if every one is true or false (any case), and
// string otherwise or when it has no values at all. A number with a leading
// zero ("007", "02139") makes its column a string: it is a code, not a
// quantity, and its zeros must survive. NaN, Inf and hex notation are text. Empty fields are null. Header
// names are trimmed; an empty one becomes column_<n> and a repeated one gets
// a _2, _3 suffix. A ragged record, a stray quote or an empty file fails the
// job with the line number.
type CSV struct{}

// Name implements Plugin.
func (CSV) Name() string { return "csv" }

// Run implements Plugin.
func (CSV) Run(ctx context.Context, in Input, emit Emitter) error {
	names, kinds, err := csvScan(ctx, in)
	if err != nil {
		return err
	}
	f, err := in.Open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	r := newCSVReader(f)
	if _, err := r.Read(); err != nil {
		return csvError(err, len(names))
	}
	row := Row{Columns: names, Values: make([]any, len(names))}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return csvError(err, len(names))
		}
		line, _ := r.FieldPos(0)
		for i, s := range rec {
			v, err := kinds[i].parse(s)
			if err != nil {
				// Only possible if the file changed between the passes.
				return fmt.Errorf("line %d, column %s: %w", line, names[i], err)
			}
			row.Values[i] = v
		}
		if err := emit.Emit(OutputTopic, row); err != nil {
			return err
		}
	}
}

// csvScan is the first pass: the header and each column's kind.
func csvScan(ctx context.Context, in Input) ([]string, []kind, error) {
	f, err := in.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	r := newCSVReader(f)
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil, errors.New("empty file: no header row")
	}
	if err != nil {
		return nil, nil, csvError(err, 0)
	}
	names := columnNames(header)
	guesses := make([]guess, len(names))
	for i := range guesses {
		guesses[i] = newGuess()
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, csvError(err, len(names))
		}
		for i, s := range rec {
			guesses[i].observe(s)
		}
	}
	kinds := make([]kind, len(names))
	for i, g := range guesses {
		kinds[i] = g.kind()
	}
	return names, kinds, nil
}

func newCSVReader(r io.Reader) *csv.Reader {
	cr := csv.NewReader(bufio.NewReaderSize(r, 64<<10))
	cr.ReuseRecord = true
	return cr
}

// csvError turns encoding/csv's errors ("record on line 3: wrong number of
// fields") into the job's message; context errors pass through unchanged so
// the runtime can tell an abort from bad input.
func csvError(err error, headerFields int) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			return fmt.Errorf("line %d: wrong number of fields (the header has %d)", pe.Line, headerFields)
		}
		return fmt.Errorf("line %d, column %d: %w", pe.Line, pe.Column, pe.Err)
	}
	return err
}

// columnNames cleans a header row: a UTF-8 BOM and surrounding spaces go,
// empty names become column_<n>, repeated names get a numeric suffix.
func columnNames(header []string) []string {
	names := make([]string, len(header))
	used := make(map[string]bool, len(header))
	for i, n := range header {
		if i == 0 {
			n = strings.TrimPrefix(n, "\ufeff")
		}
		n = strings.TrimSpace(n)
		if n == "" {
			n = "column_" + strconv.Itoa(i+1)
		}
		base := n
		for k := 2; used[n]; k++ {
			n = base + "_" + strconv.Itoa(k)
		}
		used[n] = true
		names[i] = n
	}
	return names
}
