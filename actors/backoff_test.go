package actors

import (
	"testing"
	"time"
)

// inRange calls f many times and fails unless every result lies in
// [lo, hi] and the results vary (the point of the jitter).
func inRange(t *testing.T, what string, lo, hi time.Duration, f func() time.Duration) {
	t.Helper()
	seen := map[time.Duration]bool{}
	for range 500 {
		d := f()
		if d < lo || d > hi {
			t.Fatalf("%s = %v, want within [%v, %v]", what, d, lo, hi)
		}
		seen[d] = true
	}
	if lo < hi && len(seen) < 2 {
		t.Errorf("%s always gave %v: no jitter", what, lo)
	}
}

func TestBackoff_DoublesPerRetryUpToTheCap(t *testing.T) {
	const base, max = 100 * time.Millisecond, 5 * time.Second
	cases := []struct {
		retries int64
		full    time.Duration // before jitter
	}{
		{0, 100 * time.Millisecond},
		{1, 200 * time.Millisecond},
		{2, 400 * time.Millisecond},
		{5, 3200 * time.Millisecond},
		{6, max}, // 6.4 s, capped
		{10, max},
		{1 << 40, max}, // no overflow: doubling stops at the cap
	}
	for _, c := range cases {
		inRange(t, "Backoff", c.full/2, c.full, func() time.Duration { return Backoff(base, max, c.retries) })
	}
}

func TestBackoff_CapBelowBase(t *testing.T) {
	inRange(t, "Backoff", 25*time.Millisecond, 50*time.Millisecond,
		func() time.Duration { return Backoff(time.Second, 50*time.Millisecond, 0) })
}

func TestJitter_BetweenHalfAndWhole(t *testing.T) {
	for _, d := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 3 * time.Nanosecond} {
		inRange(t, "Jitter", d/2, d, func() time.Duration { return Jitter(d) })
	}
	for _, d := range []time.Duration{0, 1} { // nothing to halve
		if got := Jitter(d); got != d {
			t.Errorf("Jitter(%v) = %v, want %v", d, got, d)
		}
	}
}
