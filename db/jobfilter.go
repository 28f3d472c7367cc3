package db

import (
	"fmt"
	"strings"

	"github.com/casparian/sentinel/job"
)

// JobFilterSQL is the WHERE clause (without the keyword; "" for none) of
// the jobs f selects, over the aliases of the job listing: q the queue, l
// the file's location, r its source root. Both backends build their lists
// and bulk actions on it, so a filter selects the same jobs on each.
// placeholder(n) writes the n-th argument's placeholder (SQLite "?",
// PostgreSQL "$n"); statusText is how the dialect reads q.status as text.
func JobFilterSQL(f job.Filter, placeholder func(n int) string, statusText string) (cond string, args []any) {
	var where []string
	arg := func(v any) string {
		args = append(args, v)
		return placeholder(len(args))
	}
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
	return strings.Join(where, " AND "), args
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
