package job

import (
	"errors"
	"testing"
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
		{in: Filter{}, want: Filter{Limit: DefaultLimit}},
		{in: Filter{Limit: MaxLimit + 1, Offset: 3}, want: Filter{Limit: MaxLimit, Offset: 3}},
		{in: Filter{Limit: 7}, want: Filter{Limit: 7}},
		{in: Filter{Limit: -1}, bad: true},
		{in: Filter{Offset: -1}, bad: true},
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
