package actors_test

import (
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// TestHeartbeat_WorkersShareOneBeat: worker actors heartbeat on a common
// beat (whole multiples of the interval), not each on its own phase, so
// that idle workers cost one burst per interval. Two workers registered
// 120 ms apart, with a 300 ms interval, must get their HEARTBEATs within a
// few milliseconds of each other.
func TestHeartbeat_WorkersShareOneBeat(t *testing.T) {
	const interval = 300 * time.Millisecond
	h := newHarness(t, func(c *config.Config) {
		c.HeartbeatInterval = interval
		c.WorkerTimeout = 5 * interval
	})
	a := h.Worker(testworker.Options{Slots: 1})
	time.Sleep(120 * time.Millisecond) // registering the second worker out of phase
	b := h.Worker(testworker.Options{Slots: 1})

	// When each worker's count of received HEARTBEATs changes.
	var beatsA, beatsB []time.Time
	lastA, lastB := a.Heartbeats(), b.Heartbeats()
	for end := time.Now().Add(6 * interval); time.Now().Before(end); {
		if n := a.Heartbeats(); n != lastA {
			lastA, beatsA = n, append(beatsA, time.Now())
		}
		if n := b.Heartbeats(); n != lastB {
			lastB, beatsB = n, append(beatsB, time.Now())
		}
		time.Sleep(time.Millisecond) // sampling two counters
	}
	if len(beatsA) < 3 || len(beatsB) < 3 {
		t.Fatalf("heartbeats seen: %d and %d in %s; want at least 3 each", len(beatsA), len(beatsB), 6*interval)
	}
	const tolerance = 40 * time.Millisecond
	for _, tb := range beatsB {
		nearest := time.Hour
		for _, ta := range beatsA {
			nearest = min(nearest, max(tb.Sub(ta), ta.Sub(tb)))
		}
		if nearest > tolerance {
			t.Errorf("worker B's heartbeat came %s from worker A's nearest; want both on one beat (within %s)", nearest, tolerance)
		}
	}
}

// TestHeartbeat_PingsOnlyWorkersThatDoNotAnswer: a worker that answers
// HEARTBEAT gets no ZMTP PINGs once its first answer is in (the first beat
// may ping: nothing was heard yet), so heartbeating workers cost nothing
// extra; the PING such a first beat sends to a zmq4 worker is harmless.
//
// The Sentinel pings a worker whose last answer is more than two intervals
// old, so an answer delayed that long by a loaded machine (a HEARTBEAT out
// and back through both sockets, the test worker's goroutine and the
// worker actor's mailbox, all under the race detector) counted as a PING
// the test did not expect: with 100 ms that was 200 ms, often exceeded at
// load 15. With 500 ms it is a whole second; a Sentinel that pinged
// workers that answer still pings on every beat and fails the test.
//
// It runs in parallel with other tests (its own Sentinel and counters):
// the second of slack is what lets it share the machine.
func TestHeartbeat_PingsOnlyWorkersThatDoNotAnswer(t *testing.T) {
	t.Parallel()
	const interval = 500 * time.Millisecond
	h := newHarness(t, func(c *config.Config) {
		c.HeartbeatInterval = interval
		c.WorkerTimeout = 10 * interval
	})
	w := h.Worker(testworker.Options{Slots: 1})
	testwait.Eventually(t, 20*time.Second, "two heartbeats answered", func() bool { return w.Heartbeats() >= 2 })
	pings := h.Sentinel.Stats().PingsSent.Load()
	beats := w.Heartbeats()
	testwait.Eventually(t, 20*time.Second, "five more heartbeats", func() bool { return w.Heartbeats() >= beats+5 })
	if n := h.Sentinel.Stats().PingsSent.Load(); n != pings || pings > 1 {
		t.Fatalf("PINGs sent: %d after the first answers, %d five beats later; want at most 1 and no more", pings, n)
	}
	h.Plugin("wc")
	id := h.Enqueue(h.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 20*time.Second, "job completed", func() bool { return h.Job(id).Status == job.StatusCompleted })
}
