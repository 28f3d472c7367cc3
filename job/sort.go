package job

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sort is the key a list of jobs is ordered by; the job id breaks ties, in
// the same direction, so that every order is total and a Cursor can say
// where a page ended.
type Sort string

// The orders of the job list.
const (
	// SortID orders by id: the default, newest first.
	SortID Sort = "id"
	// SortPriority orders by priority (NULL reads as 0).
	SortPriority Sort = "priority"
	// SortUpdated orders by updated_at, the last change of the row.
	SortUpdated Sort = "updated"
	// SortEnded orders by end_time. Jobs that have not ended (no end_time)
	// come last in both directions, as do rows without updated_at under
	// SortUpdated: an operator sorting by a time wants the jobs that have
	// one.
	SortEnded Sort = "ended"
)

// Sorts lists every order the job list offers.
var Sorts = []Sort{SortID, SortPriority, SortUpdated, SortEnded}

// ParseSort reads a sort name ("" is SortID), or returns ErrInvalid naming
// the ones there are.
func ParseSort(s string) (Sort, error) {
	if s == "" {
		return SortID, nil
	}
	for _, k := range Sorts {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	names := make([]string, len(Sorts))
	for i, k := range Sorts {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown sort %q (want one of %s): %w", s, strings.Join(names, ", "), ErrInvalid)
}

// Timed reports whether the key is a time, which a job may lack.
func (s Sort) Timed() bool { return s == SortUpdated || s == SortEnded }

// Cursor is where a page of a sorted job list ended: the last job's sort key
// and id. The next page is the jobs after it in the same order (keyset
// paging: cheaper than an offset deep into a large queue, and it neither
// skips nor repeats a job when jobs are added or change before it).
type Cursor struct {
	Sort      Sort
	Ascending bool
	// Priority is the key under SortPriority; Time under SortUpdated and
	// SortEnded, the zero time for a job without one.
	Priority int64
	Time     time.Time
	ID       int64
}

// CursorOf is the cursor after j in the order of f.
func CursorOf(f Filter, j Info) Cursor {
	c := Cursor{Sort: f.sort(), Ascending: f.Ascending, ID: j.ID}
	switch c.Sort {
	case SortPriority:
		c.Priority = j.Priority
	case SortUpdated:
		c.Time = j.UpdatedAt
	case SortEnded:
		c.Time = j.EndTime
	}
	return c
}

// String encodes c for an address: "SORT.a|d.KEY.ID", KEY being the
// priority, the time in Unix nanoseconds, or "-" for none.
func (c Cursor) String() string {
	dir := "d"
	if c.Ascending {
		dir = "a"
	}
	key := "-"
	switch {
	case c.Sort == SortPriority:
		key = strconv.FormatInt(c.Priority, 10)
	case c.Sort.Timed() && !c.Time.IsZero():
		key = strconv.FormatInt(c.Time.UnixNano(), 10)
	}
	return string(c.Sort) + "." + dir + "." + key + "." + strconv.FormatInt(c.ID, 10)
}

// ParseCursor reads what Cursor.String wrote, or returns ErrInvalid.
func ParseCursor(s string) (Cursor, error) {
	bad := fmt.Errorf("cursor %q is not one this server wrote (use the next_cursor of a page): %w", s, ErrInvalid)
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return Cursor{}, bad
	}
	var c Cursor
	var err error
	if c.Sort, err = ParseSort(parts[0]); err != nil || parts[0] == "" {
		return Cursor{}, bad
	}
	switch parts[1] {
	case "a":
		c.Ascending = true
	case "d":
	default:
		return Cursor{}, bad
	}
	if c.ID, err = strconv.ParseInt(parts[3], 10, 64); err != nil || c.ID <= 0 {
		return Cursor{}, bad
	}
	key := parts[2]
	switch {
	case c.Sort == SortPriority:
		if c.Priority, err = strconv.ParseInt(key, 10, 64); err != nil {
			return Cursor{}, bad
		}
	case c.Sort.Timed() && key != "-":
		ns, err := strconv.ParseInt(key, 10, 64)
		if err != nil {
			return Cursor{}, bad
		}
		c.Time = time.Unix(0, ns).UTC()
	case key != "-":
		return Cursor{}, bad
	}
	return c, nil
}

func (f Filter) sort() Sort {
	if f.Sort == "" {
		return SortID
	}
	return f.Sort
}

// checkOrder refuses an unknown sort, a cursor made for another order, and
// before_id (the default order's older keyset) with any other order.
func (f Filter) checkOrder() error {
	if _, err := ParseSort(string(f.Sort)); err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	if f.After != nil && (f.After.Sort != f.sort() || f.After.Ascending != f.Ascending) {
		return fmt.Errorf("list jobs: the cursor was made for sort %s %s, not %s %s: %w",
			f.After.Sort, direction(f.After.Ascending), f.sort(), direction(f.Ascending), ErrInvalid)
	}
	if f.BeforeID > 0 && (f.sort() != SortID || f.Ascending) {
		return fmt.Errorf("list jobs: before_id pages the default order (id, newest first); with a sort, page with the cursor: %w", ErrInvalid)
	}
	return nil
}

func direction(asc bool) string {
	if asc {
		return "ascending"
	}
	return "descending"
}
