package job

import "testing"

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
