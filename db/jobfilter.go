package db

import (
	"fmt"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// Dialect is what JobFilterSQL needs to know of a backend's SQL.
type Dialect struct {
	// Placeholder writes the n-th argument's placeholder (SQLite "?",
	// PostgreSQL "$n").
	Placeholder func(n int) string
	// StatusText is how the dialect reads q.status as text.
	StatusText string
	// Time is a time as the backend compares it with a timestamp column.
	Time func(time.Time) any
}

// SQLite is package db's Dialect. Times compare as the text formatTime
// writes: its fixed width keeps text order equal to time order for every row
// this package wrote (a row another tool wrote in another form sorts by its
// text, and a cursor at it may skip or repeat a few of its like).
var SQLite = Dialect{
	Placeholder: func(int) string { return "?" },
	StatusText:  "q.status",
	Time:        func(t time.Time) any { return formatTime(t) },
}

// JobFilterSQL is the WHERE clause (without the keyword; "" for none) of
// the jobs f selects, over the aliases of the job listing: q the queue, l
// the file's location, r its source root. Both backends build their lists
// and bulk actions on it, so a filter selects the same jobs on each. With a
// cursor (f.After), it keeps the jobs after the cursor in the order of
// JobOrderSQL(f).
func JobFilterSQL(f job.Filter, d Dialect) (cond string, args []any) {
	var where []string
	arg := func(v any) string {
		args = append(args, v)
		return d.Placeholder(len(args))
	}
	statusText := d.StatusText
	if f.Status != "" {
		if f.Status == job.StatusQueued {
			where = append(where, `(q.status = 'QUEUED' OR q.status IS NULL)`)
		} else {
			where = append(where, statusText+` = `+arg(string(f.Status)))
		}
	}
	if f.Plugin != "" {
		where = append(where, `q.plugin_name = `+arg(f.Plugin))
	}
	// Substrings, case folded on both sides (SQLite's LIKE ignores ASCII
	// case, PostgreSQL's does not), with LIKE's wildcards escaped.
	if f.Path != "" {
		where = append(where, `lower(COALESCE(r.path, '') || '/' || COALESCE(l.rel_path, '')) LIKE `+arg(likeContains(f.Path))+` ESCAPE '\'`)
	}
	if f.Error != "" {
		where = append(where, `lower(COALESCE(q.error_message, '')) LIKE `+arg(likeContains(f.Error))+` ESCAPE '\'`)
	}
	if f.BeforeID > 0 {
		where = append(where, `q.id < `+arg(f.BeforeID))
	}
	if c := f.After; c != nil {
		where = append(where, afterSQL(*c, d, arg))
	}
	return strings.Join(where, " AND "), args
}

// sortKey is the column expression a sort orders by ("" for the id alone).
func sortKey(s job.Sort) string {
	switch s {
	case job.SortPriority:
		return `COALESCE(q.priority, 0)`
	case job.SortUpdated:
		return `q.updated_at`
	case job.SortEnded:
		return `q.end_time`
	}
	return ""
}

// afterSQL keeps the rows after c in the order of JobOrderSQL: a greater
// (ascending) or smaller key, or the same key and a greater or smaller id;
// under a time sort, rows without the time come after every row with one.
func afterSQL(c job.Cursor, d Dialect, arg func(any) string) string {
	cmp := "<"
	if c.Ascending {
		cmp = ">"
	}
	key := sortKey(c.Sort)
	switch {
	case key == "":
		return `q.id ` + cmp + ` ` + arg(c.ID)
	case c.Sort.Timed() && c.Time.IsZero():
		return `(` + key + ` IS NULL AND q.id ` + cmp + ` ` + arg(c.ID) + `)`
	}
	// The key is bound twice: SQLite's "?" takes one argument each.
	var k any = c.Priority
	orNull := ""
	if c.Sort.Timed() {
		k, orNull = d.Time(c.Time), key+` IS NULL OR `
	}
	return `(` + orNull + key + ` ` + cmp + ` ` + arg(k) + ` OR (` + key + ` = ` + arg(k) + ` AND q.id ` + cmp + ` ` + arg(c.ID) + `))`
}

// JobOrderSQL is the ORDER BY clause (with the keywords) of the job list
// in the order f asks for: the sort key, then the id, both in f's
// direction; under a time sort, rows without the time last.
func JobOrderSQL(f job.Filter) string {
	dir := " DESC"
	if f.Ascending {
		dir = " ASC"
	}
	key := sortKey(f.Sort)
	switch {
	case key == "":
		return ` ORDER BY q.id` + dir
	case f.Sort.Timed():
		return ` ORDER BY (` + key + ` IS NULL), ` + key + dir + `, q.id` + dir
	}
	return ` ORDER BY ` + key + dir + `, q.id` + dir
}

// NeedsLocation reports whether f's clause reads the file's location (l,
// r), so that a count can skip the joins when it does not.
func NeedsLocation(f job.Filter) bool { return f.Path != "" }

// JobLocationJoins are the joins the aliases l and r of JobFilterSQL need.
const JobLocationJoins = `
LEFT JOIN cf_file_version v ON v.id = q.file_version_id
LEFT JOIN cf_file_location l ON l.id = v.location_id
LEFT JOIN cf_source_root r ON r.id = l.source_root_id`

func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// CheckBulk refuses an action that is neither retry nor cancel.
func CheckBulk(a job.BulkAction) error {
	switch a {
	case job.BulkRetry, job.BulkCancel:
		return nil
	}
	return fmt.Errorf("bulk action %q: want %q or %q: %w", a, job.BulkRetry, job.BulkCancel, job.ErrInvalid)
}
