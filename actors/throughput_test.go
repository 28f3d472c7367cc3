package actors

import (
	"testing"
	"time"
)

func TestThroughput_CountsPerMinuteAndForgetsAfterAnHour(t *testing.T) {
	var tp Throughput
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	tp.Add(t0.Add(5*time.Second), 2, 0)
	tp.Add(t0.Add(59*time.Second), 1, 1)
	tp.Add(t0.Add(2*time.Minute), 0, 3)

	snap := tp.Snapshot(t0.Add(2*time.Minute + 30*time.Second))
	if len(snap) != ThroughputMinutes {
		t.Fatalf("%d minutes, want %d", len(snap), ThroughputMinutes)
	}
	last := snap[len(snap)-1]
	if !last.Start.Equal(t0.Add(2*time.Minute)) || last.Completed != 0 || last.Failed != 3 {
		t.Errorf("current minute = %+v", last)
	}
	if m := snap[len(snap)-2]; !m.Start.Equal(t0.Add(time.Minute)) || m.Completed != 0 || m.Failed != 0 {
		t.Errorf("an empty minute = %+v", m)
	}
	if m := snap[len(snap)-3]; !m.Start.Equal(t0) || m.Completed != 3 || m.Failed != 1 {
		t.Errorf("first minute = %+v", m)
	}

	// An hour later the slot of t0 is reused, not added to.
	later := t0.Add(ThroughputMinutes * time.Minute)
	tp.Add(later, 1, 0)
	snap = tp.Snapshot(later)
	if m := snap[len(snap)-1]; m.Completed != 1 || m.Failed != 0 {
		t.Errorf("minute reusing t0's slot = %+v", m)
	}
	for _, m := range snap {
		if m.Start.Equal(t0) {
			t.Errorf("a minute an hour old is still shown: %+v", m)
		}
	}
	// t0+2m is 58 minutes before later: still in the window, second.
	if m := snap[1]; !m.Start.Equal(t0.Add(2*time.Minute)) || m.Failed != 3 {
		t.Errorf("minute 58 ago = %+v", m)
	}
}
