package job

import (
	"errors"
	"testing"
	"time"
)

func TestNames_KnownAndUnknown(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{ConcludeComplete.String(), "complete"},
		{ConcludeAbort.String(), "abort"},
		{ConclusionKind(9).String(), "ConclusionKind(9)"},
		{OutcomeStale.String(), "stale"},
		{OutcomeSkipped.String(), "skipped"},
		{Outcome(0).String(), "Outcome(0)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if len(Statuses) != 6 || Statuses[0] != StatusPending || Statuses[5] != StatusSkipped {
		t.Errorf("Statuses = %v", Statuses)
	}
}

func TestFilter_Paged(t *testing.T) {
	for _, c := range []struct {
		in, want Filter
		bad      bool
	}{
		{in: Filter{}, want: Filter{Limit: DefaultLimit, Sort: SortID}},
		{in: Filter{Limit: MaxLimit + 1, Offset: 3}, want: Filter{Limit: MaxLimit, Offset: 3, Sort: SortID}},
		{in: Filter{Limit: 7, Sort: SortEnded, Ascending: true}, want: Filter{Limit: 7, Sort: SortEnded, Ascending: true}},
		{in: Filter{Limit: -1}, bad: true},
		{in: Filter{Offset: -1}, bad: true},
		{in: Filter{Sort: "size"}, bad: true},
		{in: Filter{Sort: SortPriority, BeforeID: 9}, bad: true},
		{in: Filter{Ascending: true, BeforeID: 9}, bad: true},
		{in: Filter{Sort: SortPriority, After: &Cursor{Sort: SortEnded, ID: 3}}, bad: true},
		{in: Filter{Sort: SortPriority, After: &Cursor{Sort: SortPriority, Ascending: true, ID: 3}}, bad: true},
	} {
		got, err := c.in.Paged()
		if c.bad {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%+v: err %v, want ErrInvalid", c.in, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%+v: got %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestCursor_RoundTripsAndRefusesOthers(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	for _, c := range []Cursor{
		{Sort: SortID, ID: 7},
		{Sort: SortID, Ascending: true, ID: 7},
		{Sort: SortPriority, Priority: -5, ID: 8},
		{Sort: SortUpdated, Time: at, ID: 9},
		{Sort: SortEnded, Ascending: true, ID: 10}, // a job that has not ended
	} {
		got, err := ParseCursor(c.String())
		if err != nil || got != c {
			t.Errorf("%+v: %q read back as %+v, %v", c, c.String(), got, err)
		}
	}
	for _, s := range []string{"", "id.d.-", "id.d.-.0", "id.x.-.3", "id.d.5.3", "size.d.-.3", "priority.d.-.3",
		"ended.d.soon.3", "priority.d.1.2.3", ".d.-.3"} {
		if _, err := ParseCursor(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCursor(%q): %v, want ErrInvalid", s, err)
		}
	}
	j := Info{Job: Job{ID: 4, Priority: 3, EndTime: at}, UpdatedAt: at.Add(time.Second)}
	if c := CursorOf(Filter{Sort: SortEnded, Ascending: true}, j); c != (Cursor{Sort: SortEnded, Ascending: true, Time: at, ID: 4}) {
		t.Errorf("CursorOf ended: %+v", c)
	}
	if c := CursorOf(Filter{}, j); c != (Cursor{Sort: SortID, ID: 4}) {
		t.Errorf("CursorOf default: %+v", c)
	}
}
