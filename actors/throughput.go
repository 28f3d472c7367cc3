package actors

import (
	"sync"
	"time"
)

// ThroughputMinutes is how many minutes a Throughput remembers.
const ThroughputMinutes = 60

// Throughput counts the jobs that ended COMPLETED and FAILED in each of the
// last ThroughputMinutes minutes, for the console's rates. The queue actor
// adds to it where it counts Stats.JobsCompleted and JobsFailed; readers
// take a Snapshot. A minute nobody counted in reads as zero, so no goroutine
// has to tick it.
type Throughput struct {
	mu      sync.Mutex
	minutes [ThroughputMinutes]MinuteCount
}

// MinuteCount is what ended in one minute, Start being its first instant.
type MinuteCount struct {
	Start     time.Time
	Completed int64
	Failed    int64
}

// Add counts jobs that ended at now.
func (t *Throughput) Add(now time.Time, completed, failed int64) {
	start := now.Truncate(time.Minute)
	t.mu.Lock()
	defer t.mu.Unlock()
	m := &t.minutes[slot(start)]
	if !m.Start.Equal(start) {
		// The slot held a minute an hour or more ago: start it afresh.
		*m = MinuteCount{Start: start}
	}
	m.Completed += completed
	m.Failed += failed
}

// Snapshot returns the last ThroughputMinutes minutes up to the one now is
// in, oldest first; minutes without counts are zero.
func (t *Throughput) Snapshot(now time.Time) []MinuteCount {
	current := now.Truncate(time.Minute)
	out := make([]MinuteCount, ThroughputMinutes)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range out {
		start := current.Add(-time.Duration(ThroughputMinutes-1-i) * time.Minute)
		out[i] = MinuteCount{Start: start}
		if m := t.minutes[slot(start)]; m.Start.Equal(start) {
			out[i] = m
		}
	}
	return out
}

func slot(minute time.Time) int {
	return int((minute.Unix() / 60) % ThroughputMinutes)
}
