package db

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timeLayout is how this package writes timestamps: RFC 3339 in UTC with a
// fixed nine-digit fraction. time.RFC3339Nano trims trailing zeros, which makes
// "…:05Z" sort after "…:05.1Z"; a fixed width keeps text order equal to time
// order, which ORDER BY deployed_at relies on. Parsers of RFC 3339 (including
// time.RFC3339Nano in Go) read it unchanged.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// readLayouts are the textual forms found in cf_* tables: ours, other
// RFC 3339 writers, and the "YYYY-MM-DD HH:MM:SS[.ffffff]" form that
// SQLite's datetime() and the Python tools produce. A form without a zone is
// UTC.
var readLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05.999999999 -0700",
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02 15:04",
	"2006-01-02T15:04",
	"2006-01-02",
}

// formatTime renders t for storage.
func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// parseTime reads a stored timestamp in any of readLayouts and returns it in
// UTC.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fmt.Errorf("parse time: empty")
	}
	// Go's time.Time.String() output carries a monotonic suffix.
	if i := strings.Index(s, " m="); i > 0 {
		s = s[:i]
	}
	for _, layout := range readLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("parse time %q: unknown format", s)
}

// unixMillis converts t to the integer stored in next_run_at.
func unixMillis(t time.Time) int64 { return t.UnixMilli() }

// nullTime scans a timestamp column whatever other tools stored in it: text
// in any readLayouts form, a time.Time (the driver converts columns declared
// DATETIME), or a number of Unix seconds (milliseconds when large). Values
// that cannot be read become the zero time rather than a scan error, because
// one odd row must not stop the queue.
type nullTime struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (n *nullTime) Scan(src any) error {
	*n = nullTime{}
	switch v := src.(type) {
	case nil:
		return nil
	case time.Time:
		n.Time, n.Valid = v.UTC(), true
	case string:
		n.setText(v)
	case []byte:
		n.setText(string(v))
	case int64:
		n.Time, n.Valid = unixNumber(float64(v)), true
	case float64:
		n.Time, n.Valid = unixNumber(v), true
	}
	return nil
}

func (n *nullTime) setText(s string) {
	if t, err := parseTime(s); err == nil {
		n.Time, n.Valid = t, true
		return
	}
	if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
		n.Time, n.Valid = unixNumber(f), true
	}
}

// unixNumber reads a numeric timestamp: seconds, or milliseconds when it is
// too large to be seconds (the same rule the driver uses).
func unixNumber(f float64) time.Time {
	if f > 1e12 || f < -1e12 {
		return time.UnixMilli(int64(f)).UTC()
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()
}
